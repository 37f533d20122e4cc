//! The app proxy beside its peers, in one run, with one external load
//! generator (`wrk`) on loopback:
//!
//! 1. **direct**: the backend alone (nginx serving a static 1 KiB file);
//! 2. **nginx hop**: one nginx reverse-proxy hop in front of it (keep-alive
//!    upstream pool);
//! 3. **rathole over TLS**: a rathole server and client (TLS transport) in
//!    front of it, the nearest "client dials out" peer;
//! 4. **postern**: the release binary's `serve`, `agent` and `connector`
//!    processes (see [`postern`]), the app published with pre-authentication
//!    `passthrough`; users reach the service's listener with the app's `Host`;
//! 5. **postern, signed in**: the same with pre-authentication at the STS and
//!    the session cookie of a user who signed in through the pages.
//!
//! Each under keep-alive load and with `Connection: close` (one TCP connection
//! per request), plus the delay to the first event of a server-sent-events
//! stream, directly and through Postern. Postern's rows add the CPU `serve`
//! and the connector spent per request. `--before OLD` measures an older
//! binary's rows beside them. Setup: `bench/scripts/install-bench-deps.sh`.

pub(crate) mod children;
pub(crate) mod nginx;
mod postern;
mod probe;
mod rathole;
mod sse;
pub(crate) mod wrk;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::procfs::cpu_seconds;
use crate::report::{Measured, ms, write_section};
use children::find_program;
use nginx::{BODY_LEN, Nginx};
use postern::{Directory, Postern, Ready};
use probe::Target;
use rathole::Rathole;
use sse::SseBackend;
use wrk::{Load, WrkReport};

/// What `--help` says about setting up.
const SETUP_HELP: &str = "Needs nginx, wrk and rathole: install them with bench/scripts/install-bench-deps.sh \
(idempotent; apt-get for nginx and wrk, cargo install for rathole; openssl packs rathole's TLS identity). \
Run a release build: cargo run --release -p postern-bench -- proxy --write docs/benchmarks.md";

/// The section of `docs/benchmarks.md` this benchmark owns.
const SECTION: &str = "proxy";

/// The paragraph at the top of `docs/benchmarks.md`.
const HOW_TO_RUN: &str = "## How to run the benchmarks\n\n\
Install the peers the benchmarks compare against once, with `bench/scripts/install-bench-deps.sh` \
(idempotent: nginx and wrk from Debian packages, rathole with `cargo install`; apt-get needs root or sudo), \
then run a release build of the harness:\n\n\
```sh\n\
cargo run --release -p postern-bench -- proxy --write docs/benchmarks.md\n\
cargo run --release -p postern-bench -- pta --directory openldap --write docs/benchmarks.md\n\
cargo run --release -p postern-bench -- cluster --write docs/benchmarks.md\n\
```\n\n\
`--help` on each subcommand lists its flags (`proxy --only postern --seconds 3` iterates on one row). \
A run rewrites only its own section below, between its `<!-- begin NAME -->` and `<!-- end NAME -->` \
markers, and leaves the others alone. The machines are shared and noisy (±20 % between runs): \
compare rows within one run, as ratios, not numbers across runs.\n";

/// Flags of `postern-bench proxy`.
#[derive(clap::Args, Debug)]
#[command(after_help = SETUP_HELP)]
pub struct ProxyArgs {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// wrk connections (`-c`).
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds of unrecorded keep-alive load before each path's runs (0: none).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// SSE streams opened per path, one after another.
    #[arg(long, default_value_t = 200)]
    sse_requests: usize,
    /// The `postern` binary (default: beside this benchmark, i.e.
    /// `target/release/postern`).
    #[arg(long)]
    postern: Option<PathBuf>,
    /// An older `postern` binary whose rows are measured the same way in the
    /// same run, shown as "before".
    #[arg(long)]
    before: Option<PathBuf>,
    /// Measure only these rows (comma-separated), for iterating.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Row>,
    /// Write the results into this Markdown file's `proxy` section.
    #[arg(long, conflicts_with = "only")]
    write: Option<PathBuf>,
}

