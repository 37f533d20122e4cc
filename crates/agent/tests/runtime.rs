//! The agent runtime against a small in-process mTLS service that plays bootstrap, queue,
//! results and renewal, with the real uplink client and a real argon2 account file.
// Helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use postern_agent::{Agent, AgentError, AgentOptions, AgentStatus, Phase, StatsSnapshot};
use postern_directory::{Directory, LocalFileDirectory, Outcome, SecretString, hash_password};
use postern_pki::{
    CA_VALIDITY, CaKind, CertificateAuthority, ClientCertRequest, ComponentKey, ComponentKind, KeyAlg,
    SERVICE_CERT_VALIDITY, generate_key, make_csr,
};
use postern_proto::control::{RenewRequest, RenewResponse, RenewalCheck};
use postern_proto::relay::{
    AgentCiphertext, BootstrapResponse, QueueFrame, ValidationOutcome, ValidationRequest, ValidationResult,
    agent_queue_path, oaep_label,
};
use postern_proto::{ErrorBody, PROTOCOL_VERSION};
use postern_time::{Clock, SharedClock, SystemClock};
use postern_uplink::{Enrolment, StateDir};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::ServiceExt;

const TENANT: &str = "3f0e8d4a-1b2c-4d5e-8f90-a1b2c3d4e5f6";
const ALICE_PASSWORD: &str = "Correct-Horse-1";
/// Longest wait for anything the agent should do.
const PATIENCE: Duration = Duration::from_secs(30);

fn now_secs() -> i64 {
    SystemClock.now().secs()
}

// ---------------------------------------------------------------------------------
// The fake service.

/// How the fake service behaves; tests change it as they go.
#[derive(Clone, Debug)]
struct Knobs {
    heartbeat_secs: u64,
    credential_secs: i64,
    max_in_flight: u32,
    /// Queue opens to refuse with 401 before accepting again.
    refuse_queue: usize,
    /// Send heartbeats on the queue.
    heartbeats: bool,
    /// End every queue response right after its first heartbeat.
    close_streams: bool,
    /// Tell the agent to renew at its next check.
    renew: bool,
    /// Answer bootstrap as for a removed agent.
    revoked: bool,
    /// Offer the two-way queue (results on the queue's request body).
    duplex: bool,
    /// Speak HTTP/1.1 only (ALPN).
    http1_only: bool,
    /// Read the two-way queue's result lines without taking them, and end the
    /// queue at the first one (a service that restarted, a connection lost).
    lose_streamed: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            heartbeat_secs: 1,
            credential_secs: 3600,
            max_in_flight: 16,
            refuse_queue: 0,
            heartbeats: true,
            close_streams: false,
            renew: false,
            revoked: false,
            duplex: false,
            http1_only: false,
            lose_streamed: false,
        }
    }
}

/// One queue stream the agent opened.
#[derive(Clone)]
struct QueueConn {
    frames: mpsc::UnboundedSender<Bytes>,
    key_id: Option<String>,
    credential: String,
    opened: Instant,
    tls_connection: u64,
}

/// One result the agent posted.
#[derive(Debug)]
struct Posted {
    request_id: String,
    result: ValidationResult,
    key_id: Option<String>,
    /// Came on the two-way queue's body rather than a request of its own.
    streamed: bool,
}

struct ServiceState {
    agents: CertificateAuthority,
    knobs: Mutex<Knobs>,
    bootstraps: AtomicU64,
    credentials: Mutex<Vec<(String, i64)>>,
    queues: watch::Sender<Vec<QueueConn>>,
    results: mpsc::UnboundedSender<Posted>,
    tls_connections: AtomicU64,
}

/// The client certificate's key ID and the TLS connection number, per request.
#[derive(Clone)]
struct Peer {
    key_id: Option<String>,
    connection: u64,
}

struct FakeService {
    addr: SocketAddr,
    service_ca_pem: String,
    state: Arc<ServiceState>,
    results: mpsc::UnboundedReceiver<Posted>,
    task: JoinHandle<()>,
}

impl Drop for FakeService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    let body = ErrorBody {
        error: code.into(),
        message: code.into(),
    };
    (status, Json(body)).into_response()
}

async fn bootstrap(
    State(s): State<Arc<ServiceState>>,
    Path(tenant): Path<String>,
    Extension(peer): Extension<Peer>,
) -> Response {
    assert_eq!(tenant, TENANT);
    assert!(peer.key_id.is_some(), "bootstrap without a client certificate");
    let knobs = s.knobs.lock().unwrap().clone();
    if knobs.revoked {
        return error(StatusCode::FORBIDDEN, "certificate_revoked");
    }
    let n = s.bootstraps.fetch_add(1, Ordering::SeqCst) + 1;
    let credential = format!("queue-credential-{n}");
    let expires_at = now_secs() + knobs.credential_secs;
    s.credentials.lock().unwrap().push((credential.clone(), expires_at));
    Json(BootstrapResponse {
        protocol: PROTOCOL_VERSION,
        queue_path: agent_queue_path(TENANT),
        queue_credential: credential,
        expires_at,
        heartbeat_secs: knobs.heartbeat_secs,
        max_in_flight: knobs.max_in_flight,
        // Unless told otherwise, an older service: results come back one `POST` each.
        duplex_queue_path: knobs
            .duplex
            .then(|| postern_proto::relay::agent_duplex_queue_path(TENANT)),
    })
    .into_response()
}

