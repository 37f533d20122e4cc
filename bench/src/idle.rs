//! Many idle connections through one connector: the release `postern` binary
//! as `serve`, `agent` and `connector` processes ([`Installation`]), an app
//! without pre-authentication in front of a small backend, and then
//!
//! 1. the idle resident memory (`VmRSS`) of each process once start-up has
//!    settled;
//! 2. `N` idle WebSockets opened through the front door (plain HTTP to the
//!    public listener, an `Upgrade: websocket` handshake, then nothing): the
//!    resident memory of `serve` and `connector` before and after, per
//!    connection;
//! 3. on fresh processes, `N` idle HTTP/1.1 keep-alive connections that each
//!    made one request and stay open, likewise;
//! 4. in both, an active load (`wrk`) before the idle connections open and
//!    again while they are open, to compare its p99.
//!
//! Each kind of idle connection gets processes of its own, so memory freed by
//! one kind cannot be reused by the other and hide its cost. With `--before`
//! an older binary is measured the same way in the same run, side by side.
//!
//! The backend runs in a child process of this benchmark (`postern-bench
//! idle-backend`): with the clients here it would need two sockets per idle
//! connection in one process, more than the usual hard limit of open files.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use postern_directory::testing::Slapd;
use postern_store::Preauth;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procfs::{anonymous_kib, resident_kib};
use crate::proxy::children::{OwnBackendArgs, find_program, spawn_own_backend};
use crate::proxy::wrk::{self, Load, WrkReport};
use crate::pta::installation::{AppSide, DirectorySide, Installation, slapd_agent_config};
use crate::report::{ms, publish};

/// Connection attempts in flight at once while opening the idle connections.
const OPEN_AT_ONCE: usize = 64;
/// Deadline of one connection's opening (connect, request, answer).
const OPEN_WITHIN: Duration = Duration::from_secs(10);
/// Longest wait for the app to answer through the connector after start-up.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Longest wait for resident memory to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// Idle connections checked for life at the end of a phase.
const SAMPLE: usize = 100;
/// Largest response head read from the front door.
const MAX_HEAD: usize = 16 * 1024;
/// The backend's page: 1 KiB.
static PAGE: [u8; 1024] = [b'x'; 1024];

/// Flags of `postern-bench idle`.
#[derive(clap::Args, Debug)]
pub struct IdleArgs {
    /// Idle connections of each kind (WebSockets, keep-alive).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds of each active load run (wrk).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// wrk connections of the active load.
    #[arg(long, default_value_t = 16)]
    load_connections: usize,
    /// The `postern` binary (default: beside this benchmark, i.e.
    /// `target/release/postern`).
    #[arg(long)]
    postern: Option<PathBuf>,
    /// An older `postern` binary measured the same way in the same run and
    /// shown beside it as "before" (e.g. a copy made before a change).
    #[arg(long)]
    before: Option<PathBuf>,
    /// Write the results into this Markdown file's `idle` section.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// Which kind of idle connection a phase holds open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A WebSocket handshake, then silence.
    WebSocket,
    /// One request and its 1 KiB answer, then silence on the open connection.
    KeepAlive,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::WebSocket => "WebSocket",
            Kind::KeepAlive => "keep-alive",
        }
    }
}

/// Resident memory of the three processes, KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Resident {
    serve: u64,
    agent: u64,
    connector: u64,
}

/// One kind of idle connection on fresh processes.
struct Phase {
    wanted: usize,
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    idle: Resident,
    /// The processes' own part of `idle` (`RssAnon`).
    idle_anonymous: Resident,
    before: Resident,
    after: Resident,
    load_alone: WrkReport,
    load_alongside: WrkReport,
    /// Sampled idle connections that still answered at the end, of those tried.
    alive: (usize, usize),
}

impl Phase {
    /// KiB per opened connection from `before` to `after`.
    fn per_connection(&self, pick: fn(&Resident) -> u64) -> Option<f64> {
        (self.opened > 0).then(|| (pick(&self.after) as f64 - pick(&self.before) as f64) / self.opened as f64)
    }
}

/// Both phases of one binary.
struct BinaryRun {
    label: String,
    websockets: Phase,
    keep_alive: Phase,
}

