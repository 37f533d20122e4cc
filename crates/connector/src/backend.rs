//! HTTP/1.1 towards the internal apps: connections over TCP or TLS, opened on
//! demand and kept for the next request to the same backend
//! ([`connections`]), the backend certificate checks (the system's anchors
//! plus the configured ones, or none for apps whose `validate_backend_tls` is
//! off), and the mapping of failures to [`BackendError`] codes.
//!
//! A request is sent from the stream's own task: a connection is taken from
//! the idle ones (or opened), the request written, the response head awaited;
//! the connection goes back when the response body has been read to its end
//! (a task drives each connection; nothing is spawned per request).

mod connections;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use postern_proto::tunnel::BackendError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use connections::IdleConnections;
pub(crate) use connections::{Origin, PooledBody, Sender};

use crate::TunnelError;
use crate::error::chain;
use crate::forward::BoxError;

/// Body of a request to a backend: the stream's own body, or empty.
pub(crate) type BackendBody = UnsyncBoxBody<Bytes, BoxError>;

/// How the connector talks to backends.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Deadline of the TCP connection to a backend, and then of the TLS
    /// handshake for `https` (a miss is `backend_unreachable`). Default 10 s.
    pub connect_timeout: Duration,
    /// An idle backend connection is closed after this long. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per backend (scheme, host and port). Default 128:
    /// with more requests in flight to one backend than this, every answer
    /// beyond it closes its connection and the next request opens a new one.
    pub pool_max_idle_per_host: usize,
    /// Trust anchors for backend certificates besides the system's (an internal
    /// CA). Default none.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 128,
            extra_roots: Vec::new(),
        }
    }
}

/// The connector's way to its backends, shared by all tunnels (cheap to clone:
/// one pointer, so that every stream's future carries 8 bytes of it).
#[derive(Clone, Debug)]
pub struct Backends(Arc<Shared>);

