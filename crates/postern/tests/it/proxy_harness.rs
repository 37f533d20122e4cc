//! The application proxy's test bench: the real service (in-process), real
//! `postern connector run` processes that dial out to it, and a real backend on
//! loopback with the endpoints the tests need. Published apps live at host names
//! of their own (`*.acme.test`), resolved to the service by the test clients.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Context, SHA256};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use postern_proto::ComponentKind;
use postern_testkit::{Browser, TenantFixture, TestService};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::admin_login;

/// Body type of the test backend.
pub type BackendBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> BackendBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Deterministic bytes for streamed downloads: byte `i` is `(i * 31 + 7) % 251`.
pub fn pattern_chunk(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (((offset + i) * 31 + 7) % 251) as u8).collect()
}

/// The pattern repeats every 251 bytes.
const PATTERN_PERIOD: u64 = 251;

/// Hands out pattern bytes as slices of one precomputed block (no per-byte work:
/// gigabytes of it stay cheap in a debug build).
#[derive(Clone)]
pub struct PatternSource {
    block: Bytes,
    chunk: usize,
}

impl PatternSource {
    /// A source whose chunks are at most `chunk` bytes.
    pub fn new(chunk: usize) -> Self {
        Self {
            block: Bytes::from(pattern_chunk(0, chunk + PATTERN_PERIOD as usize)),
            chunk,
        }
    }

    /// The pattern bytes at `offset`, at most one chunk and at most `left` bytes.
    pub fn at(&self, offset: u64, left: u64) -> Bytes {
        let n = left.min(self.chunk as u64) as usize;
        let start = (offset % PATTERN_PERIOD) as usize;
        self.block.slice(start..start + n)
    }
}

