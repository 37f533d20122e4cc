//! Several instances (issue 10): requests per second and latency through three
//! service instances against one, in one run, and what a request forwarded to
//! the peer that holds the tunnel costs against one sent on a local tunnel.
//!
//! Three instances of the service in this process (`postern_testkit::TestCluster`:
//! one PostgreSQL schema, one KEK, NATS JetStream at `POSTERN_TEST_NATS` or
//! 127.0.0.1:4222), each with its own listeners, peers over mutual TLS; a
//! 1 KiB backend; connectors as `postern connector run` wires them; `wrk` as
//! the load generator.
//!
//! 1. **local**: one connector attached to instance A; `wrk` to A.
//! 2. **forwarded**: the same, `wrk` to B (no tunnel there): B forwards each
//!    request to A over its peer link, A sends it on its tunnel.
//! 3. **three instances**: a connector attached to each instance; three `wrk`s
//!    at once, one per instance, the connections split between them.
//! 4. **one instance of the three**: the same setup, all connections to A.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use postern_connector::{AppTable, BackendOptions, Backends, PoolOptions, TunnelEndpoint, TunnelPool};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{AppSpec, ExternalScheme, Preauth};
use postern_testkit::{TenantFixture, TestCluster, TestService};
use postern_time::{SharedClock, SystemClock};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};

use crate::proxy::children::find_program;
use crate::proxy::wrk::{self, Load, WrkReport};
use crate::report::{ms, write_section};

/// The app's host (port 80, so every instance's listener serves it).
const HOST: &str = "bench.acme.test";
/// The section of `docs/benchmarks.md` this benchmark owns.
const SECTION: &str = "cluster";

/// Flags of `postern-bench cluster`.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Seconds of each wrk run.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// wrk connections in all (split between the instances in row 3).
    #[arg(long, default_value_t = 48)]
    connections: usize,
    /// Write the results into this Markdown file's `cluster` section.
    #[arg(long)]
    write: Option<PathBuf>,
}

/// A backend answering 1 KiB to everything.
async fn backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let body = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A connector in this process: its tunnels, its app table, its state.
struct Connector {
    pool: TunnelPool,
    _table: tokio::sync::watch::Sender<Arc<AppTable>>,
    _state: tempfile::TempDir,
}

/// A connector attached to `svc` (its control URL is that instance's).
async fn connector(svc: &TestService, fixture: &TenantFixture, name: &str) -> anyhow::Result<Connector> {
    let token = svc
        .registration_token(&fixture.tenant, &fixture.admin, ComponentKind::Connector, name)
        .await?;
    let dir = tempfile::Builder::new().prefix("postern-bench-connector-").tempdir()?;
    let state = StateDir::new(dir.path().join(name));
    register(
        &RegisterOptions {
            server_url: svc.url(),
            kind: ComponentKind::Connector,
            credential: Credential::AccessToken(SecretString::from(token.as_str())),
            name: name.into(),
            version: "bench".into(),
            group: None,
            tenant: None,
            key_alg: KeyAlg::recommended(ComponentKind::Connector),
            server_ca_pem: None,
        },
        &state,
    )
    .await
    .context("registering a connector")?;
    let clock: SharedClock = Arc::new(SystemClock);
    let mut client = ControlClient::load(state, clock)?;
    let config = client.connector_config("bench").await?;
    let table = AppTable::new(&config.apps, Duration::from_secs(30));
    let (tables, table) = tokio::sync::watch::channel(Arc::new(table));
    let pool = TunnelPool::start(
        TunnelEndpoint::from_client(&client),
        table,
        Backends::new(&BackendOptions::default())?,
        PoolOptions::default(),
    )?;
    let mut status = pool.status();
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(|s| s.up >= 2))
        .await
        .context("the connector's tunnels did not come up")??;
    Ok(Connector {
        pool,
        _table: tables,
        _state: dir,
    })
}

