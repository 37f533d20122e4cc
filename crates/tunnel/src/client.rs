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
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::TunnelBody;
use crate::streams::{RecvBody, send_body};

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
    pub(crate) async fn send(&self, request: Request<TunnelBody>) -> Result<Response<RecvBody>, Failure> {
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
        let (parts, recv) = response.into_parts();
        let body = RecvBody::new(recv, &parts.headers);
        Ok(Response::from_parts(parts, body))
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
async fn copy_body(body: TunnelBody, stream: h2::SendStream<Bytes>, canceled: oneshot::Receiver<()>) {
    let mut cancel = Cancel(Some(canceled));
    send_body(body, stream, cancel.requested()).await;
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

/// Methods whose request body has a meaning, so a `Content-Length: 0` is
/// worth sending.
fn method_has_payload(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}