fn heartbeat() -> Bytes {
    Bytes::from(serde_json::to_string(&QueueFrame::Heartbeat { at: now_secs() }).unwrap() + "\n")
}

async fn queue(
    State(s): State<Arc<ServiceState>>,
    Path(tenant): Path<String>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Response {
    assert_eq!(tenant, TENANT);
    let credential = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let valid = s
        .credentials
        .lock()
        .unwrap()
        .iter()
        .any(|(c, exp)| *c == credential && *exp > now_secs());
    let knobs = {
        let mut k = s.knobs.lock().unwrap();
        let refuse = k.refuse_queue > 0;
        k.refuse_queue = k.refuse_queue.saturating_sub(1);
        if refuse || !valid {
            return error(StatusCode::UNAUTHORIZED, "bad_credential");
        }
        k.clone()
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    tx.send(heartbeat()).unwrap();
    if knobs.heartbeats && !knobs.close_streams {
        let beat = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(knobs.heartbeat_secs)).await; // the service's heartbeat period
                if beat.send(heartbeat()).is_err() {
                    return;
                }
            }
        });
    }
    let conn = QueueConn {
        frames: tx.clone(),
        key_id: peer.key_id,
        credential,
        opened: Instant::now(),
        tls_connection: peer.connection,
    };
    s.queues.send_modify(|q| q.push(conn));
    if knobs.close_streams {
        drop(tx);
        s.queues.send_modify(|q| {
            if let Some(last) = q.last_mut() {
                let (dead, _) = mpsc::unbounded_channel();
                last.frames = dead;
            }
        });
    }
    let body = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>)));
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(axum::body::Body::from_stream(body))
        .unwrap()
}

async fn result(
    State(s): State<Arc<ServiceState>>,
    Path((tenant, request_id)): Path<(String, String)>,
    Extension(peer): Extension<Peer>,
    Json(result): Json<ValidationResult>,
) -> Response {
    assert_eq!(tenant, TENANT);
    let gone = request_id.starts_with("gone-");
    s.results
        .send(Posted {
            request_id,
            result,
            key_id: peer.key_id,
            streamed: false,
        })
        .unwrap();
    if gone {
        return error(StatusCode::CONFLICT, "not_pending");
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The two-way queue: the queue as for `GET`, and the results read from the
/// request's body.
async fn duplex_queue(
    State(s): State<Arc<ServiceState>>,
    Path(tenant): Path<String>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (results, key_id, state) = (s.results.clone(), peer.key_id.clone(), s.clone());
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut decoder = postern_proto::lines::LineDecoder::default();
        let mut lines: Vec<postern_proto::lines::Decoded<postern_proto::relay::QueueResult>> = Vec::new();
        while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut chunks).await {
            decoder.push(&chunk, &mut lines).unwrap();
            for line in lines.drain(..) {
                let postern_proto::lines::Decoded::Frame(answer) = line else {
                    panic!("the agent sent a line that is not a result: {line:?}");
                };
                if state.knobs.lock().unwrap().lose_streamed {
                    // Every queue stream ends: nothing else holds its sender.
                    state.queues.send_modify(|queues| {
                        for queue in queues.iter_mut() {
                            queue.frames = mpsc::unbounded_channel().0;
                        }
                    });
                    continue;
                }
                let _ = results.send(Posted {
                    request_id: answer.request_id,
                    result: answer.result,
                    key_id: key_id.clone(),
                    streamed: true,
                });
            }
        }
    });
    queue(State(s), Path(tenant), Extension(peer), headers).await
}

async fn renewal_check(State(s): State<Arc<ServiceState>>) -> Json<RenewalCheck> {
    let renew = std::mem::take(&mut s.knobs.lock().unwrap().renew);
    Json(RenewalCheck {
        renew,
        reason: if renew { "due".into() } else { "not due".into() },
        check_again_secs: 1,
    })
}

async fn renew(State(s): State<Arc<ServiceState>>, Json(request): Json<RenewRequest>) -> Json<RenewResponse> {
    let issued = s
        .agents
        .issue_client(
            request.csr_pem.as_bytes(),
            &ClientCertRequest::new(ComponentKind::Agent, TENANT, "agent-1"),
            SystemClock.now(),
        )
        .unwrap();
    Json(RenewResponse {
        certificate_pem: issued.cert_pem,
        not_after: issued.not_after.secs(),
    })
}