/// SHA-256 of `len` pattern bytes, computed chunk by chunk.
pub fn pattern_sha256(len: u64) -> String {
    let source = PatternSource::new(1 << 20);
    let mut ctx = Context::new(&SHA256);
    let mut done = 0u64;
    while done < len {
        let chunk = source.at(done, len - done);
        ctx.update(&chunk);
        done += chunk.len() as u64;
    }
    hex(ctx.finish().as_ref())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn query(req: &Request<Incoming>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The backend: everything under `/app/`.
/// - `…/echo…`: the request as the backend saw it (JSON; the body hashed).
/// - `…/redirect`: a redirect to an absolute internal URL.
/// - `…/cookie`: a cookie scoped to the internal host and path.
/// - `…/page.html`: HTML linking to internal URLs.
/// - `…/slow?ms=N`: answers after N ms.
/// - `…/sse?n=N&every=MS`: N server-sent events, one every MS.
/// - `…/download?bytes=N`: N pattern bytes, streamed.
/// - `…/upload[?stall_after=N&stall_ms=MS]`: hashes the streamed body: `{len,
///   sha256}` (pausing MS once N bytes are in).
/// - `…/break?bytes=N[&length=L]`: N pattern bytes, then the connection is
///   dropped mid-body (chunked; with `length`, a `Content-Length: L` it never
///   reaches).
/// - `…/ws`: a WebSocket echo.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts the backend on a free loopback port.
    pub async fn start() -> Backend {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Starts the backend on a free port of `ip` (e.g. the host's side of a
    /// network namespace's link).
    pub async fn start_on(ip: std::net::IpAddr) -> Backend {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, addr));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend { addr, task }
    }

    /// The internal URL apps use: `http://127.0.0.1:PORT/app/`.
    pub fn internal_url(&self) -> String {
        format!("http://{}/app/", self.addr)
    }
}

async fn handle(req: Request<Incoming>, me: SocketAddr) -> Result<Response<BackendBody>, std::io::Error> {
    let path = req.uri().path().to_owned();
    let json_response = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .body(full(v.to_string()))
            .unwrap()
    };
    if path.ends_with("/ws") {
        return Ok(websocket_echo(req));
    }
    if path.ends_with("/redirect") {
        return Ok(Response::builder()
            .status(302)
            .header("location", format!("http://{me}/app/landing?x=1"))
            .body(full(""))
            .unwrap());
    }
    if path.ends_with("/cookie") {
        return Ok(Response::builder()
            .header("set-cookie", "pref=1; Domain=127.0.0.1; Path=/app/; HttpOnly")
            .body(full("ok"))
            .unwrap());
    }
    if path.ends_with("/page.html") {
        return Ok(Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .body(full(format!(
                "<html><body><a href=\"http://{me}/app/next\">next</a><img src=\"/app/logo.png\"></body></html>"
            )))
            .unwrap());
    }
    if path.ends_with("/slow") {
        let ms: u64 = query(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
        postern_testkit::hold_for(Duration::from_millis(ms)).await; // a slow backend, on purpose
        return Ok(json_response(json!({"slept_ms": ms})));
    }
    if path.ends_with("/sse") {
        let n: u64 = query(&req, "n").and_then(|v| v.parse().ok()).unwrap_or(5);
        let every: u64 = query(&req, "every").and_then(|v| v.parse().ok()).unwrap_or(200);
        let events = futures_util::stream::unfold(0u64, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                postern_testkit::hold_for(Duration::from_millis(every)).await; // a paced stream, on purpose
            }
            let data = Bytes::from(format!("id: {i}\ndata: event {i}\n\n"));
            Some((Ok::<_, std::io::Error>(Frame::data(data)), i + 1))
        });
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(BodyExt::boxed(StreamBody::new(events)))
            .unwrap());
    }
    if path.ends_with("/break") {
        let total: u64 = query(&req, "bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
        let declared: Option<u64> = query(&req, "length").and_then(|v| v.parse().ok());
        let source = PatternSource::new(64 * 1024);
        let chunks = futures_util::stream::unfold(Some(0u64), move |state| {
            let source = source.clone();
            async move {
                let done = state?;
                if done >= total {
                    // A body error: hyper drops the connection without ending
                    // the body (no last chunk, Content-Length not reached).
                    return Some((Err(std::io::Error::other("the backend died mid-body")), None));
                }
                let chunk = source.at(done, total - done);
                let next = done + chunk.len() as u64;
                Some((Ok(Frame::data(chunk)), Some(next)))
            }
        });
        let mut response = Response::builder().header("content-type", "application/octet-stream");
        if let Some(length) = declared {
            response = response.header("content-length", length.to_string());
        }
        return Ok(response.body(BodyExt::boxed(StreamBody::new(chunks))).unwrap());
    }
    if path.ends_with("/download") {
        let total: u64 = query(&req, "bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
        let source = PatternSource::new(64 * 1024);
        let chunks = futures_util::stream::unfold(0u64, move |done| {
            let source = source.clone();
            async move {
                if done >= total {
                    return None;
                }
                let chunk = source.at(done, total - done);
                let next = done + chunk.len() as u64;
                Some((Ok::<_, std::io::Error>(Frame::data(chunk)), next))
            }
        });
        return Ok(Response::builder()
            .header("content-type", "application/octet-stream")
            .header("content-length", total.to_string())
            .body(BodyExt::boxed(StreamBody::new(chunks)))
            .unwrap());
    }
    // Echo (and upload): the body is hashed as it streams, never kept.
    let method = req.method().to_string();
    let path_and_query = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let entry = headers
            .entry(name.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = entry {
            values.push(Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()));
        }
    }
    // `stall_after=N&stall_ms=MS`: stop reading for MS once N bytes are in (the
    // sender has to hold back meanwhile).
    let mut stall = query(&req, "stall_after")
        .and_then(|v| v.parse::<u64>().ok())
        .map(|after| {
            (
                after,
                query(&req, "stall_ms").and_then(|v| v.parse().ok()).unwrap_or(1000),
            )
        });
    let mut body = req.into_body();
    let mut ctx = Context::new(&SHA256);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            ctx.update(&data);
        }
        if let Some((after, ms)) = stall
            && len >= after
        {
            stall = None;
            postern_testkit::hold_for(Duration::from_millis(ms)).await; // a stalling backend, on purpose
        }
    }
    Ok(json_response(json!({
        "method": method,
        "path": path_and_query,
        "headers": headers,
        "len": len,
        "sha256": hex(ctx.finish().as_ref()),
    })))
}

