//! Log lines written without the `core::fmt` machinery where the result is
//! known to be the same: byte for byte what tracing-subscriber's default text
//! format ([`plain_lines`]) and its flattened JSON format ([`json_lines`])
//! write.
//!
//! Every proxied request writes a line in `serve` and one in the connector
//! (the access log), so the line's cost is paid per request: the default
//! formatters spend it on a `write!` or a serializer call per field, a
//! quoted `Debug` per string and a calendar computation per timestamp. Here
//! strings that need no escape are copied, integers are written with `itoa`,
//! and the date and time to the second are formatted once per second and
//! thread.
//!
//! Lines that need more (colours on a terminal, an event inside a span or
//! converted from the `log` crate; in text an error value with its sources
//! or a field named `log.…`, in JSON a float) are left to the default
//! formatter, so log consumers (a SIEM parsing the access log) see one
//! format whichever path wrote the line.

mod json;
mod text;

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) use json::json_lines;
pub(crate) use text::plain_lines;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Writes an event's whole line, or returns false (and leaves the line in
/// any state) when it has a value the fast path does not write.
type WriteLine = fn(&mut String, &Event<'_>, SystemTime) -> bool;

/// An event formatter: `write_line` for the lines the fast path may write,
/// `fallback` (the tracing-subscriber format it copies) for the others.
#[derive(Debug)]
pub(crate) struct FastLines<E> {
    fallback: E,
    write_line: WriteLine,
}

impl<S, N, E> FormatEvent<S, N> for FastLines<E>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        match fast_line(ctx, &mut writer, event, self.write_line) {
            Some(written) => written,
            None => self.fallback.format_event(ctx, writer, event),
        }
    }
}

/// The most of a line's buffer kept for the next line, in bytes.
const KEPT_CAPACITY: usize = 16 * 1024;

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

/// Writes `event`'s line with `write_line` when the fast path may: `None`
/// when the default formatter must write it (`write_line` returns false for
/// a value it does not write; the line is then discarded).
fn fast_line<S, N>(
    ctx: &FmtContext<'_, S, N>,
    writer: &mut Writer<'_>,
    event: &Event<'_>,
    write_line: WriteLine,
) -> Option<fmt::Result>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    if writer.has_ansi_escapes() || ctx.event_scope().is_some() || from_log_crate(event) {
        return None;
    }
    let written = LINE.with(|line| {
        // A field's `Debug` that logs would come back here: leave that line
        // to the default formatter.
        let Ok(mut line) = line.try_borrow_mut() else {
            return None;
        };
        line.clear();
        #[allow(clippy::disallowed_methods)] // a log line's time is the wall clock's, as the default formatter's
        let now = SystemTime::now();
        let written = write_line(&mut line, event, now).then(|| writer.write_str(&line));
        if line.capacity() > KEPT_CAPACITY {
            // An unusually long line's buffer is not kept for every later one.
            *line = String::new();
        }
        written
    });
    #[cfg(test)]
    if written.is_some() {
        FAST_LINES.with(|n| n.set(n.get() + 1));
    }
    written
}

/// An event made by tracing-log from a `log` record: its target and fields
/// are rewritten by the default formatter.
fn from_log_crate(event: &Event<'_>) -> bool {
    event.metadata().fields().field("log.target").is_some()
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

/// What the tests of both formats share.
#[cfg(test)]
mod testing {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing::Level;
    use tracing_subscriber::fmt::MakeWriter;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    pub(super) struct Captured(Arc<Mutex<Vec<u8>>>);

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
        /// What was written, line by line.
        pub(super) fn lines(&self) -> Vec<String> {
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

    /// Events logged by [`log_all`].
    pub(super) const LOGGED: usize = 15;

    /// Logs a range of events: plain ones of every kind of value, and the
    /// kinds the fast path hands over. The order is what the tests index.
    pub(super) fn log_all() {
        let path = "/a/b c";
        let request_id = String::from("0193a1b2-c3d4");
        // 0
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
        // 1
        tracing::warn!(quoted = "say \"hi\"\\", tab = "a\tb\n", unicode = "grüße ☃", shown = %"a \"b\"\x01", "escapes in values");
        // 2
        tracing::error!(negative = -42i64, yes = true, no = false, big = u128::MAX, "numbers");
        // 3
        tracing::info!(ratio = 0.25f64, "a float");
        // 4
        tracing::info!(peer = ?Peer { name: "dc1", port: 636 }, list = ?[1, 2], "debug values");
        // 5
        tracing::info!(r#type = "ldap", "a raw identifier");
        // 6
        tracing::info!("an \x1b[31mANSI\x1b[0m message with \u{9b}C1 and \x07 bell \"quoted\"");
        // 7
        tracing::info!(message = "a message given as a str \x1b]", after = 1u64);
        // 8
        tracing::info!(only = "fields, no message");
        // 9, 10
        tracing::debug!("debug level");
        tracing::trace!("trace level");
        // 11
        tracing::info!(target: "postern::empty", "");
        // 12
        let e = std::io::Error::other("disk full");
        tracing::warn!(error = &e as &(dyn std::error::Error + 'static), "an error value");
        // 13
        tracing::info!(log.kind = "dotted", after = 2u64, "a field named like the log crate's");
        // 14
        let span = tracing::info_span!("request", method = "GET");
        let _entered = span.enter();
        tracing::info!(inside = 1u64, "inside a span");
    }

    /// The lines of [`log_all`] through a subscriber set up by `setup`.
    pub(super) fn capture(
        setup: impl FnOnce(
            tracing_subscriber::fmt::SubscriberBuilder<
                tracing_subscriber::fmt::format::DefaultFields,
                tracing_subscriber::fmt::format::Format,
                tracing::level_filters::LevelFilter,
                Captured,
            >,
        ) -> Box<dyn tracing::Subscriber + Send + Sync>,
    ) -> Vec<String> {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer(captured.clone());
        tracing::subscriber::with_default(setup(builder), log_all);
        captured.lines()
    }

    /// Whether two timestamps as the formats write them are valid and at
    /// most a few seconds apart (the two runs compared are not at the same
    /// instant).
    pub(super) fn close_in_time(a: &str, b: &str) -> bool {
        let parse = |t: &str| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).unwrap();
        (parse(a) - parse(b)).abs() < time::Duration::seconds(5)
    }

    /// Counts the lines the fast path writes while `f` runs.
    pub(super) fn fast_lines(f: impl FnOnce() -> Vec<String>) -> (Vec<String>, usize) {
        let before = super::FAST_LINES.with(std::cell::Cell::get);
        let lines = f();
        (lines, super::FAST_LINES.with(std::cell::Cell::get) - before)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;

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
