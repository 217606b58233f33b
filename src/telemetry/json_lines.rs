//! The JSON log line: one object per event, written straight into the
//! line buffer.
//!
//! Same shape as tracing-subscriber's `json()` with flattened fields and the
//! current span: `{"timestamp","level",<fields>,"target","span":{...}}`.
//! That formatter goes through serde for every line (a map serializer over
//! a write adaptor, and a `format!` allocation per `Display`/`Debug` field);
//! at the access line's rate it cost the receiver ~5 us of its ~40 us per
//! delivery, measured by switching the line off. This one writes the
//! escaped text directly.

use std::fmt::{self, Write as _};

use chrono::{Datelike as _, Timelike as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Formats events as JSON lines (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, chrono::Utc::now())?;
        w.write_str("\",\"level\":\"")?;
        w.write_str(meta.level().as_str())?;
        w.write_char('"')?;

        let mut fields = FieldWriter {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;

        w.write_str(",\"target\":")?;
        write_string(&mut w, meta.target())?;

        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            w.write_str(",\"span\":{")?;
            let ext = span.extensions();
            // The span's fields as its field formatter (JSON) wrote them.
            // Parsed rather than spliced: tracing-subscriber's own JSON
            // formatter found records appended to them malformed (#391).
            match ext.get::<FormattedFields<N>>().map(|f| f.as_str()) {
                Some(text) if !text.is_empty() => {
                    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) {
                        Ok(map) => {
                            for (key, value) in map {
                                write_string(&mut w, &key)?;
                                w.write_char(':')?;
                                w.write_str(&value.to_string())?;
                                w.write_char(',')?;
                            }
                        }
                        Err(_) => w.write_str("\"field_error\":\"unreadable span fields\",")?,
                    }
                }
                _ => {}
            }
            w.write_str("\"name\":")?;
            write_string(&mut w, span.metadata().name())?;
            w.write_char('}')?;
        }
        w.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`.
struct FieldWriter<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl FieldWriter<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = self
            .w
            .write_char(',')
            .and_then(|()| write_string(self.w, field.name()))
            .and_then(|()| self.w.write_char(':'))
            .and_then(|()| value(self.w));
    }
}

impl Visit for FieldWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |w| write_string(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.entry(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; serde_json writes them as null too.
        self.entry(field, |w| {
            if value.is_finite() {
                write!(w, "{value}")
            } else {
                w.write_str("null")
            }
        });
    }
}

/// `text` as a JSON string.
fn write_string(w: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(text)?;
    w.write_char('"')
}

/// Escapes what passes through it as the inside of a JSON string (the
/// same escaping as stored payloads: [`crate::json::escape_str`]).
struct Escaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut result = Ok(());
        crate::json::escape_str(s, |piece| {
            if result.is_ok() {
                result = self.0.write_str(piece);
            }
        });
        result
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-30T09:42:50.123456Z`,
/// without going through `format!`.
fn write_timestamp(w: &mut dyn fmt::Write, now: chrono::DateTime<chrono::Utc>) -> fmt::Result {
    fn digits(buf: &mut [u8], mut n: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    // Years past 9999 would not fit; clamp rather than write garbage.
    digits(&mut buf[0..4], now.year().clamp(0, 9999).unsigned_abs());
    digits(&mut buf[5..7], now.month());
    digits(&mut buf[8..10], now.day());
    digits(&mut buf[11..13], now.hour());
    digits(&mut buf[14..16], now.minute());
    // A leap second shows as :60, as RFC 3339 allows.
    let nanos = now.nanosecond();
    digits(&mut buf[17..19], now.second() + nanos / 1_000_000_000);
    digits(&mut buf[20..26], (nanos % 1_000_000_000) / 1000);
    w.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    /// The lines `f` logs, each parsed as JSON (a line that is not valid
    /// JSON fails the test).
    fn lines(f: impl FnOnce()) -> Vec<Value> {
        let capture = Capture::default();
        let subscriber = super::super::subscriber(
            crate::config::LogFormat::Json,
            tracing_subscriber::EnvFilter::new("trace"),
            capture.clone(),
            false,
        );
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn fields_of_every_kind_are_json_values() {
        let ip: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        let got = lines(|| {
            tracing::warn!(
                target: "imggo_receiver::access",
                text = "plain",
                count = 42u64,
                delta = -7i64,
                ok = true,
                ratio = 0.25f64,
                nan = f64::NAN,
                client_ip = %ip,
                debug = ?("a", 1),
                "request finished"
            );
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], "imggo_receiver::access");
        assert_eq!(line["message"], "request finished");
        assert_eq!(line["text"], "plain");
        assert_eq!(line["count"], 42);
        assert_eq!(line["delta"], -7);
        assert_eq!(line["ok"], true);
        assert_eq!(line["ratio"], 0.25);
        assert_eq!(line["nan"], Value::Null);
        assert_eq!(line["client_ip"], "2001:db8::1");
        assert_eq!(line["debug"], "(\"a\", 1)");
        assert!(line.get("span").is_none());
    }

    #[test]
    fn text_that_needs_escaping_survives_the_round_trip() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} nul \u{0} \u{1f} é 🦀";
        let got = lines(|| {
            tracing::info!(value = nasty, shown = %nasty, "{nasty}");
        });
        assert_eq!(got[0]["value"], nasty);
        assert_eq!(got[0]["shown"], nasty);
        assert_eq!(got[0]["message"], nasty);
    }

    #[test]
    fn the_current_span_and_its_fields_are_included() {
        let got = lines(|| {
            let span = tracing::info_span!("insert_rows", rows = 3u64, job_id = "j-1");
            let _guard = span.enter();
            tracing::error!(error = "boom", "batch could not be committed");
        });
        // The span's creation logs nothing at this format; the event does.
        let line = got
            .iter()
            .find(|l| l["message"] == "batch could not be committed");
        assert_eq!(
            line.unwrap()["span"],
            json!({"name": "insert_rows", "rows": 3, "job_id": "j-1"})
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.006007891Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut out = String::new();
        write_timestamp(&mut out, t).unwrap();
        assert_eq!(out, "2026-01-02T03:04:05.006007Z");
        let got = lines(|| tracing::info!("now"));
        let stamp = got[0]["timestamp"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(stamp).unwrap();
        let age = chrono::Utc::now().signed_duration_since(parsed);
        assert!(age.num_seconds().abs() < 60, "{stamp}");
    }
}