/// A row (or group of rows) of the benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    /// The backend alone.
    Direct,
    /// One nginx reverse-proxy hop.
    Nginx,
    /// rathole server + client over TLS.
    Rathole,
    /// Postern's service + connector, pre-authentication `passthrough`.
    Postern,
    /// Postern with pre-authentication at the STS and a signed-in session.
    SignedIn,
    /// SSE first-event delay, direct and through Postern.
    Sse,
}

/// The programs used.
struct Tools {
    nginx: PathBuf,
    wrk: PathBuf,
    rathole: Option<PathBuf>,
    openssl: Option<PathBuf>,
}

impl Tools {
    fn find() -> anyhow::Result<Self> {
        let missing = |name: &str| {
            anyhow::anyhow!("{name} is not installed: run bench/scripts/install-bench-deps.sh (see --help)")
        };
        Ok(Self {
            nginx: find_program("nginx").ok_or_else(|| missing("nginx"))?,
            wrk: find_program("wrk").ok_or_else(|| missing("wrk"))?,
            rathole: find_program("rathole"),
            openssl: find_program("openssl"),
        })
    }

    /// One line naming each program's version.
    fn versions(&self) -> String {
        let mut parts = vec![
            version(&self.nginx, "-v", |l| {
                l.strip_prefix("nginx version: ").map(str::to_owned)
            }),
            version(&self.wrk, "-v", |l| {
                l.starts_with("wrk ")
                    .then(|| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            }),
        ];
        if let Some(r) = &self.rathole {
            parts.push(version(r, "--version", |l| {
                l.trim()
                    .strip_prefix("Build Version:")
                    .map(|v| format!("rathole {}", v.trim()))
            }));
        }
        parts.into_iter().flatten().collect::<Vec<_>>().join(", ")
    }
}

/// The first line of `program arg`'s output that `pick` recognises.
fn version(program: &Path, arg: &str, pick: impl Fn(&str) -> Option<String>) -> Option<String> {
    let out = std::process::Command::new(program).arg(arg).output().ok()?;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().find_map(pick)
}

/// One path under one load.
struct Measurement {
    path: String,
    close: bool,
    /// For Postern's rows: CPU microseconds per response, `serve` and the
    /// connector.
    cpu_us: Option<(f64, f64)>,
    /// The wrk report, or why there is none.
    report: Result<WrkReport, String>,
    /// Why the row counts as failed, if it does.
    failed: Option<String>,
}

/// The SSE first-event delays of one path.
struct SseMeasurement {
    path: &'static str,
    result: Result<Measured, String>,
}

/// Everything one run measured.
#[derive(Default)]
struct Results {
    rows: Vec<Measurement>,
    sse: Vec<SseMeasurement>,
}

/// Runs the benchmark and prints (and optionally writes) the tables. Every
/// child process is stopped and every temporary directory removed on the way
/// out, also after an error or Ctrl-C.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Returning drops `run_inner`'s future, and with it every guard it holds.
    tokio::select! {
        r = run_inner(&args) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; stopped everything"),
        _ = terminate.recv() => anyhow::bail!("terminated; stopped everything"),
    }
}

impl ProxyArgs {
    fn wants(&self, row: Row) -> bool {
        self.only.is_empty() || self.only.contains(&row)
    }

    /// The `postern` binary measured (`--postern`, else beside this one).
    fn postern_binary(&self) -> anyhow::Result<PathBuf> {
        match &self.postern {
            Some(p) => Ok(p.clone()),
            None => Ok(std::env::current_exe()?.with_file_name("postern")),
        }
    }

    /// The binaries whose rows are measured, labelled: `--before` first.
    fn binaries(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let mut all = Vec::new();
        if let Some(before) = &self.before {
            all.push((" (before)".to_owned(), before.clone()));
        }
        all.push((String::new(), self.postern_binary()?));
        Ok(all)
    }

    fn load<'t>(&self, target: &'t Target, close: bool) -> Load<'t> {
        Load {
            url: format!("http://{}/", target.addr),
            host: Some(&target.host),
            cookie: target.cookie.as_deref(),
            close,
            threads: self.threads,
            connections: self.connections,
            seconds: self.seconds,
        }
    }
}

