//! The README against itself, the repository and the binary: a newcomer
//! walks it as written, so it must agree with what the code does.

use std::path::Path;

use crate::operator::{isolated, run, stdout};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The text between `## {title}` and the next `## ` heading.
fn section<'a>(text: &'a str, title: &str) -> &'a str {
    let start = text
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("no section {title}"));
    let rest = &text[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    &rest[..end]
}

/// The lines of the ```sh blocks in `text`.
fn shell_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside && line.trim_start() == "```sh";
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

/// Sentences (whitespace joined), for claims that span line breaks.
fn sentences(text: &str) -> Vec<String> {
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    joined.split(". ").map(str::to_owned).collect()
}

#[test]
fn it_cites_nothing_that_is_not_in_the_repository() {
    let text = readme();
    assert!(
        !text.contains("CONTRACT"),
        "the contract is not in the repository: say what it says instead"
    );
    // Relative links point at files that exist.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (i, _) in text.match_indices("](") {
        let target = &text[i + 2..];
        let target = &target[..target.find(')').unwrap()];
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        let path = target.split('#').next().unwrap();
        assert!(root.join(path).exists(), "link to missing {target}");
    }
}

#[test]
fn what_it_says_init_writes_is_what_init_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(isolated(dir.path(), &[]), &["init"]);
    assert!(out.status.success());
    let written = std::fs::read_to_string(dir.path().join(".env")).unwrap();
    for line in written
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.split_once('=').unwrap().1;
        assert!(!value.starts_with(['\'', '"']), "init quoted: {line}");
    }
    for sentence in sentences(&readme()) {
        if sentence.contains("`init`") && sentence.contains("quot") {
            assert!(
                sentence.contains("unquoted") || sentence.contains("never quoted"),
                "the README says init quotes: {sentence}"
            );
        }
    }
}

/// The quick start leaves nothing untracked in a clone beyond what git
/// ignores (`.env`, `data/`): files it writes go to a temporary directory.
#[test]
fn the_quick_start_writes_no_file_into_the_working_directory() {
    let text = readme();
    let quick = section(&text, "Quick start");
    let gitignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore")).unwrap();
    for line in shell_lines(quick) {
        let code = line.split(" #").next().unwrap();
        for (i, _) in code.match_indices('>') {
            let before = code[..i].chars().last();
            if matches!(before, Some('2' | '&' | '-')) || code[i + 1..].starts_with(['&', '>']) {
                continue;
            }
            let target = code[i + 1..].split_whitespace().next().unwrap_or("");
            let target = target.trim_matches('"');
            let ignored = gitignore
                .lines()
                .any(|p| target.trim_start_matches("./") == p.trim_start_matches('/'));
            assert!(
                target.starts_with('$') || target.starts_with('/') || ignored,
                "the quick start writes {target} into the working directory: {line}"
            );
        }
    }
}

/// One form for every command: `imggo-receiver ...`, with the way to get it
/// on PATH said once, near the top; the form the binary prints for the next
/// step outside cargo is the same.
#[test]
fn every_command_is_written_in_one_form_that_the_readme_says_how_to_get() {
    let text = readme();
    let quick = section(&text, "Quick start");
    assert!(quick.contains("cargo install --locked --path ."), "{quick}");
    for line in shell_lines(&text) {
        assert!(!line.contains("cargo run"), "another form: {line}");
        assert!(!line.contains("target/release/imggo-receiver"), "{line}");
    }
    // Run as the README runs it, by name from PATH: the next step it
    // prints is in the same form.
    let bin = Path::new(env!("CARGO_BIN_EXE_imggo-receiver"));
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("imggo-receiver")
        .env_clear()
        .env("PATH", bin.parent().unwrap())
        .current_dir(dir.path())
        .arg("init")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).lines().last(), Some("next: imggo-receiver"));
}