/// The idle-connection benchmark.
pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let open_files = raise_open_file_limit()?;
    let needed = args.connections as u64 + 1000;
    if open_files < needed {
        bail!(
            "this process may open {open_files} files, and {} idle connections need about {needed}: \
             raise the hard limit (ulimit -Hn) or ask for fewer with --connections",
            args.connections
        );
    }
    let wrk_program = find_program("wrk").context("no wrk: install it with bench/scripts/install-bench-deps.sh")?;
    let postern = match &args.postern {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("postern"),
    };
    let mut binaries = Vec::new();
    if let Some(before) = &args.before {
        binaries.push(("before".to_owned(), before.clone()));
    }
    binaries.push((
        if args.before.is_some() { "after" } else { "postern" }.to_owned(),
        postern,
    ));

    let slapd = Slapd::start().await.context("starting slapd for the agent")?;
    let ldap = slapd_agent_config(&slapd, 4);
    let directory = DirectorySide {
        domain: "example.com",
        config: &ldap,
        users: &[],
    };
    let backend_dir = tempfile::Builder::new().prefix("postern-bench-idle-").tempdir()?;
    let backend = spawn_own_backend("idle-backend", backend_dir.path()).await?;

    let mut runs = Vec::new();
    for (label, binary) in &binaries {
        eprintln!("{label}: {}", binary.display());
        let mut phases = Vec::new();
        for kind in [Kind::WebSocket, Kind::KeepAlive] {
            let phase = measure_phase(kind, binary, &directory, backend.1, &wrk_program, &args)
                .await
                .with_context(|| format!("{label}: idle {}s", kind.name()))?;
            print_phase(label, kind, &phase);
            phases.push(phase);
        }
        let keep_alive = phases.pop().context("no keep-alive phase")?;
        let websockets = phases.pop().context("no WebSocket phase")?;
        runs.push(BinaryRun {
            label: label.clone(),
            websockets,
            keep_alive,
        });
    }
    drop(backend);
    let body = render(&args, &runs);
    publish("idle", &body, args.write.as_deref())
}

/// One kind of idle connection against fresh processes of `binary`.
async fn measure_phase(
    kind: Kind,
    binary: &Path,
    directory: &DirectorySide<'_>,
    backend: SocketAddr,
    wrk_program: &Path,
    args: &IdleArgs,
) -> anyhow::Result<Phase> {
    let app = AppSide {
        backend,
        preauth: Preauth::Passthrough,
        serve_env: vec![
            // Room for every idle connection, and no idle deadline within the
            // measurement (the default closes keep-alive connections after 60 s).
            ("POSTERN_LIMITS__MAX_CONNECTIONS", (args.connections + 1000).to_string()),
            ("POSTERN_LIMITS__IDLE_TIMEOUT_SECS", "3600".to_owned()),
        ],
    };
    let mut installation = Installation::start_app(binary, directory, &app).await?;
    let addr = installation.addr;
    let host = installation.app_authority().to_owned();
    wait_ready(&mut installation, addr, &host).await?;
    let pids = Pids::of(&installation);
    let idle = pids.settled().await;
    let idle_anonymous = pids.anonymous();

    let load = Load {
        url: format!("http://{addr}/"),
        host: Some(&host),
        cookie: None,
        close: false,
        threads: 1,
        connections: args.load_connections,
        seconds: 1,
    };
    wrk::run(wrk_program, &load).await.context("warming up")?;
    let load = Load {
        seconds: args.seconds,
        ..load
    };
    let load_alone = wrk::run(wrk_program, &load).await.context("the load alone")?;
    let before = pids.settled().await;

    let started = Instant::now();
    let opened = open_all(kind, args.connections, addr, &host).await;
    eprintln!(
        "  opened {} idle {}s in {:.1} s ({} failed)",
        opened.streams.len(),
        kind.name(),
        started.elapsed().as_secs_f64(),
        opened.failed
    );
    let after = pids.settled().await;
    installation.check_alive()?;
    let load_alongside = wrk::run(wrk_program, &load)
        .await
        .context("the load beside the idle connections")?;
    let Opened {
        mut streams,
        count,
        failed,
        first_error,
    } = opened;
    let alive = still_alive(kind, &mut streams, &host).await;
    installation.check_alive()?;
    drop(streams);
    Ok(Phase {
        wanted: args.connections,
        opened: count,
        failed,
        first_error,
        idle,
        idle_anonymous,
        before,
        after,
        load_alone,
        load_alongside,
        alive,
    })
}

/// The installation's process IDs.
struct Pids {
    serve: u32,
    agent: u32,
    connector: u32,
}

impl Pids {
    fn of(installation: &Installation) -> Self {
        Self {
            serve: installation.serve.id(),
            agent: installation.agent.id(),
            connector: installation.connector.id(),
        }
    }

    /// Each process's `RssAnon` now.
    fn anonymous(&self) -> Resident {
        Resident {
            serve: anonymous_kib(self.serve),
            agent: anonymous_kib(self.agent),
            connector: anonymous_kib(self.connector),
        }
    }

