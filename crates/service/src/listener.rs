//! The listener: accepts connections up to a limit (in all, and per client
//! address on the public listener: [`per_client`]), serves HTTP/1.1 and HTTP/2
//! (over TLS or not) under the connection deadlines of [`deadlines`], attaches
//! the client's address to every request, rate-limits each client address, and
//! drains gracefully at shutdown.

mod deadlines;
mod per_client;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use ipnet::IpNet;
use postern_control::PeerCertificate;
use postern_edge::{ClientInfo, Edge, Routing};
use postern_netio::{ReadAhead, ReadsObserved};
use postern_sts::ClientIp;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use self::deadlines::{ConnectionActivity, Overstay, TrackedBody, Verdict};
use self::per_client::ConnectionsPerClient;
use crate::config::Limits;

/// Most concurrent HTTP/2 streams per client connection.
const MAX_H2_STREAMS: u32 = 256;
/// Largest request head hyper buffers on an HTTP/1 connection.
const MAX_H1_BUFFER: usize = 64 * 1024;
/// Largest header list of an HTTP/2 request.
const MAX_H2_HEADER_LIST: u32 = 64 * 1024;
/// How often an idle HTTP/2 connection is pinged.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// At shutdown, how long a connection whose request may be on its way (see
/// `ConnectionActivity::request_arriving`) is read before it is closed.
const ARRIVING_REQUEST_WAIT: Duration = Duration::from_millis(500);
/// How long a plain connection whose first bytes could still be HTTP/1 or
/// HTTP/2 waits before it looks again: at first, and at most (the wait doubles).
const PEEK_AGAIN_AFTER: Duration = Duration::from_millis(5);
const PEEK_AGAIN_AT_MOST: Duration = Duration::from_millis(250);

/// At shutdown, the most connections taken from the listening socket's backlog
/// before it closes (Linux caps a backlog at `net.core.somaxconn`, 4096 by
/// default).
const SHUTDOWN_ACCEPT_MAX: usize = 4096;

/// Where requests come from, as far as the service can tell.
#[derive(Clone, Debug)]
pub(crate) struct ClientAddressing {
    trusted_proxies: Arc<Vec<IpNet>>,
}

