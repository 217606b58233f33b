//! Configuration errors in the operator's words: the key as written in
//! `default.toml` (`redact.rules[0].action`), where the bad value came from
//! (the environment variable's own name, or the settings file's absolute
//! path), and what would be accepted. The config crate's own messages say
//! ``for key `redact.rules[0]action` `` and never which variable.

use std::path::Path;

use config::{ConfigError, Map};

/// Where settings came from, to say which of them a bad value is in.
pub(super) struct Sources<'a> {
    /// The `--config` file, absolute.
    pub file: Option<&'a Path>,
    /// The `IMGGO__*` variables, as named in the environment.
    pub env: &'a Map<String, String>,
}

impl Sources<'_> {
    /// One line for `e`.
    pub fn explain(&self, e: ConfigError) -> String {
        match e {
            ConfigError::FileParse { cause, .. } => match self.file {
                Some(path) => format!("{} cannot be parsed: {cause}", path.display()),
                None => format!("the settings cannot be parsed: {cause}"),
            },
            ConfigError::Type {
                origin,
                unexpected,
                expected,
                key,
            } => {
                let key = key.as_deref().map(fix_key).unwrap_or_default();
                let from = self.origin(&key, origin.as_deref());
                format!("{key}: expected {expected}, found {unexpected}{from}")
            }
            ConfigError::At { error, origin, key } => {
                let key = key.as_deref().map(fix_key).unwrap_or_default();
                let message = match *error {
                    ConfigError::Message(m) => m,
                    other => other.to_string(),
                };
                self.message(&key, &message, origin.as_deref())
            }
            ConfigError::Message(m) => self.message("", &m, None),
            ConfigError::NotFound(key) => format!("{}: missing", fix_key(&key)),
            other => other.to_string(),
        }
    }

    /// `message` about `key`; serde's unknown-field message names the key
    /// of the table, not of the field, so it is turned around.
    fn message(&self, key: &str, message: &str, origin: Option<&str>) -> String {
        if let Some((field, known)) = unknown_field(message) {
            let full = if key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
            let table = if key.is_empty() {
                "at the top level".to_owned()
            } else {
                format!("in [{key}]")
            };
            let from = self.origin(&full, None);
            return format!("unknown key {full}{from} (known keys {table}: {known})");
        }
        let from = self.origin(key, origin);
        if key.is_empty() {
            format!("{message}{from}")
        } else {
            format!("{key}: {message}{from}")
        }
    }

    /// ` (from environment variable IMGGO__…)` or ` (in /abs/file.toml)`.
    /// The environment is layered last, so a variable setting the key (or
    /// a table holding it) is where its value came from; otherwise it came
    /// from the file, as the compiled-in defaults are all valid.
    fn origin(&self, key: &str, origin: Option<&str>) -> String {
        if let Some(var) = self.variable_for(key) {
            return format!(" (from environment variable {var})");
        }
        match (origin, self.file) {
            (Some("the environment"), _) => " (from the environment)".to_owned(),
            (_, Some(path)) => format!(" (in {})", path.display()),
            (_, None) => String::new(),
        }
    }

    /// The `IMGGO__SECTION__KEY` variable that sets `key`, as it is spelt
    /// in the environment.
    fn variable_for(&self, key: &str) -> Option<&str> {
        let prefix = format!("{}__", super::ENV_PREFIX).to_ascii_lowercase();
        self.env.keys().map(String::as_str).find(|var| {
            var.to_ascii_lowercase()
                .strip_prefix(&prefix)
                .map(|rest| rest.replace("__", "."))
                .is_some_and(|set| {
                    key == set
                        || key
                            .strip_prefix(set.as_str())
                            .is_some_and(|rest| rest.starts_with(['.', '[']))
                })
        })
    }
}

/// The config crate writes an index and the field after it without a dot
/// (`rules[0]action`); the file's syntax has one (`rules[0].action`).
fn fix_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut after_index = false;
    for c in key.chars() {
        if after_index && c != '[' && c != '.' {
            out.push('.');
        }
        after_index = c == ']';
        out.push(c);
    }
    out
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" into the
/// field and the valid names (`a, b`).
fn unknown_field(message: &str) -> Option<(&str, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let known = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))
        .map_or_else(
            || "none".to_owned(),
            |k| k.replace('`', "").replace(" or ", ", "),
        );
    Some((field, known))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_get_their_dot_back_after_an_index() {
        assert_eq!(fix_key("redact.rules[0]action"), "redact.rules[0].action");
        assert_eq!(fix_key("a[1][2]b.c"), "a[1][2].b.c");
        assert_eq!(fix_key("rate_limit.burst"), "rate_limit.burst");
        assert_eq!(fix_key("list[3]"), "list[3]");
    }

    #[test]
    fn serdes_unknown_field_message_is_taken_apart() {
        assert_eq!(
            unknown_field("unknown field `per_seconds`, expected `per_second` or `burst`"),
            Some(("per_seconds", "per_second, burst".to_owned()))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected one of `a`, `b`, `c`"),
            Some(("x", "a, b, c".to_owned()))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `bind`"),
            Some(("x", "bind".to_owned()))
        );
        assert_eq!(unknown_field("invalid type"), None);
    }
}
