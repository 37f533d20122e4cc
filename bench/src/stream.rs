//! Large transfers: `--bytes` (default 1 GiB) down and up over one HTTP/1.1
//! connection, along three paths measured in one run:
//!
//! - **direct**: the client to the backend;
//! - **nginx hop**: the client to nginx (`proxy_pass`, bodies through memory
//!   buffers, never a temporary file) to the backend;
//! - **postern**: the client to the release binary's `serve` (plain HTTP on
//!   loopback), through a connector's mutual-TLS tunnel, to the backend
//!   ([`Installation`], the `serve`, `agent` and `connector` processes).
//!
//! Each transfer runs `--repeat` times; the table shows the median rate, in
//! MB/s (10⁶ bytes per second), and as a ratio to the direct path. For
//! Postern it adds the CPU time `serve` and the connector spent per GiB moved
//! (from `/proc/PID/stat`) and their peak resident memory, sampled during the
//! transfers. `--before OLD` measures an older binary the same way, beside it.
//!
//! The backend (`postern-bench stream-backend`) runs in a child process, so
//! its CPU is not the client's: `GET /download?bytes=N` answers `N` bytes
//! (with `Content-Length`) from one static buffer, and `POST /upload` reads
//! the body and answers its length.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use postern_directory::testing::Slapd;
use postern_store::Preauth;
use tokio::net::TcpStream;

use crate::procfs::{cpu_seconds, resident_kib};
use crate::proxy::children::{OwnBackendArgs, find_program, spawn_own_backend};
use crate::proxy::nginx::Nginx;
use crate::pta::installation::{AppSide, DirectorySide, Installation, slapd_agent_config};
use crate::report::publish;

/// The backend's static buffer: every download is cut from it.
const CHUNK_LEN: usize = 256 * 1024;
static CHUNK: [u8; CHUNK_LEN] = [b'x'; CHUNK_LEN];
/// Longest wait for one transfer of 1 GiB (scaled with `--bytes`).
const SECONDS_PER_GIB: u64 = 120;
/// Longest wait for the app to answer through the connector after start-up.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How often resident memory is sampled during the transfers.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
const GIB: f64 = (1u64 << 30) as f64;

