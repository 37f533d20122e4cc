//! Logs for operators and SIEMs (SEC-10, BEY-5; issue 9 item 4): sign-in and
//! audit events pushed to a syslog receiver (RFC 5424, octet counting, over TCP
//! and TLS) and to an HTTPS webhook, each through receiver outages with nothing
//! lost or repeated; the access log line of app requests, with the request ID
//! the backend and the connector see; `postern admin audit verify` naming the
//! first broken entry of a tampered chain.
//!
//! The receivers are listeners in the test: the syslog one reads a
//! connection's octet-counted frames to its end, keeps them, then closes its
//! side (the receipt the service waits for); it can also go away, or take a
//! connection and die half-way through it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use postern_client::{CredentialFile, Credentials};
use postern_export::{ExportSettings, SyslogTarget, WebhookTarget};
use postern_store::{ExportStream, Store};
use postern_testkit::{Browser, Page, Pkce, TenantFixture, TestService};
use postern_time::{Clock, SystemClock};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::common::authorize_url;
use crate::proxy_harness::{AppOptions, ProxyBench};

const REDIRECT: &str = "https://app.acme.test/cb";

// ---- receivers ----------------------------------------------------------------

/// A CA for the receivers' certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// A TLS acceptor serving a certificate for 127.0.0.1 issued by this CA.
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// How the syslog receiver treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Reads everything, keeps it, closes its side.
    Healthy,
    /// Reads a few bytes and dies with the rest unread (the kernel resets the
    /// connection): nothing is kept.
    DiesMidway,
}

/// A syslog receiver on loopback (octet-counted RFC 5424 frames, RFC 6587).
struct SyslogReceiver {
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    messages: Arc<Mutex<Vec<String>>>,
    died: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SyslogReceiver {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> SyslogReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = SyslogReceiver {
            addr: listener.local_addr().unwrap(),
            tls,
            messages: Arc::default(),
            died: Arc::default(),
            task: None,
        };
        receiver.serve(listener, Behaviour::Healthy);
        receiver
    }

    fn serve(&mut self, listener: TcpListener, behaviour: Behaviour) {
        let (tls, messages, died) = (self.tls.clone(), self.messages.clone(), self.died.clone());
        self.task = Some(tokio::spawn(async move {
            // Connections live in the set: stopping the receiver ends them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, messages, died) = (tls.clone(), messages.clone(), died.clone());
                connections.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                take_connection(stream, behaviour, &messages, &died).await;
                            }
                        }
                        None => take_connection(tcp, behaviour, &messages, &died).await,
                    }
                });
            }
        }));
    }

    /// Goes away: the port refuses connections, open ones are dropped.
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Comes back on the same port.
    async fn restart(&mut self, behaviour: Behaviour) {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener, behaviour);
    }

    fn target(&self) -> SyslogTarget {
        let scheme = if self.tls.is_some() { "tls" } else { "tcp" };
        SyslogTarget::parse(&format!("{scheme}://{}", self.addr)).unwrap()
    }

    fn messages(&self) -> Vec<Syslog> {
        self.messages.lock().unwrap().iter().map(|m| Syslog::parse(m)).collect()
    }
}

async fn take_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    behaviour: Behaviour,
    messages: &Mutex<Vec<String>>,
    died: &AtomicUsize,
) {
    match behaviour {
        Behaviour::DiesMidway => {
            let mut some = [0u8; 16];
            let _ = stream.read(&mut some).await;
            // Let the rest arrive, unread: closing now resets the connection
            // (a receiver that dies midway, on purpose).
            postern_testkit::hold_for(Duration::from_millis(100)).await;
            died.fetch_add(1, Ordering::SeqCst);
        }
        Behaviour::Healthy => {
            let mut all = Vec::new();
            if stream.read_to_end(&mut all).await.is_err() {
                return;
            }
            messages.lock().unwrap().extend(octet_counted_frames(&all));
            let _ = stream.shutdown().await;
        }
    }
}

/// Splits `LEN SP MSG` frames.
fn octet_counted_frames(mut bytes: &[u8]) -> Vec<String> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let space = bytes
            .iter()
            .position(|b| *b == b' ')
            .expect("a frame starts with its length");
        let len: usize = std::str::from_utf8(&bytes[..space]).unwrap().parse().unwrap();
        let end = space + 1 + len;
        frames.push(String::from_utf8(bytes[space + 1..end].to_vec()).unwrap());
        bytes = &bytes[end..];
    }
    frames
}

