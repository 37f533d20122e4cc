//! Socket wrappers shared by the service and its on-prem components:
//! [`ReadAhead`], [`ReadsObserved`] and [`BatchedWrites`].
//!
//! [`ReadAhead`] goes between a TCP socket and the TLS layer above it. rustls
//! asks its transport for at most 4 KiB per read (and sizes its buffer up one
//! 4 KiB step at a time), so a 16 KiB TLS record takes four or five `recvfrom`
//! calls when read straight from the socket. Under a bulk transfer through the
//! tunnel that was most of the system calls of both ends. `ReadAhead` reads up
//! to [`READ_AHEAD_CHUNK`] bytes at once and hands them out as asked, and it
//! holds no buffer while the socket has nothing to read, so ten thousand idle
//! connections cost nothing extra.

mod batched;

pub use batched::{BATCH_DIRECT, BATCH_LIMIT, BatchedWrites};

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most [`ReadAhead`] reads from its socket at once.
pub const READ_AHEAD_CHUNK: usize = 64 * 1024;

/// A socket read in chunks of up to [`READ_AHEAD_CHUNK`] bytes while data
/// arrives faster than the reader above asks for it; writes pass straight
/// through.
///
/// A read that fills what the reader asked for means more is likely waiting:
/// the next reads go through the chunk, one `recvfrom` for many of the
/// reader's. A read that does not fill it (small requests and answers) goes
/// straight into the reader's buffer, with no copy and no allocation. The
/// chunk is released as soon as it is drained after a short read, and
/// whenever the socket has nothing more (`Pending`), an error or the end of
/// the stream: a connection waiting for data holds none.
#[derive(Debug)]
pub struct ReadAhead<S> {
    inner: S,
    /// Bytes read from `inner` and not handed on yet.
    ahead: BytesMut,
    /// The last read from `inner` filled all the space it was given.
    bulk: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            ahead: BytesMut::new(),
            bulk: false,
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the socket that the reader has not taken yet.
    pub fn buffered(&self) -> usize {
        self.ahead.len()
    }

    /// The memory the read-ahead buffer holds, in bytes (0 while waiting).
    pub fn capacity(&self) -> usize {
        self.ahead.capacity()
    }

    /// Gives the chunk back (nothing is buffered) and reads straight again.
    fn release(&mut self) {
        self.ahead = BytesMut::new();
        self.bulk = false;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.ahead.is_empty() {
            if !this.bulk || out.remaining() >= READ_AHEAD_CHUNK {
                let asked = out.remaining();
                let polled = Pin::new(&mut this.inner).poll_read(cx, out);
                this.bulk = matches!(polled, Poll::Ready(Ok(()))) && out.remaining() == 0 && asked < READ_AHEAD_CHUNK;
                if !this.bulk {
                    this.ahead = BytesMut::new();
                }
                return polled;
            }
            // Reuses the allocation still held (nothing is buffered, so nothing moves).
            let asked = out.remaining();
            this.ahead.clear();
            this.ahead.reserve(READ_AHEAD_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.ahead) {
                Poll::Ready(Ok(n)) if n > 0 => this.bulk = n > asked,
                Poll::Ready(Ok(_)) => {
                    this.release();
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => {
                    this.release();
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    this.release();
                    return Poll::Pending;
                }
            }
        }
        let n = out.remaining().min(this.ahead.len());
        out.put_slice(&this.ahead[..n]);
        this.ahead.advance(n);
        if this.ahead.is_empty() && !this.bulk {
            this.release();
        }
        Poll::Ready(Ok(()))
    }
}

/// What a [`ReadsObserved`] stream tells when bytes arrive: the deadlines of
/// a connection that must know when its peer last sent something.
pub trait ReadObserver {
    /// Bytes were read from the stream just now.
    fn bytes_read(&self);
}

impl<T: ReadObserver + ?Sized> ReadObserver for std::sync::Arc<T> {
    fn bytes_read(&self) {
        (**self).bytes_read();
    }
}

/// A stream that tells its observer each time a read brings bytes; writes
/// pass straight through.
#[derive(Debug)]
pub struct ReadsObserved<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> ReadsObserved<S, O> {
    /// Wraps `inner`, telling `observer` of each read that brings bytes.
    pub fn new(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }
}

impl<S: AsyncRead + Unpin, O: ReadObserver + Unpin> AsyncRead for ReadsObserved<S, O> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.observer.bytes_read();
        }
        polled
    }
}

