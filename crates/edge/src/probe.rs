//! "Test this app": what an administrator needs to know when an app does not
//! answer — whether its external host resolves to this service, whether
//! connectors of its group are connected, and whether its backend answers a
//! real request sent through a tunnel (status and latency, or the error).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use postern_proto::tunnel::{APP_HEADER, BackendError, ERROR_HEADER, REQUEST_ID_HEADER};
use postern_store::App;
use postern_tunnel::{BoxError, SendError, TunnelBody};

use crate::Edge;
use crate::forward::{BACKEND_REQUEST_ID_HEADER, internal_authority};

/// How long a name lookup of the probe may take.
const DNS_DEADLINE: Duration = Duration::from_secs(3);
/// How long the backend has to answer the probe.
const BACKEND_DEADLINE: Duration = Duration::from_secs(5);

/// One check of a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// Whether it passed.
    pub ok: bool,
    /// One sentence for an administrator.
    pub summary: String,
    /// Supporting facts (addresses, connector names).
    pub details: Vec<String>,
}

impl ProbeOutcome {
    fn new(ok: bool, summary: impl Into<String>, details: Vec<String>) -> Self {
        Self {
            ok,
            summary: summary.into(),
            details,
        }
    }
}

/// What "Test this app" found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppProbe {
    /// Does the external host resolve to this service?
    pub dns: ProbeOutcome,
    /// Are connectors of the app's group connected?
    pub connectors: ProbeOutcome,
    /// Did the backend answer through a tunnel?
    pub backend: ProbeOutcome,
    /// The backend's status, when it answered.
    pub backend_status: Option<u16>,
    /// How long the answer took, in milliseconds, when it came.
    pub latency_ms: Option<u64>,
}

/// The addresses `host` resolves to (any port), or why not.
async fn resolve(host: &str) -> Result<BTreeSet<IpAddr>, String> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(BTreeSet::from([ip]));
    }
    match tokio::time::timeout(DNS_DEADLINE, tokio::net::lookup_host((host, 443))).await {
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the lookup took longer than 3 s".into()),
    }
}

