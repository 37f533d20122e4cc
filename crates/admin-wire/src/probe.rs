//! "Test this app" (`POST /api/v1/apps/{id}/test`): DNS, connectors and
//! backend reachability of a published app, as the front door found them.

use serde::{Deserialize, Serialize};

/// One check of an app test.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProbeCheck {
    /// Whether it passed.
    pub ok: bool,
    /// One sentence for an administrator.
    pub summary: String,
    /// Supporting facts (addresses, connectors, the request sent).
    pub details: Vec<String>,
}

/// The result of `POST /api/v1/apps/{id}/test`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppProbe {
    /// Does the external host resolve to this service?
    pub dns: ProbeCheck,
    /// Are connectors of the app's group connected?
    pub connectors: ProbeCheck,
    /// Did the backend answer a `GET` of the internal URL through a tunnel
    /// within 5 seconds (any status below 500 counts)?
    pub backend: ProbeCheck,
    /// The backend's status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_status: Option<u16>,
    /// How long the answer took (milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}