/// Waits until every instance has heard of tunnels on `holders` instances.
async fn wait_for_peers(instances: &[&TestService], holders: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = instances.iter().all(|svc| {
            svc.cluster()
                .is_some_and(|c| c.instances().iter().filter(|i| !i.groups.is_empty()).count() == holders)
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the instances never learned of each other's tunnels"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn load(svc: &TestService, connections: usize, seconds: u64) -> Load<'static> {
    Load {
        url: format!("http://{}/", svc.local_addr_for_tests()),
        host: Some(HOST),
        cookie: None,
        close: false,
        threads: 1,
        connections: connections.max(1),
        seconds,
    }
}

/// One row: rate, p50 and p99 (the worst of several wrks), errors.
struct Row {
    what: &'static str,
    rate: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

impl Row {
    fn of(what: &'static str, reports: &[WrkReport]) -> Self {
        Self {
            what,
            rate: reports.iter().map(WrkReport::ok_rate).sum(),
            p50: reports.iter().map(|r| r.p50).max().unwrap_or_default(),
            p99: reports.iter().map(|r| r.p99).max().unwrap_or_default(),
            errors: reports.iter().map(WrkReport::errors).sum(),
        }
    }
}

/// Runs the benchmark and prints (and with `--write`, records) the table.
#[allow(clippy::print_stdout)] // The table on standard output is the benchmark's result.
pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let wrk_program = find_program("wrk").context("wrk is not installed: run bench/scripts/install-bench-deps.sh")?;
    let backend = backend().await?;
    let cluster = TestCluster::new().await?;
    let a = cluster.instance().system_clock().start().await?;
    let fixture = a.bootstrap().await?;
    let b = cluster.instance().system_clock().start().await?;
    let c = cluster.instance().system_clock().start().await?;
    let store = a.store();
    let now = a.now();
    let group = store.default_connector_group(&fixture.tenant.id, now).await?;
    let spec = AppSpec {
        name: "Bench".into(),
        external_scheme: ExternalScheme::Http,
        external_host: HOST.into(),
        path_prefix: "/".into(),
        internal_url: format!("http://{backend}/"),
        preauth: Preauth::Passthrough,
        connector_group_id: group.id.clone(),
        backend_timeout_secs: 30,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: false,
        identity_headers: Vec::new(),
        limits: postern_store::AppLimits::default(),
    };
    store.create_app(&fixture.tenant.id, &spec, "bench-app", now).await?;
    let instances = [&a, &b, &c];
    let mut pools = vec![connector(&a, &fixture, "gw-a").await?];
    wait_for_peers(&instances, 1).await?;
    let n = args.connections;
    let local = wrk::run(&wrk_program, &load(&a, n, args.seconds)).await?;
    let forwarded = wrk::run(&wrk_program, &load(&b, n, args.seconds)).await?;
    pools.push(connector(&b, &fixture, "gw-b").await?);
    pools.push(connector(&c, &fixture, "gw-c").await?);
    wait_for_peers(&instances, 3).await?;
    let loads: Vec<Load<'static>> = instances.iter().map(|svc| load(svc, n / 3, args.seconds)).collect();
    let spread = futures_util::future::try_join_all(loads.iter().map(|l| wrk::run(&wrk_program, l))).await?;
    let one = wrk::run(&wrk_program, &load(&a, n, args.seconds)).await?;
    let rows = [
        Row::of("1 instance, its own tunnel (A)", std::slice::from_ref(&local)),
        Row::of(
            "1 instance, forwarded to the peer with the tunnel (B → A)",
            std::slice::from_ref(&forwarded),
        ),
        Row::of("3 instances, each with a tunnel, load split across them", &spread),
        Row::of("1 of those 3 instances, all the load", std::slice::from_ref(&one)),
    ];
    let body = table(&rows, &local, &forwarded, &args);
    println!("{body}");
    if let Some(file) = &args.write {
        write_section(file, SECTION, &body)?;
    }
    for connector in pools {
        let _ = tokio::time::timeout(Duration::from_secs(10), connector.pool.shutdown()).await;
    }
    cluster.remove_from_nats().await;
    for svc in [a, b, c] {
        let _ = tokio::time::timeout(Duration::from_secs(10), svc.stop()).await;
    }
    Ok(())
}

fn table(rows: &[Row], local: &WrkReport, forwarded: &WrkReport, args: &ClusterArgs) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Several instances: three against one, forwarded against local\n\n\
         Three service instances in one process (one PostgreSQL database, NATS JetStream, peers over mutual TLS), \
         a 1 KiB backend, `wrk` with {} connections for {} s per row (split across the instances in row 3), keep-alive.\n",
        args.connections, args.seconds
    );
    let _ = writeln!(out, "| setup | requests/s | p50 ms | p99 ms | errors | vs row 1 |");
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let base = rows.first().map_or(1.0, |r| r.rate.max(f64::EPSILON));
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {} | {} | {:.2}× |",
            r.what,
            r.rate,
            ms(r.p50),
            ms(r.p99),
            r.errors,
            r.rate / base
        );
    }
    let _ = writeln!(
        out,
        "\nForwarding to the peer with the tunnel adds {} ms at p50 and {} ms at p99 under this load.",
        signed_ms(forwarded.p50, local.p50),
        signed_ms(forwarded.p99, local.p99)
    );
    out
}

fn signed_ms(a: Duration, b: Duration) -> String {
    let d = a.as_secs_f64() * 1000.0 - b.as_secs_f64() * 1000.0;
    format!("{d:+.2}")
}