/// An RFC 5424 message with JSON in its MSG part.
#[derive(Debug)]
struct Syslog {
    pri: u32,
    timestamp: String,
    hostname: String,
    app_name: String,
    msgid: String,
    json: Value,
}

impl Syslog {
    fn parse(message: &str) -> Syslog {
        let fields: Vec<&str> = message.splitn(8, ' ').collect();
        assert_eq!(fields.len(), 8, "{message}");
        let (pri, version) = fields[0]
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .unwrap_or_else(|| panic!("no PRI: {message}"));
        assert_eq!(version, "1", "{message}");
        assert_eq!((fields[4], fields[6]), ("-", "-"), "no PROCID, no SD: {message}");
        Syslog {
            pri: pri.parse().unwrap(),
            timestamp: fields[1].to_owned(),
            hostname: fields[2].to_owned(),
            app_name: fields[3].to_owned(),
            msgid: fields[5].to_owned(),
            json: serde_json::from_str(fields[7]).unwrap_or_else(|e| panic!("MSG is not JSON ({e}): {message}")),
        }
    }
}

/// A webhook on loopback over TLS: keeps each accepted batch with its headers;
/// answers 503 while not accepting; counts handshakes that failed.
struct Webhook {
    addr: SocketAddr,
    batches: Arc<Mutex<Vec<(hyper::HeaderMap, String)>>>,
    accepting: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl Webhook {
    async fn start(acceptor: tokio_rustls::TlsAcceptor, accepting: bool) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let batches: Arc<Mutex<Vec<(hyper::HeaderMap, String)>>> = Arc::default();
        let accepting = Arc::new(AtomicBool::new(accepting));
        let refused = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (b, a, r, f) = (
            batches.clone(),
            accepting.clone(),
            refused.clone(),
            failed_handshakes.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, b, a, r, f) = (acceptor.clone(), b.clone(), a.clone(), r.clone(), f.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        f.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (b, a, r) = (b.clone(), a.clone(), r.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let status = if a.load(Ordering::SeqCst) {
                                b.lock()
                                    .unwrap()
                                    .push((parts.headers, String::from_utf8(body.to_vec()).unwrap()));
                                200
                            } else {
                                r.fetch_add(1, Ordering::SeqCst);
                                503
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Webhook {
            addr,
            batches,
            accepting,
            refused,
            failed_handshakes,
            _task: task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/ingest", self.addr)
    }

    /// The events received, in order of arrival.
    fn events(&self) -> Vec<Value> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| {
                body.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

// ---- events -------------------------------------------------------------------

/// Export settings that retry and poll quickly.
fn quick_export() -> ExportSettings {
    ExportSettings {
        poll_interval: Duration::from_millis(50),
        retry_min: Duration::from_millis(50),
        retry_max: Duration::from_millis(250),
        ..ExportSettings::default()
    }
}

/// Makes the tenant's events: `n` audit entries (groups created through the
/// admin API) and `n` failed sign-ins (wrong passwords through the pages).
struct EventMaker {
    token: String,
    browser: Browser,
    page: Option<Page>,
    made: usize,
}

impl EventMaker {
    async fn new(svc: &TestService, t: &TenantFixture) -> EventMaker {
        svc.create_client(&t.tenant, "app", Some("x"), &[REDIRECT], &["authorization_code"])
            .await
            .unwrap();
        EventMaker {
            token: svc.admin_token(&t.tenant, &t.admin).await.unwrap(),
            browser: Browser::new(),
            page: None,
            made: 0,
        }
    }

    async fn make(&mut self, svc: &TestService, n: usize) {
        let http = reqwest::Client::new();
        for _ in 0..n {
            self.made += 1;
            let r = http
                .post(format!("{}/api/v1/groups", svc.url()))
                .bearer_auth(&self.token)
                .json(&json!({"name": format!("group-{}", self.made), "description": ""}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
            let page = match self.page.take() {
                Some(page) => page,
                None => self.password_page(svc).await,
            };
            let answer = self
                .browser
                .submit(
                    &page.form().unwrap(),
                    &[("password", format!("wrong password {}", self.made).as_str())],
                )
                .await
                .unwrap();
            self.page = answer.form().is_ok().then_some(answer);
        }
    }

    /// The password page of a sign-in as jo@acme.test.
    async fn password_page(&self, svc: &TestService) -> Page {
        let url = authorize_url(svc, "acme", "app", REDIRECT, &Pkce::new().challenge, "&prompt=login");
        let page = self.browser.follow(&url, &svc.url()).await.unwrap();
        let r = self
            .browser
            .submit(&page.form().unwrap(), &[("username", "jo@acme.test")])
            .await
            .unwrap();
        self.browser.arrive(r, &svc.url()).await.unwrap()
    }
}

/// The IDs of every event in the store, sign-ins then audit entries, each in
/// order.
async fn stored_ids(store: &Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .signins_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.event.id)
        .collect();
    ids.extend(
        store
            .audit_after(0, 100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|a| format!("audit-{}", a.entry.seq)),
    );
    ids
}

/// Waits (up to 30 s) until `received()` holds every ID of `expected`.
async fn wait_for_ids(expected: &[String], received: impl Fn() -> Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: HashSet<String> = received()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        let missing: Vec<&String> = expected.iter().filter(|id| !got.contains(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "never arrived: {missing:?}");
        postern_testkit::poll_pause(Duration::from_millis(50)).await;
    }
}

/// Every event arrived exactly once and each log's events in order.
fn assert_once_in_order(events: &[Value], expected: &[String]) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in events {
        *seen.entry(e["id"].as_str().unwrap()).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "events repeated: {repeated:?}");
    let unknown: Vec<_> = seen.keys().filter(|id| !expected.iter().any(|e| e == *id)).collect();
    assert!(unknown.is_empty(), "events not in the store: {unknown:?}");
    assert_eq!(seen.len(), expected.len());
    for kind in ["signin", "audit"] {
        let seqs: Vec<i64> = events
            .iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{kind} events out of order: {seqs:?}"
        );
        assert!(!seqs.is_empty(), "no {kind} events");
    }
}

/// Bytes in the files of a spool directory.
fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

// ---- syslog -------------------------------------------------------------------

#[tokio::test]
async fn syslog_gets_every_event_once_and_in_order_through_receiver_outages() {
    let mut receiver = SyslogReceiver::start(None).await;
    let cap = 4096;
    let svc = TestService::builder()
        .export(ExportSettings {
            syslog: Some(receiver.target()),
            spool_max_bytes: cap,
            ..quick_export()
        })
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    let mut events = EventMaker::new(&svc, &t).await;
    events.make(&svc, 2).await;
    wait_for_ids(&stored_ids(svc.store()).await, || {
        receiver.messages().into_iter().map(|m| m.json).collect()
    })
    .await;

    // The receiver is gone: more events than the spool holds pile up.
    receiver.stop().await;
    events.make(&svc, 12).await;
    let spool = svc.data_dir().join("export").join("syslog");
    let latest = svc.store().signins_after(0, 100_000).await.unwrap().last().unwrap().seq;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut most = 0;
    loop {
        most = most.max(spool_bytes(&spool));
        let cursor = svc
            .store()
            .export_cursor("syslog", ExportStream::Signins)
            .await
            .unwrap();
        // Full: the cursor stops short of the newest events, which wait in the store.
        if most > cap / 2 && cursor < latest {
            break;
        }
        assert!(Instant::now() < deadline, "the spool never filled: {most} bytes");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }

    // It comes back and dies half-way through reading a batch, twice.
    receiver.restart(Behaviour::DiesMidway).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.died.load(Ordering::SeqCst) < 2 {
        most = most.max(spool_bytes(&spool));
        assert!(Instant::now() < deadline, "the service never tried again");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    assert!(most <= cap, "the spool stays under its cap: {most} > {cap}");

    // Back for good: everything arrives, once, in order.
    receiver.restart(Behaviour::Healthy).await;
    let expected = stored_ids(svc.store()).await;
    wait_for_ids(&expected, || receiver.messages().into_iter().map(|m| m.json).collect()).await;
    let messages = receiver.messages();
    let json: Vec<Value> = messages.iter().map(|m| m.json.clone()).collect();
    assert_once_in_order(&json, &expected);

    // RFC 5424 headers and the events' fields.
    let host = url::Url::parse(&svc.url()).unwrap().host_str().unwrap().to_owned();
    for m in &messages {
        assert_eq!((m.hostname.as_str(), m.app_name.as_str()), (host.as_str(), "postern"));
        assert_eq!(m.msgid, m.json["type"].as_str().unwrap());
        assert_eq!(m.timestamp, m.json["time"].as_str().unwrap());
        assert!(m.timestamp.ends_with('Z'), "{}", m.timestamp);
    }
    let signin = messages
        .iter()
        .find(|m| m.msgid == "signin" && m.json["username"] == "jo@acme.test")
        .unwrap();
    assert_eq!(signin.json["tenant"], "acme");
    assert_eq!(signin.json["tenant_id"], t.tenant.id.as_str());
    assert_eq!(signin.json["username"], "jo@acme.test");
    assert_eq!(signin.json["outcome"], "bad_credentials");
    assert_eq!(signin.json["ip"], "127.0.0.1");
    assert_eq!(signin.pri, 10 * 8 + 5, "authpriv.notice");
    assert!(!serde_json::to_string(&signin.json).unwrap().contains("wrong password"));
    let group = messages
        .iter()
        .find(|m| m.msgid == "audit" && m.json["action"] == "group.create")
        .unwrap();
    assert_eq!(group.json["actor"], format!("user:{}", t.admin.id));
    assert_eq!(group.json["hash"].as_str().unwrap().len(), 64);
    assert_eq!(group.pri, 13 * 8 + 5, "log audit, notice");

    // The spool is empty again, the cursors at the end.
    let deadline = Instant::now() + Duration::from_secs(5);
    while spool_bytes(&spool) > 0 {
        assert!(
            Instant::now() < deadline,
            "the spool keeps {} bytes",
            spool_bytes(&spool)
        );
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    let cursor = svc
        .store()
        .export_cursor("syslog", ExportStream::Signins)
        .await
        .unwrap();
    assert_eq!(
        cursor,
        svc.store().signins_after(0, 100_000).await.unwrap().last().unwrap().seq
    );
}

#[tokio::test]
async fn two_instances_on_one_database_ship_each_event_once() {
    let receiver = SyslogReceiver::start(None).await;
    let settings = ExportSettings {
        syslog: Some(receiver.target()),
        batch: 1,
        ..quick_export()
    };
    let svc = TestService::builder()
        .postgres()
        .export(settings.clone())
        .start()
        .await
        .unwrap();
    // A second instance's shipper: the same database, a data dir of its own.
    let other_dir = tempfile::tempdir().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let other = postern_export::start(
        &settings,
        svc.store(),
        &svc.shared_clock(),
        other_dir.path(),
        "other-instance",
        &stopped,
    )
    .await
    .unwrap();
    assert_eq!(other.len(), 1);
    let t = svc.bootstrap().await.unwrap();
    EventMaker::new(&svc, &t).await.make(&svc, 8).await;
    let expected = stored_ids(svc.store()).await;
    wait_for_ids(&expected, || receiver.messages().into_iter().map(|m| m.json).collect()).await;
    postern_testkit::quiet_for(Duration::from_millis(300)).await; // no duplicate may follow
    let messages = receiver.messages();
    let hosts: HashSet<&str> = messages.iter().map(|m| m.hostname.as_str()).collect();
    assert_eq!(hosts.len(), 2, "both instances shipped: {hosts:?}");
    let json: Vec<Value> = messages.into_iter().map(|m| m.json).collect();
    // Each instance keeps its own order; together every event arrives once.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &json {
        *seen.entry(e["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "shipped twice: {repeated:?}");
    assert_eq!(seen.len(), expected.len());
    let _ = stop.send(true);
    for task in other {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn syslog_over_tls_checks_the_receivers_certificate() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let receiver = SyslogReceiver::start(Some(ca.acceptor())).await;
    let svc = TestService::builder()
        .export(ExportSettings {
            syslog: Some(receiver.target()),
            ca_file: Some(ca.write(dir.path(), "siem-ca.pem")),
            hostname: Some("login.acme.test".into()),
            ..quick_export()
        })
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    EventMaker::new(&svc, &t).await.make(&svc, 2).await;
    let expected = stored_ids(svc.store()).await;
    wait_for_ids(&expected, || receiver.messages().into_iter().map(|m| m.json).collect()).await;
    let messages = receiver.messages();
    assert_once_in_order(&messages.iter().map(|m| m.json.clone()).collect::<Vec<_>>(), &expected);
    assert!(messages.iter().all(|m| m.hostname == "login.acme.test"));

    // A receiver whose certificate the service does not trust gets nothing.
    let stranger = SyslogReceiver::start(Some(Ca::new().acceptor())).await;
    let svc = TestService::builder()
        .export(ExportSettings {
            syslog: Some(stranger.target()),
            ca_file: Some(ca.write(dir.path(), "siem-ca.pem")),
            ..quick_export()
        })
        .start()
        .await
        .unwrap();
    svc.bootstrap().await.unwrap();
    let spool = svc.data_dir().join("export").join("syslog");
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool_bytes(&spool) == 0 {
        assert!(Instant::now() < deadline, "nothing was spooled");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    postern_testkit::quiet_for(Duration::from_millis(500)).await;
    assert!(stranger.messages().is_empty(), "an untrusted receiver got events");
    assert!(spool_bytes(&spool) > 0, "the events wait in the spool");
}

// ---- webhook ------------------------------------------------------------------

#[tokio::test]
async fn the_webhook_gets_json_lines_over_verified_tls_with_its_token() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let hook = Webhook::start(ca.acceptor(), false).await;
    let webhook = |ca_file: PathBuf| ExportSettings {
        webhook: Some(WebhookTarget::new(&hook.url(), Some("hook-s3cret".into())).unwrap()),
        ca_file: Some(ca_file),
        ..quick_export()
    };

    // Trusting another CA: the handshake fails, no batch is posted.
    let untrusting = TestService::builder()
        .export(webhook(Ca::new().write(dir.path(), "other-ca.pem")))
        .start()
        .await
        .unwrap();
    untrusting.bootstrap().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.failed_handshakes.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the service never tried");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    untrusting.stop().await;
    assert_eq!(hook.refused.load(Ordering::SeqCst), 0, "no request got through");

    // Trusting the right CA while the webhook answers 503: retried, kept.
    let svc = TestService::builder()
        .export(webhook(ca.write(dir.path(), "siem-ca.pem")))
        .start()
        .await
        .unwrap();
    let t = svc.bootstrap().await.unwrap();
    EventMaker::new(&svc, &t).await.make(&svc, 3).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.refused.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the service did not retry");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    assert!(hook.events().is_empty());

    // Accepting: every event once, in order, with the token.
    hook.accepting.store(true, Ordering::SeqCst);
    let expected = stored_ids(svc.store()).await;
    wait_for_ids(&expected, || hook.events()).await;
    assert_once_in_order(&hook.events(), &expected);
    for (headers, body) in hook.batches.lock().unwrap().iter() {
        assert_eq!(headers["authorization"], "Bearer hook-s3cret");
        assert_eq!(headers["content-type"], "application/x-ndjson");
        assert!(body.ends_with('\n'));
    }
}

// ---- access log ---------------------------------------------------------------

/// Fields of the captured access log lines of this process.
type Line = BTreeMap<String, String>;

/// Records the fields of one event.
#[derive(Default)]
struct Fields(Line);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// A layer keeping access log events.
struct Capture(Arc<Mutex<Vec<Line>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

/// The access log lines of this process, captured from the first call on by a
/// process-wide subscriber (the service runs in-process).
fn access_log() -> Arc<Mutex<Vec<Line>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<Line>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            use tracing_subscriber::prelude::*;
            let lines: Arc<Mutex<Vec<Line>>> = Arc::default();
            let only_access = tracing_subscriber::filter::Targets::new()
                .with_target(postern_edge::ACCESS_LOG_TARGET, tracing::Level::INFO);
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(Capture(lines.clone()).with_filter(only_access)),
            )
            .expect("no other subscriber in this test process");
            lines
        })
        .clone()
}

/// Waits (up to 10 s) for the access log lines `pick` selects to number
/// `count`, and returns them.
async fn access_lines(lines: &Mutex<Vec<Line>>, count: usize, pick: impl Fn(&Line) -> bool) -> Vec<Line> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Line> = lines.lock().unwrap().iter().filter(|l| pick(l)).cloned().collect();
        if found.len() >= count || Instant::now() > deadline {
            return found;
        }
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
}

/// The one access log line of request `id` (waiting for it, then a little
/// longer for a second one that must not come).
async fn line_of(lines: &Mutex<Vec<Line>>, id: &str) -> Line {
    let found = access_lines(lines, 1, |l| l["request_id"] == id).await;
    assert_eq!(found.len(), 1, "request {id}: {found:?}");
    postern_testkit::quiet_for(Duration::from_millis(200)).await;
    let count = lines.lock().unwrap().iter().filter(|l| l["request_id"] == id).count();
    assert_eq!(count, 1, "one line per request {id}");
    found.into_iter().next().unwrap()
}

fn request_id_of(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_app_request_is_logged_once_with_the_id_the_backend_and_connector_see() {
    let lines = access_log();
    let bench = ProxyBench::start().await;
    let connector = bench.start_connector("gw-1", None).await;
    let connector_id = bench
        .svc
        .store()
        .components(&bench.t.tenant.id, postern_proto::ComponentKind::Connector)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "gw-1")
        .unwrap()
        .id;
    let app = bench.publish("wiki", "wiki.acme.test", AppOptions::default()).await;
    let client = bench.client(&["wiki.acme.test", "orphan.acme.test"]);

    // A POST with a body, a query carrying a secret and a made-up request ID.
    let r = client
        .post(bench.url("wiki.acme.test", "/echo/page?code=s3cret-code"))
        .header("x-request-id", "made-up-id")
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = request_id_of(&r);
    let body = r.bytes().await.unwrap();
    let echo: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        echo["headers"]["x-request-id"],
        json!([id]),
        "the backend gets the logged ID, not the client's"
    );
    assert_eq!(echo["headers"]["x-postern-request-id"], json!([id]));
    let line = line_of(&lines, &id).await;
    let host = format!("wiki.acme.test:{}", bench.port());
    let bytes_out = body.len().to_string();
    let expected = [
        ("app", "wiki"),
        ("app_id", app["id"].as_str().unwrap()),
        ("tenant", bench.t.tenant.id.as_str()),
        ("host", host.as_str()),
        ("method", "POST"),
        ("path", "/echo/page"),
        ("status", "200"),
        ("bytes_in", "1000"),
        ("bytes_out", bytes_out.as_str()),
        ("connector", connector_id.as_str()),
        ("user", "-"),
        ("outcome", "complete"),
    ];
    for (field, value) in expected {
        assert_eq!(line.get(field).map(String::as_str), Some(value), "{field} in {line:?}");
    }
    assert!(line["duration_ms"].parse::<u64>().is_ok(), "{line:?}");
    assert!(!format!("{line:?}").contains("s3cret"), "no query in the log: {line:?}");
    // The connector's log names the same request.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&connector.log).unwrap();
        if log.lines().any(|l| l.contains("request forwarded") && l.contains(&id)) {
            break;
        }
        assert!(Instant::now() < deadline, "the connector did not log {id}:\n{log}");
        postern_testkit::poll_pause(Duration::from_millis(50)).await;
    }

    // A streamed download is logged at its end, with every byte counted.
    let size = 3 * 1024 * 1024 + 7;
    let r = client
        .get(bench.url("wiki.acme.test", &format!("/download?bytes={size}")))
        .send()
        .await
        .unwrap();
    let id = request_id_of(&r);
    assert_eq!(r.bytes().await.unwrap().len(), size);
    let line = line_of(&lines, &id).await;
    assert_eq!(line["bytes_out"], size.to_string());
    assert_eq!(line["outcome"], "complete");

    // A client that leaves mid-stream.
    let mut r = client
        .get(bench.url("wiki.acme.test", "/sse?n=50&every=100"))
        .send()
        .await
        .unwrap();
    let id = request_id_of(&r);
    assert!(r.chunk().await.unwrap().is_some());
    drop(r);
    let line = line_of(&lines, &id).await;
    assert_eq!(
        (line["status"].as_str(), line["outcome"].as_str()),
        ("200", "cancelled")
    );

    // A WebSocket is logged when the upgraded connection closes, with the
    // bytes each way.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let tcp = tokio::net::TcpStream::connect(bench.svc.local_addr_for_tests())
            .await
            .unwrap();
        let url = bench.url("wiki.acme.test", "/ws").replace("http://", "ws://");
        let (mut ws, response) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        assert_eq!(response.status(), 101);
        let id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        ws.send(Message::text("x".repeat(1000))).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("x".repeat(1000)));
        assert!(
            lines.lock().unwrap().iter().all(|l| l["request_id"] != id),
            "no line while the connection is open"
        );
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
        drop(ws);
        let line = line_of(&lines, &id).await;
        assert_eq!((line["status"].as_str(), line["outcome"].as_str()), ("101", "upgraded"));
        assert!(line["bytes_in"].parse::<u64>().unwrap() > 1000, "{line:?}");
        assert!(line["bytes_out"].parse::<u64>().unwrap() > 1000, "{line:?}");
    }

    // The front door's own error pages: no connector in the group.
    let lonely = bench.create_group("lonely").await;
    bench
        .publish(
            "orphan",
            "orphan.acme.test",
            AppOptions {
                group: Some(lonely),
                ..AppOptions::default()
            },
        )
        .await;
    let r = client.get(bench.url("orphan.acme.test", "/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let page = r.text().await.unwrap();
    let id = page
        .split("Request ID: ")
        .nth(1)
        .unwrap()
        .split(|c: char| c == '<' || c.is_whitespace())
        .next()
        .unwrap();
    let line = line_of(&lines, id).await;
    assert_eq!((line["app"].as_str(), line["status"].as_str()), ("orphan", "503"));
    assert_eq!(line["connector"], "-");
}

#[tokio::test]
async fn the_access_log_names_the_signed_in_user_of_a_pre_authenticated_app() {
    let lines = access_log();
    let bench = ProxyBench::start().await;
    let _connector = bench.start_connector("gw-1", None).await;
    let app = bench
        .publish(
            "hr",
            "hr.acme.test",
            AppOptions {
                preauth: "sts",
                ..AppOptions::default()
            },
        )
        .await;
    bench.assign(&app, &bench.t.admin.id).await;
    let browser = bench.browser(&["hr.acme.test"]);
    let start = bench.url("hr.acme.test", "/echo/who");
    let page = crate::proxy::sign_in_to_app(&bench, &browser, &start).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let id = page.headers["x-request-id"].to_str().unwrap();
    let line = line_of(&lines, id).await;
    assert_eq!(line["user"], bench.t.admin.username);
    assert_eq!(line["user_id"], bench.t.admin.id);
    assert_eq!(line["app"], "hr");

    // Before signing in: the redirect to the sign-in pages, no user.
    let app_id = app["id"].as_str().unwrap();
    let redirected = access_lines(&lines, 1, |l| {
        l["app_id"] == app_id && l["path"] == "/echo/who" && l["status"] == "302"
    })
    .await;
    assert_eq!(redirected.len(), 1, "{redirected:?}");
    assert_eq!(redirected[0]["user"], "-");
}

// ---- audit verify -------------------------------------------------------------

/// Runs `postern admin args...` with its configuration in `dir`; returns
/// success, stdout and stderr.
async fn admin_cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
        .arg("admin")
        .args(args)
        .env("POSTERN_CONFIG_DIR", dir)
        .env_remove("POSTERN_SERVER")
        .env_remove("POSTERN_TENANT")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn audit_verify_names_the_first_broken_entry_of_a_tampered_chain() {
    // The real clock: the command line checks its token's expiry by it.
    let svc = TestService::builder().system_clock().start().await.unwrap();
    let t = svc.bootstrap().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    CredentialFile::in_dir(dir.path())
        .save(&Credentials {
            server: svc.url(),
            tenant: "acme".into(),
            client_id: "postern-cli".into(),
            access_token: svc.admin_token(&t.tenant, &t.admin).await.unwrap().into(),
            refresh_token: None,
            expires_at: SystemClock.now() + Duration::from_secs(300),
        })
        .unwrap();
    let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
    for name in ["staff", "contractors"] {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/groups", svc.url()))
            .bearer_auth(&token)
            .json(&json!({"name": name, "description": ""}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let entries = svc.store().audit_after(0, 100).await.unwrap().len();
    assert!(entries >= 3, "{entries} audit entries");

    let (ok, out, err) = admin_cli(dir.path(), &["audit", "verify"]).await;
    assert!(ok, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["intact"], true);
    assert_eq!(status["entries"], entries);

    // Someone with the database owner's rights rewrites entry 2.
    sqlx::raw_sql("DROP TRIGGER audit_log_no_update")
        .execute(svc.store().pool())
        .await
        .unwrap();
    sqlx::raw_sql("UPDATE audit_log SET actor = 'user:mallory' WHERE seq = 2")
        .execute(svc.store().pool())
        .await
        .unwrap();
    let (ok, out, err) = admin_cli(dir.path(), &["audit", "verify"]).await;
    assert!(!ok, "a broken chain fails the command");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["intact"], false);
    assert_eq!(status["first_broken_seq"], 2);
    assert!(
        err.contains("broken at entry 2: its content does not match its hash"),
        "{err}"
    );
}
