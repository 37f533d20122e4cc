//! Postern's benchmarks, each measured side by side with its baselines in one run
//! (the machine is shared and noisy: compare within a run, as ratios).
//!
//! ```text
//! cargo run --release -p postern-bench -- pta --directory openldap --seconds 10
//! cargo run --release -p postern-bench -- pta --directory samba
//! cargo run --release -p postern-bench -- proxy --seconds 10 --connections 50
//! cargo run --release -p postern-bench -- cluster --seconds 8
//! cargo run --release -p postern-bench -- idle --connections 10000
//! cargo run --release -p postern-bench -- stream --bytes 1073741824
//! ```
//!
//! The `proxy` benchmark needs nginx, wrk and rathole: `bench/scripts/install-bench-deps.sh`
//! installs whichever is missing.
//!
//! With `--write docs/benchmarks.md` the results replace the matching section of
//! that file.

mod cluster;
mod connector;
mod idle;
mod procfs;
mod proxy;
mod pta;
mod report;
mod stream;
mod tunnel;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "postern-bench",
    about = "Postern's benchmarks",
    after_help = "The proxy benchmark needs nginx, wrk and rathole: install them with bench/scripts/install-bench-deps.sh."
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Pass-through authentication: sign-ins per second end to end (STS, relay,
    /// agent over mTLS, real directory) beside the raw directory bind rate and the
    /// raw RSA-2048 OAEP decryption rate.
    Pta(pta::PtaArgs),
    /// The app proxy: requests per second and latency through Postern's service and
    /// connector beside the backend alone, one nginx hop and rathole over TLS
    /// (keep-alive and `Connection: close`), plus the SSE first-event delay.
    /// Set up with bench/scripts/install-bench-deps.sh.
    Proxy(proxy::ProxyArgs),
    /// Several instances: requests per second and latency through three
    /// instances against one in the same run, and a request forwarded to the
    /// peer holding the tunnel against a local one (needs PostgreSQL, NATS
    /// with JetStream and wrk).
    Cluster(cluster::ClusterArgs),
    /// Many idle connections through one connector: idle resident memory of
    /// `serve`, `connector` and `agent` (release binary, real processes), KiB per
    /// idle WebSocket and per idle keep-alive connection, and the p99 of an
    /// active load beside them (needs wrk and slapd).
    Idle(idle::IdleArgs),
    /// The backend of `idle`, which starts it as a child process.
    #[command(hide = true)]
    IdleBackend(proxy::children::OwnBackendArgs),
    /// Large transfers: MB/s down and up through Postern's service and
    /// connector beside the backend alone and one streaming nginx hop, with
    /// Postern's CPU per GiB and peak resident memory (needs nginx and slapd).
    Stream(stream::StreamArgs),
    /// The backend of `stream`, which starts it as a child process.
    #[command(hide = true)]
    StreamBackend(proxy::children::OwnBackendArgs),
    /// The service's tunnel client alone: CPU per request of Postern's HTTP/2
    /// client beside hyper's, over an in-memory pipe, alternating in one run.
    Tunnel(tunnel::TunnelArgs),
    /// The connector's side of a request alone: CPU per request of its tunnel
    /// server and backend connections between an in-memory tunnel and a
    /// loopback backend, on one thread.
    Connector(connector::ConnectorArgs),
}

/// The `postern` binary's allocator, so that the rows measured in this
/// process (the `pta` end-to-end row) run Postern's code as it ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    // Always a subscriber, as in the `postern` binary (warnings only unless
    // `RUST_LOG` says more; `RUST_LOG=sqlx::query=debug` counts the statements
    // of the in-process service in the `pta` end-to-end row). Without one,
    // `tracing` hands every span's enter and exit to the `log` crate instead,
    // a cost the product never pays (a tenth of the instructions of the
    // `tunnel` benchmark).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.bench {
            Bench::Pta(args) => pta::run(args).await,
            Bench::Proxy(args) => proxy::run(args).await,
            Bench::Cluster(args) => cluster::run(args).await,
            Bench::Idle(args) => idle::run(args).await,
            Bench::IdleBackend(args) => idle::serve_backend(args).await,
            Bench::Stream(args) => stream::run(args).await,
            Bench::StreamBackend(args) => stream::serve_backend(args).await,
            Bench::Tunnel(args) => tunnel::run(args).await,
            Bench::Connector(args) => connector::run(args).await,
        }
    })
}
