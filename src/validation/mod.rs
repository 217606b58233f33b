//! Validation of extracted data (CONTRACT §12): each pattern's JSON Schema,
//! compiled once at start-up from `validation.schemas_dir`, checks the
//! extracted data (`manifest`, or `result` in the documented dialect) of
//! every delivery of that pattern, **before** redaction. A delivery is
//! stored whatever the verdict (the sender tries once): the verdict is
//! recorded beside the event and consumers choose what to take.
//!
//! A verdict never holds a value from the delivery: each error is a JSON
//! Pointer and the schema keyword that failed. Pointer segments that are
//! neither an array index nor a property name the schema itself declares
//! are data (a key chosen by whoever filled the document, which may be a
//! name or an email) and are written as `*`.

mod load;
mod value;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::json::Json;

pub use load::LoadError;

/// Most errors recorded per event.
pub const MAX_ERRORS: usize = 20;

/// The compiled schemas, by pattern id; empty when validation is off.
#[derive(Default)]
pub struct Schemas {
    by_pattern: HashMap<String, PatternSchema>,
}

struct PatternSchema {
    validator: jsonschema::Validator,
    /// Property names the schema declares: the pointer segments an error
    /// may show as they are.
    declared: HashSet<String>,
}

/// What validation said about one delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// `None` when the pattern has no schema (or the delivery no pattern).
    pub valid: Option<bool>,
    /// At most [`MAX_ERRORS`], in the validator's order; empty unless
    /// `valid` is `Some(false)`.
    pub errors: Vec<Issue>,
}

/// One failed check: where, and which keyword.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Issue {
    /// A JSON Pointer into the extracted data (undeclared keys as `*`).
    pub path: String,
    /// The schema keyword that failed, e.g. `type`, `required`, `format`.
    pub keyword: String,
}

/// The metric label of a verdict.
pub fn outcome(verdict: &Verdict) -> &'static str {
    match verdict.valid {
        Some(true) => "valid",
        Some(false) => "invalid",
        None => "unchecked",
    }
}

impl Verdict {
    /// The errors as stored (`validation_errors` column): a JSON array, or
    /// `None` when there are none.
    pub fn errors_json(&self) -> Option<String> {
        if self.errors.is_empty() {
            return None;
        }
        serde_json::to_string(&self.errors).ok()
    }

    /// A verdict as stored: the column values back into a verdict. Errors
    /// that do not read back (never written by this service) are dropped.
    pub fn from_columns(valid: Option<bool>, errors: Option<&str>) -> Self {
        Self {
            valid,
            errors: errors
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or_default(),
        }
    }
}

impl Schemas {
    /// Loads and compiles every `<pattern_id>.json` in `dir`; an empty
    /// `dir` turns validation off. A file that is not JSON, not a schema,
    /// too large, or that reaches outside itself stops start-up, naming it.
    pub fn load(dir: &str) -> Result<Self, LoadError> {
        if dir.is_empty() {
            return Ok(Self::default());
        }
        let mut by_pattern = HashMap::new();
        for (pattern, schema) in load::read_dir(Path::new(dir))? {
            by_pattern.insert(pattern, schema);
        }
        Ok(Self { by_pattern })
    }

    /// The pattern ids with a schema, sorted.
    pub fn patterns(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_pattern.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    pub fn has(&self, pattern_id: &str) -> bool {
        self.by_pattern.contains_key(pattern_id)
    }

    /// The verdict on a parsed delivery body (an object): its pattern's
    /// schema applied to its extracted data.
    pub fn check(&self, pattern_id: Option<&str>, body: &Json<'_>) -> Verdict {
        // Validation off (the default): nothing to look up per delivery.
        if self.by_pattern.is_empty() {
            return Verdict::default();
        }
        let Some(schema) = pattern_id.and_then(|p| self.by_pattern.get(p)) else {
            return Verdict::default();
        };
        let data = extracted(body);
        schema.verdict(data)
    }

    /// The verdict on `data` as the extracted data of `pattern_id`;
    /// `None` when that pattern has no schema (`validate`).
    pub fn check_data(&self, pattern_id: &str, data: &Json<'_>) -> Option<Verdict> {
        self.by_pattern
            .get(pattern_id)
            .map(|schema| schema.verdict(Some(data)))
    }
}

/// `manifest` (production dialect) or `result` (documented dialect);
/// `None` when the body has neither.
fn extracted<'b, 'a>(body: &'b Json<'a>) -> Option<&'b Json<'a>> {
    body.get("manifest").or_else(|| body.get("result"))
}

impl PatternSchema {
    fn verdict(&self, data: Option<&Json<'_>>) -> Verdict {
        // Absent extracted data is validated as `null`, what it is.
        let instance = data.map_or(serde_json::Value::Null, value::to_serde);
        let errors: Vec<Issue> = self
            .validator
            .iter_errors(&instance)
            .take(MAX_ERRORS)
            .map(|e| Issue {
                path: self.safe_pointer(&instance, &e.instance_path().to_string()),
                keyword: e.kind().keyword().to_owned(),
            })
            .collect();
        Verdict {
            valid: Some(errors.is_empty()),
            errors,
        }
    }

    /// `pointer` with every segment that is data written as `*`: a segment
    /// is shown only when it indexes an array, or names a property the
    /// schema declares. Judged by walking `instance`, so an object key made
    /// of digits is not mistaken for an index.
    fn safe_pointer(&self, instance: &serde_json::Value, pointer: &str) -> String {
        use serde_json::Value;
        let mut out = String::with_capacity(pointer.len());
        let mut at = Some(instance);
        for segment in pointer.split('/').skip(1) {
            out.push('/');
            let name = segment.replace("~1", "/").replace("~0", "~");
            let (shown, next) = match at {
                Some(Value::Array(items)) => match name.parse::<usize>() {
                    Ok(i) if i.to_string() == name => (true, items.get(i)),
                    _ => (false, None),
                },
                Some(Value::Object(map)) => (self.declared.contains(&name), map.get(&name)),
                _ => (false, None),
            };
            if shown {
                out.push_str(segment);
            } else {
                out.push('*');
            }
            at = next;
        }
        out
    }
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("patterns", &self.patterns())
            .finish()
    }
}

#[cfg(test)]
mod tests;