impl ClientAddressing {
    pub(crate) fn new(trusted_proxies: Vec<IpNet>) -> Self {
        Self {
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    pub(crate) fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer`: the peer itself, unless the
    /// peer is a trusted proxy, in which case the right-most address of
    /// `X-Forwarded-For` that is not a trusted proxy.
    pub(crate) fn resolve<B>(&self, peer: IpAddr, request: &Request<B>) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.trusted(*ip))
            .unwrap_or(peer)
    }
}

/// A bound listener with everything it needs to serve.
pub(crate) struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub limits: Limits,
    pub addressing: ClientAddressing,
    /// The front door of published apps, on the public listener.
    pub edge: Option<FrontDoor>,
}

/// Requests for app hosts go to the edge, the rest to the service's routes.
#[derive(Clone)]
pub(crate) struct FrontDoor {
    pub edge: Arc<Edge>,
    /// The service's own host (normalized): its routes always win there.
    pub public_host: String,
}

/// What a request goes to.
#[derive(Clone)]
struct Handlers {
    app: Router,
    front_door: Option<FrontDoor>,
    addressing: ClientAddressing,
    tls: bool,
}

impl Listener {
    /// Serves `app` until `shutdown` turns true, then stops accepting and gives
    /// open connections `limits.shutdown_grace` to finish.
    pub(crate) async fn serve(self, app: Router, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        // Per client address on the public listener only: the control
        // listener's callers are the installation's own components.
        let per_client = self
            .limits
            .abuse
            .connections_per_client
            .filter(|_| self.edge.is_some())
            .map(ConnectionsPerClient::new);
        // Every connection holds a receiver: it learns of the shutdown from it,
        // and the sender sees when the last one has gone.
        let (draining, drain_signal) = watch::channel(false);
        let tls = self.tls.map(Arc::new);
        let handlers = Handlers {
            app,
            front_door: self.edge.clone(),
            addressing: self.addressing.clone(),
            tls: tls.is_some(),
        };
        let admission = Admission {
            permits,
            per_client,
            handlers,
            tls,
            limits: self.limits.clone(),
            addressing: self.addressing.clone(),
            drain_signal,
        };
        loop {
            let accepted = tokio::select! {
                a = self.tcp.accept() => a,
                _ = shutdown.changed() => break,
            };
            match accepted {
                Ok((stream, peer)) => admission.admit(stream, peer),
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Connections the kernel has completed but nobody accepted yet would be
        // reset when the socket closes: they are taken and served like the
        // others (their first request is answered, then they close). At most a
        // full backlog's worth: clients that keep connecting cannot hold the
        // socket open.
        match self.tcp.into_std() {
            Ok(tcp) => {
                let _ = tcp.set_nonblocking(true);
                for (stream, peer) in std::iter::from_fn(|| tcp.accept().ok()).take(SHUTDOWN_ACCEPT_MAX) {
                    let _ = stream.set_nonblocking(true);
                    match TcpStream::from_std(stream) {
                        Ok(stream) => admission.admit(stream, peer),
                        Err(e) => tracing::debug!(%peer, error = %e, "connection accepted at shutdown not served"),
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "listening socket not drained at shutdown"),
        }
        let Admission { drain_signal, .. } = admission;
        drop(drain_signal);
        let _ = draining.send(true);
        if tokio::time::timeout(self.limits.shutdown_grace, draining.closed())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period; closing them");
        }
    }
}

/// What taking one accepted connection on needs: the limits it must fit in and
/// what serves it.
struct Admission {
    permits: Arc<Semaphore>,
    per_client: Option<Arc<ConnectionsPerClient>>,
    handlers: Handlers,
    tls: Option<Arc<TlsAcceptor>>,
    limits: Limits,
    addressing: ClientAddressing,
    /// Every connection holds a receiver; see [`Listener::serve`].
    drain_signal: watch::Receiver<bool>,
}

impl Admission {
    /// Serves `stream` on a task of its own, or closes it at once when the
    /// connection limits are reached.
    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let accepted_at = Instant::now();
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "connection limit reached; connection closed");
            return;
        };
        let client_place = match &self.per_client {
            Some(counts) if !self.addressing.trusted(peer.ip()) => match counts.try_open(peer.ip()) {
                Some(place) => Some(place),
                None => {
                    tracing::debug!(%peer, "connections per client address reached; connection closed");
                    return;
                }
            },
            _ => None,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            peer,
            activity: ConnectionActivity::new(accepted_at, &self.limits),
            handlers: self.handlers.clone(),
            limits: self.limits.clone(),
            shutdown: self.drain_signal.clone(),
        };
        let tls = self.tls.clone();
        tokio::spawn(async move {
            connection.serve(stream, tls).await;
            drop((permit, client_place));
        });
    }
}

/// The service that handles one connection's requests: it attaches the client
/// address and, on mTLS connections, the client certificate, and sends requests
/// for app hosts to the front door (outside the service routes' body limit and
/// request timeout: app traffic streams and may last). Each request is in flight
/// for the connection's deadlines until its response body is done.
///
/// Each request's future is boxed: hyper keeps a connection's request future
/// in an allocation of that future's size for the connection's whole life, so
/// an unboxed future (the front door's, several KiB) would be held by every
/// idle keep-alive connection; boxed, it is held only while a request runs.
fn connection_service(
    handlers: Handlers,
    peer: SocketAddr,
    client_cert: Option<PeerCertificate>,
    activity: Arc<ConnectionActivity>,
) -> TowerToHyperService<
    impl tower::Service<
        Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = RequestFuture,
    > + Clone,
> {
    TowerToHyperService::new(tower::service_fn(move |mut request: Request<Incoming>| {
        let in_flight = activity.request_started(request.version() == axum::http::Version::HTTP_2);
        let ip = handlers.addressing.resolve(peer.ip(), &request);
        request.extensions_mut().insert(ClientIp(ip));
        if let Some(cert) = &client_cert {
            request.extensions_mut().insert(cert.clone());
        }
        let handlers = handlers.clone();
        let future: RequestFuture = Box::pin(async move {
            let response = route_request(handlers, peer, ip, request).await;
            Ok(response.map(|body| axum::body::Body::new(TrackedBody::new(body, in_flight))))
        });
        future
    }))
}

/// One request's answer on its way, boxed (see [`connection_service`]).
type RequestFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send>>;

/// Sends a request to the front door or the service's routes. On the public
/// listener the client address `ip` must be within its rate (else 429), and the
/// request must name a usable host (see [`postern_edge::request_authority`]):
/// one that does not gets a 400, never the service's own pages; the service's
/// own host, and HTTP/1.0 without `Host`, go to the service's routes, app hosts
/// to the front door.
async fn route_request(
    handlers: Handlers,
    peer: SocketAddr,
    ip: IpAddr,
    request: Request<Incoming>,
) -> axum::response::Response {
    if let Some(front) = &handlers.front_door {
        if let Err(throttled) = front.edge.check_client_rate(ip) {
            tracing::debug!(client = %ip, "client address over its rate");
            return throttled.response(postern_edge::wants_json(&request));
        }
        let host = match postern_edge::request_authority(&request) {
            Ok(host) => host,
            Err(e) => return postern_edge::bad_authority_response(e),
        };
        let routing = match host {
            Some(h) if h != front.public_host => front.edge.route_host(&h, request.uri().path()).await,
            _ => Routing::NotAnAppHost,
        };
        if !matches!(routing, Routing::NotAnAppHost) {
            let client = client_info(&handlers, peer.ip(), &request);
            return front.edge.handle(routing, request, client).await;
        }
    }
    match handlers.app.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// How the user reached the service: the listener's scheme, or a trusted
/// proxy's `X-Forwarded-Proto`.
fn client_info<B>(handlers: &Handlers, peer: IpAddr, request: &Request<B>) -> ClientInfo {
    let trusted = handlers.addressing.trusted(peer);
    let forwarded_https = trusted
        && request
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let proto = if handlers.tls || forwarded_https {
        "https"
    } else {
        "http"
    };
    ClientInfo {
        peer_ip: peer,
        peer_is_trusted_proxy: trusted,
        proto,
    }
}

/// Which HTTP a connection speaks, when known before hyper reads from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
    /// Not known (TLS without ALPN): hyper-util reads the first bytes to tell.
    /// That costs a connection's whole life a read buffer of twice the size,
    /// as the bytes read to tell are handed back to hyper's buffer first.
    Detect,
}

impl Protocol {
    /// What the client chose in the TLS handshake (ALPN).
    fn negotiated(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") => Protocol::Http1,
            _ => Protocol::Detect,
        }
    }

    /// What the first bytes of a plain connection say: HTTP/2 with prior
    /// knowledge starts with its preface, `PRI * HTTP/2.0`, and no HTTP/1
    /// request starts with `PRI `. `None` while the bytes so far could be
    /// either.
    fn from_first_bytes(first: &[u8]) -> Option<Self> {
        const PREFACE_START: &[u8] = b"PRI ";
        let seen = first.len().min(PREFACE_START.len());
        if first[..seen] != PREFACE_START[..seen] {
            Some(Protocol::Http1)
        } else if seen == PREFACE_START.len() {
            Some(Protocol::Http2)
        } else {
            None
        }
    }
}

/// The HTTP/1 settings of a connection.
fn http1_builder() -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Request-head deadlines are the connection's own (see `deadlines`):
        // hyper's would run while a keep-alive connection is idle too.
        .header_read_timeout(None)
        .max_buf_size(MAX_H1_BUFFER);
    builder
}

/// The HTTP/2 settings of a connection.
fn http2_builder() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .keep_alive_interval(H2_KEEP_ALIVE);
    builder
}

/// The same settings, for a connection whose protocol is read from its first
/// bytes ([`Protocol::Detect`]).
fn detecting_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_H1_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .max_header_list_size(MAX_H2_HEADER_LIST)
        .keep_alive_interval(H2_KEEP_ALIVE);
    builder
}

/// A connection being served: done when the connection is, and asked to
/// close once its requests in flight are answered.
trait Served: Future<Output = Result<(), Self::Error>> {
    type Error: Into<Box<dyn std::error::Error + Send + Sync>>;

    /// HTTP/1.1 closes between requests, HTTP/2 sends GOAWAY.
    fn shut_gracefully(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Served for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Error = hyper::Error;

    fn shut_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Served for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    type Error = hyper::Error;

    fn shut_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Served for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    S: hyper::service::Service<Request<Incoming>, Response = axum::http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioExecutor: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, B>,
{
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn shut_gracefully(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// One accepted connection and what serving it needs.
struct Connection {
    peer: SocketAddr,
    activity: Arc<ConnectionActivity>,
    handlers: Handlers,
    limits: Limits,
    /// Turns true at shutdown; dropped with the connection.
    shutdown: watch::Receiver<bool>,
}

impl Connection {
    /// Completes the TLS handshake, if any, within the first request's deadline,
    /// then serves HTTP.
    async fn serve(self, stream: TcpStream, tls: Option<Arc<TlsAcceptor>>) {
        match tls {
            None => {
                if let Some(protocol) = self.plain_protocol(&stream).await {
                    self.serve_http(stream, None, protocol).await;
                }
            }
            // Boxed: a task is as large as its future's largest state, and a
            // plain connection's task would otherwise carry room for the TLS
            // handshake and the TLS connection for as long as it lives.
            Some(acceptor) => Box::pin(self.serve_tls(stream, acceptor)).await,
        }
    }

    /// [`Connection::serve`] over TLS.
    async fn serve_tls(self, stream: TcpStream, acceptor: Arc<TlsAcceptor>) {
        let peer = self.peer;
        // rustls reads 4 KiB at a time; `ReadAhead` turns a bulk upload's or a
        // tunnel's many small reads into few system calls.
        let stream = ReadAhead::new(stream);
        let handshake = tokio::time::timeout_at(self.activity.first_head_deadline(), acceptor.accept(stream)).await;
        let tls_stream = match handshake {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake not complete within the header timeout; connection closed");
                return;
            }
        };
        let client_cert = tls_stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|c| PeerCertificate(Arc::new(c.clone().into_owned())));
        let protocol = Protocol::negotiated(tls_stream.get_ref().1.alpn_protocol());
        self.serve_http(tls_stream, client_cert, protocol).await;
    }

    /// Which HTTP a plain connection speaks, from its first bytes, peeked (not
    /// read) so that hyper reads them into its own buffer. `None` when the
    /// connection should close unserved: the client left, or sent nothing
    /// within the header timeout (at shutdown: within a moment).
    async fn plain_protocol(&self, stream: &TcpStream) -> Option<Protocol> {
        let peer = self.peer;
        let mut shutdown = self.shutdown.clone();
        let mut shutting_down = *shutdown.borrow();
        let arriving_wait = ARRIVING_REQUEST_WAIT.min(self.limits.shutdown_grace);
        let mut deadline = self.activity.first_head_deadline();
        if shutting_down {
            deadline = deadline.min(Instant::now() + arriving_wait);
        }
        let mut first = [0u8; 4];
        let mut pause = PEEK_AGAIN_AFTER;
        loop {
            let peeked = tokio::select! {
                peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
                changed = shutdown.changed(), if !shutting_down => {
                    // As for a connection served: a request on its way gets a
                    // moment to arrive (see `serve_http`).
                    shutting_down = true;
                    if changed.is_ok() {
                        deadline = deadline.min(Instant::now() + arriving_wait);
                    }
                    continue;
                }
            };
            match peeked {
                Ok(Ok(0)) => return None,
                Ok(Ok(n)) => match Protocol::from_first_bytes(&first[..n]) {
                    Some(protocol) => return Some(protocol),
                    // `PR` and no more yet: a peek would return at once with the
                    // same bytes, so wait before the next, longer each time (a
                    // client that stalls there costs a few wake-ups a second).
                    None if Instant::now() < deadline => {
                        tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                        pause = (pause * 2).min(PEEK_AGAIN_AT_MOST);
                    }
                    None => return None,
                },
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection failed before its first request");
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "{}", Overstay::NoRequestHead.describe());
                    return None;
                }
            }
        }
    }

    /// Serves HTTP on `io` until the client leaves, the connection overstays a
    /// deadline, or the service shuts down.
    async fn serve_http<T>(self, io: T, client_cert: Option<PeerCertificate>, protocol: Protocol)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = connection_service(self.handlers.clone(), self.peer, client_cert, self.activity.clone());
        let io = TokioIo::new(ReadsObserved::new(io, self.activity.clone()));
        // The task holds the largest of these states for the connection's
        // life: the common one (HTTP/1, most users' connections) inline, the
        // larger HTTP/2 and detecting ones boxed.
        match protocol {
            Protocol::Http1 => {
                self.drive(http1_builder().serve_connection(io, service).with_upgrades())
                    .await;
            }
            Protocol::Http2 => {
                Box::pin(self.drive(http2_builder().serve_connection(io, service))).await;
            }
            Protocol::Detect => {
                Box::pin(async move {
                    let builder = detecting_builder();
                    self.drive(builder.serve_connection_with_upgrades(io, service)).await;
                })
                .await;
            }
        }
    }

    /// Drives `conn` until it ends, overstays a deadline, or the service shuts
    /// down.
    async fn drive<C: Served>(mut self, conn: C) {
        let peer = self.peer;
        tokio::pin!(conn);
        let close_within = loop {
            let recheck_at = match self.activity.verdict(Instant::now()) {
                Verdict::Keep { recheck_at } => recheck_at,
                Verdict::Close(Overstay::Idle) => {
                    tracing::debug!(%peer, "{}", Overstay::Idle.describe());
                    break self.limits.header_timeout;
                }
                Verdict::Close(overstay) => {
                    // Dropping the connection closes it: nothing was asked of it.
                    tracing::debug!(%peer, "{}", overstay.describe());
                    return;
                }
            };
            tokio::select! {
                result = conn.as_mut() => return log_end(peer, result),
                _ = self.shutdown.changed() => {
                    // A request on its way (a connection accepted moments ago,
                    // or the next request's first bytes read) would be reset by
                    // a close now: it gets a moment to arrive and is answered,
                    // then the connection closes.
                    let until = Instant::now() + ARRIVING_REQUEST_WAIT.min(self.limits.shutdown_grace);
                    while self.activity.request_arriving() && Instant::now() < until {
                        tokio::select! {
                            result = conn.as_mut() => return log_end(peer, result),
                            () = tokio::time::sleep(Duration::from_millis(5)) => {}
                        }
                    }
                    break self.limits.shutdown_grace;
                }
                () = tokio::time::sleep_until(recheck_at) => {}
            }
        };
        // Idle or shutting down: HTTP/1.1 closes between requests, HTTP/2 sends
        // GOAWAY; requests in flight finish.
        conn.as_mut().shut_gracefully();
        match tokio::time::timeout(close_within, conn).await {
            Ok(result) => log_end(peer, result),
            Err(_) => tracing::debug!(%peer, "connection did not close in time; closed"),
        }
    }
}

fn log_end<E: Into<Box<dyn std::error::Error + Send + Sync>>>(peer: SocketAddr, result: Result<(), E>) {
    if let Err(e) = result {
        let e: Box<dyn std::error::Error + Send + Sync> = e.into();
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A plain listener on `tcp` whose app answers `GET /hello` with "hello".
    fn hello_listener(tcp: TcpListener) -> (Listener, Router) {
        let listener = Listener {
            tcp,
            tls: None,
            limits: Limits {
                shutdown_grace: Duration::from_secs(5),
                ..Limits::default()
            },
            addressing: ClientAddressing::new(Vec::new()),
            edge: None,
        };
        (
            listener,
            Router::new().route("/hello", axum::routing::get(|| async { "hello" })),
        )
    }

    /// Reads `client` to its end: a whole "hello" answer, then the close.
    async fn assert_answered_then_closed(client: &mut TcpStream, which: &str) {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{which}: {read:?}, {answer:?}"
        );
    }

    /// Connections that reach the listening socket as the service shuts down,
    /// accepted by the kernel but not yet by the service, are answered and
    /// then closed, not reset (a SIGTERM restart must fail no request that
    /// reached the old process).
    #[tokio::test]
    async fn connections_waiting_at_shutdown_are_answered() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        // Queued in the kernel: nothing accepts them before the shutdown.
        let mut clients = Vec::new();
        for _ in 0..16 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client
                .write_all(b"GET /hello HTTP/1.1\r\nHost: service.test\r\n\r\n")
                .await
                .expect("request");
            clients.push(client);
        }
        let (listener, app) = hello_listener(tcp);
        let (stop, stopped) = watch::channel(false);
        stop.send(true).expect("the listener holds a receiver");
        let serving = tokio::spawn(listener.serve(app, stopped));
        for (i, mut client) in clients.into_iter().enumerate() {
            assert_answered_then_closed(&mut client, &format!("connection {i}")).await;
        }
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the listener stops once its connections are done")
            .expect("the listener did not panic");
    }

    /// A connection accepted before the shutdown whose request comes a moment
    /// after it is answered, not closed under the request; an idle keep-alive
    /// connection that was answered before closes at once.
    #[tokio::test]
    async fn a_request_on_its_way_at_shutdown_is_answered() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let (listener, app) = hello_listener(tcp);
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(listener.serve(app, stopped));
        let request = b"GET /hello HTTP/1.1\r\nHost: service.test\r\n\r\n";
        let mut answered = TcpStream::connect(addr).await.expect("connect");
        answered.write_all(request).await.expect("request");
        let mut head = [0u8; 15];
        answered.read_exact(&mut head).await.expect("answer");
        assert_eq!(&head, b"HTTP/1.1 200 OK");
        let mut fresh = TcpStream::connect(addr).await.expect("connect");
        // Ordering only: the service accepts the connection, then shuts down,
        // then the request is sent.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.send(true).expect("the listener holds a receiver");
        tokio::time::sleep(Duration::from_millis(100)).await;
        fresh.write_all(request).await.expect("request");
        assert_answered_then_closed(&mut fresh, "the fresh connection").await;
        // The answered connection was idle at the shutdown: closed already.
        let mut rest = Vec::new();
        let idle = tokio::time::timeout(Duration::from_secs(1), answered.read_to_end(&mut rest)).await;
        assert!(matches!(idle, Ok(Ok(_))), "the idle connection stayed open: {idle:?}");
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the listener stops once its connections are done")
            .expect("the listener did not panic");
    }

    #[test]
    fn the_protocol_is_told_by_alpn_or_the_first_bytes() {
        assert_eq!(Protocol::negotiated(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::negotiated(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::negotiated(None), Protocol::Detect);
        assert_eq!(Protocol::negotiated(Some(b"h3")), Protocol::Detect);
        for http1 in [
            &b"GET / HTTP/1.1"[..],
            b"POST",
            b"PUT ",
            b"PATCH",
            b"PRIX",
            b"X",
            b"\x16\x03\x01",
        ] {
            assert_eq!(Protocol::from_first_bytes(http1), Some(Protocol::Http1), "{http1:?}");
        }
        assert_eq!(
            Protocol::from_first_bytes(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Protocol::Http2)
        );
        assert_eq!(Protocol::from_first_bytes(b"PRI "), Some(Protocol::Http2));
        for undecided in [&b""[..], b"P", b"PR", b"PRI"] {
            assert_eq!(Protocol::from_first_bytes(undecided), None, "{undecided:?}");
        }
    }

    /// A plain connection whose first bytes could begin HTTP/2's preface is
    /// served once the next bytes tell; one that sends nothing and leaves is
    /// let go.
    #[tokio::test]
    async fn first_bytes_that_could_be_either_protocol_wait_for_more() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let (listener, app) = hello_listener(tcp);
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(listener.serve(app, stopped));
        drop(TcpStream::connect(addr).await.expect("connect"));
        for (first, rest) in [("P", "RI"), ("PR", "I")] {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client.write_all(first.as_bytes()).await.expect("first bytes");
            tokio::time::sleep(Duration::from_millis(50)).await;
            // `PRI` as an HTTP/1 method: the bytes after it tell.
            client
                .write_all(format!("{rest}X /hello HTTP/1.1\r\nHost: service.test\r\n\r\n").as_bytes())
                .await
                .expect("the rest");
            let mut head = [0u8; 12];
            tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut head))
                .await
                .expect("answered in time")
                .expect("answered");
            assert!(
                head.starts_with(b"HTTP/1.1 "),
                "{first}: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /hello HTTP/1.1\r\nHost: service.test\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        assert_answered_then_closed(&mut client, "a plain HTTP/1.1 request").await;
        stop.send(true).expect("the listener holds a receiver");
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the listener stops")
            .expect("the listener did not panic");
    }

    /// A client that sends the start of HTTP/2's preface and stalls is closed
    /// at the header timeout, as one that sends nothing.
    #[tokio::test]
    async fn a_client_stalled_on_the_first_bytes_is_closed_at_the_header_timeout() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = tcp.local_addr().expect("address");
        let (mut listener, app) = hello_listener(tcp);
        listener.limits.header_timeout = Duration::from_millis(300);
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(listener.serve(app, stopped));
        for first in [&b"PR"[..], b""] {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            client.write_all(first).await.expect("first bytes");
            let started = Instant::now();
            let mut rest = Vec::new();
            let closed = tokio::time::timeout(Duration::from_secs(3), client.read_to_end(&mut rest)).await;
            // Closed with the client's bytes unread: a reset, or the end.
            let ended = match &closed {
                Ok(Ok(0)) => true,
                Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
                _ => false,
            };
            assert!(ended, "{first:?}: {closed:?}");
            assert!(
                started.elapsed() >= Duration::from_millis(250),
                "{first:?}: not before the timeout"
            );
        }
        stop.send(true).expect("the listener holds a receiver");
        tokio::time::timeout(Duration::from_secs(5), serving)
            .await
            .expect("the listener stops")
            .expect("the listener did not panic");
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let a = ClientAddressing::new(vec!["10.0.0.0/8".parse().unwrap()]);
        let req = Request::builder()
            .header("x-forwarded-for", "198.51.100.7, 10.1.1.1")
            .body(())
            .unwrap();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(a.resolve(proxy, &req), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(
            a.resolve(stranger, &req),
            stranger,
            "spoofed header from an untrusted peer is ignored"
        );
        let none = Request::builder().body(()).unwrap();
        assert_eq!(a.resolve(proxy, &none), proxy);
    }
}
