//! The connector's data path on loopback with real parts: a test-only service
//! (mTLS, the tunnel upgrade, then an HTTP/2 client over the upgraded connection,
//! as the real service drives it), the real pool and forwarding, and real backends
//! (HTTP echo, slow, SSE, TLS, WebSocket, refusing, garbage, truncating).
// Helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_connector::{
    AppTable, BackendOptions, Backends, Connector, ConnectorError, PoolOptions, PoolStatus, TunnelEndpoint,
    TunnelError, TunnelOptions, TunnelPool,
};
use postern_pki::{
    CA_VALIDITY, CaKind, CertificateAuthority, ClientCertRequest, ComponentKind, KeyAlg, SERVICE_CERT_VALIDITY,
    generate_key, make_csr,
};
use postern_proto::control::AppRef;
use postern_proto::tunnel::{
    APP_HEADER, ERROR_HEADER, REQUEST_ID_HEADER, TUNNEL_UPGRADE, UPGRADE_HEADER, UPGRADED_HEADER, connector_tunnel_path,
};
use postern_time::{Clock, SharedClock, SystemClock};
use postern_uplink::{ControlClient, Enrolment, StateDir};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

const TENANT: &str = "3f0e8d4a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
/// Longest wait for anything that should happen.
const PATIENCE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// A body fed chunk by chunk through a bounded channel; ends when the sender drops.
fn channel_body(capacity: usize) -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(capacity);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
    });
    (tx, StreamBody::new(stream).boxed_unsync())
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, f).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: nothing within {PATIENCE:?}"),
    }
}

