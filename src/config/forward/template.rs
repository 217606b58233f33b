//! Subject, routing-key and stream-key templates (`{event}`,
//! `{pattern_id}`), and the rules the rendered text must meet.

/// A subject, routing-key or stream-key template: text with `{event}` and
/// `{pattern_id}` fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Event,
    PatternId,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err("a `}` without its `{`".to_owned());
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or("a `{` without its `}`")?;
            let field = &after[..close];
            if !rest[..open].is_empty() {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            pieces.push(match field {
                "event" => Piece::Event,
                "pattern_id" => Piece::PatternId,
                other => {
                    return Err(format!(
                        "unknown template field `{{{other}}}`; fields: {{event}}, {{pattern_id}}"
                    ))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if pieces.is_empty() {
            return Err("must not be empty".to_owned());
        }
        Ok(Self(pieces))
    }

    /// The template with its fields filled in: `pattern_id` absent is
    /// `none`, and in a value every character outside `A-Za-z0-9_-.`
    /// becomes `_` (so is a `.` that would leave an empty subject token).
    ///
    /// Rendered text that holds a card number or SSN (a value cleaned of a
    /// letter its digits were glued to, or two values joined by `-` into
    /// one: `{event}-{pattern_id}` of `4111-1111` and `1111-1111`) is
    /// rendered again with every digit of the values as `_`: a subject or
    /// key is plaintext wherever the message goes.
    pub fn render(&self, event: &str, pattern_id: Option<&str>) -> String {
        let out = self.fill(event, pattern_id, false);
        if crate::redact::holds_card_or_ssn(&out) {
            return self.fill(event, pattern_id, true);
        }
        out
    }

    fn fill(&self, event: &str, pattern_id: Option<&str>, no_digits: bool) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Event => push_value(&mut out, event, no_digits),
                Piece::PatternId => {
                    push_value(&mut out, pattern_id.unwrap_or("none"), no_digits);
                }
            }
        }
        out
    }
}

/// A routing key is an AMQP short string.
const ROUTING_KEY_MAX: usize = 255;

impl Template {
    /// The fixed text must make a subject NATS can publish to: tokens
    /// between dots, none empty, no whitespace, no wildcard (`*`, `>`).
    /// Field values never break these rules (see [`Template::render`]).
    pub fn check_nats_subject(&self) -> Result<(), String> {
        let sample = self.render("x", Some("x"));
        if let Some(c) = sample.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "a NATS subject cannot hold {c:?} (whitespace or control)"
            ));
        }
        if sample.split('.').any(str::is_empty) {
            return Err(
                "a NATS subject cannot start or end with `.` or hold `..` (an empty token)"
                    .to_owned(),
            );
        }
        if sample.contains(['*', '>']) {
            return Err(
                "a NATS subject to publish to cannot hold the wildcards `*` or `>`".to_owned(),
            );
        }
        Ok(())
    }

    /// The fixed text alone must leave room in a routing key (255 bytes).
    pub fn check_routing_key(&self) -> Result<(), String> {
        let fixed: usize = self
            .0
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Event | Piece::PatternId => 1,
            })
            .sum();
        if fixed > ROUTING_KEY_MAX {
            return Err(format!(
                "a routing key is at most {ROUTING_KEY_MAX} bytes; this one is {fixed} before its fields"
            ));
        }
        Ok(())
    }
}

/// Writes `value` cleaned for a subject or key: ASCII letters, digits, `_`,
/// `-` and inner single dots kept, anything else `_` (CONTRACT §11); with
/// `no_digits`, digits too.
fn push_value(out: &mut String, value: &str, no_digits: bool) {
    if value.is_empty() {
        out.push('_');
        return;
    }
    let bytes = value.as_bytes();
    for (i, c) in value.char_indices() {
        let dot_ok = i > 0 && i + 1 < bytes.len() && bytes[i - 1] != b'.' && bytes[i + 1] != b'.';
        let keep = (c.is_ascii_alphanumeric() && !(no_digits && c.is_ascii_digit()))
            || c == '_'
            || c == '-'
            || (c == '.' && dot_ok);
        out.push(if keep { c } else { '_' });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_clean_their_fields() {
        let t = Template::parse("imggo.{event}.{pattern_id}").unwrap();
        assert_eq!(t.render("job.completed", None), "imggo.job.completed.none");
        assert_eq!(t.render("a b*>", Some("p/1")), "imggo.a_b__.p_1");
        assert_eq!(t.render(".x..y.", Some("")), "imggo._x__y_._");
        // Digits glued to a letter `_` replaces are no card in the column,
        // but would be one in the subject: they go too.
        assert_eq!(
            t.render("e", Some("4111111111111111é")),
            "imggo.e._________________"
        );
        assert_eq!(t.render("e", Some("123-45-6789ß")), "imggo.e.___-__-_____");
        assert_eq!(
            t.render("e", Some("inv-41111111111é")),
            "imggo.e.inv-41111111111_"
        );
        // Two values joined into a card or an SSN by the template's `-`.
        let joined = Template::parse("x-{event}-{pattern_id}").unwrap();
        assert_eq!(
            joined.render("4111-1111", Some("1111-1111")),
            "x-____-____-____-____"
        );
        assert_eq!(joined.render("123-45", Some("6789")), "x-___-__-____");
        assert_eq!(joined.render("v2-1", Some("7")), "x-v2-1-7");
        assert!(Template::parse("x.{job_id}")
            .unwrap_err()
            .contains("{job_id}"));
        assert!(Template::parse("x.{event").is_err());
        assert!(Template::parse("x}").is_err());
        assert!(Template::parse("").is_err());
    }

    #[test]
    fn nats_subjects_must_be_publishable() {
        for good in [
            "imggo.{event}",
            "{event}.{pattern_id}",
            "a-b_c.{event}x",
            "{event}",
        ] {
            let t = Template::parse(good).unwrap();
            assert_eq!(t.check_nats_subject(), Ok(()), "{good}");
        }
        for bad in [
            "imggo events.{event}",
            "imggo.\t{event}",
            "imggo..{event}",
            ".imggo.{event}",
            "imggo.{event}.",
            "imggo.*",
            "imggo.>",
            "imggo.{event}.a*b",
        ] {
            let t = Template::parse(bad).unwrap();
            assert!(t.check_nats_subject().is_err(), "{bad:?} passed");
        }
        let long = "k".repeat(256);
        assert!(Template::parse(&long).unwrap().check_routing_key().is_err());
        assert_eq!(
            Template::parse("imggo.{event}")
                .unwrap()
                .check_routing_key(),
            Ok(())
        );
    }
}
