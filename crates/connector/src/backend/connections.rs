//! Idle HTTP/1.1 connections to backends, kept per [`Origin`] for the next
//! request, and the response body that gives its connection back once read
//! to its end.
//!
//! A connection is given back when its response body ends, which may be a
//! moment before hyper's connection task is ready for the next request (or
//! long before, when the backend answered while a request body was still
//! going out). So a connection is taken only when it says it is ready now;
//! one that is not stays where it is, and one that closed (the backend ended
//! it, or its idle time ran out) is dropped when seen. A task started with the
//! first idle connection drops the expired ones every so often, so that a
//! backend nobody asks any more is not held open.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http::uri::Authority;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::BackendBody;

/// The sending half of one backend connection.
pub(crate) type Sender = hyper::client::conn::http1::SendRequest<BackendBody>;

/// Where and how a connection goes: connections are shared only between
/// requests with the same origin. Compared and hashed by the authority's bytes
/// as one piece (the `url` crate has lowercased the host already): `Authority`'s
/// own hash feeds the hasher one lowercased byte at a time, a few thousand
/// instructions per request for the two lookups.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// TLS or plain TCP.
    pub(crate) https: bool,
    /// Host and port.
    pub(crate) authority: Authority,
    /// Whether the backend's certificate was checked (a connection made
    /// without the check never serves an app that asks for it).
    pub(crate) verified: bool,
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.https == other.https
            && self.verified == other.verified
            && self.authority.as_str() == other.authority.as_str()
    }
}

impl Eq for Origin {}

impl std::hash::Hash for Origin {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.authority.as_str().hash(state);
        state.write_u8(u8::from(self.https) | (u8::from(self.verified) << 1));
    }
}

impl Origin {
    /// The host to resolve and to name in TLS (an IPv6 literal without its
    /// brackets).
    pub(crate) fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
    }
}

/// A connection waiting for its next request.
struct Idle {
    sender: Sender,
    since: Instant,
}

/// The idle connections of all origins.
#[derive(Debug)]
pub(super) struct IdleConnections(Arc<Inner>);

struct Inner {
    by_origin: Mutex<HashMap<Origin, Vec<Idle>>>,
    /// Idle connections kept per origin; 0 keeps none.
    max_per_origin: usize,
    /// An idle connection older than this is closed.
    idle_timeout: Duration,
    /// Whether the task that drops expired connections runs.
    sweeping: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("max_per_origin", &self.max_per_origin)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl IdleConnections {
    /// Keeps at most `max_per_origin` idle connections per origin, each for at
    /// most `idle_timeout`.
    pub(super) fn new(max_per_origin: usize, idle_timeout: Duration) -> Self {
        Self(Arc::new(Inner {
            by_origin: Mutex::new(HashMap::new()),
            max_per_origin,
            idle_timeout,
            sweeping: AtomicBool::new(false),
        }))
    }

    /// The most recently used connection to `origin` that is ready now.
    pub(super) fn take(&self, origin: &Origin) -> Option<Sender> {
        let mut by_origin = self.0.by_origin.lock().unwrap_or_else(PoisonError::into_inner);
        let list = by_origin.get_mut(origin)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let idle = &list[i];
            if idle.sender.is_closed() || now.duration_since(idle.since) >= self.0.idle_timeout {
                // The last one takes its place; it was looked at already.
                list.swap_remove(i);
            } else if idle.sender.is_ready() {
                return Some(list.swap_remove(i).sender);
            }
        }
        None
    }

    /// `response` with a body that gives `sender` back once read to its end.
    pub(super) fn wrap(&self, response: Response<Incoming>, sender: Sender, origin: &Origin) -> Response<PooledBody> {
        response.map(|body| PooledBody {
            body,
            back: Some(GiveBack {
                sender,
                origin: origin.clone(),
                to: self.0.clone(),
            }),
        })
    }
}

impl Inner {
    /// Keeps `sender` for the next request to `origin`, unless it is closed
    /// or `origin` has as many idle connections as allowed.
    fn put(self: &Arc<Self>, origin: Origin, sender: Sender) {
        if sender.is_closed() || self.max_per_origin == 0 {
            return;
        }
        let idle = Idle {
            sender,
            since: Instant::now(),
        };
        {
            let mut by_origin = self.by_origin.lock().unwrap_or_else(PoisonError::into_inner);
            let list = by_origin.entry(origin).or_default();
            if list.len() >= self.max_per_origin {
                return;
            }
            list.push(idle);
        }
        if !self.sweeping.swap(true, Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(sweep(Arc::downgrade(self), self.sweep_every()));
        }
    }