fn websocket_echo(mut req: Request<Incoming>) -> Response<BackendBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return Response::builder().status(400).body(full("not a websocket")).unwrap();
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else { return };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let (mut tx, mut rx) = ws.split();
        // A close frame is answered by the next read (the stream then ends), so
        // the close handshake completes.
        while let Some(Ok(msg)) = rx.next().await {
            if (msg.is_text() || msg.is_binary()) && futures_util::SinkExt::send(&mut tx, msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(full(""))
        .unwrap()
}

/// A `postern connector run` process; killed when dropped.
pub struct ConnectorProcess {
    /// The process.
    pub child: std::process::Child,
    /// Its log file.
    pub log: std::path::PathBuf,
}

impl ConnectorProcess {
    /// Kills it at once (SIGKILL: no drain, sockets closed by the kernel).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- connector log ({}) ---\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.kill();
    }
}

/// Options of a published test app.
pub struct AppOptions {
    /// `sts` or `passthrough`.
    pub preauth: &'static str,
    /// Path prefix (`/` for the whole host).
    pub prefix: &'static str,
    /// Connector group name (the default group when `None`).
    pub group: Option<String>,
    /// Backend timeout.
    pub backend_timeout_secs: u64,
    /// Link translation.
    pub translate_links: bool,
    /// Internal URL (the backend's when `None`).
    pub internal_url: Option<String>,
    /// Publish at `https://` (the service itself still listens on plain HTTP, as
    /// behind a TLS-terminating load balancer).
    pub https: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            preauth: "passthrough",
            prefix: "/",
            group: None,
            backend_timeout_secs: 85,
            translate_links: false,
            internal_url: None,
            https: false,
        }
    }
}

/// The service, a tenant with its admin, the backend, and connectors.
pub struct ProxyBench {
    /// The service.
    pub svc: TestService,
    /// The tenant.
    pub t: TenantFixture,
    /// An admin API token.
    pub token: String,
    /// The backend.
    pub backend: Backend,
    /// Scratch space (connector state and logs).
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
    logins: std::sync::atomic::AtomicUsize,
    /// Log files of the connectors started, with their group.
    connector_logs: std::sync::Mutex<Vec<(String, std::path::PathBuf)>>,
}

impl ProxyBench {
    /// Starts the service (manual clock) and the backend; bootstraps tenant `acme`.
    pub async fn start() -> ProxyBench {
        Self::start_with(TestService::builder()).await
    }

