//! The service's tunnel client alone: CPU time per request of Postern's
//! HTTP/2 client (`postern_tunnel`, on `h2` directly) beside hyper's HTTP/2
//! client, each sending the same keep-alive load over an in-memory pipe to the
//! same hyper HTTP/2 server, alternating in one run.
//!
//! Everything runs on one thread (a current-thread runtime), so the process's
//! CPU time is all the work of client and server, no sockets are involved, and
//! the difference between the rows is the clients'. Under
//! `valgrind --tool=callgrind` (`--only` one client, two request counts) the
//! same load gives instruction counts, which the host's noise does not move.

use std::fmt::Write as _;

use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_tunnel::{BoxError, TunnelBody, TunnelOptions, TunnelRegistry};

/// `postern-bench tunnel`.
#[derive(Args, Debug)]
pub struct TunnelArgs {
    /// Requests per client per round.
    #[arg(long, default_value_t = 100_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Rounds (each client once per round, alternating).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Measure only this client (for instruction counts under valgrind).
    #[arg(long, value_enum)]
    only: Option<Client>,
}

/// The HTTP/2 clients compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Client {
    /// hyper's HTTP/2 client connection (`hyper::client::conn::http2`).
    Hyper,
    /// Postern's tunnel client (`postern_tunnel::TunnelRegistry::send`).
    Postern,
}

/// Runs the rounds on a thread of their own and prints µs per request.
pub async fn run(args: TunnelArgs) -> anyhow::Result<()> {
    let rows = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(Client, f64)>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let clients: Vec<Client> = match args.only {
                Some(one) => vec![one],
                None => vec![Client::Hyper, Client::Postern],
            };
            let mut rows = Vec::new();
            for _ in 0..args.rounds {
                for &client in &clients {
                    rows.push((client, measure(client, args.requests, args.concurrency).await?));
                }
            }
            Ok(rows)
        })
    })
    .await??;
    let mut out = format!(
        "Tunnel client, {} requests per round at {} in flight, CPU µs per request (client and server on one thread):\n\n",
        args.requests, args.concurrency
    );
    for (client, us) in &rows {
        let _ = writeln!(out, "- {client:?}: {us:.2}");
    }
    let median = |which: Client| {
        let mut v: Vec<f64> = rows.iter().filter(|(c, _)| *c == which).map(|(_, us)| *us).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    if let (Some(h), Some(p)) = (median(Client::Hyper), median(Client::Postern)) {
        let _ = writeln!(out, "\nMedians: hyper {h:.2} µs, postern {p:.2} µs ({:.3}×).", p / h);
    }
    crate::report::publish("tunnel", &out, None)?;
    Ok(())
}

/// CPU time of this process so far (its other threads are idle meanwhile);
/// from `/proc`, which valgrind runs see too.
fn process_cpu() -> anyhow::Result<f64> {
    crate::procfs::cpu_seconds(std::process::id())
}

/// A 1 KiB answer to every request, from hyper's HTTP/2 server on `io`.
fn serve(io: tokio::io::DuplexStream) {
    tokio::spawn(async move {
        let page = Bytes::from(vec![b'x'; 1024]);
        let service = hyper::service::service_fn(move |_req| {
            let page = page.clone();
            async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(page))) }
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(io), service)
            .await;
    });
}

fn get() -> Request<TunnelBody> {
    Request::get("http://app.internal/")
        .body(Empty::new().map_err(|never| match never {}).boxed_unsync())
        .unwrap_or_default()
}

/// One sender per client kind, cheap to clone into each task.
#[derive(Clone)]
enum Sender {
    Hyper(hyper::client::conn::http2::SendRequest<TunnelBody>),
    Postern(std::sync::Arc<TunnelRegistry>),
}

impl Sender {
    async fn connect(client: Client) -> anyhow::Result<Self> {
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        serve(theirs);
        let o = TunnelOptions::default();
        Ok(match client {
            Client::Hyper => {
                let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .keep_alive_interval(o.keep_alive_interval)
                    .keep_alive_timeout(o.keep_alive_timeout)
                    .keep_alive_while_idle(true)
                    .initial_stream_window_size(o.stream_window)
                    .initial_connection_window_size(o.connection_window)
                    .max_frame_size(o.max_frame_size)
                    .max_header_list_size(64 * 1024);
                let (sender, connection) = builder.handshake(TokioIo::new(ours)).await?;
                tokio::spawn(connection);
                Self::Hyper(sender)
            }
            Client::Postern => {
                let registry = TunnelRegistry::new(o);
                registry.attach("t", "g", "c", TokioIo::new(ours)).await?;
                Self::Postern(registry)
            }
        })
    }

    /// One request, its body read to the end.
    async fn request(&mut self) -> Result<usize, BoxError> {
        let body = match self {
            Self::Hyper(sender) => sender.send_request(get()).await?.into_body().collect().await?,
            Self::Postern(registry) => registry.send("t", "g", get()).await?.into_body().collect().await?,
        };
        Ok(body.to_bytes().len())
    }
}

/// CPU µs per request for `requests` requests, `concurrency` at a time, after
/// a warm-up.
async fn measure(client: Client, requests: usize, concurrency: usize) -> anyhow::Result<f64> {
    let sender = Sender::connect(client).await?;
    load(&sender, 1_000.min(requests), concurrency).await?;
    let start = process_cpu()?;
    load(&sender, requests, concurrency).await?;
    let spent = process_cpu()? - start;
    #[allow(clippy::cast_precision_loss)]
    Ok(spent * 1e6 / requests.max(1) as f64)
}

async fn load(sender: &Sender, requests: usize, concurrency: usize) -> anyhow::Result<()> {
    let concurrency = concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let mut sender = sender.clone();
        let share = requests / concurrency + usize::from(i < requests % concurrency);
        tasks.spawn(async move {
            for _ in 0..share {
                let len = sender
                    .request()
                    .await
                    .map_err(|e| anyhow::anyhow!("request failed: {e}"))?;
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
