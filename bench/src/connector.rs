//! The connector's side of a request alone: CPU time per request of
//! `postern_connector::serve_tunnel` (the HTTP/2 server on a tunnel, the
//! request head rebuilt for HTTP/1.1, the backend connection taken from the
//! idle ones and given back) between Postern's tunnel client on an in-memory
//! pipe and a hyper HTTP/1.1 backend on loopback, all on one thread.
//!
//! The client and the backend are the same code whatever the connector does,
//! so two builds of this harness differ by the connector's work. Under
//! `valgrind --tool=callgrind` (two request counts, the difference divided by
//! the difference in requests) the same load gives instruction counts, which
//! the host's noise does not move; kernel time on the loopback socket is not
//! counted there, only in the CPU rows.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use postern_connector::{AppTable, BackendOptions, Backends, TunnelOptions as ConnectorOptions, serve_tunnel};
use postern_proto::control::AppRef;
use postern_proto::tunnel::APP_HEADER;
use postern_tunnel::{TunnelBody, TunnelOptions, TunnelRegistry};
use tokio::net::TcpListener;

/// `postern-bench connector`.
#[derive(Args, Debug)]
pub struct ConnectorArgs {
    /// Requests per round.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// Runs the rounds on a thread of their own and prints µs per request.
pub async fn run(args: ConnectorArgs) -> anyhow::Result<()> {
    let rounds = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<f64>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let registry = connect().await?;
            load(&registry, 1_000.min(args.requests), args.concurrency).await?;
            let mut rounds = Vec::new();
            for _ in 0..args.rounds {
                let start = crate::procfs::cpu_seconds(std::process::id())?;
                load(&registry, args.requests, args.concurrency).await?;
                let spent = crate::procfs::cpu_seconds(std::process::id())? - start;
                #[allow(clippy::cast_precision_loss)]
                rounds.push(spent * 1e6 / args.requests.max(1) as f64);
            }
            Ok(rounds)
        })
    })
    .await??;
    let mut out = format!(
        "Connector path, {} requests per round at {} in flight, CPU µs per request (tunnel client, connector and backend on one thread):\n\n",
        args.requests, args.concurrency
    );
    for us in &rounds {
        let _ = writeln!(out, "- {us:.2}");
    }
    let mut sorted = rounds.clone();
    sorted.sort_by(f64::total_cmp);
    if let Some(median) = sorted.get(sorted.len() / 2) {
        let _ = writeln!(out, "\nMedian: {median:.2} µs.");
    }
    crate::report::publish("connector", &out, None)?;
    Ok(())
}

/// The backend, the connector serving one tunnel to it, and the client on that
/// tunnel.
async fn connect() -> anyhow::Result<Arc<TunnelRegistry>> {
    let backend = backend().await?;
    let apps = [AppRef {
        id: "app".into(),
        internal_url: format!("http://{backend}/"),
        validate_backend_tls: true,
        backend_timeout_secs: 30,
    }];
    let table = Arc::new(AppTable::new(&apps, Duration::from_secs(30)));
    let (_keep, apps) = tokio::sync::watch::channel(table);
    let backends = Backends::new(&BackendOptions::default())?;
    let (service_end, connector_end) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let _keep = _keep;
        let options = ConnectorOptions::default();
        if let Err(e) = serve_tunnel(connector_end, apps, backends, &options, std::future::pending()).await {
            eprintln!("the connector's tunnel ended: {e}");
        }
    });
    let registry = TunnelRegistry::new(TunnelOptions::default());
    registry.attach("t", "g", "c", TokioIo::new(service_end)).await?;
    Ok(registry)
}

/// A 1 KiB answer to every request, from hyper's HTTP/1.1 server on loopback.
async fn backend() -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let page = Bytes::from(vec![b'x'; 1024]);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let page = page.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let page = page.clone();
                    async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(page))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Ok(address)
}

fn get() -> Request<TunnelBody> {
    Request::get("http://app.internal/")
        .header(APP_HEADER, "app")
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap_or_default()
}

async fn load(registry: &Arc<TunnelRegistry>, requests: usize, concurrency: usize) -> anyhow::Result<()> {
    let concurrency = concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let registry = registry.clone();
        let share = requests / concurrency + usize::from(i < requests % concurrency);
        tasks.spawn(async move {
            for _ in 0..share {
                let response = registry
                    .send("t", "g", get())
                    .await
                    .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
                anyhow::ensure!(response.status() == 200, "status {}", response.status());
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("body failed: {e}"))?;
                let len = body.to_bytes().len();
                anyhow::ensure!(len == 1024, "a {len}-byte answer");
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}