/// What [`Backends`] holds.
struct Shared {
    /// Checks backend certificates (system anchors plus `extra_roots`).
    verified: TlsConnector,
    /// Accepts any backend certificate, for apps with `validate_backend_tls` off.
    unverified: TlsConnector,
    connect_timeout: Duration,
    idle: IdleConnections,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("connect_timeout", &self.connect_timeout)
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

/// Why a backend gave no response: the code for the stream and what the log
/// line says.
#[derive(Debug)]
pub(crate) struct BackendFailure {
    /// The tunnel's error code.
    pub(crate) code: BackendError,
    /// The cause, for the log (never sent to the user).
    pub(crate) detail: String,
}

impl BackendFailure {
    fn new(code: BackendError, detail: String) -> Self {
        Self { code, detail }
    }
}

impl Backends {
    /// Builds the TLS configurations: certificates of backends are checked
    /// against the system's trust anchors plus `extra_roots`, except for apps
    /// that turn validation off.
    pub fn new(options: &BackendOptions) -> Result<Self, TunnelError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "some system trust anchors could not be loaded");
        }
        let (_, unusable) = roots.add_parsable_certificates(native.certs);
        if unusable > 0 {
            tracing::debug!(unusable, "system trust anchors skipped");
        }
        for root in &options.extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| TunnelError::Config(format!("backend trust anchor: {e}")))?;
        }
        let verified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TunnelError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TunnelError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert { provider }))
            .with_no_client_auth();
        Ok(Self(Arc::new(Shared {
            verified: TlsConnector::from(Arc::new(verified)),
            unverified: TlsConnector::from(Arc::new(unverified)),
            connect_timeout: options.connect_timeout,
            idle: IdleConnections::new(options.pool_max_idle_per_host, options.pool_idle_timeout),
        })))
    }

    /// Sends `request` (origin-form target, `Host` set) to `origin` and waits
    /// for the response head; the connection goes back to the idle ones when
    /// the response's body has been read to its end.
    pub(crate) async fn send(
        &self,
        origin: &Origin,
        request: Request<BackendBody>,
    ) -> Result<Response<PooledBody>, BackendFailure> {
        // Boxed: the exchange's state lives only until the response head, and
        // inline it would enlarge every stream's task for the stream's whole
        // life (an idle WebSocket's too).
        let (response, sender) = Box::pin(self.exchange(origin, request)).await?;
        Ok(self.0.idle.wrap(response, sender, origin))
    }

    /// Sends an upgrade request: as [`Backends::send`], but the connection is
    /// never reused; the caller keeps `Sender` until the upgrade is done.
    pub(crate) async fn send_upgrade(
        &self,
        origin: &Origin,
        request: Request<BackendBody>,
    ) -> Result<(Response<Incoming>, Sender), BackendFailure> {
        self.exchange(origin, request).await
    }

    /// One request on an idle connection, or on a new one when none is ready
    /// or the idle one turned out closed before the request went out.
    async fn exchange(
        &self,
        origin: &Origin,
        mut request: Request<BackendBody>,
    ) -> Result<(Response<Incoming>, Sender), BackendFailure> {
        if let Some(mut sender) = self.0.idle.take(origin) {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                Err(mut e) => match e.take_message() {
                    // The connection was closed before the request left: it
                    // never reached the backend, so it may go on a new one.
                    Some(unsent) => {
                        tracing::debug!(backend = %origin.authority, error = %chain(e.error()), "idle backend connection was closed; opening another");
                        request = unsent;
                    }
                    None => return Err(http_failure(&e.into_error())),
                },
            }
        }
        // Boxed: a new connection is the rare case, and its state (the TLS
        // handshake's among it) need not be carried by every exchange.
        let mut sender = Box::pin(self.connect(origin)).await?;
        match sender.send_request(request).await {
            Ok(response) => Ok((response, sender)),
            Err(e) => Err(http_failure(&e)),
        }
    }

    /// Opens a connection: TCP within the connect timeout, then TLS for
    /// `https` within it again, then HTTP/1.1 with a task of its own that drives it.
    async fn connect(&self, origin: &Origin) -> Result<Sender, BackendFailure> {
        let host = origin.host();
        let port = origin
            .authority
            .port_u16()
            .unwrap_or(if origin.https { 443 } else { 80 });
        let budget = self.0.connect_timeout;
        let tcp = match tokio::time::timeout(budget, connect_tcp(host, port, budget)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(BackendFailure::new(
                    BackendError::Unreachable,
                    format!("no TCP connection within {:?}", self.0.connect_timeout),
                ));
            }
        };
        if !origin.https {
            return handshake(tcp).await;
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| BackendFailure::new(BackendError::Tls, format!("not a TLS server name: {e}")))?;
        let connector = if origin.verified {
            &self.0.verified
        } else {
            &self.0.unverified
        };
        match tokio::time::timeout(self.0.connect_timeout, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => handshake(tls).await,
            Err(_) => Err(BackendFailure::new(
                BackendError::Unreachable,
                format!("no TLS handshake within {:?}", self.0.connect_timeout),
            )),
            Ok(Err(e)) => {
                let code = if wraps_tls_error(&e) {
                    BackendError::Tls
                } else {
                    BackendError::Unreachable
                };
                Err(BackendFailure::new(code, format!("TLS handshake: {}", chain(&e))))
            }
        }
    }
}

/// A TCP connection to the first of the host's addresses that answers.
async fn connect_tcp(host: &str, port: u16, budget: Duration) -> Result<TcpStream, BackendFailure> {
    let deadline = tokio::time::Instant::now() + budget;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| BackendFailure::new(BackendError::Unreachable, format!("resolving {host}: {e}")))?
        .collect();
    if addresses.is_empty() {
        return Err(BackendFailure::new(
            BackendError::Unreachable,
            format!("{host} has no address"),
        ));
    }
    connect_any(&addresses, deadline).await
}

