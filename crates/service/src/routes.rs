//! The service's HTTP surface: STS, admin API and admin console routes, health probes, and the
//! layers every request passes (limits, timeouts, security headers, request logs
//! that carry no secrets).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use postern_control::Control;
use postern_pages::Page;
use postern_sts::Sts;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use url::Url;

use crate::config::Config;

/// The front door's key ring as the admin API sees it.
struct EdgeKeys(Arc<postern_edge::Edge>);

impl postern_admin_api::FrontDoorKeys for EdgeKeys {
    fn rotate_cookie_key(&self, revoke_older: bool) -> postern_admin_api::BoxFuture<'_, Result<String, String>> {
        Box::pin(async move { self.0.rotate_cookie_key(revoke_older).await.map_err(|e| e.to_string()) })
    }

    fn probe_app(
        &self,
        app: postern_store::App,
    ) -> postern_admin_api::BoxFuture<'_, Result<postern_admin_api::wire::AppProbe, String>> {
        Box::pin(async move {
            let p = self.0.probe_app(&app).await;
            let check = |o: postern_edge::ProbeOutcome| postern_admin_api::wire::ProbeCheck {
                ok: o.ok,
                summary: o.summary,
                details: o.details,
            };
            Ok(postern_admin_api::wire::AppProbe {
                dns: check(p.dns),
                connectors: check(p.connectors),
                backend: check(p.backend),
                backend_status: p.backend_status,
                latency_ms: p.latency_ms,
            })
        })
    }
}

/// Builds the whole application.
pub(crate) fn app(
    sts: &Arc<Sts>,
    admin_api: postern_admin_api::AdminState,
    control: &Arc<Control>,
    edge: &Arc<postern_edge::Edge>,
    config: &Config,
    public_url: &Url,
) -> Router {
    let front_door: Arc<dyn postern_admin_api::FrontDoorKeys> = Arc::new(EdgeKeys(edge.clone()));
    let probes = Router::new()
        .route("/", get(landing))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(sts.clone());
    let admin_api = postern_admin_api::router(admin_api.with_front_door(front_door));
    let mut app = Router::new()
        .merge(probes)
        .merge(sts.router())
        // The console calls the admin API in-process, through the same router.
        .merge(postern_console::router(sts.clone(), admin_api.clone(), public_url))
        .merge(admin_api)
        .merge(control.public_router())
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(config.limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.limits.request_timeout))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Request logs name the path only: query strings can carry codes and
        // flow IDs, and headers carry cookies and tokens.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
        }));
    // HSTS binds a host name, not a port: on `localhost` (the demo) it would
    // force every other local web server of the machine onto HTTPS.
    if public_url.scheme() == "https" && !crate::config::is_loopback_host(public_url) {
        app = app.layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    app
}

/// The control listener's application: the mTLS API with the same limits and
/// request logs (the two-way agent queue's body, read a bounded line at a
/// time for as long as the queue lasts, has no total limit).
pub(crate) fn control_app(control: &Arc<Control>, config: &Config) -> Router {
    control
        .mtls_router()
        .layer(RequestBodyLimitLayer::new(config.limits.max_body_bytes))
        .merge(control.duplex_queue_router())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
            tracing::info_span!("control", method = %request.method(), path = %request.uri().path())
        }))
}

async fn landing() -> Response {
    Page::new("Postern")
        .para("This is a Postern service. Applications published through it, and their sign-in pages, live at their own addresses.")
        .into_response()
}

async fn ready(State(sts): State<Arc<Sts>>) -> Response {
    match sts.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn not_found() -> Response {
    Page::error(StatusCode::NOT_FOUND, "Not found", "There is nothing at this address.").into_response()
}
