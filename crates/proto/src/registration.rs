//! Enrolment: the one call an on-prem component makes without a client
//! certificate (SEC-5). It presents a registration credential (from an
//! administrator's approval in the device flow, good for one kind and one
//! component name) or a registration token, and a CSR; the service answers with
//! the certificate it chose and where to connect next.

use serde::{Deserialize, Serialize};

use crate::ComponentKind;

/// Prefix of registration tokens, so secret scanners recognise them.
pub const REGISTRATION_TOKEN_PREFIX: &str = "ptr_";

/// `POST /v1/register` body. Authorization: `Bearer <registration credential or
/// registration token>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The component's protocol version.
    pub protocol: u32,
    /// Connector or agent.
    pub kind: ComponentKind,
    /// PEM certificate signing request for the key generated on the host.
    pub csr_pem: String,
    /// The host's name, to tell components apart in the admin console.
    pub name: String,
    /// The component's software version.
    pub version: String,
    /// Connector group to join (connectors only; default: the tenant's default
    /// group, or the group the registration token names).
    #[serde(default)]
    pub group: Option<String>,
    /// The tenant (short name) the operator means to register with, when they
    /// said (`--tenant`); the service refuses a credential of another tenant
    /// instead of enrolling there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// `POST /v1/register` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The service's protocol version.
    pub protocol: u32,
    /// The component's identifier (bound into its certificate).
    pub component_id: String,
    /// Tenant ID (the certificate's subject).
    pub tenant_id: String,
    /// Tenant short name.
    pub tenant: String,
    /// The issued client certificate (PEM).
    pub certificate_pem: String,
    /// The CA that issued it (PEM), for the component's records.
    pub issuer_pem: String,
    /// URL of the mTLS control endpoint, e.g. `https://connect.example.com:8443`.
    pub control_url: String,
    /// PEM trust anchors for the control endpoint's server certificate, when it
    /// is not publicly trusted (empty when it is).
    pub control_ca_pem: String,
    /// Connector group joined (connectors).
    #[serde(default)]
    pub group: Option<String>,
    /// Certificate expiry (Unix seconds).
    pub not_after: i64,
}