/// A TCP connection to the first of `addresses` that answers. Each address
/// gets an even share of the time left until `deadline`, so that one that
/// never answers (an IPv6 address without a route, say) leaves time for the
/// next.
async fn connect_any(addresses: &[SocketAddr], deadline: tokio::time::Instant) -> Result<TcpStream, BackendFailure> {
    let mut last = String::from("no address to connect to");
    for (i, address) in addresses.iter().enumerate() {
        let left = u32::try_from(addresses.len() - i).unwrap_or(u32::MAX);
        let share = deadline.saturating_duration_since(tokio::time::Instant::now()) / left;
        match tokio::time::timeout(share, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "TCP_NODELAY not set on a backend connection");
                }
                return Ok(tcp);
            }
            Ok(Err(e)) => last = format!("connecting to {address}: {e}"),
            Err(_) => last = format!("connecting to {address}: no answer within {share:?}"),
        }
    }
    Err(BackendFailure::new(BackendError::Unreachable, last))
}

/// HTTP/1.1 on a new connection; its task runs until the connection ends (or
/// hands it over to an upgrade).
async fn handshake<IO>(io: IO) -> Result<Sender, BackendFailure>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| http_failure(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %chain(&e), "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// Accepts any backend certificate, for apps whose `validate_backend_tls` is off
/// (an administrator's explicit choice for backends with self-signed or expired
/// certificates). The handshake signatures are still checked with the provider, so
/// the peer must hold the key of the certificate it shows; what is skipped is only
/// the question whether that certificate is trusted for that name.
#[derive(Debug)]
struct AnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why an exchange on an open connection produced no response: a TLS error
/// (`backend_tls`), the connection broke or closed before a response
/// (`backend_unreachable`), or the backend spoke, but not HTTP
/// (`backend_protocol`).
fn http_failure(e: &hyper::Error) -> BackendFailure {
    let detail = chain(e);
    if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        return BackendFailure::new(BackendError::Protocol, detail);
    }
    let mut unreachable = e.is_incomplete_message() || e.is_closed() || e.is_canceled();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return BackendFailure::new(BackendError::Tls, detail);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if wraps_tls_error(io) {
                return BackendFailure::new(BackendError::Tls, detail);
            }
            unreachable = true;
        }
        source = s.source();
    }
    let code = if unreachable {
        BackendError::Unreachable
    } else {
        BackendError::Protocol
    };
    BackendFailure::new(code, detail)
}

