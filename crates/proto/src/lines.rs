//! Newline-delimited JSON arriving in chunks of any size, as on the agents'
//! queue (frames from the service, results from the agent). Lines are gathered
//! in a bounded buffer (a line over the limit is an error: neither side sends
//! one, so the stream is broken or hostile), a line that does not decode is
//! skipped with a description that never holds its content (a newer peer may
//! send frame types this one does not know), and nothing is buffered beyond the
//! current line.

use serde::de::DeserializeOwned;

/// Longest line accepted, newline excluded (both directions of the queue).
pub const MAX_LINE: usize = 64 * 1024;

/// One line, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    /// A frame.
    Frame(T),
    /// A line that is not a frame; skipped. Holds a description of the JSON error
    /// (its category and position, never the line's content).
    Skipped(String),
}

/// A line longer than [`MAX_LINE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a line is longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Splits chunks into lines and lines into frames.
#[derive(Debug)]
pub struct LineDecoder {
    partial: Vec<u8>,
    max_line: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        Self::new(MAX_LINE)
    }
}

impl LineDecoder {
    /// A decoder refusing lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_line,
        }
    }

    /// Feeds one chunk; appends every line it completes to `out`. Blank lines are
    /// ignored; a trailing `\r` is dropped.
    pub fn push<T: DeserializeOwned>(
        &mut self,
        mut chunk: &[u8],
        out: &mut Vec<Decoded<T>>,
    ) -> Result<(), LineTooLong> {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            let (head, rest) = chunk.split_at(end);
            chunk = rest.get(1..).unwrap_or_default();
            if self.partial.len() + head.len() > self.max_line {
                return Err(LineTooLong);
            }
            if self.partial.is_empty() {
                decode_line(head, out);
            } else {
                self.partial.extend_from_slice(head);
                let line = std::mem::take(&mut self.partial);
                decode_line(&line, out);
            }
        }
        if self.partial.len() + chunk.len() > self.max_line {
            return Err(LineTooLong);
        }
        self.partial.extend_from_slice(chunk);
        Ok(())
    }
}

fn decode_line<T: DeserializeOwned>(line: &[u8], out: &mut Vec<Decoded<T>>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    out.push(match serde_json::from_slice::<T>(line) {
        Ok(frame) => Decoded::Frame(frame),
        Err(e) => Decoded::Skipped(format!(
            "{:?} error at line {} column {} of a {}-byte line",
            e.classify(),
            e.line(),
            e.column(),
            line.len()
        )),
    });
}
