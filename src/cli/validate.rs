//! `validate --pattern ID FILE` (CONTRACT §12): checks a sample against a
//! pattern's schema before the schema is deployed. FILE holds the extracted
//! data (a `manifest`); a whole delivery body (an object with `event`,
//! `job_id` and `manifest` or `result`) is accepted too, and its extracted
//! data is what is checked. Prints `{"pattern_id","valid",
//! "validation_errors"}`; exit 0 when valid, 1 when not, 2 when the pattern
//! has no schema in `validation.schemas_dir`. A file that cannot be read or
//! is not JSON is an error (exit 1, with the reason on stderr).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::json;

use crate::config::Settings;
use crate::json::Json;
use crate::validation::Schemas;

pub fn run(settings: &Settings, pattern: &str, file: &Path) -> anyhow::Result<ExitCode> {
    let schemas = Schemas::load(&settings.validation.schemas_dir)?;
    if !schemas.has(pattern) {
        if settings.validation.schemas_dir.is_empty() {
            eprintln!("validation is off: set validation.schemas_dir");
        } else {
            eprintln!(
                "no schema for pattern {pattern:?} in {} (loaded: {})",
                settings.validation.schemas_dir,
                schemas.patterns().join(", ")
            );
        }
        return Ok(ExitCode::from(2));
    }
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let sample =
        Json::parse(&bytes).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
    let verdict = if is_delivery(&sample) {
        // As ingest does: `manifest` or `result`, `null` when it has neither.
        eprintln!(
            "{} is a delivery: checking its extracted data",
            file.display()
        );
        schemas.check(Some(pattern), &sample)
    } else {
        match schemas.check_data(pattern, &sample) {
            Some(verdict) => verdict,
            None => return Ok(ExitCode::from(2)),
        }
    };
    println!(
        "{}",
        json!({
            "pattern_id": pattern,
            "valid": verdict.valid,
            "validation_errors": verdict.errors,
        })
    );
    Ok(if verdict.valid == Some(true) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `sample` is a whole delivery body rather than extracted data.
fn is_delivery(sample: &Json<'_>) -> bool {
    matches!(sample.get("event"), Some(Json::String(_)))
        && matches!(sample.get("job_id"), Some(Json::String(_)))
}