impl FakeService {
    async fn start(agents: CertificateAuthority, knobs: Knobs) -> Self {
        let now = SystemClock.now();
        let (service_ca, _) = CertificateAuthority::generate(CaKind::Service, "agent.test", now, CA_VALIDITY).unwrap();
        let (server_cert, server_key) = service_ca
            .issue_server(&["127.0.0.1".into()], now, SERVICE_CERT_VALIDITY)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(agents.cert_der().to_vec())).unwrap();
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(server_cert.cert_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.to_vec())),
            )
            .unwrap();
        tls.alpn_protocols = if knobs.http1_only {
            vec![b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let (results_tx, results) = mpsc::unbounded_channel();
        let state = Arc::new(ServiceState {
            agents,
            knobs: Mutex::new(knobs),
            bootstraps: AtomicU64::new(0),
            credentials: Mutex::new(Vec::new()),
            queues: watch::channel(Vec::new()).0,
            results: results_tx,
            tls_connections: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/v1/t/{tenant}/agent/bootstrap", post(bootstrap))
            .route("/v1/t/{tenant}/agent/queue", axum::routing::get(queue))
            .route("/v1/t/{tenant}/agent/queue/duplex", post(duplex_queue))
            .route("/v1/t/{tenant}/agent/results/{id}", post(result))
            .route("/v1/t/{tenant}/agent/renewal", post(renewal_check))
            .route("/v1/t/{tenant}/agent/renew", post(renew))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, app, state) = (acceptor.clone(), app.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let key_id = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|c| postern_pki::cert_info(c.as_ref()).unwrap().key_id);
                    let connection = state.tls_connections.fetch_add(1, Ordering::SeqCst) + 1;
                    let peer = Peer { key_id, connection };
                    let service =
                        TowerToHyperService::new(tower::service_fn(move |mut r: hyper::Request<Incoming>| {
                            r.extensions_mut().insert(peer.clone());
                            app.clone().oneshot(r)
                        }));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            service_ca_pem: service_ca.cert_pem().to_owned(),
            state,
            results,
            task,
        }
    }

    /// Waits for the `n`-th queue stream (counted from 1).
    async fn queue(&self, n: usize) -> QueueConn {
        let mut rx = self.state.queues.subscribe();
        let queues = tokio::time::timeout(PATIENCE, rx.wait_for(|q| q.len() >= n))
            .await
            .unwrap_or_else(|_| panic!("no queue stream #{n}"))
            .unwrap();
        queues[n - 1].clone()
    }

    fn queues(&self) -> Vec<QueueConn> {
        self.state.queues.borrow().clone()
    }

    async fn next_result(&mut self) -> Posted {
        tokio::time::timeout(PATIENCE, self.results.recv())
            .await
            .expect("no result posted")
            .unwrap()
    }

    /// No result arrives for a little while.
    async fn no_more_results(&mut self) {
        if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(300), self.results.recv()).await {
            panic!("unexpected result {p:?}");
        }
    }
}

// ---------------------------------------------------------------------------------
// The agent's side.

/// A registered agent's state directory, its key, and the service it registered with.
struct Setup {
    _dir: tempfile::TempDir,
    state: StateDir,
    key: ComponentKey,
    accounts: std::path::PathBuf,
    svc: FakeService,
}

async fn setup(knobs: Knobs) -> Setup {
    let now = SystemClock.now();
    let (agents, _) = CertificateAuthority::generate(CaKind::Agents, "agent.test", now, CA_VALIDITY).unwrap();
    let key = generate_key(KeyAlg::Rsa(2048)).unwrap();
    let issued = agents
        .issue_client(
            make_csr(&key).unwrap().as_bytes(),
            &ClientCertRequest::new(ComponentKind::Agent, TENANT, "agent-1"),
            now,
        )
        .unwrap();
    let svc = FakeService::start(agents, knobs).await;
    let dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(dir.path().join("agent"));
    let enrolment = Enrolment {
        kind: ComponentKind::Agent,
        server_url: "https://login.agent.test".into(),
        tenant: "acme".into(),
        tenant_id: TENANT.into(),
        component_id: "agent-1".into(),
        control_url: format!("https://{}", svc.addr),
        control_ca_pem: svc.service_ca_pem.clone(),
        group: None,
    };
    state.save(&key.to_pem(), &issued.cert_pem, &enrolment).unwrap();

    let accounts = dir.path().join("accounts");
    let alice = hash_password(&SecretString::from(ALICE_PASSWORD)).unwrap();
    let bob = hash_password(&SecretString::from("Bobs-Secret-2")).unwrap();
    postern_keyring::write_private_file(
        &accounts,
        format!("alice:{alice}:Alice Liddell:staff,admins\nbob:{bob}\n").as_bytes(),
    )
    .unwrap();
    Setup {
        _dir: dir,
        state,
        key,
        accounts,
        svc,
    }
}

impl Setup {
    fn local_file(&self) -> Arc<dyn Directory> {
        Arc::new(LocalFileDirectory::load(&self.accounts).unwrap())
    }

