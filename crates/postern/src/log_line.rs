//! Plain-text log lines written without the `core::fmt` machinery where the
//! result is known to be the same: byte for byte what tracing-subscriber's
//! default format (`Full`, `SystemTime`) writes without colours,
//!
//! ```text
//! 2026-12-07T05:16:37.123456Z  INFO postern::access: app request request_id=… app="wiki" status=200
//! ```
//!
//! Every proxied request writes a line in `serve` and one in the connector
//! (the access log), so the line's cost is paid per request: the default
//! formatter spends it on a `write!` per field, a quoted `Debug` per string
//! and a calendar computation per timestamp. Here strings of printable ASCII
//! are copied between quotes, integers are written with `itoa`, and the date
//! and time to the second are formatted once per second and thread.
//!
//! Lines that need more (colours on a terminal, an event inside a span, an
//! error value with its sources, an event converted from the `log` crate)
//! are left to the default formatter, so log consumers (a SIEM parsing the
//! access log) see one format whichever path wrote the line.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime as DefaultTimer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter of text logs: a fast path for plain lines, the default
/// `Full` format for everything else.
#[derive(Debug, Default)]
pub(crate) struct PlainLines {
    fallback: Format<Full, DefaultTimer>,
}

thread_local! {
    /// The line being made (reused: no allocation per line once it has grown).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
    /// The date and time to the second of the last line, and that second.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

#[cfg(test)]
thread_local! {
    /// Lines the fast path wrote on this thread.
    static FAST_LINES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl<S, N> FormatEvent<S, N> for PlainLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let plain = !writer.has_ansi_escapes() && ctx.event_scope().is_none() && !from_log_crate(event);
        if plain {
            let written = LINE.with(|line| {
                // A field's `Debug` that logs would come back here: leave that
                // line to the default formatter.
                let Ok(mut line) = line.try_borrow_mut() else {
                    return None;
                };
                line.clear();
                #[allow(clippy::disallowed_methods)]
                // a log line's time is the wall clock's, as the default formatter's
                let now = SystemTime::now();
                write_line(&mut line, event, now).then(|| writer.write_str(&line))
            });
            if let Some(result) = written {
                #[cfg(test)]
                FAST_LINES.with(|n| n.set(n.get() + 1));
                return result;
            }
        }
        self.fallback.format_event(ctx, writer, event)
    }
}

/// An event made by tracing-log from a `log` record: its target and fields
/// are rewritten by the default formatter.
fn from_log_crate(event: &Event<'_>) -> bool {
    event.metadata().fields().field("log.target").is_some()
}