async fn text(response: Response<Incoming>) -> String {
    let bytes = within("response body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("postern_connector=debug")
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------
// The test-only service: accepts the upgrade, then is the HTTP/2 client.

/// Stops all reads and writes when frozen (a peer that went silent without
/// closing the connection).
struct Freezable<IO> {
    inner: IO,
    frozen: Arc<AtomicBool>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Freezable<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Freezable<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.frozen.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One tunnel as the service sees it.
struct ServiceTunnel {
    sender: hyper::client::conn::http2::SendRequest<Body>,
    frozen: Arc<AtomicBool>,
    conn: tokio::task::JoinHandle<()>,
}

impl ServiceTunnel {
    async fn send(&self, request: Request<Body>) -> Result<Response<Incoming>, hyper::Error> {
        let mut sender = self.sender.clone();
        within("stream slot", sender.ready()).await?;
        within("response head", sender.send_request(request)).await
    }

    /// Closes the connection abruptly (no GOAWAY).
    fn kill(&self) {
        self.conn.abort();
    }

    /// Goes silent without closing.
    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

/// An upgrade request the service received.
#[derive(Clone, Debug)]
struct SeenUpgrade {
    path: String,
    headers: HeaderMap,
}

struct ServiceState {
    upgrades: Mutex<Vec<SeenUpgrade>>,
    /// Answer upgrades with this status instead (404: `not_found`, others:
    /// `certificate_revoked`).
    refuse: Mutex<Option<u16>>,
    tunnels: mpsc::Sender<ServiceTunnel>,
    /// The connector configuration the exchange answers with (version and
    /// apps); its watch returns when the version changes.
    config: watch::Sender<(i64, Vec<AppRef>)>,
    /// Answer the configuration exchange with this status instead (503:
    /// unavailable, others: `certificate_revoked`).
    refuse_config: Mutex<Option<u16>>,
    /// Configuration exchanges received.
    exchanges: std::sync::atomic::AtomicUsize,
}

struct FakeService {
    addr: SocketAddr,
    service_ca_pem: String,
    connectors: CertificateAuthority,
    state: Arc<ServiceState>,
    tunnels: mpsc::Receiver<ServiceTunnel>,
}

impl FakeService {
    async fn start() -> Self {
        let now = SystemClock.now();
        let (service_ca, _) =
            CertificateAuthority::generate(CaKind::Service, "connector.test", now, CA_VALIDITY).unwrap();
        let (connectors, _) =
            CertificateAuthority::generate(CaKind::Connectors, "connector.test", now, CA_VALIDITY).unwrap();
        let (server_cert, server_key) = service_ca
            .issue_server(&["127.0.0.1".into()], now, SERVICE_CERT_VALIDITY)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(connectors.cert_der().to_vec())).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.to_vec())),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, tunnels) = mpsc::channel(16);
        let state = Arc::new(ServiceState {
            upgrades: Mutex::new(Vec::new()),
            refuse: Mutex::new(None),
            tunnels: tx,
            config: watch::channel((1, Vec::new())).0,
            refuse_config: Mutex::new(None),
            exchanges: std::sync::atomic::AtomicUsize::new(0),
        });
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let state = accept_state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| control(req, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self {
            addr,
            service_ca_pem: service_ca.cert_pem().to_owned(),
            connectors,
            state,
            tunnels,
        }
    }

    async fn next_tunnel(&mut self) -> ServiceTunnel {
        within("a tunnel", self.tunnels.recv()).await.unwrap()
    }

    fn upgrades(&self) -> Vec<SeenUpgrade> {
        self.state.upgrades.lock().unwrap().clone()
    }
}

/// The control API's part the connector uses: the configuration exchange, its
/// watch, and the tunnel upgrade.
async fn control(req: Request<Incoming>, state: Arc<ServiceState>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == postern_proto::control::connector_config_path(TENANT) {
        state.exchanges.fetch_add(1, Ordering::SeqCst);
        if let Some(status) = *state.refuse_config.lock().unwrap() {
            let body = if status == 503 {
                r#"{"error":"temporarily_unavailable","message":"try again"}"#
            } else {
                r#"{"error":"certificate_revoked","message":"this connector was removed"}"#
            };
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            return Ok(response);
        }
        let (version, apps) = state.config.borrow().clone();
        let config = postern_proto::control::ConnectorConfig {
            protocol: postern_proto::PROTOCOL_VERSION,
            config_version: version,
            component_id: "connector-1".into(),
            group: postern_proto::control::GroupRef {
                id: "group-1".into(),
                name: "Default".into(),
            },
            apps,
            timing: postern_proto::control::ConnectorTiming {
                refresh_secs: 600,
                backend_timeout_secs: 30,
            },
            renewed_certificate_pem: None,
            renew_requested: false,
        };
        return Ok(json(serde_json::to_value(&config).unwrap()));
    }
    if path == postern_proto::control::connector_config_watch_path(TENANT) {
        let held: i64 = req
            .uri()
            .query()
            .and_then(|q| q.strip_prefix("version="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut versions = state.config.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(20), versions.wait_for(|(v, _)| *v != held)).await;
        let current = state.config.borrow().0;
        return Ok(json(
            serde_json::to_value(postern_proto::control::ConfigVersion {
                config_version: current,
            })
            .unwrap(),
        ));
    }
    accept_upgrade(req, state).await
}

fn json(value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

async fn accept_upgrade(
    mut req: Request<Incoming>,
    state: Arc<ServiceState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.upgrades.lock().unwrap().push(SeenUpgrade {
        path: req.uri().path().to_owned(),
        headers: req.headers().clone(),
    });
    if let Some(status) = *state.refuse.lock().unwrap() {
        let body = if status == 404 {
            r#"{"error":"not_found","message":"no such endpoint"}"#
        } else {
            r#"{"error":"certificate_revoked","message":"this connector was removed"}"#
        };
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        return Ok(response);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let frozen = Arc::new(AtomicBool::new(false));
        let io = Freezable {
            inner: TokioIo::new(upgraded),
            frozen: frozen.clone(),
        };
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let _ = state.tunnels.send(ServiceTunnel { sender, frozen, conn }).await;
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert("connection", "upgrade".parse().unwrap());
    response
        .headers_mut()
        .insert("upgrade", TUNNEL_UPGRADE.parse().unwrap());
    Ok(response)
}

// ---------------------------------------------------------------------------------
// Backends.

struct BackendState {
    /// Paths of slow requests, as they start.
    started: mpsc::UnboundedSender<String>,
    /// Events of the next `/app/sse` response.
    sse: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

struct HttpBackend {
    addr: SocketAddr,
    started: mpsc::UnboundedReceiver<String>,
    sse: mpsc::Sender<Bytes>,
}

/// `/app/sleep/{ms}`: answers after that long. `/app/sse`: an event stream the
/// test feeds. Anything else: echoes the body and reports what it saw in
/// `x-seen-*` headers.
async fn route(req: Request<Incoming>, state: Arc<BackendState>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(ms) = path.strip_prefix("/app/sleep/") {
        let _ = state.started.send(path.clone());
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await; // a slow backend, on purpose
        return Ok(Response::new(full("slept")));
    }
    if path == "/app/sse" {
        let rx = state.sse.lock().unwrap().take().unwrap();
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
        });
        let mut response = Response::new(StreamBody::new(events).boxed_unsync());
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(response);
    }
    let mut names: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
    names.sort();
    let seen = [
        ("x-seen-method", req.method().to_string()),
        ("x-seen-uri", req.uri().to_string()),
        ("x-seen-host", header(req.headers(), "host").to_owned()),
        ("x-seen-headers", names.join(",")),
        ("x-seen-request-id", header(req.headers(), REQUEST_ID_HEADER).to_owned()),
        ("x-seen-cookie", header(req.headers(), "cookie").to_owned()),
    ];
    let mut response = Response::new(req.into_body().map_err(BoxError::from).boxed_unsync());
    for (name, value) in seen {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    Ok(response)
}

async fn spawn_http(tls: Option<Arc<rustls::ServerConfig>>) -> HttpBackend {
    let (started_tx, started) = mpsc::unbounded_channel();
    let (sse, sse_rx) = mpsc::channel(1);
    let state = Arc::new(BackendState {
        started: started_tx,
        sse: Mutex::new(Some(sse_rx)),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let state = state.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| route(req, state.clone()));
                let http = hyper::server::conn::http1::Builder::new();
                let _ = match acceptor {
                    Some(a) => {
                        let Ok(tls) = a.accept(tcp).await else { return };
                        http.serve_connection(TokioIo::new(tls), service).await
                    }
                    None => http.serve_connection(TokioIo::new(tcp), service).await,
                };
            });
        }
    });
    HttpBackend { addr, started, sse }
}