    /// Like [`ProxyBench::start`] with the service built by `builder`.
    pub async fn start_with(builder: postern_testkit::TestServiceBuilder) -> ProxyBench {
        let svc = builder.start().await.unwrap();
        let t = svc.bootstrap().await.unwrap();
        let token = svc.admin_token(&t.tenant, &t.admin).await.unwrap();
        ProxyBench {
            svc,
            t,
            token,
            backend: Backend::start().await,
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::new(),
            logins: std::sync::atomic::AtomicUsize::new(0),
            connector_logs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The service's listener port (app hosts are served there too).
    pub fn port(&self) -> u16 {
        self.svc.local_addr_for_tests().port()
    }

    /// An app host's URL on the service: `http://{host}:{port}{path}`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.port())
    }

    /// A browser resolving `hosts` to the service.
    pub fn browser(&self, hosts: &[&str]) -> Browser {
        hosts
            .iter()
            .fold(Browser::new(), |b, h| b.resolving(h, self.svc.local_addr_for_tests()))
    }

    /// A plain client resolving `hosts` to the service (no cookies, no redirects).
    pub fn client(&self, hosts: &[&str]) -> reqwest::Client {
        hosts
            .iter()
            .fold(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(Duration::from_secs(60)),
                |b, h| b.resolve(h, self.svc.local_addr_for_tests()),
            )
            .build()
            .unwrap()
    }

    /// Calls the admin API.
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.svc.url()))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Publishes an app at `http://{host}:{port}{prefix}` and returns its JSON.
    pub async fn publish(&self, name: &str, host: &str, o: AppOptions) -> Value {
        let mut body = json!({
            "name": name,
            "external_url": if o.https {
                format!("https://{host}:{}{}", self.port(), o.prefix)
            } else {
                self.url(host, o.prefix)
            },
            "internal_url": o.internal_url.clone().unwrap_or_else(|| self.backend.internal_url()),
            "preauth": o.preauth,
            "backend_timeout_secs": o.backend_timeout_secs,
            "translate_links": o.translate_links,
        });
        if let Some(g) = &o.group {
            body["connector_group"] = json!(g);
        }
        let (status, app) = self.api(reqwest::Method::POST, "/apps", Some(body)).await;
        assert_eq!(status, 201, "{app}");
        self.wait_for_connector_config(app["connector_group"]["id"].as_str().unwrap())
            .await;
        app
    }

    /// Waits (up to 20 s) until every connector started in `group_id` has loaded
    /// the group's current configuration (it logs the version it loaded), so the
    /// apps just published are known to it.
    pub async fn wait_for_connector_config(&self, group_id: &str) {
        let wanted = self
            .svc
            .store()
            .connector_group(&self.t.tenant.id, group_id)
            .await
            .unwrap()
            .config_version;
        let logs: Vec<std::path::PathBuf> = self
            .connector_logs
            .lock()
            .unwrap()
            .iter()
            .filter(|(g, _)| g == group_id)
            .map(|(_, log)| log.clone())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        for log in logs {
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let loaded = text
                    .lines()
                    .filter(|l| l.contains("configuration loaded"))
                    .filter_map(|l| l.split("version=").nth(1))
                    .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                    .filter_map(|v| v.parse::<i64>().ok())
                    .max()
                    .unwrap_or(0);
                // A stopped connector never catches up; only live ones count.
                if loaded >= wanted || Instant::now() > deadline {
                    break;
                }
                postern_testkit::poll_pause(Duration::from_millis(20)).await;
            }
        }
    }

    /// Assigns a user to an app.
    pub async fn assign(&self, app: &Value, user_id: &str) {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/apps/{}/assignments", app["id"].as_str().unwrap()),
                Some(json!({"kind": "user", "id": user_id})),
            )
            .await;
        assert!(status == 200 || status == 201 || status == 204, "{status} {body}");
    }

    /// Creates a connector group and returns its ID.
    pub async fn create_group(&self, name: &str) -> String {
        let (status, g) = self
            .api(reqwest::Method::POST, "/connector-groups", Some(json!({"name": name})))
            .await;
        assert!(status == 201 || status == 200, "{status} {g}");
        g["id"].as_str().unwrap().to_owned()
    }

    /// The ID of the tenant's default connector group.
    pub async fn default_group(&self) -> String {
        self.svc
            .store()
            .default_connector_group(&self.t.tenant.id, self.svc.now())
            .await
            .unwrap()
            .id
    }

    /// Registers a connector `name` (in `group_id`, else the default group) with a
    /// registration token, starts `postern connector run`, and waits until its
    /// tunnels are up.
    pub async fn start_connector(&self, name: &str, group_id: Option<&str>) -> ConnectorProcess {
        self.start_connector_with(name, group_id, &[]).await
    }

    /// Like [`ProxyBench::start_connector`], with more flags for `postern
    /// connector run`.
    pub async fn start_connector_with(
        &self,
        name: &str,
        group_id: Option<&str>,
        run_flags: &[&str],
    ) -> ConnectorProcess {
        let token = format!("ptr_{}", postern_keyring::random_token().unwrap().expose());
        let now = self.svc.now();
        self.svc
            .store()
            .create_registration_token(
                &postern_keyring::digest(&token),
                &self.t.tenant.id,
                ComponentKind::Connector,
                group_id,
                &format!("user:{}", self.t.admin.id),
                1,
                now,
                now + Duration::from_secs(600),
            )
            .await
            .unwrap();
        let state = self.dir.path().join(format!("{name}-state"));
        // Async: the service runs on this test's runtime.
        let registered = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args([
                "connector",
                "register",
                "--allow-root",
                "--server",
                &self.svc.url(),
                "--name",
                name,
            ])
            .arg("--state-dir")
            .arg(&state)
            .env("POSTERN_REGISTRATION_TOKEN", &token)
            .output()
            .await
            .unwrap();
        assert!(
            registered.status.success(),
            "{}",
            String::from_utf8_lossy(&registered.stderr)
        );
        let log = self.dir.path().join(format!("{name}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_postern"))
            .args(["connector", "run", "--allow-root", "--state-dir"])
            .arg(&state)
            .args(run_flags)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .unwrap();
        let process = ConnectorProcess { child, log };
        let connector_id = self
            .svc
            .store()
            .components(&self.t.tenant.id, ComponentKind::Connector)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap()
            .id;
        let group = match group_id {
            Some(g) => g.to_owned(),
            None => self.default_group().await,
        };
        self.connector_logs
            .lock()
            .unwrap()
            .push((group.clone(), process.log.clone()));
        self.wait_for_tunnels(&group, |tunnels| {
            tunnels.iter().filter(|t| t.connector_id == connector_id).count() >= 2
        })
        .await;
        process
    }

    /// Waits (up to 30 s) until the group's tunnels satisfy `ready`.
    pub async fn wait_for_tunnels(&self, group_id: &str, ready: impl Fn(&[postern_tunnel::TunnelInfo]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tunnels = self.svc.control().tunnels().tunnels(&self.t.tenant.id, group_id);
            if ready(&tunnels) {
                return;
            }
            assert!(Instant::now() < deadline, "tunnels never got ready: {tunnels:?}");
            postern_testkit::poll_pause(Duration::from_millis(50)).await;
        }
    }

    /// The admin's sign-in (each call with the next unused recovery code: a
    /// TOTP code works once per time step).
    pub fn admin_login(&self) -> postern_testkit::Login {
        let n = self.logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        postern_testkit::Login {
            recovery_code: Some(self.t.recovery_codes[n % self.t.recovery_codes.len()].clone()),
            ..admin_login(&self.svc, &self.t)
        }
    }
}

/// A response read by [`ProxyBench::raw_get`].
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: String,
    /// The body as text.
    pub body: String,
}

impl RawResponse {
    /// The backend's echo (JSON with the `path` it received), or `None` when the
    /// answer did not come from the backend's echo.
    pub fn echo(&self) -> Option<Value> {
        if self.content_type != "application/json" {
            return None;
        }
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .filter(|v| v["path"].is_string())
    }
}

impl ProxyBench {
    /// GETs `target` exactly as written (no client-side resolution of dot
    /// segments, percent-encodings or backslashes, which `reqwest` and browsers
    /// would do) from the app host `host`, over HTTP/1.1 with hyper's client.
    pub async fn raw_get(&self, host: &str, target: &str) -> RawResponse {
        let stream = tokio::net::TcpStream::connect(self.svc.local_addr_for_tests())
            .await
            .unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .uri(target)
            .header("host", format!("{host}:{}", self.port()))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        assert_eq!(
            request.uri().to_string(),
            target,
            "the client sends the target as written"
        );
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        RawResponse {
            status,
            content_type,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