    fn now(&self) -> Resident {
        Resident {
            serve: resident_kib(self.serve),
            agent: resident_kib(self.agent),
            connector: resident_kib(self.connector),
        }
    }

    /// Resident memory once no process has moved by more than 0.2 % (at
    /// least 64 KiB) for two seconds, or after [`SETTLE_WITHIN`].
    async fn settled(&self) -> Resident {
        const STEP: Duration = Duration::from_millis(250);
        const STEADY_STEPS: usize = 8;
        let deadline = Instant::now() + SETTLE_WITHIN;
        let mut window: Vec<Resident> = Vec::new();
        loop {
            let now = self.now();
            window.push(now);
            if window.len() > STEADY_STEPS {
                window.remove(0);
            }
            let steady = window.len() == STEADY_STEPS
                && [
                    (|r: &Resident| r.serve) as fn(&Resident) -> u64,
                    |r| r.agent,
                    |r| r.connector,
                ]
                .iter()
                .all(|pick| {
                    let values = window.iter().map(pick);
                    let (lo, hi) = (values.clone().min().unwrap_or(0), values.max().unwrap_or(0));
                    hi - lo <= (hi / 500).max(64)
                });
            if steady || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(STEP).await;
        }
    }
}

/// Waits until the app answers through the connector.
async fn wait_ready(installation: &mut Installation, addr: SocketAddr, host: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        installation.check_alive()?;
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await?;
            get(&mut stream, host).await
        };
        let last = match tokio::time::timeout(OPEN_WITHIN, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no answer in time".to_owned(),
        };
        if Instant::now() >= deadline {
            bail!(
                "the app did not answer through the connector within {READY_WITHIN:?} (the last try: {last}); \
                 logs in {}",
                installation.dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The idle connections a phase opened.
struct Opened {
    streams: Vec<TcpStream>,
    count: usize,
    failed: usize,
    first_error: Option<String>,
}

/// Opens `n` idle connections of `kind`, [`OPEN_AT_ONCE`] at a time; after the
/// first failure no more are started (a limit was reached).
async fn open_all(kind: Kind, n: usize, addr: SocketAddr, host: &str) -> Opened {
    let stop = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    let host: Arc<str> = Arc::from(host);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (stop, host) = (stop.clone(), host.clone());
        tasks.spawn(async move {
            let result = tokio::time::timeout(OPEN_WITHIN, open_one(kind, addr, &host))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("not open within {OPEN_WITHIN:?}")));
            if result.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            drop(permit);
            result
        });
    }
    let mut opened = Opened {
        streams: Vec::with_capacity(n),
        count: 0,
        failed: 0,
        first_error: None,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => opened.streams.push(stream),
            Ok(Err(e)) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                opened.failed += 1;
                opened.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    opened.count = opened.streams.len();
    opened
}

/// One idle connection: a WebSocket handshake, or one request answered.
async fn open_one(kind: Kind, addr: SocketAddr, host: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.context("connecting")?;
    match kind {
        Kind::WebSocket => {
            let request = format!(
                "GET /socket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let (head, rest) = read_head(&mut stream).await?;
            let status = status_of(&head)?;
            if status != StatusCode::SWITCHING_PROTOCOLS {
                bail!("the handshake was answered {status}");
            }
            anyhow::ensure!(rest.is_empty(), "bytes after the handshake's answer");
        }
        Kind::KeepAlive => get(&mut stream, host).await?,
    }
    Ok(stream)
}

/// One `GET /` on `stream`, its 1 KiB answer read whole; the connection stays
/// open.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, host: &str) -> anyhow::Result<()> {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let (head, rest) = read_head(stream).await?;
    let status = status_of(&head)?;
    if status != StatusCode::OK {
        bail!("the request was answered {status}");
    }
    let length = header(&head, "content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .context("an answer without Content-Length")?;
    anyhow::ensure!(length == PAGE.len(), "an answer of {length} bytes, not the page");
    let mut body = rest;
    anyhow::ensure!(body.len() <= length, "more bytes than the answer's length");
    let mut more = vec![0u8; length - body.len()];
    stream
        .read_exact(&mut more)
        .await
        .context("reading the answer's body")?;
    body.extend_from_slice(&more);
    anyhow::ensure!(body == PAGE, "not the backend's page");
    Ok(())
}

/// Reads a response head (up to the blank line); returns it and the bytes
/// read after it.
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.context("reading the answer")?;
        if n == 0 {
            bail!("the connection closed before an answer");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            bail!("an answer's head over {MAX_HEAD} bytes");
        }
    }
}