/// Flags of `postern-bench stream`.
#[derive(clap::Args, Debug)]
pub struct StreamArgs {
    /// Bytes per transfer, each way.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Transfers per direction and path; the table shows the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// The `postern` binary (default: beside this benchmark, i.e.
    /// `target/release/postern`).
    #[arg(long)]
    postern: Option<PathBuf>,
    /// An older `postern` binary measured the same way in the same run and
    /// shown beside it as "before".
    #[arg(long)]
    before: Option<PathBuf>,
    /// Measure only Postern's rows, for iterating (the ratios need the
    /// direct row: they show as "–").
    #[arg(long, conflicts_with = "write")]
    only_postern: bool,
    /// Write the results into this Markdown file's `stream` section.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// Which way the bytes go.
#[derive(Clone, Copy, Debug)]
enum Direction {
    /// The backend's response body to the client.
    Down,
    /// The client's request body to the backend.
    Up,
}

/// What one path measured.
struct Row {
    label: String,
    /// Median seconds per transfer, down and up.
    down: f64,
    up: f64,
    /// For Postern's paths: `serve`'s and the connector's cost.
    postern: Option<PosternCost>,
}

/// CPU and memory of `serve` and the connector over a path's transfers.
struct PosternCost {
    /// CPU seconds per GiB moved (both directions together).
    serve_cpu_per_gib: f64,
    connector_cpu_per_gib: f64,
    /// Resident memory, MiB: before the transfers and the peak during them.
    serve_rss: (f64, f64),
    connector_rss: (f64, f64),
}

/// The large-transfer benchmark.
pub async fn run(args: StreamArgs) -> anyhow::Result<()> {
    if args.repeat == 0 || args.bytes == 0 {
        bail!("--repeat and --bytes must be at least 1");
    }
    let nginx_program =
        find_program("nginx").context("no nginx: install it with bench/scripts/install-bench-deps.sh")?;
    let postern = match &args.postern {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("postern"),
    };
    let mut binaries = Vec::new();
    if let Some(before) = &args.before {
        binaries.push(("postern (before)".to_owned(), before.clone()));
    }
    binaries.push(("postern".to_owned(), postern));

    let work = tempfile::Builder::new().prefix("postern-bench-stream-").tempdir()?;
    let (_backend, backend) = spawn_own_backend("stream-backend", work.path()).await?;
    let deadline = Duration::from_secs(SECONDS_PER_GIB * args.bytes.div_ceil(1 << 30));

    let mut rows = Vec::new();
    if !args.only_postern {
        eprintln!("direct");
        let (down, up) = transfers(backend, None, &args, deadline).await.context("direct")?;
        rows.push(Row {
            label: "direct".into(),
            down,
            up,
            postern: None,
        });
        eprintln!("nginx hop");
        let hop = Nginx::streaming_hop(&nginx_program, backend).await?;
        let (down, up) = transfers(hop.addr(), None, &args, deadline)
            .await
            .context("nginx hop")?;
        drop(hop);
        rows.push(Row {
            label: "nginx hop".into(),
            down,
            up,
            postern: None,
        });
    }

    let slapd = Slapd::start().await.context("starting slapd for the agent")?;
    let ldap = slapd_agent_config(&slapd, 1);
    let directory = DirectorySide {
        domain: "example.com",
        config: &ldap,
        users: &[],
    };
    for (label, binary) in &binaries {
        eprintln!("{label}: {}", binary.display());
        let row = measure_postern(label, binary, &directory, backend, &args, deadline)
            .await
            .with_context(|| label.clone())?;
        rows.push(row);
    }

    let body = render(&args, &rows);
    publish("stream", &body, args.write.as_deref())
}

/// Fresh `serve`, `agent` and `connector` processes of `binary` in front of the
/// backend, and the transfers through them.
async fn measure_postern(
    label: &str,
    binary: &Path,
    directory: &DirectorySide<'_>,
    backend: SocketAddr,
    args: &StreamArgs,
    deadline: Duration,
) -> anyhow::Result<Row> {
    let app = AppSide {
        backend,
        preauth: Preauth::Passthrough,
        serve_env: Vec::new(),
    };
    let mut installation = Installation::start_app(binary, directory, &app).await?;
    let host = installation.app_authority().to_owned();
    wait_ready(&mut installation, &host).await?;
    let (serve, connector) = (installation.serve.id(), installation.connector.id());
    let sampler = Sampler::start(vec![serve, connector]);
    let cpu_before = (cpu_seconds(serve)?, cpu_seconds(connector)?);
    let (down, up) = transfers(installation.addr, Some(&host), args, deadline).await?;
    let cpu_after = (cpu_seconds(serve)?, cpu_seconds(connector)?);
    let (before, peaks) = sampler.finish().await;
    installation.check_alive()?;
    let moved = 2.0 * args.repeat as f64 * args.bytes as f64 / GIB;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Row {
        label: label.to_owned(),
        down,
        up,
        postern: Some(PosternCost {
            serve_cpu_per_gib: (cpu_after.0 - cpu_before.0) / moved,
            connector_cpu_per_gib: (cpu_after.1 - cpu_before.1) / moved,
            serve_rss: (mib(before[0]), mib(peaks[0])),
            connector_rss: (mib(before[1]), mib(peaks[1])),
        }),
    })
}

/// `--repeat` transfers each way to `addr` (as `host`, if given): the median
/// seconds down and up.
async fn transfers(
    addr: SocketAddr,
    host: Option<&str>,
    args: &StreamArgs,
    deadline: Duration,
) -> anyhow::Result<(f64, f64)> {
    let host = host.map_or_else(|| addr.to_string(), str::to_owned);
    let mut down = Vec::new();
    let mut up = Vec::new();
    for _ in 0..args.repeat {
        for direction in [Direction::Down, Direction::Up] {
            let seconds = tokio::time::timeout(deadline, transfer(addr, &host, direction, args.bytes))
                .await
                .with_context(|| format!("{direction:?}: not done within {deadline:?}"))??;
            eprintln!("  {direction:?}: {:.0} MB/s", args.bytes as f64 / seconds / 1e6);
            match direction {
                Direction::Down => down.push(seconds),
                Direction::Up => up.push(seconds),
            }
        }
    }
    Ok((median(down), median(up)))
}