    fn start(&self, directory: Arc<dyn Directory>, options: AgentOptions) -> Running {
        let clock: SharedClock = Arc::new(SystemClock);
        let agent = Agent::new(self.state.clone(), clock, directory)
            .unwrap()
            .with_options(options);
        let status = agent.status();
        let stats = agent.stats();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(agent.run(async move {
            let _ = stopped.await;
        }));
        Running {
            status,
            stats,
            stop: Some(stop),
            task,
        }
    }

    /// A validation request encrypted for the key in `spki_der`.
    fn request_for(&self, spki_der: &[u8], id: &str, username: &str, password: &str, deadline_in_secs: i64) -> Bytes {
        frame(ValidationRequest {
            request_id: id.into(),
            tenant_id: TENANT.into(),
            username: username.into(),
            deadline_ms: (now_secs() + deadline_in_secs) * 1000,
            ciphertexts: vec![
                AgentCiphertext {
                    key_id: "another-agents-key".into(),
                    ciphertext: STANDARD.encode([0u8; 256]),
                },
                AgentCiphertext {
                    key_id: postern_pki::key_id(spki_der),
                    ciphertext: encrypt(spki_der, TENANT, id, password),
                },
            ],
            wait_if_busy: false,
        })
    }

    /// A validation request for this agent's original key, due in 30 s.
    fn request(&self, id: &str, username: &str, password: &str) -> Bytes {
        self.request_for(self.key.public_spki_der(), id, username, password, 30)
    }

    /// Like [`Setup::request`], as the service sends it once every agent has
    /// declined it as busy: the agent waits for a free slot.
    fn waiting_request(&self, id: &str, username: &str, password: &str) -> Bytes {
        match serde_json::from_slice(&self.request(id, username, password)) {
            Ok(QueueFrame::Validate(request)) => frame(ValidationRequest {
                wait_if_busy: true,
                ..request
            }),
            other => panic!("{other:?}"),
        }
    }
}

fn frame(request: ValidationRequest) -> Bytes {
    Bytes::from(serde_json::to_string(&QueueFrame::Validate(request)).unwrap() + "\n")
}

/// What the STS does: RSA-OAEP-SHA256 with the request's label, base64.
fn encrypt(spki_der: &[u8], tenant: &str, request_id: &str, password: &str) -> String {
    let key = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki_der).unwrap()).unwrap();
    let mut out = vec![0u8; key.ciphertext_size()];
    let label = oaep_label(tenant, request_id);
    STANDARD.encode(
        key.encrypt(&OAEP_SHA256_MGF1SHA256, password.as_bytes(), &mut out, Some(&label))
            .unwrap(),
    )
}

struct Running {
    status: watch::Receiver<AgentStatus>,
    stats: Arc<postern_agent::AgentStats>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl Running {
    async fn until(&mut self, what: &str, check: impl FnMut(&AgentStatus) -> bool) -> AgentStatus {
        let current = self.status.clone();
        tokio::time::timeout(PATIENCE, self.status.wait_for(check))
            .await
            .unwrap_or_else(|_| panic!("agent never got to: {what} (now {:?})", current.borrow()))
            .unwrap()
            .clone()
    }

    async fn connected(&mut self, connections: u64) -> AgentStatus {
        self.until("connected", |s| {
            s.phase == Phase::Connected && s.connections >= connections
        })
        .await
    }

    async fn stats_until(&self, what: &str, check: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        let started = Instant::now();
        loop {
            let s = self.stats.snapshot();
            if check(&s) {
                return s;
            }
            assert!(started.elapsed() < PATIENCE, "stats never showed {what}: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await; // poll pause, bounded above
        }
    }

    async fn stop(mut self) -> Result<(), AgentError> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, self.task).await.unwrap().unwrap()
    }
}

fn fast() -> AgentOptions {
    AgentOptions {
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(400),
        ..AgentOptions::default()
    }
}

