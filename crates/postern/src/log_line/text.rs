//! Text lines as tracing-subscriber's default format (`Full`, `SystemTime`)
//! writes them without colours:
//!
//! ```text
//! 2026-12-07T05:16:37.123456Z  INFO postern::access: app request request_id=… app="wiki" status=200
//! ```

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level};
use tracing_subscriber::fmt::format::{Format, Full};
use tracing_subscriber::fmt::time::SystemTime as DefaultTimer;

use super::FastLines;

/// The event formatter of text logs: a fast path for plain lines, the default
/// `Full` format for everything else.
pub(crate) fn plain_lines() -> FastLines<Format<Full, DefaultTimer>> {
    FastLines {
        fallback: Format::default(),
        write_line,
    }
}

/// Writes `event`'s whole line, or returns false (and leaves `line` in any
/// state) when it has a value the fast path does not write.
fn write_line(line: &mut String, event: &Event<'_>, now: SystemTime) -> bool {
    if !super::write_timestamp(line, now) {
        return false;
    }
    line.push(' ');
    line.push_str(level(event.metadata().level()));
    line.push(' ');
    line.push_str(event.metadata().target());
    line.push_str(": ");
    let mut fields = Fields {
        line,
        first: true,
        unsupported: false,
    };
    event.record(&mut fields);
    if fields.unsupported {
        return false;
    }
    line.push('\n');
    true
}

/// The level padded to five characters, right-aligned.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// Writes fields as the default formatter's visitor does: `name=value`
/// separated by spaces, the message first and without a name.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// Set by a value the fast path leaves to the default formatter.
    unsupported: bool,
}

impl Fields<'_> {
    /// The separator and `name=` (without a raw identifier's `r#`).
    fn name(&mut self, field: &Field) {
        let name = field.name();
        if name.starts_with("log.") {
            // Left out by the default formatter (the `log` crate's metadata).
            self.unsupported = true;
        }
        self.pad();
        self.line.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.line.push('=');
    }

    fn pad(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.line.push(' ');
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.pad();
            push_escaped(self.line, value);
            return;
        }
        self.name(field);
        if value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // What `Debug` writes for a string that needs no escape.
            self.line.push('"');
            self.line.push_str(value);
            self.line.push('"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
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

    fn record_error(&mut self, _field: &Field, _value: &(dyn std::error::Error + 'static)) {
        // Written with its sources and escapes by the default formatter.
        self.unsupported = true;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.pad();
            // Written in place; taken out and escaped only when it needs it.
            let start = self.line.len();
            let _ = write!(self.line, "{value:?}");
            if self.line[start..].chars().any(terminal_control) {
                let message = self.line.split_off(start);
                push_escaped(self.line, &message);
            }
            return;
        }
        self.name(field);
        let _ = write!(self.line, "{value:?}");
    }
}

/// A message with the characters a terminal could act on written as escapes,
/// as the default formatter writes it (it must not be able to forge lines or
/// move the cursor on whoever reads the log).
fn push_escaped(line: &mut String, message: &str) {
    if !message.chars().any(terminal_control) {
        line.push_str(message);
        return;
    }
    for ch in message.chars() {
        match ch {
            '\x1b' => line.push_str("\\x1b"),
            '\x07' => line.push_str("\\x07"),
            '\x08' => line.push_str("\\x08"),
            '\x0c' => line.push_str("\\x0c"),
            '\x7f' => line.push_str("\\x7f"),
            '\u{80}'..='\u{9f}' => {
                let _ = write!(line, "\\u{{{:x}}}", u32::from(ch));
            }
            ch => line.push(ch),
        }
    }
}

/// A character [`push_escaped`] writes as an escape.
fn terminal_control(ch: char) -> bool {
    matches!(ch, '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::testing::{LOGGED, capture, close_in_time, fast_lines};
    use super::*;

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ `
    const TIMESTAMP: usize = 28;

    #[test]
    fn lines_are_the_default_formats_byte_for_byte() {
        let default = capture(|b| Box::new(b.finish()));
        let (fast, by_fast_path) = fast_lines(|| capture(|b| Box::new(b.event_format(plain_lines()).finish())));
        assert_eq!(
            by_fast_path,
            LOGGED - 3,
            "all but the error value's, the `log.` field's and the span's line"
        );
        assert_eq!(default.len(), LOGGED, "{default:#?}");
        assert_eq!(fast.len(), default.len(), "{fast:#?}");
        for (fast, default) in fast.iter().zip(&default) {
            assert_eq!(&fast[TIMESTAMP..], &default[TIMESTAMP..]);
            assert_eq!(fast.as_bytes()[TIMESTAMP - 2], b'Z', "{fast}");
            assert_eq!(fast.as_bytes()[TIMESTAMP - 1], b' ', "{fast}");
            assert!(
                close_in_time(&fast[..TIMESTAMP - 1], &default[..TIMESTAMP - 1]),
                "{fast} / {default}"
            );
        }
        // The lines the assertion rests on: escapes done, the handed-over kinds there.
        assert!(fast[0].ends_with(
            " INFO postern::access: app request request_id=0193a1b2-c3d4 host=wiki.acme.test method=GET path=/a/b c app=\"wiki\" user=\"-\" status=200 bytes_in=0 bytes_out=1234 outcome=\"complete\""
        ), "{}", fast[0]);
        assert!(fast[1].contains(r#"quoted="say \"hi\"\\" tab="a\tb\n""#), "{}", fast[1]);
        assert!(fast[3].ends_with("a float ratio=0.25"), "{}", fast[3]);
        assert!(
            fast[6].contains("an \\x1b[31mANSI\\x1b[0m message with \\u{9b}C1 and \\x07 bell"),
            "{}",
            fast[6]
        );
        assert!(fast[12].contains("error=disk full"), "{}", fast[12]);
        assert!(
            fast[13].ends_with("a field named like the log crate's after=2"),
            "{}",
            fast[13]
        );
        assert!(fast[14].contains("request{method=\"GET\"}: "), "{}", fast[14]);
    }
}
