//! The access log of published apps (BEY-5): one `tracing` event per request
//! on an app host, at INFO on the target [`TARGET`] (route it with
//! `RUST_LOG=postern::access=info`), written when the response has ended:
//! after the last byte of a streamed body, when the client went away
//! (`outcome` `cancelled`, status 499 if no answer was ready), or when an
//! upgraded connection closed.
//!
//! Fields: `request_id` (also in the backend's `X-Request-Id`, the
//! connector's log and the user's error pages), `host`, `method`, `path`
//! (never the query: it can carry codes and tokens), `app`, `app_id`,
//! `tenant`, `user_id` and `user` (pre-authenticated apps), `status`,
//! `bytes_in`, `bytes_out` (body bytes), `duration_ms`, `connector` (the
//! connector whose tunnel carried it), `outcome` (`complete`, `cancelled`,
//! `error`, `upgraded`). Unknown values are `-`. The same ending records the
//! request in the metrics (`postern_app_…`, by app ID, tenant ID and status
//! class).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// The `tracing` target of access log events.
pub const TARGET: &str = "postern::access";

/// Status logged for a request whose client went away before an answer.
const CLIENT_CLOSED: u16 = 499;

/// What is known about one request while it is handled, shared by the
/// layers of the front door (through the request's extensions).
#[derive(Debug)]
pub(crate) struct AccessRecord {
    request_id: String,
    host: String,
    method: String,
    path: String,
    started: Instant,
    app: OnceLock<(String, String, String)>,
    user: OnceLock<(String, String)>,
    connector: OnceLock<String>,
    bytes_in: AtomicU64,
    logged: AtomicBool,
    deferred: AtomicBool,
}

impl AccessRecord {
    /// A record for a request just received.
    pub(crate) fn new(request_id: &str, host: &str, method: &http::Method, path: &str) -> Arc<Self> {
        Arc::new(Self {
            request_id: request_id.to_owned(),
            host: host.to_owned(),
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            started: Instant::now(),
            app: OnceLock::new(),
            user: OnceLock::new(),
            connector: OnceLock::new(),
            bytes_in: AtomicU64::new(0),
            logged: AtomicBool::new(false),
            deferred: AtomicBool::new(false),
        })
    }

    /// The request's ID.
    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The app the request was routed to.
    pub(crate) fn set_app(&self, app: &postern_store::App) {
        let _ = self.app.set((app.name.clone(), app.id.clone(), app.tenant_id.clone()));
    }

    /// The signed-in user (pre-authenticated apps).
    pub(crate) fn set_user(&self, user_id: &str, username: &str) {
        let _ = self.user.set((user_id.to_owned(), username.to_owned()));
    }

    /// The connector whose tunnel carried the request.
    pub(crate) fn set_connector(&self, connector_id: &str) {
        let _ = self.connector.set(connector_id.to_owned());
    }

    /// Counts request body bytes that went to the backend.
    pub(crate) fn add_bytes_in(&self, n: usize) {
        self.bytes_in
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The request became an upgraded connection: its line is written when
    /// that closes (by [`AccessRecord::log`]), not when the 101 is sent.
    pub(crate) fn defer(&self) {
        self.deferred.store(true, Ordering::Release);
    }

    fn is_deferred(&self) -> bool {
        self.deferred.load(Ordering::Acquire)
    }

    /// Writes the access log line, once.
    pub(crate) fn log(&self, status: u16, bytes_out: u64, outcome: &str) {
        if self.logged.swap(true, Ordering::AcqRel) {
            return;
        }
        let (app, app_id, tenant) = self
            .app
            .get()
            .map_or(("-", "-", "-"), |(n, i, t)| (n.as_str(), i.as_str(), t.as_str()));
        let (user_id, user) = self.user.get().map_or(("-", "-"), |(i, n)| (i.as_str(), n.as_str()));
        let connector = self.connector.get().map_or("-", String::as_str);
        let elapsed = self.started.elapsed();
        let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        postern_metrics::record::app_request(app_id, tenant, status, bytes_in, bytes_out, elapsed);
        tracing::info!(
            target: TARGET,
            request_id = %self.request_id,
            host = %self.host,
            method = %self.method,
            path = %self.path,
            app,
            app_id,
            tenant,
            user_id,
            user,
            status,
            bytes_in,
            bytes_out,
            duration_ms,
            connector,
            outcome,
            "app request"
        );
    }
}

/// Writes a `cancelled` line if dropped before it is disarmed: the client
/// went away while the answer was being prepared.
pub(crate) struct PendingAnswer(Option<Arc<AccessRecord>>);

impl PendingAnswer {
    /// Guards `record` until the answer is ready.
    pub(crate) fn new(record: &Arc<AccessRecord>) -> Self {
        Self(Some(record.clone()))
    }

    /// The answer is ready; its body logs from here on.
    pub(crate) fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for PendingAnswer {
    fn drop(&mut self) {
        if let Some(record) = self.0.take() {
            record.log(CLIENT_CLOSED, 0, "cancelled");
        }
    }
}

/// A response body that counts its bytes and writes the access log line when
/// it ends, fails, or is dropped unfinished.
pub(crate) struct LoggedBody<B: Body> {
    inner: B,
    record: Arc<AccessRecord>,
    status: u16,
    bytes_out: u64,
}

impl<B: Body<Data = Bytes> + Unpin> LoggedBody<B> {
    /// Wraps `inner`, the body of a response with `status`.
    pub(crate) fn new(inner: B, record: Arc<AccessRecord>, status: u16) -> Self {
        Self {
            inner,
            record,
            status,
            bytes_out: 0,
        }
    }

    fn finish(&self, outcome: &str) {
        if !self.record.is_deferred() {
            self.record.log(self.status, self.bytes_out, outcome);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for LoggedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_out = self
                        .bytes_out
                        .saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("error"),
            Poll::Ready(None) => self.finish("complete"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        if self.record.is_deferred() {
            return;
        }
        // A body with nothing left (empty, or a HEAD answer's) may be dropped
        // without being polled to its end; one with bytes still to come was
        // abandoned by the client.
        let outcome = if self.inner.is_end_stream() || self.record.method == "HEAD" {
            "complete"
        } else {
            "cancelled"
        };
        self.record.log(self.status, self.bytes_out, outcome);
    }
}
