//! The read buffer both ends of the tunnel use for an upgraded connection (a
//! WebSocket): the front door reads the client's side into it, the connector
//! the backend's side. One definition, so both ends size it alike.

/// Largest read from either side of an upgraded connection.
pub const UPGRADE_CHUNK: usize = 16 * 1024;

/// The read buffer an upgraded connection waits with when quiet: an idle
/// WebSocket waits in a read for as long as it lives.
pub const UPGRADE_QUIET_READ: usize = 512;

/// A read buffer that stays small while its connection is quiet and grows only
/// while data flows: it starts at [`UPGRADE_QUIET_READ`] bytes, doubles after
/// each read that fills it (up to [`UPGRADE_CHUNK`]), and goes back to the
/// quiet size after a read that does not (the socket was drained, so the next
/// read is likely to wait).
#[derive(Debug)]
pub struct UpgradeReadBuffer(Vec<u8>);

impl Default for UpgradeReadBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl UpgradeReadBuffer {
    /// A buffer of the quiet size.
    pub fn new() -> Self {
        Self(vec![0; UPGRADE_QUIET_READ])
    }

    /// Where the next read goes.
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.0
    }

    /// The memory the buffer holds, in bytes.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// Sizes the buffer for the next read, after one of `n` bytes.
    pub fn after_read(&mut self, n: usize) {
        let len = self.0.len();
        if n >= len && len < UPGRADE_CHUNK {
            self.0.resize((len * 2).min(UPGRADE_CHUNK), 0);
        } else if n < len && len > UPGRADE_QUIET_READ {
            self.0.truncate(UPGRADE_QUIET_READ);
            self.0.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_grows_while_reads_fill_it_and_shrinks_when_quiet() {
        let mut buf = UpgradeReadBuffer::new();
        assert_eq!(buf.space().len(), UPGRADE_QUIET_READ);
        // A burst: every read fills the buffer, which doubles up to the cap.
        let mut sizes = Vec::new();
        for _ in 0..10 {
            let n = buf.space().len();
            buf.after_read(n);
            sizes.push(buf.space().len());
        }
        assert_eq!(sizes[..6], [1024, 2048, 4096, 8192, 16384, 16384]);
        assert!(sizes.iter().all(|s| *s <= UPGRADE_CHUNK));
        // The burst ends with a short read: the connection waits with the
        // small buffer again, and its memory goes back.
        buf.after_read(100);
        assert_eq!(buf.space().len(), UPGRADE_QUIET_READ);
        assert!(buf.capacity() < 2 * UPGRADE_QUIET_READ, "{}", buf.capacity());
        // Small messages on a quiet connection keep it small.
        buf.after_read(3);
        assert_eq!(buf.space().len(), UPGRADE_QUIET_READ);
        assert!(buf.capacity() < 2 * UPGRADE_QUIET_READ, "{}", buf.capacity());
    }
}
