//! Calls on the mTLS control endpoint, each authenticated by the component's
//! client certificate: connector configuration (CON-2, CON-3) with renewal
//! (CON-4), and agent trust renewal (PTA-7).

use serde::{Deserialize, Serialize};

use crate::ComponentKind;

// Paths name the tenant: the service refuses a certificate of another tenant
// (SEC-6), so a component can only ever address its own tenant's endpoints.

/// Path of the connector configuration exchange.
pub fn connector_config_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/connector/config")
}

/// Path of the long poll that returns when the configuration changes
/// (query `version=<the version the connector has>`).
pub fn connector_config_watch_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/connector/config/watch")
}

/// Path of the agent's "should I renew?" question.
pub fn agent_renewal_check_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/renewal")
}

/// Path of the agent's renewal.
pub fn agent_renew_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/renew")
}

/// Path that tells a component who the service thinks it is.
pub const WHOAMI_PATH: &str = "/v1/whoami";

/// Answer of the configuration watch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigVersion {
    /// The current configuration version; fetch the configuration if it differs
    /// from the one held.
    pub config_version: i64,
}

/// `POST /v1/connector/config` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfigRequest {
    /// The component's protocol version.
    pub protocol: u32,
    /// The connector's software version.
    pub version: String,
    /// A CSR for a fresh key, sent when the certificate is more than 180 days old
    /// (CON-4). The service may also ask for one (`renew_requested`).
    #[serde(default)]
    pub csr_pem: Option<String>,
}

/// The connector's configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorConfig {
    /// The service's protocol version.
    pub protocol: u32,
    /// Changes whenever anything below changes; watch with it.
    pub config_version: i64,
    /// The connector's identifier.
    pub component_id: String,
    /// Its connector group.
    pub group: GroupRef,
    /// Apps the connector may serve (filled in with the application proxy).
    pub apps: Vec<AppRef>,
    /// Timeouts and intervals.
    pub timing: ConnectorTiming,
    /// A renewed certificate (PEM), when the request carried a CSR.
    #[serde(default)]
    pub renewed_certificate_pem: Option<String>,
    /// The service wants a CSR at the next exchange (certificate older than the
    /// renewal age).
    pub renew_requested: bool,
}

/// A connector group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A published app a connector may serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRef {
    /// Identifier (the tunnel's `x-postern-app` header names it).
    pub id: String,
    /// Internal URL the connector forwards to: scheme, host, port and a base path;
    /// the request's path (below the app's external prefix) is appended.
    pub internal_url: String,
    /// Whether the backend's TLS certificate is checked.
    pub validate_backend_tls: bool,
    /// Time the backend has to send its response head (seconds).
    pub backend_timeout_secs: u64,
}

/// Timeouts and intervals for a connector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorTiming {
    /// Refetch the configuration at least this often (seconds), even without a
    /// change notification.
    pub refresh_secs: u64,
    /// Default backend timeout (seconds).
    pub backend_timeout_secs: u64,
}

/// `POST /v1/agent/renewal` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewalCheck {
    /// Renew now: generate a key and call `/v1/agent/renew`.
    pub renew: bool,
    /// Why (or why not yet).
    pub reason: String,
    /// Ask again after this many seconds.
    pub check_again_secs: u64,
}

/// `POST /v1/agent/renew` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    /// The component's protocol version.
    pub protocol: u32,
    /// CSR for the new key pair.
    pub csr_pem: String,
}

/// `POST /v1/agent/renew` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    /// The new certificate (PEM); the old one no longer works.
    pub certificate_pem: String,
    /// Its expiry (Unix seconds).
    pub not_after: i64,
}

/// `GET /v1/whoami` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// Tenant ID.
    pub tenant_id: String,
    /// Connector or agent.
    pub kind: ComponentKind,
    /// Component ID.
    pub component_id: String,
    /// Serial of the certificate presented.
    pub serial: String,
}