/// A backend that reads the request head and answers with `answer`, then closes.
async fn spawn_raw(answer: &'static [u8]) -> SocketAddr {
    spawn_paced(vec![answer], Duration::ZERO).await
}

/// A backend that reads the request head and answers with `parts`, `pause`
/// apart, then closes.
async fn spawn_paced(parts: Vec<&'static [u8]>, pause: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let parts = parts.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(pause).await; // a backend pausing mid-answer, on purpose
                    }
                    if tcp.write_all(part).await.is_err() {
                        return;
                    }
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// A hyper backend that answers `ok` and counts the connections it accepted.
async fn spawn_counting() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    service_fn(|_req: Request<Incoming>| async { Ok::<_, Infallible>(Response::new(full("ok"))) });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// A WebSocket echo server.
async fn spawn_websocket() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        if ws.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A TLS server configuration for 127.0.0.1: self-signed, or signed by a fresh CA
/// (returned too).
fn backend_tls(with_ca: bool) -> (Arc<rustls::ServerConfig>, Option<CertificateDer<'static>>) {
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, ca) = if with_ca {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        (leaf.signed_by(&leaf_key, &ca).unwrap(), Some(ca.der().clone()))
    } else {
        (leaf.self_signed(&leaf_key).unwrap(), None)
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    (Arc::new(config), ca)
}

fn app(id: &str, internal_url: String, validate_backend_tls: bool, backend_timeout_secs: u64) -> AppRef {
    AppRef {
        id: id.into(),
        internal_url,
        validate_backend_tls,
        backend_timeout_secs,
    }
}

// ---------------------------------------------------------------------------------
// The connector under test.

struct Harness {
    svc: FakeService,
    pool: Option<TunnelPool>,
    tables: watch::Sender<Arc<AppTable>>,
    status: watch::Receiver<PoolStatus>,
    _state: tempfile::TempDir,
}

/// Options for quick tests: one tunnel, short backoff.
fn quick() -> PoolOptions {
    PoolOptions {
        tunnels: 1,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        tunnel: TunnelOptions {
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
            drain_grace: Duration::from_secs(10),
            ..TunnelOptions::default()
        },
        ..PoolOptions::default()
    }
}

/// Registers a connector with the fake service (key, certificate, enrolment in a
/// state directory) and loads it the way `postern connector run` does.
fn enrol(svc: &FakeService) -> (tempfile::TempDir, TunnelEndpoint) {
    let (dir, client) = enrol_client(svc);
    (dir, TunnelEndpoint::from_client(&client))
}

/// [`enrol`], returning the control client itself.
fn enrol_client(svc: &FakeService) -> (tempfile::TempDir, ControlClient) {
    let now = SystemClock.now();
    let key = generate_key(KeyAlg::EcdsaP256).unwrap();
    let issued = svc
        .connectors
        .issue_client(
            make_csr(&key).unwrap().as_bytes(),
            &ClientCertRequest::new(ComponentKind::Connector, TENANT, "connector-1"),
            now,
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("connector"));
    let enrolment = Enrolment {
        kind: ComponentKind::Connector,
        server_url: "https://login.connector.test".into(),
        tenant: "acme".into(),
        tenant_id: TENANT.into(),
        component_id: "connector-1".into(),
        control_url: format!("https://{}", svc.addr),
        control_ca_pem: svc.service_ca_pem.clone(),
        group: None,
    };
    state.save(&key.to_pem(), &issued.cert_pem, &enrolment).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let client = ControlClient::load(state, clock).unwrap();
    (dir, client)
}

async fn start(apps: &[AppRef], options: PoolOptions, backends: BackendOptions) -> Harness {
    start_refused(None, apps, options, backends).await
}

/// [`start`] with a service that answers upgrades with `refuse` (when set).
async fn start_refused(
    refuse: Option<u16>,
    apps: &[AppRef],
    options: PoolOptions,
    backends: BackendOptions,
) -> Harness {
    init_logs();
    let svc = FakeService::start().await;
    *svc.state.refuse.lock().unwrap() = refuse;
    let (dir, endpoint) = enrol(&svc);
    let (tables, table) = watch::channel(Arc::new(AppTable::new(apps, Duration::from_secs(30))));
    let pool = TunnelPool::start(endpoint, table, Backends::new(&backends).unwrap(), options).unwrap();
    let status = pool.status();
    Harness {
        svc,
        pool: Some(pool),
        tables,
        status,
        _state: dir,
    }
}