/// Whether an I/O error carries a TLS error. `io::Error::source` skips the error it
/// wraps, and the TLS connector may wrap the handshake's `io::Error` in another
/// one, so look inside by hand.
fn wraps_tls_error(mut io: &std::io::Error) -> bool {
    for _ in 0..8 {
        let Some(inner) = io.get_ref() else { return false };
        if inner.is::<rustls::Error>() {
            return true;
        }
        match inner.downcast_ref::<std::io::Error>() {
            Some(next) => io = next,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, oneshot};

    use super::*;

    fn get() -> Request<BackendBody> {
        Request::builder()
            .uri("/")
            .header("host", "backend")
            .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
            .unwrap()
    }

    /// A backend that answers every request on a connection with `ok`; the
    /// first connection is closed (without a word) when told to, after its
    /// first answer. Reports each connection it accepts.
    async fn backend(
        close_first: oneshot::Receiver<()>,
        closed: oneshot::Sender<()>,
    ) -> (u16, mpsc::UnboundedReceiver<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted_tx, accepted) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut close_first = Some((close_first, closed));
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                accepted_tx.send(()).unwrap();
                let close = close_first.take();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let mut head = Vec::new();
                        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => head.extend_from_slice(&buf[..n]),
                            }
                        }
                        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .unwrap();
                        if let Some((when, closed)) = close {
                            when.await.unwrap();
                            drop(tcp);
                            closed.send(()).unwrap();
                            return;
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    /// On one thread, the connection's task cannot notice the backend's close
    /// before the request is handed to it: it finds the connection closed
    /// with the request unsent, and the request goes on a new connection.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_handed_to_a_connection_the_backend_closed_goes_on_a_new_one() {
        let (close, when) = oneshot::channel();
        let (closed_tx, closed) = oneshot::channel();
        let (port, mut accepted) = backend(when, closed_tx).await;
        let backends = Backends::new(&BackendOptions::default()).unwrap();
        let origin = Origin {
            https: false,
            authority: format!("127.0.0.1:{port}").parse().unwrap(),
            verified: true,
        };
        let response = backends.send(&origin, get()).await.unwrap();
        assert_eq!(&response.into_body().collect().await.unwrap().to_bytes()[..], b"ok");
        accepted.recv().await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        close.send(()).unwrap();
        closed.await.unwrap();
        // The backend has closed; the connection's task has not run since.
        let response = backends.send(&origin, get()).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(&response.into_body().collect().await.unwrap().to_bytes()[..], b"ok");
        assert!(accepted.try_recv().is_ok(), "the request went on a second connection");
    }

    #[tokio::test]
    async fn failures_get_their_codes() {
        let backends = Backends::new(&BackendOptions {
            connect_timeout: Duration::from_millis(300),
            ..BackendOptions::default()
        })
        .unwrap();
        let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let origin = |authority: String, https: bool| Origin {
            https,
            authority: authority.parse().unwrap(),
            verified: true,
        };
        let failure = backends
            .send(&origin(refused.to_string(), false), get())
            .await
            .unwrap_err();
        assert_eq!(failure.code, BackendError::Unreachable, "{}", failure.detail);
        assert!(failure.detail.contains("connecting to 127.0.0.1"), "{}", failure.detail);
        let failure = backends
            .send(&origin("no-such-host.invalid:80".into(), false), get())
            .await
            .unwrap_err();
        assert_eq!(failure.code, BackendError::Unreachable, "{}", failure.detail);

        // A plain-HTTP server asked for TLS: it answers the greeting with a
        // page, and the handshake fails as TLS.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = plain.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut tcp, _) = plain.accept().await.unwrap();
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let failure = backends
            .send(&origin(format!("127.0.0.1:{port}"), true), get())
            .await
            .unwrap_err();
        assert_eq!(failure.code, BackendError::Tls, "{}", failure.detail);

        // One that says nothing at all: the handshake's deadline.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (_tcp, _) = silent.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let asked = tokio::time::Instant::now();
        let failure = backends
            .send(&origin(format!("127.0.0.1:{port}"), true), get())
            .await
            .unwrap_err();
        assert_eq!(failure.code, BackendError::Unreachable, "{}", failure.detail);
        assert!(failure.detail.contains("no TLS handshake within"), "{}", failure.detail);
        assert!(asked.elapsed() < Duration::from_secs(2));
    }

    /// An address that never answers (a listener whose queue is full drops
    /// the handshake) takes only its share of the time: the next address
    /// still gets a connection within the deadline.
    #[tokio::test]
    async fn an_address_that_never_answers_leaves_time_for_the_next() {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let full = socket.listen(1).unwrap();
        let silent = full.local_addr().unwrap();
        // Fill its queue (never accepted); a handshake beyond it gets no answer.
        let mut queued = Vec::new();
        for _ in 0..3 {
            if let Ok(Ok(tcp)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(silent)).await {
                queued.push(tcp);
            }
        }
        let hangs = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(silent)).await;
        assert!(hangs.is_err(), "the full listener answered: {hangs:?}");

        let good = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let started = tokio::time::Instant::now();
        let tcp = connect_any(&[silent, good.local_addr().unwrap()], started + Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(tcp.peer_addr().unwrap(), good.local_addr().unwrap());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(1900),
            "{took:?}"
        );

        let failure = connect_any(&[silent], tokio::time::Instant::now() + Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(failure.code, BackendError::Unreachable);
        assert!(failure.detail.contains("no answer within"), "{}", failure.detail);
        drop(queued);
    }
}