/// Writes `event`'s whole line, or returns false (and leaves `line` in any
/// state) when it has a value the fast path does not write.
fn write_line(line: &mut String, event: &Event<'_>, now: SystemTime) -> bool {
    if !write_timestamp(line, now) {
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

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC; false for a time outside the years
/// 0 to 9999 (the default formatter writes those otherwise).
fn write_timestamp(line: &mut String, now: SystemTime) -> bool {
    let Ok(since_epoch) = now.duration_since(UNIX_EPOCH) else {
        return false;
    };
    let second = since_epoch.as_secs();
    let to_second = SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let Some(formatted) = date_and_time(second) else {
                return false;
            };
            *cached = (second, formatted);
        }
        line.push_str(&cached.1);
        true
    });
    if !to_second {
        return false;
    }
    line.push('.');
    let micros = since_epoch.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    for _ in digits.len()..6 {
        line.push('0');
    }
    line.push_str(digits);
    line.push('Z');
    true
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch.
fn date_and_time(seconds: u64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    if !(0..=9999).contains(&at.year()) {
        return None;
    }
    let mut s = String::with_capacity(19);
    write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
    .ok()?;
    Some(s)
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
        self.pad();
        let name = field.name();
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
            let mut message = String::new();
            let _ = write!(message, "{value:?}");
            push_escaped(self.line, &message);
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Peer {
        name: &'static str,
        port: u16,
    }

    /// Logs a range of events: plain ones of every kind of value, and the
    /// kinds the fast path hands over.
    fn log_all() {
        let path = "/a/b c";
        let request_id = String::from("0193a1b2-c3d4");
        tracing::info!(
            target: "postern::access",
            request_id = %request_id,
            host = %"wiki.acme.test",
            method = %"GET",
            path = %path,
            app = "wiki",
            user = "-",
            status = 200u16,
            bytes_in = 0u64,
            bytes_out = 1234u64,
            outcome = "complete",
            "app request"
        );
        tracing::warn!(
            quoted = "say \"hi\"\\",
            tab = "a\tb",
            unicode = "grüße ☃",
            "escapes in values"
        );
        tracing::error!(
            negative = -42i64,
            yes = true,
            no = false,
            ratio = 0.25f64,
            big = u128::MAX,
            "numbers"
        );
        tracing::info!(peer = ?Peer { name: "dc1", port: 636 }, list = ?[1, 2], "debug values");
        tracing::info!(r#type = "ldap", "a raw identifier");
        tracing::info!("an \x1b[31mANSI\x1b[0m message with \u{9b}C1 and \x07 bell");
        tracing::info!(message = "a message given as a str \x1b]", after = 1u64);
        tracing::info!(only = "fields, no message");
        tracing::debug!("debug level");
        tracing::trace!("trace level");
        tracing::info!(target: "postern::empty", "");
        let e = std::io::Error::other("disk full");
        tracing::warn!(error = &e as &(dyn std::error::Error + 'static), "an error value");
        let span = tracing::info_span!("request", method = "GET");
        let _entered = span.enter();
        tracing::info!(inside = 1u64, "inside a span");
    }

    fn capture(fast: bool) -> Vec<String> {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(captured.clone());
        if fast {
            tracing::subscriber::with_default(builder.event_format(PlainLines::default()).finish(), log_all);
        } else {
            tracing::subscriber::with_default(builder.finish(), log_all);
        }
        captured.lines()
    }

    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ `
    const TIMESTAMP: usize = 28;

    #[test]
    fn lines_are_the_default_formats_byte_for_byte() {
        let default = capture(false);
        let before = FAST_LINES.with(std::cell::Cell::get);
        let fast = capture(true);
        let by_fast_path = FAST_LINES.with(std::cell::Cell::get) - before;
        assert_eq!(by_fast_path, 11, "all but the error value and the span's line");
        assert_eq!(default.len(), 13, "{default:#?}");
        assert_eq!(fast.len(), default.len(), "{fast:#?}");
        for (fast, default) in fast.iter().zip(&default) {
            assert_eq!(&fast[TIMESTAMP..], &default[TIMESTAMP..]);
            assert_eq!(fast.as_bytes()[TIMESTAMP - 2], b'Z', "{fast}");
            assert_eq!(fast.as_bytes()[TIMESTAMP - 1], b' ', "{fast}");
            assert!(fast[..TIMESTAMP].starts_with(&default[..17]), "{fast} / {default}");
        }
        // The lines the assertion rests on: escapes done, the handed-over kinds there.
        assert!(fast[0].ends_with(
            " INFO postern::access: app request request_id=0193a1b2-c3d4 host=wiki.acme.test method=GET path=/a/b c app=\"wiki\" user=\"-\" status=200 bytes_in=0 bytes_out=1234 outcome=\"complete\""
        ), "{}", fast[0]);
        assert!(
            fast[5].contains("an \\x1b[31mANSI\\x1b[0m message with \\u{9b}C1 and \\x07 bell"),
            "{}",
            fast[5]
        );
        assert!(fast[11].contains("error=disk full"), "{}", fast[11]);
        assert!(fast[12].contains("request{method=\"GET\"}: "), "{}", fast[12]);
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let at = |s: u64, n: u32| {
            let mut line = String::new();
            assert!(write_timestamp(&mut line, UNIX_EPOCH + Duration::new(s, n)));
            line
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(1_700_000_000, 123_456_789), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(1_700_000_000, 7_000), "2023-11-14T22:13:20.000007Z");
        // 2024 was a leap year; the cached second is replaced when it changes.
        assert_eq!(at(1_709_164_799, 999_999_999), "2024-02-28T23:59:59.999999Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00.000000Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59.000000Z");
        assert!(!write_timestamp(
            &mut String::new(),
            UNIX_EPOCH + Duration::from_secs(253_402_300_800)
        ));
    }
}