    /// How often expired connections are looked for.
    fn sweep_every(&self) -> Duration {
        (self.idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// Drops closed and expired connections, and origins left with none.
    fn drop_expired(&self) {
        let now = Instant::now();
        let mut by_origin = self.by_origin.lock().unwrap_or_else(PoisonError::into_inner);
        by_origin.retain(|_, list| {
            list.retain(|idle| !idle.sender.is_closed() && now.duration_since(idle.since) < self.idle_timeout);
            !list.is_empty()
        });
    }

    /// Idle connections of all origins (for tests).
    #[cfg(test)]
    fn count(&self) -> usize {
        let by_origin = self.by_origin.lock().unwrap_or_else(PoisonError::into_inner);
        by_origin.values().map(Vec::len).sum()
    }
}

/// Drops expired connections every `every` until the connections are gone.
async fn sweep(inner: Weak<Inner>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        inner.drop_expired();
    }
}

/// Where a connection goes back to.
struct GiveBack {
    sender: Sender,
    origin: Origin,
    to: Arc<Inner>,
}

/// A backend's response body; its connection is given back for the next
/// request when the body has ended, and closed when the body is dropped
/// before its end or breaks off.
pub(crate) struct PooledBody {
    body: Incoming,
    back: Option<GiveBack>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody")
            .field("body", &self.body)
            .field("pooled", &self.back.is_some())
            .finish()
    }
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(back) = self.back.take() {
            back.to.put(back.origin, back.sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    /// A body known to be empty (`HEAD`, `204`, `304`, `content-length: 0`)
    /// may be dropped without being read: its connection is still good.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::convert::Infallible;

    use http::Request;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    fn origin(port: u16) -> Origin {
        Origin {
            https: false,
            authority: format!("127.0.0.1:{port}").parse().unwrap(),
            verified: true,
        }
    }

    /// A backend counting the connections it accepted; `/empty` answers 204,
    /// `/close` asks to close the connection, anything else a small body.
    async fn backend() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<Incoming>| async move {
                        let mut response = match req.uri().path() {
                            "/empty" => Response::new(Full::new(Bytes::new())),
                            _ => Response::new(Full::new(Bytes::from_static(b"hello"))),
                        };
                        match req.uri().path() {
                            "/empty" => *response.status_mut() = http::StatusCode::NO_CONTENT,
                            "/close" => {
                                response
                                    .headers_mut()
                                    .insert("connection", http::HeaderValue::from_static("close"));
                            }
                            _ => {}
                        }
                        Ok::<_, Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    async fn send(idle: &IdleConnections, origin: &Origin, path: &str) -> Response<PooledBody> {
        let sender = match idle.take(origin) {
            Some(sender) => sender,
            None => {
                let tcp = tokio::net::TcpStream::connect(("127.0.0.1", origin.authority.port_u16().unwrap()))
                    .await
                    .unwrap();
                super::super::handshake(tcp).await.unwrap()
            }
        };
        let mut sender = sender;
        let request = Request::builder()
            .uri(path)
            .header("host", "backend")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        idle.wrap(response, sender, origin)
    }

    /// Waits until the connection task has caught up (readiness comes from it).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_body_is_read_not_before() {
        let (port, accepted) = backend().await;
        let idle = IdleConnections::new(8, Duration::from_secs(60));
        let to = origin(port);

        let first = send(&idle, &to, "/").await;
        // The body is not read yet: the connection is not idle, a second
        // request opens another.
        assert_eq!(idle.0.count(), 0);
        let second = send(&idle, &to, "/").await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(&first.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
        assert_eq!(&second.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
        assert_eq!(idle.0.count(), 2);
        settle().await;
        for _ in 0..5 {
            let body = send(&idle, &to, "/").await.into_body().collect().await.unwrap();
            assert_eq!(&body.to_bytes()[..], b"hello");
            settle().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "the idle connections were reused");

        // Another origin (the same backend, without certificate checks) never
        // gets these connections.
        let other = Origin {
            verified: false,
            ..to.clone()
        };
        assert!(idle.take(&other).is_none());
    }

    #[tokio::test]
    async fn an_empty_body_gives_its_connection_back_unread_and_a_dropped_one_does_not() {
        let (port, accepted) = backend().await;
        let idle = IdleConnections::new(8, Duration::from_secs(60));
        let to = origin(port);
        let response = send(&idle, &to, "/empty").await;
        assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
        drop(response);
        assert_eq!(idle.0.count(), 1, "a known-empty body needs no reading");
        settle().await;
        // Dropped before its end: the connection cannot carry another request.
        drop(send(&idle, &to, "/").await);
        assert_eq!(idle.0.count(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        settle().await;
        let body = send(&idle, &to, "/").await.into_body().collect().await.unwrap();
        assert_eq!(&body.to_bytes()[..], b"hello");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a new connection after the dropped body"
        );
    }

    #[tokio::test]
    async fn closed_and_expired_connections_are_never_taken() {
        let (port, accepted) = backend().await;
        let idle = IdleConnections::new(8, Duration::from_millis(300));
        let to = origin(port);
        // The backend closes this one after its answer.
        let body = send(&idle, &to, "/close").await.into_body().collect().await.unwrap();
        assert_eq!(&body.to_bytes()[..], b"hello");
        settle().await;
        assert!(idle.take(&to).is_none(), "a closed connection was taken");
        // This one is kept, then expires.
        send(&idle, &to, "/").await.into_body().collect().await.unwrap();
        settle().await;
        assert_eq!(idle.0.count(), 1);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(idle.0.count(), 0, "the sweep dropped the expired connection");
        assert!(idle.take(&to).is_none());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn no_more_idle_connections_than_allowed() {
        let (port, _) = backend().await;
        let idle = IdleConnections::new(2, Duration::from_secs(60));
        let to = origin(port);
        let mut responses = Vec::new();
        for _ in 0..4 {
            responses.push(send(&idle, &to, "/").await);
        }
        for response in responses {
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(idle.0.count(), 2);
    }
}