#[allow(clippy::print_stdout)] // The tables on standard output are the benchmark's result.
async fn run_inner(args: &ProxyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(
        args.threads > 0 && args.connections >= args.threads,
        "wrk needs at least one thread and at least as many connections as threads"
    );
    let tools = Tools::find()?;
    eprintln!("starting the backend (nginx, a static 1 KiB file)…");
    let backend = Nginx::backend(&tools.nginx).await?;
    let direct = Target::new(backend.addr(), backend.addr().to_string());
    probe::wait_ok(&direct, BODY_LEN, Duration::from_secs(5))
        .await
        .context("the nginx backend does not serve its 1 KiB response")?;
    let sse = SseBackend::start().await?;
    let mut results = Results::default();

    if args.wants(Row::Direct) {
        eprintln!("measuring: direct…");
        measure(args, &tools, "direct", &direct, Ok(()), None, &mut results).await;
    }
    if args.wants(Row::Nginx) {
        eprintln!("measuring: nginx hop…");
        match Nginx::hop(&tools.nginx, backend.addr()).await {
            Ok(hop) => {
                let target = Target::new(hop.addr(), hop.addr().to_string());
                measure(args, &tools, "nginx hop", &target, Ok(()), None, &mut results).await;
            }
            Err(e) => results.setup_failed("nginx hop", &e),
        }
    }
    if args.wants(Row::Rathole) {
        eprintln!("measuring: rathole over TLS…");
        let started = match (&tools.rathole, &tools.openssl) {
            (Some(r), Some(o)) => Rathole::start(r, o, backend.addr()).await,
            (None, _) => Err(anyhow::anyhow!(
                "rathole is not installed: run bench/scripts/install-bench-deps.sh"
            )),
            (_, None) => Err(anyhow::anyhow!(
                "openssl is not installed (it packs rathole's TLS identity)"
            )),
        };
        match started {
            Ok(rathole) => {
                let target = Target::new(rathole.addr(), rathole.addr().to_string());
                measure(args, &tools, "rathole (TLS)", &target, Ok(()), None, &mut results).await;
            }
            Err(e) => results.setup_failed("rathole (TLS)", &e),
        }
    }
    if args.wants(Row::Sse) {
        eprintln!("measuring: SSE first event, direct…");
        let direct = sse_delays(sse.addr(), &sse.addr().to_string(), args.sse_requests).await;
        results.sse.push(SseMeasurement {
            path: "direct",
            result: direct,
        });
    }
    if args.wants(Row::Postern) || args.wants(Row::SignedIn) || args.wants(Row::Sse) {
        let directory = Directory::start().await?;
        for (label, binary) in args.binaries()? {
            measure_postern(args, &tools, &label, &binary, &directory, backend.addr(), &mut results).await;
        }
        if args.wants(Row::Sse) {
            eprintln!("measuring: SSE first event, through Postern…");
            let binary = args.postern_binary()?;
            let through = match Postern::passthrough(&binary, &directory, sse.addr(), Ready::Events).await {
                Ok(p) => sse_delays(p.target().addr, &p.target().host, args.sse_requests).await,
                Err(e) => Err(format!("setup failed: {e:#}")),
            };
            results.sse.push(SseMeasurement {
                path: "postern",
                result: through,
            });
        }
    }
    drop(sse);
    drop(backend);

    let body = render(args, &tools, &results);
    // The file first: a closed standard output must not lose the results.
    if let Some(file) = &args.write {
        ensure_intro(file)?;
        write_section(file, SECTION, &body)?;
        eprintln!("wrote section {SECTION:?} of {}", file.display());
    }
    println!("{body}");
    Ok(())
}

impl Results {
    fn setup_failed(&mut self, path: &str, e: &anyhow::Error) {
        eprintln!("  {path}: setup failed: {e:#}");
        for close in [false, true] {
            self.rows.push(Measurement {
                path: path.to_owned(),
                close,
                cpu_us: None,
                report: Err("not measured".into()),
                failed: Some(format!("setup failed: {e:#}")),
            });
        }
    }
}