/// A directory that takes `delay` per check and records how many ran at once.
struct Slow {
    inner: Arc<dyn Directory>,
    delay: Duration,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Slow {
    fn new(inner: Arc<dyn Directory>, delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            inner,
            delay,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl Directory for Slow {
    async fn validate(&self, username: &str, password: &SecretString) -> Outcome {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await; // a slow directory, on purpose
        let outcome = self.inner.validate(username, password).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

/// A directory that knows one password for everyone and answers at once.
struct Instantly;

#[async_trait::async_trait]
impl Directory for Instantly {
    async fn validate(&self, username: &str, password: &SecretString) -> Outcome {
        if password.expose() != "bench-password" {
            return Outcome::WrongCredentials;
        }
        Outcome::Success(postern_directory::AccountInfo {
            upn: username.into(),
            display_name: username.into(),
            mail: None,
            groups: Vec::new(),
            stable_id: username.into(),
            dn: None,
            password_warning: None,
        })
    }
}

// ---------------------------------------------------------------------------------
// Scenarios.

#[tokio::test]
async fn validates_and_reports_each_outcome() {
    let mut s = setup(Knobs::default()).await;
    let mut agent = s.start(s.local_file(), fast());
    let status = agent.connected(1).await;
    assert_eq!(status.key_id, s.key.key_id());
    let q = s.svc.queue(1).await;
    assert_eq!(
        q.key_id.as_deref(),
        Some(s.key.key_id().as_str()),
        "mTLS with the agent's certificate"
    );

    let spki = s.key.public_spki_der().to_vec();
    let mut other_tenant = s.request("r-other-tenant", "alice", ALICE_PASSWORD);
    other_tenant = Bytes::from(
        String::from_utf8(other_tenant.to_vec())
            .unwrap()
            .replace(TENANT, "0000-other-tenant"),
    );
    let mut tampered: ValidationRequest =
        match serde_json::from_slice(&s.request("r-tampered", "alice", ALICE_PASSWORD)) {
            Ok(QueueFrame::Validate(v)) => v,
            other => panic!("{other:?}"),
        };
    let mut bytes = STANDARD.decode(&tampered.ciphertexts[1].ciphertext).unwrap();
    bytes[7] ^= 0x40;
    tampered.ciphertexts[1].ciphertext = STANDARD.encode(bytes);
    let not_for_us = frame(ValidationRequest {
        request_id: "r-not-for-us".into(),
        tenant_id: TENANT.into(),
        username: "alice".into(),
        deadline_ms: (now_secs() + 30) * 1000,
        ciphertexts: vec![AgentCiphertext {
            key_id: "another-agents-key".into(),
            ciphertext: encrypt(&spki, TENANT, "r-not-for-us", ALICE_PASSWORD),
        }],
        wait_if_busy: false,
    });
    // A ciphertext replayed from another request: the label does not match.
    let mut replayed: ValidationRequest =
        match serde_json::from_slice(&s.request("r-original", "alice", ALICE_PASSWORD)) {
            Ok(QueueFrame::Validate(v)) => v,
            other => panic!("{other:?}"),
        };
    replayed.request_id = "r-replayed".into();

    for line in [
        s.request("r-alice-ok", "alice", ALICE_PASSWORD),
        s.request("r-alice-wrong", "alice", "Wrong-Horse-1"),
        s.request("r-nobody", "nobody", ALICE_PASSWORD),
        s.request_for(&spki, "r-expired", "alice", ALICE_PASSWORD, -5),
        other_tenant,
        frame(tampered),
        frame(replayed),
        not_for_us,
        s.request("..", "alice", ALICE_PASSWORD),
        Bytes::from_static(b"{\"type\":\"something_new\"}\nnot json\n"),
        s.request("gone-1", "bob", "Bobs-Secret-2"),
    ] {
        q.frames.send(line).unwrap();
    }

    let mut posted = std::collections::HashMap::new();
    for _ in 0..5 {
        let p = s.svc.next_result().await;
        assert_eq!(p.key_id.as_deref(), Some(s.key.key_id().as_str()));
        assert_eq!(p.result.protocol, PROTOCOL_VERSION);
        posted.insert(p.request_id.clone(), p.result);
    }
    s.svc.no_more_results().await;
    let ok = &posted["r-alice-ok"];
    assert_eq!(ok.outcome, ValidationOutcome::Success);
    let account = ok.account.as_ref().unwrap();
    assert_eq!(account.upn, "alice");
    assert_eq!(account.display_name, "Alice Liddell");
    assert_eq!(account.groups, vec!["staff", "admins"]);
    assert!(!account.stable_id.is_empty());
    for id in ["r-alice-wrong", "r-nobody"] {
        assert_eq!(posted[id].outcome, ValidationOutcome::WrongCredentials, "{id}");
        assert!(posted[id].account.is_none());
    }
    assert_eq!(posted["gone-1"].outcome, ValidationOutcome::Success);
    // No ciphertext for this agent's key: declined at once, so another agent gets it.
    assert_eq!(posted["r-not-for-us"].outcome, ValidationOutcome::Declined);

    let stats = agent
        .stats_until("all counted", |st| {
            st.results_refused == 1 && st.results_posted == 3 && st.decrypt_failed == 2
        })
        .await;
    assert_eq!(stats.validated(ValidationOutcome::Success), 2);
    assert_eq!(stats.validated(ValidationOutcome::WrongCredentials), 2);
    assert_eq!(stats.results_posted, 3);
    assert_eq!(stats.skipped_expired, 1);
    assert_eq!(stats.skipped_other_tenant, 1);
    assert_eq!(stats.skipped_other_keys, 1);
    assert_eq!((stats.declined, stats.received), (1, 10));
    assert_eq!(stats.skipped_malformed, 1);
    assert_eq!(stats.decrypt_failed, 2, "tampered and replayed");
    assert_eq!(stats.results_failed, 0);
    // Garbage lines did not cost the connection.
    assert_eq!(agent.status.borrow().connections, 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn validates_concurrently_up_to_max_in_flight_while_reading_on() {
    let mut s = setup(Knobs {
        max_in_flight: 3,
        ..Knobs::default()
    })
    .await;
    let slow = Slow::new(s.local_file(), Duration::from_millis(300));
    let mut agent = s.start(slow.clone(), fast());
    assert_eq!(agent.connected(1).await.max_in_flight, 3);
    let q = s.svc.queue(1).await;
    for i in 0..10 {
        q.frames
            .send(s.waiting_request(&format!("r{i}"), "alice", ALICE_PASSWORD))
            .unwrap();
    }
    let stats = agent.stats_until("three running", |st| st.in_flight == 3).await;
    assert_eq!(stats.in_flight, 3);
    for _ in 0..10 {
        let p = s.svc.next_result().await;
        assert_eq!(p.result.outcome, ValidationOutcome::Success);
    }
    assert_eq!(slow.peak.load(Ordering::SeqCst), 3, "exactly max_in_flight at once");
    assert_eq!(agent.stats.snapshot().peak_in_flight, 3);
    // The stream was read on while checks ran: no heartbeat timeout, no reconnect.
    assert_eq!(agent.status.borrow().connections, 1);
    agent.stop().await.unwrap();

    // The host's own cap wins when it is lower than the service's.
    let slow = Slow::new(s.local_file(), Duration::from_millis(200));
    let mut agent = s.start(
        slow.clone(),
        AgentOptions {
            max_in_flight: Some(2),
            ..fast()
        },
    );
    assert_eq!(agent.connected(1).await.max_in_flight, 2);
    let q = s.svc.queue(2).await;
    for i in 0..6 {
        q.frames
            .send(s.waiting_request(&format!("s{i}"), "bob", "Bobs-Secret-2"))
            .unwrap();
    }
    for _ in 0..6 {
        s.svc.next_result().await;
    }
    assert_eq!(slow.peak.load(Ordering::SeqCst), 2);
    agent.stop().await.unwrap();
}

/// An agent at its limit says so at once instead of keeping a sign-in waiting that
/// another agent could serve; told that every agent is busy, it waits its turn.
#[tokio::test]
async fn an_agent_at_its_limit_declines_at_once_unless_told_to_wait() {
    let mut s = setup(Knobs {
        max_in_flight: 2,
        ..Knobs::default()
    })
    .await;
    let slow = Slow::new(s.local_file(), Duration::from_secs(2));
    let mut agent = s.start(slow.clone(), fast());
    agent.connected(1).await;
    let q = s.svc.queue(1).await;
    for id in ["busy-1", "busy-2"] {
        q.frames.send(s.request(id, "alice", ALICE_PASSWORD)).unwrap();
    }
    agent.stats_until("both slots busy", |st| st.in_flight == 2).await;
    let started = Instant::now();
    q.frames
        .send(s.request("one-too-many", "alice", ALICE_PASSWORD))
        .unwrap();
    let p = s.svc.next_result().await;
    assert_eq!(
        (p.request_id.as_str(), p.result.outcome),
        ("one-too-many", ValidationOutcome::Declined)
    );
    assert!(p.result.account.is_none());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "declined while both slots were still busy: {:?}",
        started.elapsed()
    );
    // The service's second offer, once every agent declined: it waits for a slot.
    q.frames
        .send(s.waiting_request("waits", "alice", ALICE_PASSWORD))
        .unwrap();
    let mut done: Vec<(String, ValidationOutcome)> = Vec::new();
    for _ in 0..3 {
        let p = s.svc.next_result().await;
        done.push((p.request_id, p.result.outcome));
    }
    done.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        done,
        [
            ("busy-1".to_string(), ValidationOutcome::Success),
            ("busy-2".to_string(), ValidationOutcome::Success),
            ("waits".to_string(), ValidationOutcome::Success),
        ]
    );
    assert_eq!(slow.peak.load(Ordering::SeqCst), 2, "never more than its slots");
    let stats = agent.stats.snapshot();
    assert_eq!((stats.declined, stats.received), (1, 4));
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_silent_stream_is_dropped_for_a_new_connection() {
    let s = setup(Knobs {
        heartbeats: false,
        heartbeat_secs: 1,
        ..Knobs::default()
    })
    .await;
    let mut agent = s.start(s.local_file(), fast());
    let first = s.svc.queue(1).await;
    let second = s.svc.queue(2).await;
    let gap = second.opened - first.opened;
    assert!(
        gap >= Duration::from_secs(3),
        "reconnected after {gap:?}, before 3 heartbeats"
    );
    assert_ne!(first.tls_connection, second.tls_connection, "a fresh TLS connection");
    let status = agent.connected(2).await;
    assert!(status.last_disconnect.unwrap().contains("no frame for 3s"));
    assert_eq!(status.bootstraps, 1, "the credential was still good");
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn an_ended_stream_is_reopened_with_backoff() {
    let s = setup(Knobs {
        close_streams: true,
        ..Knobs::default()
    })
    .await;
    let options = AgentOptions {
        reconnect_min: Duration::from_millis(200),
        reconnect_max: Duration::from_secs(1),
        ..AgentOptions::default()
    };
    let mut agent = s.start(s.local_file(), options);
    s.svc.queue(5).await;
    let opened: Vec<Instant> = s.svc.queues().iter().map(|q| q.opened).collect();
    for pair in opened.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(190), "reconnected after {gap:?}");
    }
    let status = agent.until("waiting", |s| matches!(s.phase, Phase::Waiting(_))).await;
    assert!(status.last_disconnect.unwrap().contains("ended the stream"));
    assert_eq!(status.bootstraps, 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn bootstraps_again_before_expiry_and_after_a_401() {
    let s = setup(Knobs {
        credential_secs: 3,
        refuse_queue: 1,
        ..Knobs::default()
    })
    .await;
    let mut agent = s.start(s.local_file(), fast());
    let first = s.svc.queue(1).await;
    // The first credential was refused: a second bootstrap got the first stream.
    assert_eq!(first.credential, "queue-credential-2");
    let second = s.svc.queue(2).await;
    assert_eq!(second.credential, "queue-credential-3");
    let gap = second.opened - first.opened;
    assert!(
        gap < Duration::from_secs(3),
        "renewed the credential after {gap:?}, past its expiry"
    );
    let status = agent.connected(2).await;
    assert_eq!(status.bootstraps, 3);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn renewal_switches_key_and_reconnects() {
    let mut s = setup(Knobs {
        renew: true,
        ..Knobs::default()
    })
    .await;
    let old_key = s.key.key_id();
    let mut agent = s.start(s.local_file(), fast());
    let status = agent
        .until("renewed key", |st| st.key_id != old_key && st.phase == Phase::Connected)
        .await;
    let new_key = status.key_id.clone();
    let q = s.svc.queues().into_iter().last().unwrap();
    assert_eq!(
        q.key_id.as_deref(),
        Some(new_key.as_str()),
        "reconnected with the new certificate"
    );
    // The renewed key is on disk; requests for it are answered, requests only for the
    // old key are left to other agents.
    let (_, cert, _) = s.state.load().unwrap();
    let new_spki = postern_pki::cert_info(cert.as_bytes()).unwrap().public_key_spki_der;
    assert_eq!(postern_pki::key_id(&new_spki), new_key);
    q.frames.send(s.request("r-old-key", "alice", ALICE_PASSWORD)).unwrap();
    q.frames
        .send(s.request_for(&new_spki, "r-new-key", "alice", ALICE_PASSWORD, 30))
        .unwrap();
    let mut answers = [s.svc.next_result().await, s.svc.next_result().await];
    answers.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let [p, old] = answers;
    assert_eq!(p.request_id, "r-new-key");
    assert_eq!(p.result.outcome, ValidationOutcome::Success);
    assert_eq!(p.key_id.as_deref(), Some(new_key.as_str()));
    assert_eq!(
        (old.request_id.as_str(), old.result.outcome),
        ("r-old-key", ValidationOutcome::Declined)
    );
    s.svc.no_more_results().await;
    assert_eq!(agent.stats.snapshot().skipped_other_keys, 1);
    agent.stop().await.unwrap();
}

#[tokio::test]
async fn a_removed_agent_stops_and_says_register_again() {
    let s = setup(Knobs {
        revoked: true,
        ..Knobs::default()
    })
    .await;
    let agent = s.start(s.local_file(), fast());
    let ended = tokio::time::timeout(PATIENCE, agent.task).await.unwrap().unwrap();
    let err = ended.unwrap_err();
    assert!(err.needs_registration() && err.is_fatal(), "{err:?}");

    let empty = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let err = Agent::new(StateDir::new(empty.path()), clock, s.local_file()).unwrap_err();
    assert!(err.needs_registration(), "{err:?}");
}

#[tokio::test]
async fn shutdown_lets_work_in_flight_finish() {
    let mut s = setup(Knobs::default()).await;
    let slow = Slow::new(s.local_file(), Duration::from_millis(700));
    let mut agent = s.start(slow, fast());
    agent.connected(1).await;
    let q = s.svc.queue(1).await;
    q.frames.send(s.request("d1", "alice", ALICE_PASSWORD)).unwrap();
    q.frames.send(s.request("d2", "bob", "nope-nope")).unwrap();
    agent.stats_until("two running", |st| st.in_flight == 2).await;
    let mut status = agent.status.clone();
    agent.stop().await.unwrap();
    assert_eq!(status.borrow_and_update().phase, Phase::Stopped);
    let mut ids = vec![
        s.svc.next_result().await.request_id,
        s.svc.next_result().await.request_id,
    ];
    ids.sort();
    assert_eq!(ids, vec!["d1", "d2"]);

    // Work that outlasts the grace period is abandoned, and the agent still stops.
    let slow = Slow::new(s.local_file(), Duration::from_secs(60));
    let mut agent = s.start(
        slow,
        AgentOptions {
            drain_grace: Duration::from_millis(300),
            ..fast()
        },
    );
    agent.connected(1).await;
    let q = s.svc.queue(2).await;
    q.frames.send(s.request("d3", "alice", ALICE_PASSWORD)).unwrap();
    agent.stats_until("one running", |st| st.in_flight == 1).await;
    let started = Instant::now();
    agent.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    s.svc.no_more_results().await;
}

/// Offered the two-way queue over HTTP/2, the agent sends its results on the
/// queue's own request body; over HTTP/1.1 it posts them, offered or not.
#[tokio::test]
async fn results_go_on_the_two_way_queue_over_http2_only() {
    for (http1_only, streamed) in [(false, true), (true, false)] {
        let mut s = setup(Knobs {
            duplex: true,
            http1_only,
            ..Knobs::default()
        })
        .await;
        let mut agent = s.start(s.local_file(), fast());
        agent.connected(1).await;
        let q = s.svc.queue(1).await;
        q.frames.send(s.request("w1", "alice", ALICE_PASSWORD)).unwrap();
        q.frames.send(s.request("w2", "bob", "nope-nope")).unwrap();
        let mut got = [s.svc.next_result().await, s.svc.next_result().await];
        got.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        assert_eq!(
            got.iter()
                .map(|p| (p.request_id.as_str(), p.result.outcome, p.streamed))
                .collect::<Vec<_>>(),
            vec![
                ("w1", ValidationOutcome::Success, streamed),
                ("w2", ValidationOutcome::WrongCredentials, streamed),
            ],
            "HTTP/1.1 only: {http1_only}"
        );
        let (on_queue, posted) = if streamed { (2, 0) } else { (0, 2) };
        agent
            .stats_until("the results counted where they went", |st| {
                (st.results_streamed, st.results_posted) == (on_queue, posted)
            })
            .await;
        agent.stop().await.unwrap();
        s.svc.no_more_results().await;
    }
}

/// The service answers no line of the two-way queue, so a queue that ends
/// after the agent sent a result may have lost it: the agent posts the results
/// of the last seconds again (fails without the posting again: the result
/// never arrives).
#[tokio::test]
async fn results_on_a_queue_that_ended_are_posted_again() {
    let mut s = setup(Knobs {
        duplex: true,
        heartbeats: false,
        lose_streamed: true,
        ..Knobs::default()
    })
    .await;
    let mut agent = s.start(s.local_file(), fast());
    agent.connected(1).await;
    let q = s.svc.queue(1).await;
    q.frames.send(s.request("lost-1", "alice", ALICE_PASSWORD)).unwrap();
    let again = s.svc.next_result().await;
    assert_eq!(
        (again.request_id.as_str(), again.result.outcome, again.streamed),
        ("lost-1", ValidationOutcome::Success, false),
        "posted once the queue had ended"
    );
    agent
        .stats_until("counted as sent on the queue, then posted again", |st| {
            (st.results_streamed, st.results_resent, st.results_posted) == (1, 1, 1)
        })
        .await;
    s.svc.no_more_results().await;
    agent.stop().await.unwrap();
}

/// Validations per second through the whole agent (queue, RSA decryption, result
/// post), with a directory that answers at once, then with the argon2 file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput() {
    let mut s = setup(Knobs {
        max_in_flight: 64,
        heartbeat_secs: 5,
        ..Knobs::default()
    })
    .await;
    let mut agent = s.start(Arc::new(Instantly), fast());
    agent.connected(1).await;
    let q = s.svc.queue(1).await;
    let n: u32 = 1000;
    let lines: VecDeque<Bytes> = (0..n)
        .map(|i| {
            let line = s.request_for(
                s.key.public_spki_der(),
                &format!("b{i}"),
                &format!("user{i}"),
                "bench-password",
                120,
            );
            // Far more at once than the agent has slots: as the service sends
            // them when every agent is busy.
            String::from_utf8(line.to_vec())
                .unwrap()
                .replace("\"wait_if_busy\":false", "\"wait_if_busy\":true")
                .into()
        })
        .collect();
    let started = Instant::now();
    for line in lines {
        q.frames.send(line).unwrap();
    }
    for _ in 0..n {
        assert_eq!(s.svc.next_result().await.result.outcome, ValidationOutcome::Success);
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    eprintln!(
        "agent throughput, instant directory: {n} validations in {:?} = {rate:.0}/s",
        started.elapsed()
    );
    agent
        .stats_until("all posted", |st| st.results_posted == u64::from(n))
        .await;
    agent.stop().await.unwrap();

    let mut agent = s.start(s.local_file(), fast());
    agent.connected(1).await;
    let q = s.svc.queue(2).await;
    let n: u32 = 40;
    let started = Instant::now();
    for i in 0..n {
        q.frames
            .send(s.waiting_request(&format!("f{i}"), "alice", ALICE_PASSWORD))
            .unwrap();
    }
    for _ in 0..n {
        assert_eq!(s.svc.next_result().await.result.outcome, ValidationOutcome::Success);
    }
    let rate = f64::from(n) / started.elapsed().as_secs_f64();
    eprintln!(
        "agent throughput, argon2id file: {n} validations in {:?} = {rate:.1}/s",
        started.elapsed()
    );
    agent.stop().await.unwrap();
}
