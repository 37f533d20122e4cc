//! The tunnel between the service and connectors (APP-3..APP-6, BEY-2).
//!
//! A connector dials the control endpoint (TLS 1.3, its client certificate, ALPN
//! `http/1.1`) and asks to upgrade:
//!
//! ```text
//! GET /v1/t/{tenant}/connector/tunnel HTTP/1.1
//! Connection: Upgrade
//! Upgrade: postern-tunnel/1
//! X-Postern-Protocol: 1
//! ```
//!
//! After `101 Switching Protocols` the roles swap on that connection: the service
//! is an HTTP/2 *client*, the connector an HTTP/2 *server*. Each user request is one
//! HTTP/2 stream the service opens towards the connector; request and response
//! bodies stream with HTTP/2 flow control end to end, so the service reads the
//! user's body only as fast as the connector (and the backend behind it) takes it,
//! and no body is ever buffered whole. Every TCP connection is still opened by the
//! connector, outbound. A connector keeps a few such connections (a pool), to one
//! or several service instances.
//!
//! Requests the service sends carry the user's method, path and query (origin
//! form), the headers to forward (hop-by-hop headers and the service's own cookie
//! removed, identity headers added), and the headers below. The connector forwards
//! to the internal URL of the named app from its configuration, never to a URL
//! taken from the request.
//!
//! - **Path.** The stream's `:path` is the user's path *below the app's external
//!   prefix* (always starting with `/`) plus the query; the connector appends it
//!   to the internal URL's base path: external prefix `/wiki/`, internal URL
//!   `http://wiki.corp:8080/app/`, user path `/wiki/a?b` → tunnel `:path` `/a?b`
//!   → backend `/app/a?b`.
//! - **Host.** The stream's `:authority` is the `Host` the backend must see (the
//!   service chooses the internal or the external host per the app's header
//!   translation option); the connector connects to the internal URL's host and
//!   port whatever the authority says.
//! - **Upgrades.** HTTP/2 has no `Connection: Upgrade`, so the service names the
//!   protocol in [`UPGRADE_HEADER`] (the other handshake headers such as
//!   `sec-websocket-key` travel as they are); the connector sends the backend an
//!   HTTP/1.1 upgrade and, on `101`, answers `200` with [`UPGRADED_HEADER`] and the
//!   backend's 101 headers, then copies bytes both ways until either side ends.
//! - **Errors.** When the connector gets no response from the backend it answers
//!   502 or 504 with [`ERROR_HEADER`] set to a [`BackendError`] code and a short
//!   plain-text body; a response without that header is the backend's own.

/// Path of the tunnel upgrade.
pub fn connector_tunnel_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/connector/tunnel")
}

/// Request header of the upgrade: the connector's protocol version
/// ([`crate::PROTOCOL_VERSION`]).
pub const PROTOCOL_HEADER: &str = "x-postern-protocol";

/// `Upgrade` token of the tunnel.
pub const TUNNEL_UPGRADE: &str = "postern-tunnel/1";

/// HTTP/2 flow-control window per stream that both ends of a tunnel grant by
/// default: what one body (a response to the service, a request body to the
/// connector) may have in flight unread. 4 MiB: with 1 MiB a 1 GiB transfer
/// on loopback waited for window updates (`docs/benchmarks.md`).
pub const DEFAULT_STREAM_WINDOW: u32 = 4 * 1024 * 1024;
/// HTTP/2 flow-control window of a whole tunnel connection both ends grant by
/// default: what all of a tunnel's bodies together may have in flight unread.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest HTTP/2 frame both ends of a tunnel accept by default. 256 KiB: a
/// large transfer in a sixteenth of the frames of HTTP/2's default, while a
/// frame of another stream waits behind one about a quarter of a millisecond
/// at 1 GB/s.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 256 * 1024;
/// Smallest `SETTINGS_MAX_FRAME_SIZE` HTTP/2 allows.
pub const MIN_FRAME_SIZE: u32 = 16 * 1024;
/// Largest `SETTINGS_MAX_FRAME_SIZE` HTTP/2 allows.
pub const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;

/// Request header: the app the request is for (its ID).
pub const APP_HEADER: &str = "x-postern-app";
/// Request header: the request's ID (also sent to the backend, for correlation).
pub const REQUEST_ID_HEADER: &str = "x-postern-request-id";
/// Request header: `websocket` (or another protocol) when the user asked to
/// upgrade the connection. The request body then carries the client-to-backend
/// bytes and the response body the backend-to-client bytes, both unbounded in time.
pub const UPGRADE_HEADER: &str = "x-postern-upgrade";
/// Response header: `101` when the backend switched protocols (HTTP/2 cannot carry
/// a 101 response itself, so the connector answers 200 with this header).
pub const UPGRADED_HEADER: &str = "x-postern-upgraded";
/// Response header set by the connector when it could not get a response from the
/// backend; the status is then 502 or 504 and the value one of the codes below.
pub const ERROR_HEADER: &str = "x-postern-error";

/// Why a connector could not get a response from a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The app is not in the connector's configuration (yet).
    UnknownApp,
    /// The backend refused the connection or could not be resolved.
    Unreachable,
    /// The backend's TLS certificate was not valid (and validation is on).
    Tls,
    /// The backend did not answer within the app's backend timeout.
    Timeout,
    /// The backend answered with something that is not HTTP.
    Protocol,
}

impl BackendError {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendError::UnknownApp => "unknown_app",
            BackendError::Unreachable => "backend_unreachable",
            BackendError::Tls => "backend_tls",
            BackendError::Timeout => "backend_timeout",
            BackendError::Protocol => "backend_protocol",
        }
    }

    /// Parses a header value.
    pub fn parse(s: &str) -> Option<Self> {
        [
            BackendError::UnknownApp,
            BackendError::Unreachable,
            BackendError::Tls,
            BackendError::Timeout,
            BackendError::Protocol,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }

    /// The HTTP status the connector answers with.
    pub fn status(self) -> u16 {
        match self {
            BackendError::Timeout => 504,
            _ => 502,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_errors_round_trip() {
        for e in [
            BackendError::UnknownApp,
            BackendError::Unreachable,
            BackendError::Tls,
            BackendError::Timeout,
            BackendError::Protocol,
        ] {
            assert_eq!(BackendError::parse(e.as_str()), Some(e));
        }
        assert_eq!(BackendError::Timeout.status(), 504);
        assert_eq!(BackendError::parse("other"), None);
    }
}
