//! JSON lines as tracing-subscriber's JSON format with the event's fields
//! flattened writes them (`log_format = "json"`):
//!
//! ```text
//! {"timestamp":"2026-12-07T05:16:37.123456Z","level":"INFO","message":"app request","request_id":"…","status":200,"target":"postern::access"}
//! ```

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};
use tracing_subscriber::fmt::format::{Format, Json};
use tracing_subscriber::fmt::time::SystemTime as DefaultTimer;

use super::FastLines;

/// The event formatter of JSON logs: a fast path for plain lines, the
/// default flattened JSON format for everything else.
pub(crate) fn json_lines() -> FastLines<Format<Json, DefaultTimer>> {
    FastLines {
        fallback: Format::default().json().flatten_event(true),
        write_line,
    }
}

/// Writes `event`'s whole line, or returns false (and leaves `line` in any
/// state) when it has a value the fast path does not write.
fn write_line(line: &mut String, event: &Event<'_>, now: SystemTime) -> bool {
    line.push_str("{\"timestamp\":\"");
    if !super::write_timestamp(line, now) {
        return false;
    }
    line.push_str("\",\"level\":\"");
    line.push_str(level(event.metadata().level()));
    line.push('"');
    let mut fields = Fields {
        line,
        unsupported: false,
    };
    event.record(&mut fields);
    if fields.unsupported {
        return false;
    }
    line.push_str(",\"target\":");
    push_string(line, event.metadata().target());
    line.push_str("}\n");
    true
}

fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// Whether serde_json writes this byte of a string as an escape.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn push_string(line: &mut String, s: &str) {
    if s.bytes().any(escaped) {
        // Cannot fail for a string.
        line.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        line.push('"');
        line.push_str(s);
        line.push('"');
    }
}

/// Writes fields as the flattening JSON visitor does: `,"name":value` each,
/// in the order recorded, numbers and booleans bare, everything else as the
/// string of its `Debug` (which for `%` values is their `Display`).
struct Fields<'a> {
    line: &'a mut String,
    /// Set by a value the fast path leaves to the default formatter.
    unsupported: bool,
}

impl Fields<'_> {
    fn name(&mut self, field: &Field) {
        self.line.push(',');
        push_string(self.line, field.name());
        self.line.push(':');
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        push_string(self.line, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, _field: &Field, _value: f64) {
        // serde_json's float format (and `null` for what JSON cannot hold).
        self.unsupported = true;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.name(field);
        self.line.push('"');
        let start = self.line.len();
        let _ = write!(self.line, "{value:?}");
        if self.line.as_bytes()[start..].iter().any(|&b| escaped(b)) {
            let raw = self.line.split_off(start);
            self.line.pop();
            push_string(self.line, &raw);
        } else {
            self.line.push('"');
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{LOGGED, capture, close_in_time, fast_lines};
    use super::*;

    /// Where the timestamp's value starts and ends in a line.
    const TIMESTAMP: std::ops::Range<usize> = 14..41;

    #[test]
    fn lines_are_the_default_formats_byte_for_byte() {
        let default = capture(|b| Box::new(b.json().flatten_event(true).finish()));
        let (fast, by_fast_path) =
            fast_lines(|| capture(|b| Box::new(b.json().flatten_event(true).event_format(json_lines()).finish())));
        assert_eq!(by_fast_path, LOGGED - 2, "all but the float's and the span's line");
        assert_eq!(default.len(), LOGGED, "{default:#?}");
        assert_eq!(fast.len(), default.len(), "{fast:#?}");
        for (fast, default) in fast.iter().zip(&default) {
            assert_eq!(&fast[..TIMESTAMP.start], &default[..TIMESTAMP.start]);
            assert_eq!(&fast[TIMESTAMP.end..], &default[TIMESTAMP.end..]);
            assert_eq!(fast.as_bytes()[TIMESTAMP.end - 1], b'Z', "{fast}");
            let value: serde_json::Value = serde_json::from_str(fast).unwrap();
            let timestamp = value["timestamp"].as_str().unwrap();
            assert!(close_in_time(timestamp, &default[TIMESTAMP]), "{fast} / {default}");
        }
        // The lines the assertion rests on: escapes done, the handed-over kinds there.
        assert!(fast[0].ends_with(
            r#","level":"INFO","message":"app request","request_id":"0193a1b2-c3d4","host":"wiki.acme.test","method":"GET","path":"/a/b c","app":"wiki","user":"-","status":200,"bytes_in":0,"bytes_out":1234,"outcome":"complete","target":"postern::access"}"#
        ), "{}", fast[0]);
        assert!(fast[1].contains(r#""tab":"a\tb\n""#), "{}", fast[1]);
        assert!(fast[1].contains(r#""shown":"a \"b\"\u0001""#), "{}", fast[1]);
        assert!(fast[6].contains(r#""message":"an \u001b[31mANSI"#), "{}", fast[6]);
        assert!(fast[12].contains(r#""error":"disk full""#), "{}", fast[12]);
        assert!(fast[13].contains(r#""log.kind":"dotted","after":2"#), "{}", fast[13]);
        assert!(fast[14].contains(r#""span":{"#), "{}", fast[14]);
    }
}
