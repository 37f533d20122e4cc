//! The on-prem side of the control plane: registration, the state directory, and mTLS calls to the service, shared by connector, agent and updater.
//!
//! - [`register`]: generates the key pair on this host, sends only a CSR with a
//!   registration credential (an administrator's approval of this registration,
//!   or a registration token), and stores key, certificate and what the service
//!   answered in the [`StateDir`] (all 0600).
//! - [`trust`]: trust anchors for the service's TLS certificates; a file with a
//!   certificate that cannot be used is an error naming it, never skipped.
//! - [`ControlClient`]: every later call, authenticated by the client certificate,
//!   trusting only the anchors learned at registration for the control endpoint.
//! - [`version`]: the version and target reported on every control call;
//!   the updater's calls ([`ControlClient::update_check`] and the rest) report none.
//! - Renewal: connectors at 180 days during the configuration exchange (CON-4),
//!   agents when the service says so (PTA-7), each with a fresh key.
#![warn(missing_docs)]

pub mod backoff;
mod client;
mod register;
pub mod state;
pub mod trust;
mod updates;
pub mod version;

pub use backoff::Backoff;
pub use client::ControlClient;
pub use register::{Credential, RegisterOptions, register};
pub use state::{Enrolment, StateDir};
pub use version::{build_target, reported_version};

use postern_proto::ErrorBody;

/// What went wrong on the component's side. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// No registration is stored; run `register` first.
    #[error("not registered (no state in {0}); run `postern connector register` or `postern agent register`")]
    NotRegistered(String),
    /// The stored certificate has expired: the service removed the component, which
    /// must be registered again by an administrator.
    #[error("this component's certificate expired at {0} (Unix time); the service has removed it: register it again")]
    CertificateExpired(i64),
    /// The service no longer accepts this component's certificate (removed,
    /// re-registered or expired): register it again.
    #[error("the service refused this component's certificate ({0}); register it again")]
    Revoked(String),
    /// The service refused the request; its message says why.
    #[error("the service refused: {message} ({code})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The service's error code.
        code: String,
        /// The service's explanation.
        message: String,
    },
    /// The service could not be reached or answered garbage; retry later.
    #[error("cannot reach the service: {0}")]
    Transport(String),
    /// A state file could not be read or written; check the state directory's
    /// owner and permissions.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Stored state is unreadable.
    #[error("state is corrupt: {0}")]
    Corrupt(String),
    /// A file of trust anchors (or the system's store) holds a certificate that
    /// cannot be used, or none: fix or replace the file the message names.
    #[error("trust anchors: {0}")]
    TrustAnchors(String),
    /// Key generation or certificate handling failed.
    #[error("key or certificate: {0}")]
    Pki(#[from] postern_pki::PkiError),
    /// A bug or impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl UplinkError {
    pub(crate) fn state(path: &std::path::Path, source: std::io::Error) -> Self {
        UplinkError::State {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the component must be registered again (retrying cannot help).
    pub fn needs_registration(&self) -> bool {
        matches!(
            self,
            UplinkError::NotRegistered(_) | UplinkError::CertificateExpired(_) | UplinkError::Revoked(_)
        )
    }

    /// Turns an error response into an error.
    pub(crate) async fn from_response(response: reqwest::Response) -> UplinkError {
        let status = response.status().as_u16();
        match response.json::<ErrorBody>().await {
            Ok(body) if body.error == "certificate_revoked" => UplinkError::Revoked(body.message),
            Ok(body) => UplinkError::Refused {
                status,
                code: body.error,
                message: body.message,
            },
            Err(_) => UplinkError::Refused {
                status,
                code: "unknown".into(),
                message: format!("HTTP {status}"),
            },
        }
    }
}

/// A reqwest error, as a transport error that names no secret.
pub(crate) fn transport(e: reqwest::Error) -> UplinkError {
    // A handshake the service refused (revoked or unknown certificate) surfaces as
    // a connection error; keep its text, it carries the TLS alert.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    UplinkError::Transport(msg)
}
