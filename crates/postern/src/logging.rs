//! Structured logs: `RUST_LOG` filters (default `info`), text or JSON lines
//! (see [`crate::log_line`]) on standard error.
//!
//! On a terminal every line is written as it is made. Otherwise (a file, a
//! pipe, journald) a line after a quiet spell ([`FLUSH_AFTER`] without a
//! write) is written at once, and lines that follow it closer than that
//! collect in a buffer that a thread of its own writes out at most
//! [`FLUSH_AFTER`] after the first of them, or at once when it holds
//! [`FLUSH_AT`] bytes; [`flush`] writes what is left before the process ends.
//! Under load that is one `write` for many lines instead of one per line (a
//! proxied request logs a line in `serve` and one in the connector), as
//! nginx's `access_log … buffer= flush=` does.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Buffered bytes that are written out at once, by the thread that logs.
const FLUSH_AT: usize = 64 * 1024;

/// The buffer of a non-terminal standard error, once logging is set up.
static BUFFERED: OnceLock<Arc<LineBuffer>> = OnceLock::new();

/// Installs the global log subscriber.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: logs sent to files or journald stay plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = if terminal {
        Stderr::Direct
    } else {
        let buffer = BUFFERED.get_or_init(LineBuffer::start).clone();
        flush_before_panic_messages();
        Stderr::Buffered(buffer)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(writer);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .event_format(crate::log_line::json_lines())
            .try_init()
    } else {
        builder.event_format(crate::log_line::plain_lines()).try_init()
    };
    crate::open_files::log();
}

/// Writes out the log lines still buffered. Called before the process exits.
pub fn flush() {
    if let Some(buffer) = BUFFERED.get() {
        buffer.flush();
    }
}

/// A panic's message goes to standard error directly: the lines logged before
/// it go first.
fn flush_before_panic_messages() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        flush();
        previous(info);
    }));
}

/// Where log lines go: standard error as they are made, or through the buffer.
enum Stderr {
    Direct,
    Buffered(Arc<LineBuffer>),
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Stderr::Direct => LineWriter::Direct(std::io::stderr()),
            Stderr::Buffered(buffer) => LineWriter::Buffered(buffer),
        }
    }
}

/// The writer of one log line (the formatter writes each line whole).
enum LineWriter<'a> {
    Direct(std::io::Stderr),
    Buffered(&'a LineBuffer),
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        match self {
            LineWriter::Direct(stderr) => stderr.write(bytes),
            LineWriter::Buffered(buffer) => {
                buffer.push(bytes);
                Ok(bytes.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            LineWriter::Direct(stderr) => stderr.flush(),
            // Written by the flushing thread within `FLUSH_AFTER`.
            LineWriter::Buffered(_) => Ok(()),
        }
    }
}

/// Where a batch of lines goes.
type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

/// Lines not written yet, and when the last batch was.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    last_write: Option<std::time::Instant>,
}

/// Log lines waiting to be written to standard error.
struct LineBuffer {
    pending: Mutex<Pending>,
    /// Signalled when `pending` stops being empty.
    not_empty: Condvar,
    /// Held while a batch is taken and written, so batches keep their order.
    output: Mutex<()>,
    sink: Sink,
}

impl LineBuffer {
    /// The buffer and its flushing thread (which sleeps while nothing waits).
    fn start() -> Arc<Self> {
        // Nowhere to report a failure to write the log.
        let buffer = Arc::new(Self::new(Box::new(|batch| {
            let _ = std::io::stderr().lock().write_all(batch);
        })));
        let flusher = buffer.clone();
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flusher.flush_forever());
        if let Err(e) = spawned {
            // Lines still go out once FLUSH_AT bytes collect, and at exit.
            let _ = writeln!(
                std::io::stderr(),
                "log lines are written late: no flushing thread ({e})"
            );
        }
        buffer
    }

    fn new(sink: Sink) -> Self {
        Self {
            pending: Mutex::new(Pending::default()),
            not_empty: Condvar::new(),
            output: Mutex::new(()),
            sink,
        }
    }

    fn push(&self, bytes: &[u8]) {
        let at_once = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            let was_empty = pending.bytes.is_empty();
            let quiet = was_empty && pending.last_write.is_none_or(|at| at.elapsed() >= FLUSH_AFTER);
            pending.bytes.extend_from_slice(bytes);
            let at_once = quiet || pending.bytes.len() >= FLUSH_AT;
            if was_empty && !at_once {
                self.not_empty.notify_one();
            }
            at_once
        };
        if at_once {
            self.flush();
        }
    }

    /// Takes what is pending and writes it out.
    fn flush(&self) {
        let _output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.last_write = Some(std::time::Instant::now());
            std::mem::take(&mut pending.bytes)
        };
        if !batch.is_empty() {
            (self.sink)(&batch);
        }
    }

    fn flush_forever(&self) {
        loop {
            {
                let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                let _waited = self
                    .not_empty
                    .wait_while(pending, |p| p.bytes.is_empty())
                    .unwrap_or_else(PoisonError::into_inner);
            }
            std::thread::sleep(FLUSH_AFTER);
            self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer whose batches are collected, in order.
    fn collecting() -> (LineBuffer, Arc<Mutex<Vec<Vec<u8>>>>) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sink = batches.clone();
        let buffer = LineBuffer::new(Box::new(move |b| sink.lock().unwrap().push(b.to_vec())));
        (buffer, batches)
    }

    #[test]
    fn a_line_after_quiet_goes_at_once_and_the_next_ones_wait_for_the_flush() {
        let (buffer, batches) = collecting();
        buffer.push(b"one\n");
        assert_eq!(
            *batches.lock().unwrap(),
            vec![b"one\n".to_vec()],
            "the first line goes at once"
        );
        buffer.push(b"two\n");
        buffer.push(b"three\n");
        assert_eq!(batches.lock().unwrap().len(), 1, "lines close behind it wait");
        buffer.flush();
        buffer.flush();
        assert_eq!(
            *batches.lock().unwrap(),
            vec![b"one\n".to_vec(), b"two\nthree\n".to_vec()],
            "in order, each once"
        );
    }

    #[test]
    fn a_full_buffer_is_written_by_the_thread_that_filled_it() {
        let (buffer, batches) = collecting();
        buffer.push(b"quiet\n");
        buffer.push(b"first\n");
        buffer.push(&vec![b'x'; FLUSH_AT]);
        let batches = batches.lock().unwrap();
        assert_eq!(batches.len(), 2);
        assert!(batches[1].starts_with(b"first\nxxx"));
        assert_eq!(batches[1].len(), 6 + FLUSH_AT);
    }

    #[test]
    fn the_flushing_thread_writes_within_its_delay() {
        let batches = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = batches.clone();
        let buffer = Arc::new(LineBuffer::new(Box::new(move |b| {
            sink.lock().unwrap().extend_from_slice(b);
        })));
        let flusher = buffer.clone();
        std::thread::spawn(move || flusher.flush_forever());
        buffer.push(b"early\n");
        buffer.push(b"late\n");
        let deadline = std::time::Instant::now() + FLUSH_AFTER * 50;
        while batches.lock().unwrap().len() < b"early\nlate\n".len() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*batches.lock().unwrap(), b"early\nlate\n");
    }
}
