//! The HTTP/2 client the service runs on each tunnel, on `h2` directly.
//!
//! A request's own task opens its stream and awaits its response: nothing
//! else is spawned and no channel is crossed for a request without a body.
//! (hyper's HTTP/2 client hands every request to its connection task through
//! a channel, spawns a task per request to await the response, and hands the
//! response back through another channel: two task switches and a spawn per
//! request, a tenth of the service's CPU per proxied request.) A request body
//! is copied into its stream by a task of its own, under HTTP/2 flow control.
//!
//! The connection itself runs in [`Driver`]: it reads and writes the socket and
//! pings the connector at an interval, ending the tunnel when a ping goes
//! unanswered. The tunnel closes gracefully (GOAWAY once its streams are done)
//! when its [`Client`] is dropped.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::TunnelBody;

/// Most bytes of request bodies the client buffers per tunnel beyond what the
/// connector's windows admit (hyper's default).
const MAX_SEND_BUFFER: usize = 1024 * 1024;

/// Streams the client may open before the connector's SETTINGS say how many
/// it takes (hyper's default, the least HTTP/2 recommends a peer allow).
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// Most local stream errors (resets the client sends for malformed frames of
/// the connector) before the connection is ended (hyper's default).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// HTTP/2 settings of one tunnel's client.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// What one response may have in flight unread.
    pub(crate) stream_window: u32,
    /// What all the tunnel's responses together may have in flight unread.
    pub(crate) connection_window: u32,
    /// Largest frame the connector may send (within HTTP/2's bounds).
    pub(crate) max_frame_size: u32,
    /// Largest response head the connector may send, decoded.
    pub(crate) max_header_list_size: u32,
    /// How often the connector is pinged.
    pub(crate) keep_alive_interval: Duration,
    /// How long a ping may go unanswered before the tunnel ends.
    pub(crate) keep_alive_timeout: Duration,
}

/// Why a request was not answered.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The tunnel was closed before the request left: it may go on another.
    Unsent(Box<Request<TunnelBody>>),
    /// The request left (or was refused as malformed) and has no answer.
    Failed(h2::Error),
}

/// Sends requests on one tunnel; the tunnel closes gracefully once this and
/// every stream opened through it are gone.
pub(crate) struct Client {
    sender: h2::client::SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
    /// Dropped with the client: wakes the driver, so the connection notices it
    /// has no more handles and closes once its streams are done.
    _dropped: oneshot::Sender<()>,
}

/// Runs one tunnel's connection: resolves when it ends, with the error that
/// ended it, if any.
pub(crate) type Driver = Pin<Box<dyn Future<Output = Result<(), DriverError>> + Send>>;

/// Why a tunnel's connection ended other than by closing gracefully.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DriverError {
    /// An HTTP/2 or I/O error.
    #[error("{0}")]
    Http2(#[from] h2::Error),
    /// A ping went unanswered.
    #[error("keep-alive ping not answered within {0:?}")]
    PingTimeout(Duration),
}

impl Client {
    /// The HTTP/2 handshake on `io` (the caller bounds it with a deadline).
    /// The [`Driver`] must be polled (spawned) for the client to work.
    pub(crate) async fn handshake<I>(io: I, settings: &Settings) -> Result<(Self, Driver), h2::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, mut connection) = h2::client::Builder::new()
            .initial_window_size(settings.stream_window)
            .initial_connection_window_size(settings.connection_window)
            .max_frame_size(settings.max_frame_size)
            .max_header_list_size(settings.max_header_list_size)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let (dropped_tx, dropped) = oneshot::channel();
        let ping_pong = connection.ping_pong();
        let mark = MarkClosed(closed.clone());
        let (interval, timeout) = (settings.keep_alive_interval, settings.keep_alive_timeout);
        let driver = Box::pin(async move {
            let _mark = mark;
            drive(connection, ping_pong, dropped, interval, timeout).await
        });
        let client = Self {
            sender,
            closed,
            _dropped: dropped_tx,
        };
        Ok((client, driver))
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `request` and waits for the response's head. A request body is
    /// copied into the stream by a task of its own; dropping the returned
    /// future before the head came resets the stream.
    pub(crate) async fn send(&self, request: Request<TunnelBody>) -> Result<Response<ResponseBody>, Failure> {
        let mut sender = self.sender.clone();
        if poll_fn(|cx| sender.poll_ready(cx)).await.is_err() {
            return Err(Failure::Unsent(Box::new(request)));
        }
        let (head, body) = request.into_parts();
        // The callers have removed hop-by-hop headers already (the front door
        // with `postern_proto::headers::strip_hop_by_hop`; a peer's request
        // arrives over HTTP/2, which has none); one that slipped through makes
        // h2 refuse the request as malformed, so it never crosses.
        let mut head = Request::from_parts(head, ());
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || method_has_payload(head.method()))
            && !head.headers().contains_key(CONTENT_LENGTH)
        {
            head.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        let end_of_stream = body.is_end_stream();
        let (response, stream) = sender.send_request(head, end_of_stream).map_err(Failure::Failed)?;
        drop(sender);
        let cancel = (!end_of_stream).then(|| {
            let (cancel, canceled) = oneshot::channel();
            tokio::spawn(copy_body(body, stream, canceled));
            CancelOnDrop(Some(cancel))
        });
        let response = response.await.map_err(Failure::Failed)?;
        if let Some(mut cancel) = cancel {
            cancel.disarm();
        }
        let content_length = content_length(response.headers());
        Ok(response.map(|recv| ResponseBody {
            recv,
            content_length,
            data_done: false,
        }))
    }
}

