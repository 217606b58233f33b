//! Reading `validation.schemas_dir` at start-up: one `<pattern_id>.json`
//! per pattern, compiled once. Schema files are input too, and are bounded:
//!
//! - no network, no file system: every `$ref` must resolve inside the file
//!   (the validator is built offline, and anything else fails to compile);
//! - `pattern` and `patternProperties` use the `regex` crate, whose
//!   matching time is linear in the input: no pattern can backtrack
//!   exponentially on a delivery (look-around and back-references are
//!   refused at load instead);
//! - a file is at most [`MAX_SCHEMA_BYTES`], and must validate a set of
//!   probe documents within [`PROBE_BUDGET`], or it is refused: a schema
//!   that would slow every delivery down is found at start-up, not in
//!   production. Recursive schemas are fine: recursion follows the
//!   document, which nests at most 128 levels.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::PatternSchema;

/// Largest schema file accepted.
pub const MAX_SCHEMA_BYTES: u64 = 256 * 1024;
/// Longest the probe documents may take, all together, per schema.
pub const PROBE_BUDGET: Duration = Duration::from_millis(250);

/// Why `validation.schemas_dir` could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("validation.schemas_dir = {dir}: cannot read it: {error}")]
    Dir { dir: PathBuf, error: std::io::Error },
    #[error("validation schema {file}: {why}")]
    File { file: PathBuf, why: String },
}

fn refuse(file: &Path, why: impl Into<String>) -> LoadError {
    LoadError::File {
        file: file.to_owned(),
        why: why.into(),
    }
}

/// Every `*.json` file of `dir`, compiled, with its pattern id (the file
/// name without `.json`).
pub(super) fn read_dir(dir: &Path) -> Result<Vec<(String, PatternSchema)>, LoadError> {
    let dir_error = |error| LoadError::Dir {
        dir: dir.to_owned(),
        error,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(dir_error)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(dir_error)?;
    files.sort();
    let mut schemas = Vec::new();
    for file in files {
        let Some(pattern) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue; // README, editor backups, ...
        };
        if pattern.is_empty() || pattern.chars().count() > 128 || pattern.contains('\0') {
            return Err(refuse(&file, "the file name is not a pattern id"));
        }
        schemas.push((pattern.to_owned(), compile_file(&file)?));
    }
    Ok(schemas)
}

/// Reads, compiles and probes one schema file.
pub(super) fn compile_file(file: &Path) -> Result<PatternSchema, LoadError> {
    let meta = std::fs::metadata(file).map_err(|e| refuse(file, e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(file, "not a regular file"));
    }
    if meta.len() > MAX_SCHEMA_BYTES {
        return Err(refuse(
            file,
            format!(
                "{} bytes; a schema may be at most {MAX_SCHEMA_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| refuse(file, e.to_string()))?;
    let schema: Value =
        serde_json::from_slice(&bytes).map_err(|e| refuse(file, format!("not valid JSON: {e}")))?;
    compile(&schema).map_err(|why| refuse(file, why))
}

/// Compiles `schema` as [`compile_file`] does.
pub(super) fn compile(schema: &Value) -> Result<PatternSchema, String> {
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err("a schema is a JSON object (or true/false)".into());
    }
    let validator = jsonschema::options()
        // No retrieval: a `$ref` to a URL or a file is refused here.
        .offline()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
        .map_err(|e| format!("not a valid schema: {e}"))?;
    let compiled = PatternSchema {
        validator,
        declared: declared_names(schema),
    };
    probe(&compiled)?;
    Ok(compiled)
}

/// Validates a few documents of every shape, nested deep, and refuses a
/// schema that takes longer than [`PROBE_BUDGET`] over them.
fn probe(schema: &PatternSchema) -> Result<(), String> {
    // As deep as a delivery may nest (each level is an object and an array).
    let mut nested = json!({"a": [1, "x", null, true, {"b": 2.5}]});
    for _ in 0..60 {
        nested = json!({ "a": [nested], "b": "x", "c": 1 });
    }
    let probes = [
        Value::Null,
        json!({}),
        json!([]),
        json!(""),
        json!(0),
        json!({"total": "12,40", "email": "x", "items": [{}, [], "", 1e300]}),
        nested,
    ];
    let started = Instant::now();
    for probe in &probes {
        for _ in schema.validator.iter_errors(probe).take(super::MAX_ERRORS) {}
        if started.elapsed() > PROBE_BUDGET {
            return Err(format!(
                "validating a small document takes over {PROBE_BUDGET:?}; simplify the schema"
            ));
        }
    }
    Ok(())
}

/// The property names `schema` declares anywhere (`properties`,
/// `required`, `dependentRequired`, `dependentSchemas`, `dependencies`).
fn declared_names(schema: &Value) -> HashSet<String> {
    let mut names = HashSet::new();
    let mut stack = vec![schema];
    while let Some(node) = stack.pop() {
        match node {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        (
                            "properties" | "dependentRequired" | "dependentSchemas"
                            | "dependencies",
                            Value::Object(props),
                        ) => names.extend(props.keys().cloned()),
                        ("required", Value::Array(items)) => {
                            names.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
                        }
                        _ => {}
                    }
                    stack.push(value);
                }
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    names
}
