//! [`BatchedWrites`]: small writes gathered and sent together once the task
//! has let the others run.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A write at least this long goes straight to the stream (after what is
/// gathered), without a copy.
pub const BATCH_DIRECT: usize = 16 * 1024;

/// The most [`BatchedWrites`] gathers before it writes.
pub const BATCH_LIMIT: usize = 64 * 1024;

/// Put-offs in a row that gathered nothing more before flushes go out at
/// once for a while.
const UNPAID_LIMIT: u8 = 2;

/// Flushes written at once after [`UNPAID_LIMIT`] put-offs that gathered
/// nothing; then a put-off is tried again.
const AT_ONCE_AFTER_UNPAID: u8 = 16;

/// A stream whose small writes are gathered and sent in one write to `inner`.
///
/// An HTTP/2 connection flushes after every response whose body is more than a
/// few hundred bytes (the body is a frame of its own, and each such frame ends
/// in a flush), so a tunnel carrying many small answers at once costs one TLS
/// record and one `writev` per answer, and a read on the other side for each.
/// Here the first flush of a batch is put off: the bytes stay gathered, the
/// flush reports success, and the task is woken again after the runtime has
/// run its other ready tasks and polled for I/O (`tokio::task::yield_now`).
/// The answers those tasks produce meanwhile join the batch; the next flush
/// after that wake writes all of it. The wait is one turn of the scheduler,
/// never a timer, and a batch is written at once when it reaches
/// [`BATCH_LIMIT`] or on shutdown. When two put-offs in a row gathered
/// nothing more (one writer alone, such as the window updates a bulk
/// transfer's receiver sends), the next 16 flushes are written at once, unless
/// two of them come within one turn (a burst of writers: then the batch waits
/// again at once).
///
/// A write of [`BATCH_DIRECT`] bytes or more (a bulk transfer's frames) goes
/// straight through after what is gathered, with no copy. Nothing is held
/// between batches: an idle stream keeps no buffer.
///
/// The caller must flush (or shut down) and poll again when woken, as every
/// user of `AsyncWrite` does; bytes accepted are written on a later flush, not
/// before.
#[derive(Debug)]
pub struct BatchedWrites<S> {
    inner: S,
    /// Accepted bytes not yet written to `inner`.
    gathered: BytesMut,
    /// Set while a flush is put off: fires when the task is woken by it.
    put_off: Option<Arc<TurnPassed>>,
    /// The turn has passed: write everything on the next flush.
    due: bool,
    /// What was gathered when the flush was put off.
    gathered_at_put_off: usize,
    /// Put-offs in a row during which nothing joined the batch.
    unpaid: u8,
    /// Flushes still to be written at once, without a put-off.
    at_once: u8,
    /// Set by a flush written at once: fires once the runtime has run its
    /// other ready tasks. A second flush before then is a burst of writers,
    /// and ends the flushes at once.
    written_at_once: Option<Arc<TurnPassed>>,
}

impl<S> BatchedWrites<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            gathered: BytesMut::new(),
            put_off: None,
            due: false,
            gathered_at_put_off: 0,
            unpaid: 0,
            at_once: 0,
            written_at_once: None,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes accepted and not yet written to the stream.
    pub fn gathered(&self) -> usize {
        self.gathered.len()
    }

    /// The memory the batch holds, in bytes (0 between batches).
    pub fn capacity(&self) -> usize {
        self.gathered.capacity()
    }
}