/// Sets the flag when the driver ends, or is dropped (aborted).
struct MarkClosed(Arc<AtomicBool>);

impl Drop for MarkClosed {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls the connection, pinging every `interval`; a ping unanswered for
/// `timeout` ends it. When the client is dropped the connection is polled
/// once more (h2 does not wake a parked connection when its last handle goes),
/// so it sends GOAWAY and ends once its streams are done.
async fn drive(
    mut connection: h2::client::Connection<impl AsyncRead + AsyncWrite + Unpin, Bytes>,
    ping_pong: Option<h2::PingPong>,
    mut dropped: oneshot::Receiver<()>,
    interval: Duration,
    timeout: Duration,
) -> Result<(), DriverError> {
    let keep_alive = async move {
        let Some(mut ping_pong) = ping_pong else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(interval).await;
            match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
                Ok(Ok(_pong)) => {}
                // The connection itself reports its error.
                Ok(Err(_)) => return std::future::pending().await,
                Err(_) => return DriverError::PingTimeout(timeout),
            }
        }
    };
    tokio::pin!(keep_alive);
    let mut client_alive = true;
    loop {
        tokio::select! {
            ended = &mut connection => return ended.map_err(DriverError::from),
            e = &mut keep_alive => return Err(e),
            _ = &mut dropped, if client_alive => client_alive = false,
        }
    }
}

/// Resets the stream of a request whose caller went away before its response
/// came (the body copy stops).
struct CancelOnDrop(Option<oneshot::Sender<()>>);

impl CancelOnDrop {
    /// The response came: the body copy goes on to its end.
    fn disarm(&mut self) {
        self.0.take();
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            let _ = cancel.send(());
        }
    }
}

/// Copies a request body into its stream, under the connector's flow control,
/// until it ends, the connector resets the stream, or the caller cancels.
async fn copy_body(mut body: TunnelBody, mut stream: h2::SendStream<Bytes>, canceled: oneshot::Receiver<()>) {
    let mut cancel = Cancel(Some(canceled));
    loop {
        // Wait for room for at least one byte before reading more of the
        // body, so that what is buffered stays bounded by the window.
        stream.reserve_capacity(1);
        while stream.capacity() == 0 {
            let room = tokio::select! {
                room = poll_fn(|cx| stream.poll_capacity(cx)) => room,
                () = cancel.requested() => {
                    stream.send_reset(h2::Reason::CANCEL);
                    return;
                }
            };
            match room {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "tunnel request body: stream closed");
                    return;
                }
                None => return,
            }
        }
        let frame = tokio::select! {
            frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)) => frame,
            reason = poll_fn(|cx| stream.poll_reset(cx)) => {
                tracing::debug!(reason = ?reason.ok(), "tunnel request body: the connector reset the stream");
                return;
            }
            () = cancel.requested() => {
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
        };
        let sent = match frame {
            None => stream.send_data(Bytes::new(), true),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let end = body.is_end_stream();
                    let sent = stream.send_data(data, end);
                    if end || sent.is_err() {
                        sent
                    } else {
                        continue;
                    }
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => stream.send_trailers(trailers),
                    Err(_) => continue,
                },
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "tunnel request body failed");
                stream.send_reset(h2::Reason::INTERNAL_ERROR);
                return;
            }
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "tunnel request body: send failed");
        }
        return;
    }
}

/// The body copy's end of [`CancelOnDrop`].
struct Cancel(Option<oneshot::Receiver<()>>);

impl Cancel {
    /// Resolves when the caller gave up before the response came; never once
    /// the response came (the sender was dropped unsent).
    async fn requested(&mut self) {
        let Some(canceled) = &mut self.0 else {
            return std::future::pending().await;
        };
        if canceled.await.is_err() {
            self.0 = None;
            std::future::pending::<()>().await;
        }
    }
}

/// A response body read from the tunnel; what is read is handed back to the
/// stream's window at once.
pub(crate) struct ResponseBody {
    recv: h2::RecvStream,
    /// What `Content-Length` said is left, when it said.
    content_length: Option<u64>,
    data_done: bool,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.content_length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM with NO_ERROR: the connector answered early;
                // the body ends, it has not failed (RFC 9113, 8.1).
                Some(Err(e)) if e.reason() == Some(h2::Reason::NO_ERROR) => return Poll::Ready(None),
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if e.reason() == Some(h2::Reason::NO_ERROR) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.content_length.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

/// Methods whose request body has a meaning, so a `Content-Length: 0` is
/// worth sending.
fn method_has_payload(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// The response's `Content-Length`, when it has exactly one valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_read_only_when_unambiguous() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert_eq!(content_length(&headers), Some(1024));
        headers.append(CONTENT_LENGTH, HeaderValue::from_static("1024"));
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("-1"));
        assert_eq!(content_length(&headers), None);
    }
}