/// Probes `target`, warms up, then runs wrk with keep-alive and with
/// `Connection: close`. A path that does not serve the 1 KiB response is still
/// loaded, and reported as failed with its errors counted. With `cpu_of`
/// (`serve` and the connector) each run also reads their CPU time per
/// response.
async fn measure(
    args: &ProxyArgs,
    tools: &Tools,
    path: &str,
    target: &Target,
    ready: Result<(), String>,
    cpu_of: Option<&[(&'static str, u32)]>,
    results: &mut Results,
) {
    // A path known not to be ready gets one probe, not a long wait.
    let within = if ready.is_ok() {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let probed = probe::wait_ok(target, BODY_LEN, within).await;
    let mut problem = match probed {
        Ok(_) => None,
        Err(e) => {
            let mut text = format!("{e:#}");
            if text.contains("status 404") {
                text.push_str(" — the service does not route this app's host to the tunnel (no edge yet?)");
            }
            Some(text)
        }
    };
    if let (Some(p), Err(r)) = (&mut problem, &ready) {
        p.push_str(&format!("; {r}"));
    }
    if let Some(p) = &problem {
        eprintln!("  {path}: {p}");
    }
    if args.warmup > 0 && problem.is_none() {
        let warm = Load {
            seconds: args.warmup,
            ..args.load(target, false)
        };
        if let Err(e) = wrk::run(&tools.wrk, &warm).await {
            eprintln!("  {path}: warm-up failed: {e:#}");
        }
    }
    let cpu_now = || -> Option<Vec<f64>> {
        cpu_of.map(|pids| pids.iter().map(|(_, pid)| cpu_seconds(*pid).unwrap_or(0.0)).collect())
    };
    for close in [false, true] {
        let cpu_before = cpu_now();
        let report = wrk::run(&tools.wrk, &args.load(target, close))
            .await
            .map_err(|e| format!("{e:#}"));
        let cpu_us = match (cpu_before, cpu_now(), &report) {
            (Some(before), Some(after), Ok(r)) if r.requests > 0 && before.len() == 2 => {
                let per = |i: usize| (after[i] - before[i]) * 1e6 / r.requests as f64;
                Some((per(0), per(1)))
            }
            _ => None,
        };
        let failed = match &report {
            Err(e) => Some(e.clone()),
            Ok(r) if problem.is_some() => problem
                .clone()
                .map(|p| format!("{p} ({} of {} responses failed)", r.errors(), r.requests)),
            Ok(r) if r.requests == 0 => Some("no responses".into()),
            Ok(r) if r.errors() * 100 > r.requests + r.socket_errors => Some(format!(
                "{} errors ({} socket errors, {} non-2xx/3xx responses) in {} responses",
                r.errors(),
                r.socket_errors,
                r.non_2xx,
                r.requests
            )),
            Ok(_) => None,
        };
        if let Ok(r) = &report {
            let cpu = cpu_us
                .map(|(s, c)| format!(", CPU µs/request serve {s:.1} connector {c:.1}"))
                .unwrap_or_default();
            eprintln!(
                "  {path}, {}: {:.0}/s, p50 {} ms, p99 {} ms, {} errors{cpu}",
                if close { "Connection: close" } else { "keep-alive" },
                r.ok_rate(),
                ms(r.p50),
                ms(r.p99),
                r.errors()
            );
        }
        results.rows.push(Measurement {
            path: path.to_owned(),
            close,
            cpu_us,
            report,
            failed,
        });
    }
}

/// Postern's rows for one binary (`suffix` marks an older one): the
/// passthrough app, then the signed-in one, each on fresh processes.
async fn measure_postern(
    args: &ProxyArgs,
    tools: &Tools,
    suffix: &str,
    binary: &Path,
    directory: &Directory,
    backend: SocketAddr,
    results: &mut Results,
) {
    for row in [Row::Postern, Row::SignedIn] {
        if !args.wants(row) {
            continue;
        }
        let path = match row {
            Row::SignedIn => format!("postern, signed in{suffix}"),
            _ => format!("postern{suffix}"),
        };
        eprintln!("starting {path} ({})…", binary.display());
        let started = match row {
            Row::SignedIn => Postern::signed_in(binary, directory, backend, BODY_LEN).await,
            _ => Postern::passthrough(binary, directory, backend, Ready::Page(BODY_LEN)).await,
        };
        match started {
            Ok(mut postern) => {
                eprintln!("measuring: {path}…");
                let pids = postern.measured_pids();
                measure(args, tools, &path, postern.target(), Ok(()), Some(&pids), results).await;
                if let Err(e) = postern.check_alive() {
                    eprintln!("  {path}: {e:#}");
                    for m in results.rows.iter_mut().filter(|m| m.path == path) {
                        m.failed.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            Err(e) => results.setup_failed(&path, &e),
        }
    }
}

/// Opens `n` SSE streams one after another and times each first event.
async fn sse_delays(addr: SocketAddr, host: &str, n: usize) -> Result<Measured, String> {
    let started = std::time::Instant::now();
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0u64;
    let mut last_error = None;
    for _ in 0..n {
        match probe::first_event(addr, host, Duration::from_secs(5)).await {
            Ok(d) => latencies.push(d),
            Err(e) => {
                errors += 1;
                last_error = Some(format!("{e:#}"));
            }
        }
    }
    if latencies.is_empty() {
        return Err(format!(
            "every stream failed; the last: {}",
            last_error.unwrap_or_else(|| "none opened".into())
        ));
    }
    latencies.sort();
    if let Some(e) = last_error {
        eprintln!("  SSE via {host}: {errors} of {n} failed, the last: {e}");
    }
    Ok(Measured {
        ops: latencies.len() as u64,
        errors,
        elapsed: started.elapsed(),
        latencies,
    })
}

/// The Markdown section.
fn render(args: &ProxyArgs, tools: &Tools, results: &Results) -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut out = String::new();
    let _ = write!(
        out,
        "### App proxy: Postern beside nginx and rathole\n\n\
         One run on this machine ({cores} cores, everything on loopback), \
         `postern-bench proxy --seconds {s} --connections {c}` (release build); load from \
         `wrk -t{t} -c{c} -d{s}s --latency`, keep-alive and with `-H \"Connection: close\"`; \
         backend: nginx serving a static 1 KiB file. Requests/s counts successful (2xx/3xx) \
         responses only; \"vs direct\" is that rate relative to the direct row under the same \
         load in this run. CPU is the user plus system time `serve` and the connector spent per response \
         (from `/proc/PID/stat` around the wrk run). Versions: {versions}.\n\n\
         | path | load | requests/s | p50 ms | p99 ms | errors | vs direct | CPU µs per request (serve / connector) |\n\
         |---|---|---|---|---|---|---|---|\n",
        s = args.seconds,
        c = args.connections,
        t = args.threads,
        versions = tools.versions(),
    );
    let mut notes = Vec::new();
    for close in [false, true] {
        let direct = results
            .rows
            .iter()
            .find(|m| m.path == "direct" && m.close == close && m.failed.is_none())
            .and_then(|m| m.report.as_ref().ok())
            .map(WrkReport::ok_rate);
        for m in results.rows.iter().filter(|m| m.close == close) {
            let load = if close { "`Connection: close`" } else { "keep-alive" };
            let (rate, p50, p99, errors) = match &m.report {
                Ok(r) => (
                    format!("{:.0}", r.ok_rate()),
                    ms(r.p50),
                    ms(r.p99),
                    r.errors().to_string(),
                ),
                Err(_) => ("–".into(), "–".into(), "–".into(), "–".into()),
            };
            let ratio = match (&m.failed, &m.report, direct) {
                (Some(why), _, _) => {
                    notes.push(format!("**{}, {}**: FAILED: {why}", m.path, strip_ticks(load)));
                    format!("**FAILED** ({})", notes.len())
                }
                (None, Ok(r), Some(d)) if d > 0.0 => format!("{:.2}×", r.ok_rate() / d),
                _ => "–".into(),
            };
            let cpu = m
                .cpu_us
                .map(|(s, c)| format!("{s:.1} / {c:.1} ({:.1})", s + c))
                .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                out,
                "| {} | {load} | {rate} | {p50} | {p99} | {errors} | {ratio} | {cpu} |",
                m.path
            );
        }
    }
    let keep_alive_rate = |path: &str| {
        results
            .rows
            .iter()
            .find(|m| m.path == path && !m.close && m.failed.is_none())
            .and_then(|m| m.report.as_ref().ok())
            .map(WrkReport::ok_rate)
    };
    if let (Some(signed_in), Some(passthrough)) = (keep_alive_rate("postern, signed in"), keep_alive_rate("postern")) {
        let _ = writeln!(
            out,
            "\nKeep-alive, signed in against passthrough: {:.2}× the requests per second.",
            signed_in / passthrough
        );
    }
    if !notes.is_empty() {
        out.push('\n');
        for (i, n) in notes.iter().enumerate() {
            let _ = writeln!(out, "{}. {n}", i + 1);
        }
    }
    if !results.sse.is_empty() {
        let _ = write!(
            out,
            "\n**Server-sent events, first-event delay**: a small hyper backend that sends an event at \
             once and then every 100 ms; {n} streams opened one after another per path, each timed from \
             the request's last byte written to the first event's bytes read (connection setup excluded).\n\n\
             | path | streams | p50 ms | p99 ms | errors | p50 added to direct |\n\
             |---|---|---|---|---|---|\n",
            n = args.sse_requests,
        );
        let direct = results
            .sse
            .iter()
            .find(|s| s.path == "direct")
            .and_then(|s| s.result.as_ref().ok())
            .map(|m| m.quantile(0.5));
        for s in &results.sse {
            match &s.result {
                Ok(m) => {
                    let ratio = match direct {
                        Some(d) if s.path != "direct" => {
                            let p50 = m.quantile(0.5).as_secs_f64();
                            let added = format!("{:+.2} ms", (p50 - d.as_secs_f64()) * 1000.0);
                            if d.is_zero() {
                                added
                            } else {
                                format!("{added} ({:.1}×)", p50 / d.as_secs_f64())
                            }
                        }
                        _ => "–".into(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {ratio} |",
                        s.path,
                        m.ops,
                        ms(m.quantile(0.5)),
                        ms(m.quantile(0.99)),
                        m.errors
                    );
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "| {} | 0 | – | – | {} | **FAILED**: {} |",
                        s.path,
                        args.sse_requests,
                        one_line(e)
                    );
                }
            }
        }
    }
    out.push_str(
        "\nSetups (all on 127.0.0.1, ports chosen free, processes started by the harness and stopped with it):\n\n\
         - **direct**: wrk → nginx (`worker_processes auto`, a static 1 KiB file with `sendfile` and the open-file cache, no access log).\n\
         - **nginx hop**: wrk → nginx (`proxy_pass`, HTTP/1.1 upstream with a keep-alive pool of 64) → the backend.\n\
         - **rathole (TLS)**: wrk → rathole server (a TCP port per service) → TLS data channel (a fresh CA and an \
         ECDSA P-256 certificate for `localhost`, PKCS#12 via openssl) → rathole client → the backend. rathole \
         forwards bytes and opens a data channel per user connection, so with `Connection: close` every request \
         pays a TLS handshake between server and client.\n\
         - **postern**: wrk (`Host: wiki.acme.test:{port}`) → the service's public listener (the front door, \
         plain HTTP) → one of the connector's two mTLS tunnels (HTTP/2 streams over connections the connector \
         dialled out) → the connector → the backend (pooled keep-alive connections). The release `postern` binary \
         runs as separate `serve` (SQLite store), `agent` (against a fresh slapd) and `connector` processes, on \
         fresh state for each row. The app: external URL `http://wiki.acme.test:{port}/`, pre-authentication \
         `passthrough`, header translation on, link translation off. With `Connection: close` a user connection \
         costs a TCP handshake; the tunnel is reused.\n\
         - **postern, signed in**: the same, the app with pre-authentication at the STS; a directory user signs in \
         once through the pages (agent and slapd on the way) and every request carries that session's cookie, \
         which the front door checks before it forwards the request.\n\
         - **SSE**: the same processes, passthrough, in front of the SSE backend.\n",
    );
    out
}

fn strip_ticks(s: &str) -> String {
    s.replace('`', "")
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().replace('|', "\\|")
}

/// Makes sure `file` starts with the "How to run the benchmarks" paragraph
/// (creating the file with a title if missing), leaving every section as it is.
fn ensure_intro(file: &Path) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    if current.contains("## How to run the benchmarks") {
        return Ok(());
    }
    let updated = match current.split_once('\n') {
        Some((title, rest)) if title.starts_with("# ") => format!("{title}\n\n{HOW_TO_RUN}\n{}", rest.trim_start()),
        _ => format!("# Benchmarks\n\n{HOW_TO_RUN}\n{current}"),
    };
    std::fs::write(file, updated).with_context(|| format!("writing {}", file.display()))
}