fn status_of(head: &str) -> anyhow::Result<StatusCode> {
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP answer: {:?}", head.lines().next().unwrap_or_default()))?;
    Ok(StatusCode::from_u16(code)?)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Checks up to [`SAMPLE`] of the idle connections, spread over all of them:
/// a WebSocket must echo a few bytes back (the backend echoes), a keep-alive
/// connection must answer another request. Returns (answered, tried).
async fn still_alive(kind: Kind, streams: &mut [TcpStream], host: &str) -> (usize, usize) {
    if streams.is_empty() {
        return (0, 0);
    }
    let step = (streams.len() / SAMPLE).max(1);
    let mut tried = 0;
    let mut answered = 0;
    for stream in streams.iter_mut().step_by(step).take(SAMPLE) {
        tried += 1;
        if let Ok(Ok(())) = tokio::time::timeout(OPEN_WITHIN, answers(kind, stream, host)).await {
            answered += 1;
        }
    }
    (answered, tried)
}

/// Whether an idle connection still carries a request (keep-alive) or bytes
/// both ways (WebSocket).
async fn answers(kind: Kind, stream: &mut TcpStream, host: &str) -> anyhow::Result<()> {
    match kind {
        Kind::WebSocket => {
            // A masked, empty WebSocket ping frame; the backend sends it back.
            let ping = [0x89u8, 0x80, 1, 2, 3, 4];
            stream.write_all(&ping).await?;
            let mut back = [0u8; 6];
            stream.read_exact(&mut back).await?;
            anyhow::ensure!(back == ping, "not the bytes sent");
            Ok(())
        }
        Kind::KeepAlive => get(stream, host).await,
    }
}

/// `postern-bench idle-backend`: a 1 KiB page for every request, and for a
/// WebSocket handshake `101` and then an echo of whatever arrives.
pub async fn serve_backend(args: OwnBackendArgs) -> anyhow::Result<()> {
    raise_open_file_limit()?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait for some to close.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn answer(mut request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let websocket = request
        .headers()
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !websocket {
        return Ok(Response::new(Full::new(Bytes::from_static(&PAGE))));
    }
    let accept = request
        .headers()
        .get("sec-websocket-key")
        .map(|key| websocket_accept(key.as_bytes()));
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, hyper::header::HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, hyper::header::HeaderValue::from_static("websocket"));
    if let Some(Ok(accept)) = accept.map(hyper::header::HeaderValue::try_from) {
        headers.insert("sec-websocket-accept", accept);
    }
    Ok(response)
}

/// Sends back whatever arrives until the peer closes.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 section 4.2.2).
fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine as _;
    let mut input = key.to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Raises this process's soft limit of open files to its hard limit; returns
/// the limit now in force.
fn raise_open_file_limit() -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        setrlimit(Resource::Nofile, limit).context("raising the limit of open files")?;
    }
    Ok(limit.current.unwrap_or(u64::MAX))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn kib_per(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn print_phase(label: &str, kind: Kind, p: &Phase) {
    eprintln!(
        "  {label}, {}: idle serve {} / agent {} / connector {} MiB; {} of {} open ({} failed{}); \
         KiB each: serve {}, connector {}; p99 {} ms alone, {} ms alongside; {}/{} sampled alive",
        kind.name(),
        mib(p.idle.serve),
        mib(p.idle.agent),
        mib(p.idle.connector),
        p.opened,
        p.wanted,
        p.failed,
        p.first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        kib_per(p.per_connection(|r| r.serve)),
        kib_per(p.per_connection(|r| r.connector)),
        ms(p.load_alone.p99),
        ms(p.load_alongside.p99),
        p.alive.0,
        p.alive.1,
    );
}

/// The Markdown section: one row per figure, one column per binary.
fn render(args: &IdleArgs, runs: &[BinaryRun]) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = args.connections;
    let mut out = String::new();
    let _ = write!(
        out,
        "### Many idle connections through one connector\n\n\
         One run on this machine ({cores} cores, everything on loopback), \
         `postern-bench idle --connections {n} --seconds {s}{before}` (release build): the `postern` binary as \
         `serve`, `agent` (against a fresh slapd) and `connector` processes, an app with pre-authentication \
         `passthrough` in front of a hyper backend (a 1 KiB page; WebSocket handshakes answered `101`, then an \
         echo). Idle resident memory (`VmRSS`) once start-up has settled, and the part of it that is the \
         process's own (`RssAnon`: heap and stacks; the rest is pages of the binary and libc, held by the page \
         cache and shared by the three processes). Then {n} idle WebSockets through the \
         front door (plain HTTP, the `Upgrade: websocket` handshake, then nothing), and on fresh processes {n} \
         idle HTTP/1.1 keep-alive connections that each made one request: KiB per connection is the growth of \
         `VmRSS` over the connections opened, each figure taken once memory has settled. Active load: \
         `wrk -t1 -c{c} -d{s}s --latency` on the app, before the idle connections open and while they are open. \
         The service runs with `limits.max_connections` {max} and `limits.idle_timeout_secs` 3600 (the default \
         60 s would close the idle keep-alive connections).\n\n",
        s = args.seconds,
        c = args.load_connections,
        before = if args.before.is_some() { " --before OLD" } else { "" },
        max = n + 1000,
    );
    let _ = write!(out, "| figure |");
    for run in runs {
        let _ = write!(out, " {} |", run.label);
    }
    let _ = write!(out, "\n|---|");
    for _ in runs {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    type Cell = fn(&BinaryRun) -> String;
    let rows: &[(&str, Cell)] = &[
        ("`serve` idle, MiB", |r| mib(r.websockets.idle.serve)),
        ("`connector` idle, MiB", |r| mib(r.websockets.idle.connector)),
        ("`agent` idle, MiB", |r| mib(r.websockets.idle.agent)),
        ("of which its own (`RssAnon`), MiB: serve / connector / agent", |r| {
            let own = &r.websockets.idle_anonymous;
            format!("{} / {} / {}", mib(own.serve), mib(own.connector), mib(own.agent))
        }),
        ("idle WebSockets open", |r| opened(&r.websockets)),
        ("`serve` KiB per idle WebSocket", |r| {
            kib_per(r.websockets.per_connection(|m| m.serve))
        }),
        ("`connector` KiB per idle WebSocket", |r| {
            kib_per(r.websockets.per_connection(|m| m.connector))
        }),
        ("load p99 ms, alone → beside the WebSockets", |r| p99s(&r.websockets)),
        ("load requests/s, alone → beside the WebSockets", |r| {
            rates(&r.websockets)
        }),
        ("WebSockets still echoing at the end (sampled)", |r| {
            format!("{} of {}", r.websockets.alive.0, r.websockets.alive.1)
        }),
        ("idle keep-alive connections open", |r| opened(&r.keep_alive)),
        ("`serve` KiB per idle keep-alive connection", |r| {
            kib_per(r.keep_alive.per_connection(|m| m.serve))
        }),
        ("`connector` KiB per idle keep-alive connection", |r| {
            kib_per(r.keep_alive.per_connection(|m| m.connector))
        }),
        ("load p99 ms, alone → beside the keep-alive connections", |r| {
            p99s(&r.keep_alive)
        }),
        ("load requests/s, alone → beside the keep-alive connections", |r| {
            rates(&r.keep_alive)
        }),
        ("keep-alive connections still answering at the end (sampled)", |r| {
            format!("{} of {}", r.keep_alive.alive.0, r.keep_alive.alive.1)
        }),
    ];
    for (name, cell) in rows {
        let _ = write!(out, "| {name} |");
        for run in runs {
            let _ = write!(out, " {} |", cell(run));
        }
        out.push('\n');
    }
    let mut notes = Vec::new();
    for run in runs {
        for (kind, phase) in [(Kind::WebSocket, &run.websockets), (Kind::KeepAlive, &run.keep_alive)] {
            if let Some(e) = &phase.first_error {
                notes.push(format!(
                    "**{}**, idle {}s: {} of {} opened; opening stopped at the first failure: {}",
                    run.label,
                    kind.name(),
                    phase.opened,
                    phase.wanted,
                    e.replace('|', "\\|")
                ));
            }
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "{}. {note}", i + 1);
        }
    }
    out
}

fn opened(p: &Phase) -> String {
    if p.opened == p.wanted {
        p.opened.to_string()
    } else {
        format!("**{} of {}**", p.opened, p.wanted)
    }
}

fn p99s(p: &Phase) -> String {
    let p99 = |r: &WrkReport| {
        if r.requests == 0 {
            "none answered".to_owned()
        } else {
            ms(r.p99)
        }
    };
    format!("{} → {}", p99(&p.load_alone), p99(&p.load_alongside))
}

fn rates(p: &Phase) -> String {
    format!("{:.0} → {:.0}", p.load_alone.ok_rate(), p.load_alongside.ok_rate())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn websocket_accept_matches_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn heads_are_read_up_to_the_blank_line() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\nX-A: b\r\n\r\n";
        assert_eq!(status_of(head).unwrap(), StatusCode::OK);
        assert_eq!(header(head, "content-length"), Some("1024"));
        assert_eq!(header(head, "x-b"), None);
        assert!(status_of("garbage").is_err());
    }
}