fn list(addrs: &BTreeSet<IpAddr>) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl Edge {
    /// Tests `app`: DNS of its external host against this service's public
    /// host, its group's connected connectors, and one `GET` of the internal
    /// URL's base path through a tunnel with a 5 s deadline.
    pub async fn probe_app(&self, app: &App) -> AppProbe {
        let dns = self.probe_dns(app).await;
        let connectors = self.probe_connectors(app).await;
        let (backend, backend_status, latency_ms) = self.probe_backend(app).await;
        AppProbe {
            dns,
            connectors,
            backend,
            backend_status,
            latency_ms,
        }
    }

    async fn probe_dns(&self, app: &App) -> ProbeOutcome {
        let host = app.external_host.as_str();
        let public = self.sts.config().public_url.host_str().unwrap_or("").to_owned();
        let theirs = match resolve(host).await {
            Ok(a) if !a.is_empty() => a,
            Ok(_) => return ProbeOutcome::new(false, format!("{host} does not resolve to any address."), vec![]),
            Err(e) => {
                return ProbeOutcome::new(
                    false,
                    format!(
                        "{host} does not resolve: {e}. Users cannot reach the app until it points to this service."
                    ),
                    vec![],
                );
            }
        };
        let ours = resolve(&public).await.unwrap_or_default();
        let details = vec![
            format!("{host}: {}", list(&theirs)),
            format!("this service ({public}): {}", list(&ours)),
        ];
        if !theirs.is_disjoint(&ours) {
            ProbeOutcome::new(true, format!("{host} resolves to this service."), details)
        } else {
            ProbeOutcome::new(
                false,
                format!(
                    "{host} resolves to {}, not to this service's addresses (expected behind a load balancer or CDN; otherwise fix the DNS record).",
                    list(&theirs)
                ),
                details,
            )
        }
    }

    async fn probe_connectors(&self, app: &App) -> ProbeOutcome {
        let connected = self.tunnels.tunnels(&app.tenant_id, &app.connector_group_id);
        let registered = self
            .store
            .components(&app.tenant_id, postern_proto::ComponentKind::Connector)
            .await
            .unwrap_or_default();
        let in_group: Vec<_> = registered
            .iter()
            .filter(|c| c.group_id.as_deref() == Some(app.connector_group_id.as_str()))
            .collect();
        let mut ids: Vec<&str> = connected.iter().map(|t| t.connector_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let details = in_group
            .iter()
            .map(|c| {
                let state = if ids.contains(&c.id.as_str()) {
                    "connected here"
                } else {
                    "not connected to this instance"
                };
                format!("{} ({}, version {}): {state}", c.name, c.id, c.version)
            })
            .collect();
        if !ids.is_empty() {
            ProbeOutcome::new(
                true,
                format!(
                    "{} of the group's {} registered connector(s) connected.",
                    ids.len(),
                    in_group.len()
                ),
                details,
            )
        } else if in_group.is_empty() {
            ProbeOutcome::new(
                false,
                "The app's connector group has no connector: register one (or move one into the group).",
                details,
            )
        } else {
            ProbeOutcome::new(
                false,
                "No connector of the app's group is connected to this instance (with several instances, another may hold its tunnels).",
                details,
            )
        }
    }

    async fn probe_backend(&self, app: &App) -> (ProbeOutcome, Option<u16>, Option<u64>) {
        let request_id = format!("probe-{}", uuid::Uuid::new_v4());
        let Some(authority) = internal_authority(&app.internal_url) else {
            return (
                ProbeOutcome::new(false, "The internal URL has no host.", vec![]),
                None,
                None,
            );
        };
        let Ok(uri) = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query("/")
            .build()
        else {
            return (
                ProbeOutcome::new(false, "The internal URL cannot be requested.", vec![]),
                None,
                None,
            );
        };
        let body: TunnelBody = Empty::<bytes::Bytes>::new()
            .map_err(|never| -> BoxError { match never {} })
            .boxed_unsync();
        let mut request = Request::new(body);
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        for (name, value) in [
            (APP_HEADER, app.id.as_str()),
            (REQUEST_ID_HEADER, request_id.as_str()),
            (BACKEND_REQUEST_ID_HEADER, request_id.as_str()),
            ("user-agent", "postern-probe"),
        ] {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                request.headers_mut().insert(name, v);
            }
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(
            BACKEND_DEADLINE,
            self.tunnels.send(&app.tenant_id, &app.connector_group_id, request),
        )
        .await;
        let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let target = format!("GET {}", app.internal_url);
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(SendError::NoConnector)) => {
                return (
                    ProbeOutcome::new(
                        false,
                        "Not tried: no connector of the app's group is online.",
                        vec![target],
                    ),
                    None,
                    None,
                );
            }
            Ok(Err(SendError::Failed(why))) => {
                return (
                    ProbeOutcome::new(false, format!("The tunnel failed: {why}"), vec![target]),
                    None,
                    None,
                );
            }
            Err(_) => {
                return (
                    ProbeOutcome::new(
                        false,
                        "No answer within 5 s (the connector or the backend is too slow).",
                        vec![target],
                    ),
                    None,
                    Some(elapsed),
                );
            }
        };
        let status = response.status();
        let connector = response.body().connector_id().to_owned();
        let details = vec![target, format!("through connector {connector}")];
        if let Some(code) = response.headers().get(ERROR_HEADER).and_then(|v| v.to_str().ok()) {
            let why = match BackendError::parse(code) {
                Some(BackendError::UnknownApp) => {
                    "the connector does not know the app yet (its configuration is being updated)"
                }
                Some(BackendError::Unreachable) => {
                    "the backend refused the connection or its name does not resolve at the connector"
                }
                Some(BackendError::Tls) => "the backend's TLS certificate is not trusted by the connector",
                Some(BackendError::Timeout) => "the backend did not answer in time",
                Some(BackendError::Protocol) | None => "the backend did not answer with HTTP",
            };
            return (
                ProbeOutcome::new(false, format!("The backend is not reachable: {why}."), details),
                None,
                Some(elapsed),
            );
        }
        // The status line is enough; the body is dropped (the stream is reset).
        drop(response);
        let ok = !status.is_server_error();
        (
            ProbeOutcome::new(ok, format!("The backend answered {status} in {elapsed} ms."), details),
            Some(status.as_u16()),
            Some(elapsed),
        )
    }
}