/// One transfer of `bytes` over a new connection: its seconds, from the
/// request's start to the last byte (down) or the backend's count (up).
async fn transfer(addr: SocketAddr, host: &str, direction: Direction, bytes: u64) -> anyhow::Result<f64> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, BoxBody>(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let started = Instant::now();
    let received = match direction {
        Direction::Down => {
            let request = Request::get(format!("/download?bytes={bytes}"))
                .header(HOST, host)
                .body(Full::<Bytes>::default().boxed())?;
            let response = sender.send_request(request).await?;
            if response.status() != StatusCode::OK {
                bail!("download answered {}", response.status());
            }
            let mut body = response.into_body();
            let mut received = 0u64;
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame?.into_data() {
                    received += data.len() as u64;
                }
            }
            received
        }
        Direction::Up => {
            let chunks = futures_util::stream::unfold(bytes, |left| async move {
                (left > 0).then(|| {
                    let n = left.min(CHUNK_LEN as u64);
                    let chunk = Bytes::from_static(&CHUNK[..n as usize]);
                    (Ok::<_, Infallible>(Frame::data(chunk)), left - n)
                })
            });
            let request = Request::post("/upload")
                .header(HOST, host)
                .header(CONTENT_LENGTH, bytes)
                .body(BodyExt::boxed(StreamBody::new(chunks)))?;
            let response = sender.send_request(request).await?;
            if response.status() != StatusCode::OK {
                bail!("upload answered {}", response.status());
            }
            let answer = response.into_body().collect().await?.to_bytes();
            std::str::from_utf8(&answer)?
                .trim()
                .parse::<u64>()
                .context("the backend's count")?
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    connection.abort();
    if received != bytes {
        bail!("{direction:?}: {received} bytes arrived of {bytes}");
    }
    Ok(seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Waits until the app answers through the connector.
async fn wait_ready(installation: &mut Installation, host: &str) -> anyhow::Result<()> {
    let addr = installation.addr;
    let started = Instant::now();
    loop {
        installation.check_alive()?;
        let attempt = tokio::time::timeout(Duration::from_secs(5), transfer(addr, host, Direction::Down, 1)).await;
        match attempt {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(_)) | Err(_) if started.elapsed() < READY_WITHIN => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Err(e)) => return Err(e.context("the app did not answer through the connector")),
            Err(_) => bail!("the app did not answer through the connector within {READY_WITHIN:?}"),
        }
    }
}

/// Samples the resident memory of processes every [`SAMPLE_EVERY`] until
/// finished, keeping each one's first and highest value (KiB).
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<u64>, Vec<u64>)>,
}