/// Writes of a wrapper go straight to its `inner` stream.
macro_rules! writes_pass_through {
    ($($wrapper:tt)*) => {
        impl $($wrapper)* {
            fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write(cx, data)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}

writes_pass_through!(<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S>);
writes_pass_through!(<S: AsyncWrite + Unpin, O: Unpin> AsyncWrite for ReadsObserved<S, O>);

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Counts the reads that reach the socket.
    struct Counted<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if polled.is_ready() {
                self.reads += 1;
            }
            polled
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_large_read_in_order() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.expect("write");
        drop(client);
        let mut reader = ReadAhead::new(Counted {
            inner: server,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = reader.read(&mut piece).await.expect("read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&piece[..n]);
        }
        assert_eq!(got, sent, "bytes out of order or lost");
        // 200,000 bytes in 4 KiB pieces: 49 reads above; below, one straight
        // read, four chunks at most and the end.
        let below = reader.get_ref().reads;
        assert!(below <= 6, "{below} reads reached the socket");
        assert_eq!(reader.capacity(), 0, "the buffer outlived the stream");
    }

    #[tokio::test]
    async fn a_waiting_read_holds_no_buffer() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut reader = ReadAhead::new(server);
        client.write_all(b"hello").await.expect("write");
        let mut piece = [0u8; 3];
        assert_eq!(reader.read(&mut piece).await.expect("read"), 3);
        assert_eq!(reader.read(&mut piece).await.expect("read"), 2);
        assert_eq!(&piece[..2], b"lo");
        assert_eq!(reader.capacity(), 0, "a short read kept the chunk");
        // Nothing more to read: the read waits, and the chunk is given back.
        {
            let mut waiting = pin!(reader.read(&mut piece));
            assert!(futures_poll(waiting.as_mut()).is_pending());
        }
        assert_eq!(reader.capacity(), 0);
        client.write_all(b"!").await.expect("write");
        assert_eq!(reader.read(&mut piece).await.expect("read"), 1);
        assert_eq!(piece[0], b'!');
    }

    #[tokio::test]
    async fn a_full_read_turns_on_read_ahead() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = ReadAhead::new(server);
        client.write_all(&[1u8; 100_000]).await.expect("write");
        let mut piece = [0u8; 4096];
        // The first read fills the reader's buffer straight from the socket ...
        assert_eq!(reader.read(&mut piece).await.expect("read"), 4096);
        assert_eq!(reader.buffered(), 0);
        // ... so the next one reads a whole chunk and hands out a piece of it.
        assert_eq!(reader.read(&mut piece).await.expect("read"), 4096);
        assert_eq!(reader.buffered(), READ_AHEAD_CHUNK - 4096);
        let mut rest = Vec::new();
        drop(client);
        reader.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest.len(), 100_000 - 2 * 4096);
        assert!(rest.iter().all(|b| *b == 1));
    }

    #[tokio::test]
    async fn large_reads_bypass_the_buffer_and_writes_pass_through() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut reader = ReadAhead::new(server);
        client.write_all(&[7u8; 100_000]).await.expect("write");
        let mut big = vec![0u8; READ_AHEAD_CHUNK];
        let n = reader.read(&mut big).await.expect("read");
        assert!(n > 0 && big[..n].iter().all(|b| *b == 7));
        assert_eq!(reader.capacity(), 0, "a large read went through the buffer");
        reader.write_all(b"answer").await.expect("write");
        let mut answer = [0u8; 6];
        client.read_exact(&mut answer).await.expect("read");
        assert_eq!(&answer, b"answer");
    }

    #[tokio::test]
    async fn reads_that_bring_bytes_are_observed() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(Arc<AtomicUsize>);
        impl ReadObserver for Count {
            fn bytes_read(&self) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let seen = Arc::new(AtomicUsize::new(0));
        let (mut client, server) = tokio::io::duplex(1024);
        let mut observed = ReadsObserved::new(server, Count(seen.clone()));
        client.write_all(b"ping").await.expect("write");
        let mut piece = [0u8; 4];
        observed.read_exact(&mut piece).await.expect("read");
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        observed.write_all(b"pong").await.expect("write");
        client.read_exact(&mut piece).await.expect("read");
        assert_eq!(&piece, b"pong");
        drop(client);
        assert_eq!(observed.read(&mut piece).await.expect("read"), 0);
        assert_eq!(
            seen.load(Ordering::Relaxed),
            1,
            "the end of the stream brought no bytes"
        );
    }

    /// Polls `future` once.
    fn futures_poll<F: std::future::Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        let waker = std::task::Waker::noop();
        future.poll(&mut Context::from_waker(waker))
    }
}