impl Harness {
    async fn wait_status(&mut self, what: &str, f: impl Fn(&PoolStatus) -> bool) -> PoolStatus {
        within(what, self.status.wait_for(|s| f(s))).await.unwrap().clone()
    }
}

/// A tunnel request for `app` at `path`, with the authority the backend must see.
fn request(app: &str, path: &str) -> http::request::Builder {
    Request::builder()
        .uri(format!("https://wiki.example.com{path}"))
        .header(APP_HEADER, app)
        .header(REQUEST_ID_HEADER, "req-42")
}

// ---------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_configured_backend_with_path_and_host_mapped() {
    let echo = spawn_http(None).await;
    let apps = [app("wiki", format!("http://{}/app/", echo.addr), true, 5)];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;
    h.wait_status("tunnel up", |s| s.up == 1).await;

    // The upgrade the connector sent.
    let upgrades = h.svc.upgrades();
    assert_eq!(upgrades.len(), 1);
    assert_eq!(upgrades[0].path, connector_tunnel_path(TENANT));
    assert_eq!(header(&upgrades[0].headers, "upgrade"), TUNNEL_UPGRADE);
    assert_eq!(header(&upgrades[0].headers, "x-postern-protocol"), "1");
    assert!(header(&upgrades[0].headers, "connection").eq_ignore_ascii_case("upgrade"));

    // GET: base path + tunnel path, Host = the stream's authority, control
    // headers gone, end-to-end headers and the request ID kept.
    let response = tunnel
        .send(
            request("wiki", "/docs/page?x=1&y=2")
                .header("x-custom", "kept")
                .header("te", "trailers")
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = response.headers().clone();
    assert_eq!(header(&seen, "x-seen-method"), "GET");
    assert_eq!(header(&seen, "x-seen-uri"), "/app/docs/page?x=1&y=2");
    assert_eq!(header(&seen, "x-seen-host"), "wiki.example.com");
    assert_eq!(header(&seen, "x-seen-request-id"), "req-42");
    assert_eq!(header(&seen, "x-seen-cookie"), "a=1; b=2");
    let names = header(&seen, "x-seen-headers");
    assert!(names.contains("x-custom"), "{names}");
    assert!(!names.contains("x-postern-app"), "{names}");
    assert!(!names.split(',').any(|n| n == "te"), "{names}");
    assert!(response.headers().get(ERROR_HEADER).is_none());
    assert_eq!(text(response).await, "");

    // POST: the body goes through and comes back.
    let body = "name=value&other=thing".repeat(1000);
    let response = tunnel
        .send(
            request("wiki", "/submit")
                .method("POST")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(full(body.clone()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-seen-method"), "POST");
    assert_eq!(header(response.headers(), "x-seen-uri"), "/app/submit");
    assert_eq!(text(response).await, body);

    // An app this connector does not serve.
    let response = tunnel
        .send(request("payroll", "/").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(response.headers(), ERROR_HEADER), "unknown_app");
    assert_eq!(header(response.headers(), "content-type"), "text/plain; charset=utf-8");
    assert!(!text(response).await.is_empty());

    // A new configuration applies to the next request on the same tunnel.
    h.tables.send_replace(Arc::new(AppTable::new(
        &[app("payroll", format!("http://{}/", echo.addr), true, 5)],
        Duration::from_secs(30),
    )));
    let response = tunnel
        .send(request("payroll", "/run").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-seen-uri"), "/run");
    let response = tunnel.send(request("wiki", "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(header(response.headers(), ERROR_HEADER), "unknown_app");
    assert_eq!(h.svc.upgrades().len(), 1, "no redial for a configuration change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_get_their_codes() {
    let slow = spawn_http(None).await;
    let refused = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let garbage = spawn_raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
    let truncated = spawn_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly a part").await;
    let apps = [
        app("slow", format!("http://{}/app", slow.addr), true, 1),
        app("refused", format!("http://{refused}/"), true, 5),
        app("garbage", format!("http://{garbage}/"), true, 5),
        app("truncated", format!("http://{truncated}/"), true, 5),
        app("nxdomain", "http://no-such-host.invalid/".into(), true, 5),
    ];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;

    for (id, code) in [
        ("refused", "backend_unreachable"),
        ("nxdomain", "backend_unreachable"),
        ("garbage", "backend_protocol"),
    ] {
        let response = tunnel.send(request(id, "/").body(empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY, "{id}");
        assert_eq!(header(response.headers(), ERROR_HEADER), code, "{id}");
        assert_eq!(header(response.headers(), "content-type"), "text/plain; charset=utf-8");
    }

    // The response head must come within the app's timeout (1 s here).
    let asked = Instant::now();
    let response = tunnel
        .send(request("slow", "/sleep/10000").body(empty()).unwrap())
        .await
        .unwrap();
    let took = asked.elapsed();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(header(response.headers(), ERROR_HEADER), "backend_timeout");
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A body that breaks off resets the stream: never a clean, short end. The
    // backend's whole answer is small, so the break may come before the head
    // has gone out (the stream is reset at once) or after it (the body is).
    match tunnel.send(request("truncated", "/").body(empty()).unwrap()).await {
        Ok(response) => {
            assert_eq!(response.status(), StatusCode::OK);
            assert!(response.headers().get(ERROR_HEADER).is_none());
            let collected = within("truncated body", response.into_body().collect()).await;
            assert!(collected.is_err(), "a truncated body must reset the stream");
        }
        Err(e) => assert!(
            e.to_string().contains("stream error") || format!("{e:?}").contains("Reset"),
            "a truncated body must reset the stream, not fail otherwise: {e:?}"
        ),
    }
    // The tunnel itself is fine.
    assert_eq!(h.status.borrow().up, 1);
    let response = tunnel
        .send(request("refused", "/").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
}

/// A backend that reads a request head and never answers; sends on `closed`
/// when the connector closes the connection.
async fn spawn_silent() -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read until the end of file: the head, then nothing more.
                while matches!(tcp.read(&mut buf).await, Ok(n) if n > 0) {}
                let _ = closed_tx.send(()).await;
            });
        }
    });
    (addr, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_service_gives_up_is_given_up_towards_the_backend() {
    let (silent, mut closed) = spawn_silent().await;
    let apps = [app("silent", format!("http://{silent}/"), true, 60)];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;
    h.wait_status("tunnel up", |s| s.up == 1).await;

    // The service stops waiting (its user went away): the stream is reset.
    let mut sender = tunnel.sender.clone();
    within("stream slot", sender.ready()).await.unwrap();
    let waiting = sender.send_request(request("silent", "/report").body(empty()).unwrap());
    let gave_up = tokio::time::timeout(Duration::from_millis(300), waiting).await;
    assert!(gave_up.is_err(), "the silent backend answered");

    // The connector drops the exchange with it, long before the app's 60 s.
    within("the backend connection closed", closed.recv()).await.unwrap();
    // The tunnel goes on.
    assert_eq!(h.status.borrow().up, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_connections_are_kept_and_one_the_backend_closed_costs_no_request() {
    let (kept, accepted) = spawn_counting().await;
    // Answers one request per connection, then closes it without saying so
    // (as a backend whose keep-alive timeout ran out just then would).
    let closing = spawn_raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let apps = [
        app("kept", format!("http://{kept}/"), true, 5),
        app("closing", format!("http://{closing}/"), true, 5),
    ];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;
    h.wait_status("tunnel up", |s| s.up == 1).await;

    for _ in 0..20 {
        let response = tunnel.send(request("kept", "/").body(empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "ok");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection for requests one after another"
    );

    // Eight at once, twice: at most eight connections in all.
    for _ in 0..2 {
        let answers =
            futures_util::future::join_all((0..8).map(|_| tunnel.send(request("kept", "/").body(empty()).unwrap())))
                .await;
        for response in answers {
            assert_eq!(text(response.unwrap()).await, "ok");
        }
    }
    let opened = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for eight requests at a time"
    );

    for i in 0..30 {
        let response = tunnel
            .send(request("closing", "/").body(empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "request {i}");
        assert!(response.headers().get(ERROR_HEADER).is_none(), "request {i}");
        assert_eq!(text(response).await, "ok", "request {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_certificates_are_checked_unless_the_app_says_not() {
    let (self_signed, _) = backend_tls(false);
    let (ca_signed, ca) = backend_tls(true);
    let self_signed = spawn_http(Some(self_signed)).await;
    let ca_signed = spawn_http(Some(ca_signed)).await;
    let apps = [
        app("checked", format!("https://{}/app/", self_signed.addr), true, 5),
        app("unchecked", format!("https://{}/app/", self_signed.addr), false, 5),
        app("internal-ca", format!("https://{}/app/", ca_signed.addr), true, 5),
    ];
    let backends = BackendOptions {
        extra_roots: vec![ca.unwrap()],
        ..BackendOptions::default()
    };
    let mut h = start(&apps, quick(), backends).await;
    let tunnel = h.svc.next_tunnel().await;

    let response = tunnel
        .send(request("checked", "/x").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(response.headers(), ERROR_HEADER), "backend_tls");

    for id in ["unchecked", "internal-ca"] {
        let response = tunnel
            .send(request(id, "/x").method("POST").body(full("over tls")).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert_eq!(header(response.headers(), "x-seen-uri"), "/app/x", "{id}");
        assert_eq!(header(response.headers(), "x-seen-host"), "wiki.example.com", "{id}");
        assert_eq!(text(response).await, "over tls", "{id}");
    }
}

/// Peak resident memory of this process (bytes).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Chunk `i` of the large body: 64 KiB, different for every `i`.
fn chunk(i: u64) -> Bytes {
    let mut bytes = vec![0u8; 64 * 1024];
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    Bytes::from(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_with_bounded_memory() {
    const CHUNKS: u64 = 4096; // 256 MiB
    let echo = spawn_http(None).await;
    let apps = [app("echo", format!("http://{}/app/", echo.addr), true, 30)];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;

    let before = peak_rss();
    let (tx, body) = channel_body(4);
    let upload = tokio::spawn(async move {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for i in 0..CHUNKS {
            let c = chunk(i);
            digest.update(&c);
            tx.send(c).await.unwrap();
        }
        digest.finish().as_ref().to_vec()
    });
    let response = tunnel
        .send(request("echo", "/upload").method("POST").body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut received = 0u64;
    while let Some(frame) = tokio::time::timeout(PATIENCE, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
            digest.update(&data);
        }
    }
    let sent = within("upload", upload).await.unwrap();
    assert_eq!(received, CHUNKS * 64 * 1024);
    assert_eq!(digest.finish().as_ref(), sent.as_slice(), "SHA-256 of what came back");
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 64 * 1024 * 1024, "peak memory grew by {} MiB", grown >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_of_a_known_length_arrive_whole_and_as_they_come() {
    let body: Vec<u8> = (0..4000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let whole: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: 4000\r\n\r\n{}",
        String::from_utf8(body.clone()).unwrap()
    )
    .into_bytes()
    .leak();
    let whole = spawn_raw(whole).await;
    // The body's first half, then a pause, then the rest: what came first is
    // passed on at once, not held back until the length is complete.
    let paced = spawn_paced(
        vec![b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello", b" world"],
        Duration::from_millis(600),
    )
    .await;
    let apps = [
        app("whole", format!("http://{whole}/"), true, 5),
        app("paced", format!("http://{paced}/"), true, 5),
    ];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;

    let response = tunnel.send(request("whole", "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-length"), "4000");
    let got = within("the body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(got, body);

    let asked = Instant::now();
    let response = tunnel.send(request("paced", "/").body(empty()).unwrap()).await.unwrap();
    let head_after = asked.elapsed();
    assert!(
        head_after < Duration::from_millis(450),
        "the head waited for the slow body: {head_after:?}"
    );
    let mut got = response.into_body();
    let first = within("the first part", got.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "hello");
    assert!(
        asked.elapsed() < Duration::from_millis(450),
        "the first part waited for the rest"
    );
    let rest = within("the rest", got.collect()).await.unwrap().to_bytes();
    assert_eq!(rest, " world");
    assert!(asked.elapsed() >= Duration::from_millis(600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_one_by_one() {
    let backend = spawn_http(None).await;
    let apps = [app("events", format!("http://{}/app/", backend.addr), true, 5)];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;

    let response = tunnel
        .send(request("events", "/sse").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-type"), "text/event-stream");
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let start = Instant::now();
    for i in 0..3 {
        // The next event is produced only once the previous one has arrived: a
        // connector that held events back would never see this test through.
        let event = format!("id: {i}\ndata: event {i}\n\n");
        backend.sse.send(Bytes::from(event.clone())).await.unwrap();
        let frame = within("an event", body.frame()).await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), event.as_bytes());
        arrivals.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await; // events paced apart, on purpose
    }
    assert!(
        arrivals.windows(2).all(|w| w[1] >= w[0] + Duration::from_millis(100)),
        "{arrivals:?}"
    );
    drop(backend.sse);
    // The end (HTTP/2 may carry it on an empty DATA frame), and nothing more.
    let rest = within("end of events", body.collect()).await.unwrap().to_bytes();
    assert!(rest.is_empty(), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_upgraded_and_echo() {
    let ws = spawn_websocket().await;
    let echo = spawn_http(None).await;
    let apps = [
        app("chat", format!("http://{ws}/"), true, 5),
        app("plain", format!("http://{}/app/", echo.addr), true, 5),
    ];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;

    let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
    let (up, body) = channel_body(8);
    let response = tunnel
        .send(
            request("chat", "/socket")
                .header(UPGRADE_HEADER, "websocket")
                .header("sec-websocket-key", key.as_str())
                .header("sec-websocket-version", "13")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), UPGRADED_HEADER), "101");
    assert_eq!(
        header(response.headers(), "sec-websocket-accept"),
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    assert!(response.headers().get("upgrade").is_none());

    // Bridge the stream to a byte pipe and speak WebSocket over it.
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_ws, mut to_ws) = tokio::io::split(theirs);
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match from_ws.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if up.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut down = response.into_body();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = down.frame().await {
            if let Ok(data) = frame.into_data()
                && to_ws.write_all(&data).await.is_err()
            {
                return;
            }
        }
        let _ = to_ws.shutdown().await;
    });
    let mut socket = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
    socket.send(Message::text("hello through the tunnel")).await.unwrap();
    let echoed = within("echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::text("hello through the tunnel"));
    let blob = vec![7u8; 100_000];
    socket.send(Message::binary(blob.clone())).await.unwrap();
    let echoed = within("echo", socket.next()).await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(blob));
    socket.close(None).await.unwrap();

    // A backend that does not switch protocols: its answer passes through.
    let response = tunnel
        .send(
            request("plain", "/no-ws")
                .header(UPGRADE_HEADER, "websocket")
                .header("sec-websocket-key", key.as_str())
                .header("sec-websocket-version", "13")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(UPGRADED_HEADER).is_none());
    assert_eq!(header(response.headers(), "x-seen-uri"), "/app/no-ws");
    let names = header(response.headers(), "x-seen-headers").to_owned();
    assert!(
        names.contains("sec-websocket-key") && !names.contains("x-postern-upgrade"),
        "{names}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_tunnels_are_redialled() {
    let echo = spawn_http(None).await;
    let apps = [app("wiki", format!("http://{}/app/", echo.addr), true, 5)];
    let options = PoolOptions {
        tunnels: 2,
        tunnel: TunnelOptions {
            keep_alive_interval: Duration::from_millis(300),
            keep_alive_timeout: Duration::from_millis(300),
            ..quick().tunnel
        },
        ..quick()
    };
    let mut h = start(&apps, options, BackendOptions::default()).await;
    let first = h.svc.next_tunnel().await;
    let second = h.svc.next_tunnel().await;
    h.wait_status("two tunnels", |s| s.up == 2).await;

    // Closed under the connector's feet.
    first.kill();
    let third = h.svc.next_tunnel().await;
    h.wait_status("two tunnels again", |s| s.up == 2 && s.opened == 3).await;
    let response = third
        .send(request("wiki", "/after").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(header(response.headers(), "x-seen-uri"), "/app/after");

    // Gone silent without closing: the heartbeats notice.
    let frozen = Instant::now();
    second.freeze();
    let _fourth = h.svc.next_tunnel().await;
    let noticed = frozen.elapsed();
    assert!(
        noticed < Duration::from_secs(4),
        "a silent tunnel took {noticed:?} to be replaced"
    );
    let status = h
        .wait_status("two tunnels once more", |s| s.up == 2 && s.opened == 4)
        .await;
    assert!(status.last_error.is_some());
    assert_eq!(h.svc.upgrades().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_tunnel_is_reported_not_retried() {
    let mut h = start_refused(Some(403), &[], quick(), BackendOptions::default()).await;
    let pool = h.pool.take().unwrap();
    let error = within("refusal", pool.failed()).await;
    assert!(error.needs_registration(), "{error:?}");
    assert!(matches!(error, TunnelError::Refused { status: 403, ref code, .. } if code == "certificate_revoked"));
    assert!(error.to_string().contains("this connector was removed"), "{error}");
    let status = pool.status().borrow().clone();
    assert_eq!(status.up, 0);
    assert_eq!(status.stopped, Some(error));
    // No more dials (the backoff here is 50 ms): an absence, so a window.
    tokio::time::sleep(Duration::from_millis(400)).await; // quiet window
    assert_eq!(h.svc.upgrades().len(), 1);
    assert!(h.svc.tunnels.try_recv().is_err());
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_tunnels_is_retried_slowly() {
    let options = PoolOptions {
        backoff_max: Duration::from_millis(300),
        ..quick()
    };
    let mut h = start_refused(Some(404), &[], options, BackendOptions::default()).await;
    let svc = &mut h.svc;
    let pool = h.pool.take().unwrap();
    let mut status = pool.status();
    within("a refusal", status.wait_for(|s| s.last_error.is_some()))
        .await
        .unwrap();
    let refused_at = Instant::now();
    within("a second try", async {
        while svc.upgrades().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await; // poll pause inside `within`
        }
    })
    .await;
    assert!(
        refused_at.elapsed() >= Duration::from_millis(250),
        "retried at backoff_max, not at once"
    );
    assert_eq!(status.borrow().stopped, None);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), pool.failed())
            .await
            .is_err()
    );
    // The service is upgraded: the tunnel comes up.
    *svc.state.refuse.lock().unwrap() = None;
    let _tunnel = svc.next_tunnel().await;
    within("tunnel up", status.wait_for(|s| s.up == 1)).await.unwrap();
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_requests_in_flight_finish() {
    let mut slow = spawn_http(None).await;
    let apps = [app("slow", format!("http://{}/app/", slow.addr), true, 10)];
    let mut h = start(&apps, quick(), BackendOptions::default()).await;
    let tunnel = h.svc.next_tunnel().await;
    h.wait_status("tunnel up", |s| s.up == 1).await;

    let sender = tunnel.sender.clone();
    let in_flight = tokio::spawn(async move {
        let mut sender = sender;
        sender.ready().await.unwrap();
        let response = sender
            .send_request(request("slow", "/sleep/1000").body(empty()).unwrap())
            .await
            .unwrap();
        (response.status(), text(response).await)
    });
    assert_eq!(
        within("backend reached", slow.started.recv()).await.unwrap(),
        "/app/sleep/1000"
    );
    let pool = h.pool.take().unwrap();
    let asked = Instant::now();
    let drained = tokio::spawn(pool.shutdown());
    let status = h.wait_status("draining", |s| s.draining).await;
    assert_eq!(status.up, 1, "the tunnel stays while a request is in flight");

    let (code, body) = within("in-flight response", in_flight).await.unwrap();
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body, "slept");
    within("drain", drained).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5), "{:?}", asked.elapsed());
    assert_eq!(h.status.borrow().up, 0);
    // The service may open no new stream on the drained tunnel, and nothing is
    // redialled.
    assert!(
        tunnel
            .send(request("slow", "/sleep/1").body(empty()).unwrap())
            .await
            .is_err()
    );
    assert_eq!(h.svc.upgrades().len(), 1);
}

/// The whole connector ([`Connector`]) in process against the fake control
/// API: it fetches its configuration, opens its tunnels and serves the apps;
/// a configuration change reaches it through the watch and swaps the apps
/// without redialling; a failing exchange is retried; a shutdown drains and
/// returns; a revoked connector stops with the error that says to register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_follows_its_configuration_until_shutdown() {
    init_logs();
    let echo = spawn_http(None).await;
    let mut svc = FakeService::start().await;
    svc.state
        .config
        .send_replace((1, vec![app("wiki", format!("http://{}/app/", echo.addr), true, 5)]));
    let (_dir, client) = enrol_client(&svc);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(
        Connector::new(client)
            .with_pool_options(quick())
            .with_retry(Duration::from_millis(20), Duration::from_millis(100))
            .run(async move {
                let _ = stopped.await;
            }),
    );

    // The first configuration, then a tunnel serving its app.
    let tunnel = svc.next_tunnel().await;
    let response = tunnel
        .send(request("wiki", "/page").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "x-seen-uri"), "/app/page");
    let unknown = tunnel.send(request("docs", "/").body(empty()).unwrap()).await.unwrap();
    assert_eq!(unknown.status(), StatusCode::BAD_GATEWAY, "docs is not configured yet");

    // A change, announced through the watch: the new app is served on the
    // same tunnel, with no second upgrade.
    svc.state.config.send_replace((
        2,
        vec![
            app("wiki", format!("http://{}/app/", echo.addr), true, 5),
            app("docs", format!("http://{}/docs/", echo.addr), true, 5),
        ],
    ));
    let served = within("the new app is served", async {
        loop {
            let r = tunnel
                .send(request("docs", "/intro").body(empty()).unwrap())
                .await
                .unwrap();
            if r.status() == StatusCode::OK {
                return r;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(header(served.headers(), "x-seen-uri"), "/docs/intro");
    assert_eq!(svc.upgrades().len(), 1, "a configuration change redials no tunnel");
    let exchanges = svc.state.exchanges.load(Ordering::SeqCst);
    assert_eq!(exchanges, 2, "one exchange at start, one after the change");

    // The service fails for a while: the exchange is retried until it works.
    *svc.state.refuse_config.lock().unwrap() = Some(503);
    svc.state
        .config
        .send_replace((3, vec![app("wiki", format!("http://{}/app/", echo.addr), true, 5)]));
    within("retries", async {
        while svc.state.exchanges.load(Ordering::SeqCst) < exchanges + 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    *svc.state.refuse_config.lock().unwrap() = None;
    within("docs is gone after the retried exchange", async {
        loop {
            let r = tunnel
                .send(request("docs", "/intro").body(empty()).unwrap())
                .await
                .unwrap();
            if r.status() == StatusCode::BAD_GATEWAY {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;

    // A shutdown returns Ok.
    stop.send(()).unwrap();
    let result = within("the connector stops", running).await.unwrap();
    assert!(result.is_ok(), "{result:?}");

    // A revoked connector stops with the error that says what to do.
    let (_dir2, client) = enrol_client(&svc);
    *svc.state.refuse_config.lock().unwrap() = Some(403);
    let result = within(
        "a revoked connector stops",
        Connector::new(client)
            .with_pool_options(quick())
            .run(std::future::pending()),
    )
    .await;
    match result {
        Err(ConnectorError::NeedsRegistration(why)) => assert!(why.contains("removed"), "{why}"),
        other => panic!("expected NeedsRegistration, got {other:?}"),
    }
}
