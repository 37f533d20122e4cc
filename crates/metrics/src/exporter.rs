//! The exporter: the process-wide recorder behind the `metrics` facade, and
//! the HTTP listener that serves `GET /metrics` on its own address, never on
//! the public listener.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::names;
use crate::scrape::Collector;

/// Why metrics could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Another metrics recorder is installed in this process (not ours):
    /// nothing would reach this exporter.
    #[error("another metrics recorder is already installed in this process")]
    ForeignRecorder,
    /// The exporter's settings were refused (a bug: they are constants).
    #[error("metrics exporter: {0}")]
    Build(String),
    /// The metrics address could not be bound.
    #[error("metrics listener on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALLING: Mutex<()> = Mutex::new(());

/// Installs the process-wide recorder (once; later calls return the same
/// handle). Until it is installed, every hook in [`crate::record`] does
/// nothing.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::LATENCY_BUCKETS)
        .map_err(|e| MetricsError::Build(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::ForeignRecorder)?;
    names::describe_all();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// What the listener serves from.
#[derive(Clone)]
struct Scrape {
    handle: PrometheusHandle,
    collectors: Arc<Vec<Arc<dyn Collector>>>,
}

/// A running metrics listener.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// Installs the recorder (if not yet), records `postern_build_info` for
    /// `role`, binds `addr` and serves `GET /metrics` there until `shutdown`
    /// turns true. `collectors` add the series computed at scrape time.
    pub async fn start(
        addr: SocketAddr,
        role: &'static str,
        collectors: Vec<Arc<dyn Collector>>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<Self, MetricsError> {
        let handle = install()?;
        crate::record::build_info(role, env!("CARGO_PKG_VERSION"));
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let bound = tcp.local_addr().map_err(|source| MetricsError::Bind { addr, source })?;
        let app = router(Scrape {
            handle,
            collectors: Arc::new(collectors),
        });
        let task = tokio::spawn(async move {
            let stopped = async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(tcp, app).with_graceful_shutdown(stopped).await {
                tracing::warn!(error = %e, "metrics listener failed");
            }
        });
        tracing::info!(addr = %bound, role, "metrics listening");
        Ok(Self { addr: bound, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for it to stop (after the shutdown signal).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

fn router(scrape: Scrape) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found: metrics are at /metrics\n") })
        .with_state(scrape)
}

async fn render(State(scrape): State<Scrape>) -> Response {
    scrape.handle.run_upkeep();
    let mut text = scrape.handle.render();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for collector in scrape.collectors.iter() {
        for family in collector.collect().await {
            family.write_to(&mut text);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::{BoxFuture, Family};

    struct Fixed;

    impl Collector for Fixed {
        fn collect(&self) -> BoxFuture<'_, Vec<Family>> {
            Box::pin(async {
                let mut f = Family::new("postern_fixed", "A fixed value.");
                f.push(vec![("k", "v".into())], 7.0);
                vec![f]
            })
        }
    }

    #[tokio::test]
    async fn serves_the_facade_and_the_collectors_at_metrics_only() {
        let (stop, stopping) = watch::channel(false);
        let server = MetricsServer::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "service",
            vec![Arc::new(Fixed)],
            stopping,
        )
        .await
        .unwrap();
        crate::record::rate_limited("client");
        let base = format!("http://{}", server.local_addr());
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("postern_rate_limited_total{limit=\"client\"} 1"),
            "{text}"
        );
        assert!(text.contains("postern_fixed{k=\"v\"} 7"), "{text}");
        assert!(text.contains("postern_build_info{role=\"service\""), "{text}");
        let other = reqwest::get(format!("{base}/")).await.unwrap();
        assert_eq!(other.status(), 404);
        // A second install in the process is the same recorder.
        assert!(install().is_ok());
        stop.send(true).unwrap();
        server.stopped().await;
    }
}