impl Sampler {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let first: Vec<u64> = pids.iter().map(|p| resident_kib(*p)).collect();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    for (pid, peak) in pids.iter().zip(peaks.iter()) {
                        peak.fetch_max(resident_kib(*pid), Ordering::Relaxed);
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                (first, peaks.iter().map(|p| p.load(Ordering::Relaxed)).collect())
            }
        });
        Self { stop, task }
    }

    /// Each process's resident memory at the start and its peak, KiB.
    async fn finish(self) -> (Vec<u64>, Vec<u64>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

fn render(args: &StreamArgs, rows: &[Row]) -> String {
    let direct = rows
        .iter()
        .find(|r| r.label == "direct")
        .map_or((f64::NAN, f64::NAN), |r| (r.down, r.up));
    let rate = |seconds: f64| args.bytes as f64 / seconds / 1e6;
    let mut out = String::new();
    let _ = writeln!(out, "### Large transfers: Postern beside nginx\n");
    let _ = writeln!(
        out,
        "One run on this machine (2 cores, everything on loopback), `postern-bench stream --bytes {} --repeat {}` \
         (release build): {} down (the backend's response) and up (the client's request body) over one \
         HTTP/1.1 connection per transfer, the median of {} transfers each way. MB/s is 10⁶ bytes per second; \
         \"vs direct\" is the rate relative to the direct row in this run.\n",
        args.bytes,
        args.repeat,
        human_bytes(args.bytes),
        args.repeat
    );
    let _ = writeln!(
        out,
        "| path | down MB/s | up MB/s | down vs direct | up vs direct | CPU s per GiB (serve / connector) | RSS MiB before → peak (serve / connector) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for row in rows {
        let (cpu, rss) = match &row.postern {
            Some(c) => (
                format!("{:.2} / {:.2}", c.serve_cpu_per_gib, c.connector_cpu_per_gib),
                format!(
                    "{:.1} → {:.1} / {:.1} → {:.1}",
                    c.serve_rss.0, c.serve_rss.1, c.connector_rss.0, c.connector_rss.1
                ),
            ),
            None => ("–".to_owned(), "–".to_owned()),
        };
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {cpu} | {rss} |",
            row.label,
            rate(row.down),
            rate(row.up),
            ratio(direct.0, row.down),
            ratio(direct.1, row.up),
        );
    }
    let _ = writeln!(
        out,
        "\nSetups (all on 127.0.0.1, ports chosen free, processes started by the harness and stopped with it): \
         the backend is `postern-bench stream-backend` in a child process (hyper, HTTP/1.1; downloads cut from \
         one static 256 KiB buffer with `Content-Length`, uploads counted and dropped); the client is hyper's \
         HTTP/1.1 client in the harness, counting bytes. **nginx hop**: `proxy_pass` to an HTTP/1.1 \
         upstream, responses through memory buffers (`proxy_buffer_size 256k`, `proxy_buffers 8 256k`, \
         `proxy_max_temp_file_size 0`: no temporary files), request bodies passed on as they arrive \
         (`proxy_request_buffering off`). **postern**: the \
         release binary as `serve` (plain HTTP public listener), `agent` and `connector` processes; the app \
         has pre-authentication `passthrough`; the bytes cross the front door, one HTTP/2 stream of the \
         connector's mutual-TLS tunnel and the connector's HTTP/1.1 connection to the backend. CPU is \
         user plus system time from `/proc/PID/stat` over all transfers of the row, per GiB moved; \
         resident memory (`VmRSS`) is sampled every {} ms.",
        SAMPLE_EVERY.as_millis()
    );
    out
}

/// A transfer's time against the direct row's as "0.25×" (its rate
/// relative to direct), or "–" when there is no direct row.
fn ratio(direct_seconds: f64, seconds: f64) -> String {
    if direct_seconds.is_nan() {
        "–".to_owned()
    } else {
        format!("{:.2}×", direct_seconds / seconds)
    }
}

fn human_bytes(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// `postern-bench stream-backend`: downloads and uploads of any size.
pub async fn serve_backend(args: OwnBackendArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                .await;
        });
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(request: Request<Incoming>) -> Result<Response<BoxBody>, Infallible> {
    let plain = |status: StatusCode, text: String| {
        let mut response = Response::new(Full::new(Bytes::from(text)).boxed());
        *response.status_mut() = status;
        response
    };
    match request.uri().path() {
        "/download" => {
            let bytes = request
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("bytes="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let chunks = futures_util::stream::unfold(bytes, |left| async move {
                (left > 0).then(|| {
                    let n = left.min(CHUNK_LEN as u64);
                    (Ok(Frame::data(Bytes::from_static(&CHUNK[..n as usize]))), left - n)
                })
            });
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
            response.headers_mut().insert(CONTENT_LENGTH, bytes.into());
            Ok(response)
        }
        "/upload" => {
            let mut body = request.into_body().into_data_stream();
            let mut received = 0u64;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(data) => received += data.len() as u64,
                    Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, format!("{e}\n"))),
                }
            }
            Ok(plain(StatusCode::OK, format!("{received}\n")))
        }
        _ => Ok(plain(StatusCode::NOT_FOUND, "download or upload\n".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_the_direct_row() {
        assert_eq!(ratio(1.0, 4.0), "0.25×");
        assert_eq!(ratio(f64::NAN, 4.0), "–");
    }
}