impl<S: AsyncWrite + Unpin> BatchedWrites<S> {
    /// Writes everything gathered, then gives the buffer back.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.gathered.advance(n);
        }
        self.gathered = BytesMut::new();
        self.put_off = None;
        self.due = false;
        Poll::Ready(Ok(()))
    }

    /// Notes whether the put-off that just ended gathered anything more; after
    /// [`UNPAID_LIMIT`] in a row that did not, the next [`AT_ONCE_AFTER_UNPAID`]
    /// flushes are written at once (a stream with one writer, such as the window
    /// updates of a bulk transfer, gains nothing from waiting and would only
    /// delay its peer).
    fn count_put_off(&mut self) {
        if self.gathered.len() > self.gathered_at_put_off {
            self.unpaid = 0;
            return;
        }
        self.unpaid += 1;
        if self.unpaid >= UNPAID_LIMIT {
            self.unpaid = 0;
            self.at_once = AT_ONCE_AFTER_UNPAID;
        }
    }

    /// Whether the last flush written at once was in this same turn of the
    /// scheduler: other writers are at work, and waiting pays again.
    fn burst(&self) -> bool {
        self.written_at_once
            .as_ref()
            .is_some_and(|turn| !turn.passed.load(Ordering::Acquire))
    }

    /// Takes `len` more bytes into the batch, writing the batch first if they
    /// would not fit.
    fn poll_room_for(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<()>> {
        if self.gathered.len() + len > BATCH_LIMIT {
            std::task::ready!(self.poll_write_gathered(cx))?;
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve(BATCH_DIRECT.max(len));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.len() >= BATCH_DIRECT {
            std::task::ready!(this.poll_write_gathered(cx))?;
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        std::task::ready!(this.poll_room_for(cx, data.len()))?;
        this.gathered.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total >= BATCH_DIRECT {
            std::task::ready!(this.poll_write_gathered(cx))?;
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        std::task::ready!(this.poll_room_for(cx, total))?;
        for buf in bufs {
            this.gathered.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.gathered.is_empty() && !this.due {
            match &this.put_off {
                None if this.at_once > 0 && !this.burst() => {
                    this.at_once -= 1;
                    this.written_at_once = Some(put_off_one_turn(Waker::noop()));
                }
                None => {
                    this.at_once = 0;
                    this.put_off = Some(put_off_one_turn(cx.waker()));
                    this.gathered_at_put_off = this.gathered.len();
                    return Poll::Ready(Ok(()));
                }
                Some(turn) if !turn.passed.load(Ordering::Acquire) => return Poll::Ready(Ok(())),
                Some(_) => {
                    this.due = true;
                    this.count_put_off();
                }
            }
        }
        std::task::ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_write_gathered(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for BatchedWrites<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Wakes a task once the runtime has run its other ready tasks, and says so.
#[derive(Debug)]
struct TurnPassed {
    task: Waker,
    passed: AtomicBool,
}

impl Wake for TurnPassed {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.passed.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Arranges for `task` to be woken after the runtime's other ready tasks
/// (tokio defers a yielding task's wake until it has polled for I/O; outside a
/// runtime the wake comes at once).
fn put_off_one_turn(task: &Waker) -> Arc<TurnPassed> {
    let turn = Arc::new(TurnPassed {
        task: task.clone(),
        passed: AtomicBool::new(false),
    });
    let waker = Waker::from(turn.clone());
    let mut yielding = std::pin::pin!(tokio::task::yield_now());
    // The first poll registers the deferred wake and is always pending; the
    // future is dropped, the registered wake stays.
    let _ = yielding.as_mut().poll(&mut Context::from_waker(&waker));
    turn
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the writes and flushes that reach the stream.
    struct Counted<S> {
        inner: S,
        writes: usize,
        flushes: usize,
    }

    impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, data);
            if polled.is_ready() {
                self.writes += 1;
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    fn counted<S>(inner: S) -> BatchedWrites<Counted<S>> {
        BatchedWrites::new(Counted {
            inner,
            writes: 0,
            flushes: 0,
        })
    }

    #[tokio::test]
    async fn flushes_within_one_turn_become_one_write() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        for i in 0..10u8 {
            batched.write_all(&[i; 1000]).await.expect("write");
            batched.flush().await.expect("flush");
        }
        assert_eq!(batched.get_ref().writes, 0, "written before the turn passed");
        assert_eq!(batched.gathered(), 10_000);
        // The task was woken after the turn: the next flush writes it all.
        tokio::task::yield_now().await;
        batched.flush().await.expect("flush");
        assert_eq!(batched.get_ref().writes, 1);
        assert_eq!(batched.get_ref().flushes, 1);
        assert_eq!(batched.capacity(), 0, "the batch's buffer outlived it");
        let mut got = vec![0u8; 10_000];
        peer.read_exact(&mut got).await.expect("read");
        for (i, chunk) in got.chunks(1000).enumerate() {
            assert!(chunk.iter().all(|b| usize::from(*b) == i), "bytes out of order");
        }
    }

    #[tokio::test]
    async fn a_lone_writer_stops_waiting_after_two_put_offs_that_gained_nothing() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        // Two batches of one write each: put off, and nothing joined them.
        for _ in 0..UNPAID_LIMIT {
            batched.write_all(b"update").await.expect("write");
            batched.flush().await.expect("flush");
            assert_eq!(batched.gathered(), 6, "put off");
            tokio::task::yield_now().await;
            batched.flush().await.expect("flush");
            assert_eq!(batched.gathered(), 0);
        }
        // Now flushes go at once, for a while (a lone writer's, a turn apart).
        for _ in 0..AT_ONCE_AFTER_UNPAID {
            tokio::task::yield_now().await;
            batched.write_all(b"update").await.expect("write");
            batched.flush().await.expect("flush");
            assert_eq!(batched.gathered(), 0, "waited again too soon");
        }
        tokio::task::yield_now().await;
        // Then a put-off is tried again; one that gains keeps them coming.
        batched.write_all(b"update").await.expect("write");
        batched.flush().await.expect("flush");
        assert_eq!(batched.gathered(), 6, "never put off again");
        batched.write_all(b"answer").await.expect("write");
        tokio::task::yield_now().await;
        batched.flush().await.expect("flush");
        batched.write_all(b"update").await.expect("write");
        batched.flush().await.expect("flush");
        assert_eq!(batched.gathered(), 6, "a put-off that paid stopped the next");
        batched.shutdown().await.expect("shutdown");
        let expected = 2 + AT_ONCE_AFTER_UNPAID as usize + 3;
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), expected * 6);
    }

    #[tokio::test]
    async fn a_burst_ends_the_flushes_at_once() {
        let (_peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        for _ in 0..UNPAID_LIMIT {
            batched.write_all(b"update").await.expect("write");
            batched.flush().await.expect("flush");
            tokio::task::yield_now().await;
            batched.flush().await.expect("flush");
        }
        // Flushes at once now; two in one turn are a burst: the second waits.
        batched.write_all(b"request").await.expect("write");
        batched.flush().await.expect("flush");
        assert_eq!(batched.gathered(), 0);
        batched.write_all(b"request").await.expect("write");
        batched.flush().await.expect("flush");
        assert_eq!(batched.gathered(), 7, "a burst was written piece by piece");
    }

    #[tokio::test]
    async fn a_flush_put_off_wakes_the_task() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let mut batched = BatchedWrites::new(near);
            batched.write_all(b"hello").await.expect("write");
            batched.flush().await.expect("flush");
            // Like a connection waiting for its peer: poll again only when woken.
            std::future::poll_fn(|cx| match Pin::new(&mut batched).poll_flush(cx) {
                Poll::Ready(Ok(())) if batched.gathered() == 0 => Poll::Ready(()),
                Poll::Ready(r) => {
                    r.expect("flush");
                    Poll::Pending
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
            batched
        });
        let mut got = [0u8; 5];
        tokio::time::timeout(std::time::Duration::from_secs(5), peer.read_exact(&mut got))
            .await
            .expect("the put-off flush never happened")
            .expect("read");
        assert_eq!(&got, b"hello");
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn large_writes_go_straight_through_after_the_batch() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        batched.write_all(b"head").await.expect("write");
        let big = vec![9u8; BATCH_DIRECT];
        let n = batched.write(&big).await.expect("write");
        assert_eq!(n, BATCH_DIRECT);
        assert_eq!(batched.get_ref().writes, 2, "the batch, then the large write");
        assert_eq!(batched.capacity(), 0);
        let mut got = vec![0u8; 4 + BATCH_DIRECT];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..4], b"head");
        assert!(got[4..].iter().all(|b| *b == 9));
    }

    #[tokio::test]
    async fn a_full_batch_is_written_at_once_and_shutdown_writes_the_rest() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        let piece = vec![3u8; 4000];
        let mut sent = 0;
        while sent + piece.len() <= BATCH_LIMIT {
            batched.write_all(&piece).await.expect("write");
            sent += piece.len();
        }
        assert_eq!(batched.get_ref().writes, 0);
        batched.write_all(&piece).await.expect("write");
        assert_eq!(batched.get_ref().writes, 1, "a full batch waited");
        assert_eq!(batched.gathered(), piece.len());
        batched.shutdown().await.expect("shutdown");
        assert_eq!(batched.gathered(), 0);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), sent + piece.len());
    }

    #[tokio::test]
    async fn vectored_writes_are_gathered_whole() {
        let (mut peer, near) = tokio::io::duplex(1 << 20);
        let mut batched = counted(near);
        let slices = [io::IoSlice::new(b"frame head "), io::IoSlice::new(b"and body")];
        let n = std::future::poll_fn(|cx| Pin::new(&mut batched).poll_write_vectored(cx, &slices))
            .await
            .expect("write");
        assert_eq!(n, 19);
        batched.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, b"frame head and body");
    }
}
