//! The README and the pages of `docs/` against themselves, the repository
//! and the binary: a newcomer walks them as written, so they must agree
//! with what the code does, and every link must lead somewhere.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clap::Parser as _;
use imggo_receiver::cli::Cli;

use crate::operator::{isolated, run, stdout};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// `docs/*.md`, by name.
fn docs_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no docs/*.md");
    files
}

/// The documentation a newcomer walks: README.md, then every `docs/*.md`,
/// each as (path, text).
fn pages() -> Vec<(PathBuf, String)> {
    std::iter::once(root().join("README.md"))
        .chain(docs_files())
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect()
}

/// A page's path as the repository names it, for messages.
fn name(path: &Path) -> String {
    path.strip_prefix(root()).unwrap().display().to_string()
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
    for (page, text) in pages() {
        let page_name = name(&page);
        assert!(
            !text.contains("CONTRACT"),
            "{page_name}: the contract is not in the repository: say what it says instead"
        );
        // Relative links point at files that exist, from the page's folder.
        let dir = page.parent().unwrap();
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap()];
            if target.starts_with("http") || target.starts_with('#') {
                continue;
            }
            let path = target.split('#').next().unwrap();
            assert!(
                dir.join(path).exists(),
                "{page_name}: link to missing {target}"
            );
        }
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
    for (page, text) in pages() {
        for sentence in sentences(&text) {
            if sentence.contains("`init`") && sentence.contains("quot") {
                assert!(
                    sentence.contains("unquoted") || sentence.contains("never quoted"),
                    "{} says init quotes: {sentence}",
                    name(&page)
                );
            }
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
    for (page, text) in pages() {
        let page_name = name(&page);
        for line in shell_lines(&text) {
            assert!(
                !line.contains("cargo run"),
                "{page_name}: another form: {line}"
            );
            assert!(
                !line.contains("target/release/imggo-receiver"),
                "{page_name}: {line}"
            );
        }
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

const BIN_NAME: &str = "imggo-receiver";

/// The commands of the ```sh blocks in `text`, a line ending in `\` joined
/// with the next.
fn shell_commands(text: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in shell_lines(text) {
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
        } else {
            pending.push_str(line);
            commands.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        commands.push(pending);
    }
    commands
}

/// `line` without its comment: from an unquoted `#` that starts a word.
fn without_comment(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let mut prev: Option<char> = None;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev.is_none_or(char::is_whitespace) => {
                return &line[..i];
            }
            _ => {}
        }
        prev = Some(c);
    }
    line
}

/// The words of `text` up to its first unquoted shell operator, quotes
/// removed. Variables stay as written: where they stand is what matters.
fn shell_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_with(String::new).push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            None if c.is_whitespace() => words.extend(word.take()),
            None if matches!(c, ')' | ';' | '|' | '&' | '<' | '>') => break,
            None => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// The arguments of every `imggo-receiver ...` a shell command runs, also
/// inside `$(...)`; `imggo-receiver-0` or `.../imggo-receiver` are other
/// words.
fn invocations(command: &str) -> Vec<Vec<String>> {
    let code = without_comment(command);
    let mut found = Vec::new();
    for (i, _) in code.match_indices(BIN_NAME) {
        let before = code[..i].chars().next_back();
        let rest = &code[i + BIN_NAME.len()..];
        let after = rest.chars().next();
        let starts_word = before.is_none_or(|c| c.is_whitespace() || c == '(');
        let ends_word =
            after.is_none_or(|c| c.is_whitespace() || matches!(c, ')' | ';' | '|' | '&'));
        if starts_word && ends_word {
            found.push(shell_words(rest));
        }
    }
    found
}

/// What a newcomer copies from a shell block must run: every
/// `imggo-receiver ...` in a ```sh block of the README or of `docs/` is a
/// command line the binary's own parser accepts (its subcommands exist, its
/// flags and arguments are the ones the command takes).
#[test]
fn every_command_in_a_shell_block_is_one_the_binary_accepts() {
    let mut checked = 0;
    let mut commands = BTreeSet::new();
    for (page, text) in pages() {
        for command in shell_commands(&text) {
            for args in invocations(&command) {
                let argv = std::iter::once(BIN_NAME.to_owned()).chain(args.iter().cloned());
                if let Err(e) = Cli::try_parse_from(argv) {
                    panic!(
                        "{}: `{command}` runs `{BIN_NAME} {}`, which the binary refuses:\n{e}",
                        name(&page),
                        args.join(" ")
                    );
                }
                commands.insert(args.first().cloned().unwrap_or_else(|| "serve".into()));
                checked += 1;
            }
        }
    }
    // The extraction found the commands the pages run, not nothing.
    for expected in [
        "init", "serve", "sign", "show", "token", "purge", "keygen", "rejected", "forward",
    ] {
        assert!(
            commands.contains(expected),
            "no `{BIN_NAME} {expected}` found in a ```sh block: {commands:?}"
        );
    }
    assert!(checked >= 10, "only {checked} commands found");
}

/// GitHub's anchor for a heading: lowercased, every character but letters,
/// digits, `-` and `_` removed, spaces written `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence {
            lines.push(line);
        }
    }
    lines
}

/// The anchors of a page's headings; a repeated one is numbered `-1`,
/// `-2`, ... as GitHub numbers it.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let level = line.len() - line.trim_start_matches('#').len();
        if !(1..=6).contains(&level) || !line[level..].starts_with(' ') {
            continue;
        }
        let base = anchor(&line[level..]);
        let n = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    anchors
}

/// The targets of a page's `[text](target)` links outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        for (i, _) in line.match_indices("](") {
            let target = &line[i + 2..];
            let end = target
                .find(')')
                .unwrap_or_else(|| panic!("unclosed link: {line}"));
            targets.push(target[..end].to_owned());
        }
    }
    targets
}

fn is_external(target: &str) -> bool {
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|scheme| target.starts_with(scheme))
}

/// A relative link leads to a file that exists, and its `#anchor`, in a
/// link to a Markdown page (this one or another), to a heading of it.
#[test]
fn every_relative_link_resolves_and_every_anchor_names_a_heading() {
    let mut headings: HashMap<PathBuf, BTreeSet<String>> = HashMap::new();
    let mut checked_anchors = 0;
    for (page, text) in pages() {
        let page_name = name(&page);
        for target in links(&text) {
            if is_external(&target) {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(path)
            };
            assert!(file.exists(), "{page_name}: link to missing {target}");
            let Some(fragment) = fragment else { continue };
            if file.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            let file = file.canonicalize().unwrap();
            let known = headings
                .entry(file.clone())
                .or_insert_with(|| anchors(&std::fs::read_to_string(&file).unwrap()));
            assert!(
                known.contains(fragment),
                "{page_name}: {target}: {} has no heading #{fragment}; its anchors: {known:?}",
                name(&file)
            );
            checked_anchors += 1;
        }
    }
    assert!(
        checked_anchors >= 10,
        "only {checked_anchors} anchors found"
    );
}

/// The README is the map: no page of `docs/` is reachable only by chance.
#[test]
fn every_docs_page_is_linked_from_the_readme() {
    let readme_path = root().join("README.md");
    let linked: BTreeSet<PathBuf> = links(&readme())
        .iter()
        .filter(|target| !is_external(target))
        .map(|target| target.split('#').next().unwrap())
        .filter(|path| !path.is_empty())
        .filter_map(|path| readme_path.parent().unwrap().join(path).canonicalize().ok())
        .collect();
    for file in docs_files() {
        assert!(
            linked.contains(&file.canonicalize().unwrap()),
            "README.md does not link {}",
            name(&file)
        );
    }
}

/// Each page of `docs/` says what it is in its first line and leads back to
/// the README.
#[test]
fn every_docs_page_opens_with_its_title_and_a_link_back_to_the_readme() {
    for file in docs_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines = text.lines().filter(|line| !line.trim().is_empty());
        let title = lines.next().unwrap_or_default();
        assert!(
            title.starts_with("# ") && title.len() > 2 && text.starts_with(title),
            "{} does not open with a title: {title}",
            name(&file)
        );
        let back = lines.next().unwrap_or_default();
        assert!(
            back.contains("](../README.md)"),
            "{}: no link back to the README after its title: {back}",
            name(&file)
        );
    }
}
