//! What can go wrong with a tunnel, and what the caller should do about it.

/// A tunnel could not be opened, or ended with an error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    /// The service answered the tunnel upgrade with a client error (401, 403,
    /// 404, …). For 401 and 403 (or the code `certificate_revoked`) the connector
    /// must be registered again ([`TunnelError::needs_registration`]); otherwise
    /// the service does not offer this tunnel to this connector (version or
    /// configuration mismatch), which an upgrade of either side may cure.
    #[error("the service refused the tunnel (HTTP {status}, {code}): {message}")]
    Refused {
        /// HTTP status of the answer.
        status: u16,
        /// The service's error code (`unknown` when the body had none).
        code: String,
        /// The service's explanation.
        message: String,
    },
    /// The control endpoint could not be reached, the TLS handshake or the upgrade
    /// failed or timed out, or an open tunnel broke (heartbeats unanswered, reset):
    /// retry later, with backoff.
    #[error("tunnel transport: {0}")]
    Transport(String),
    /// The options or the endpoint make no sense (bad URL, bad numbers): fix the
    /// configuration; retrying cannot help.
    #[error("tunnel configuration: {0}")]
    Config(String),
}

impl TunnelError {
    /// Whether the connector must be registered again (its certificate is no
    /// longer accepted).
    pub fn needs_registration(&self) -> bool {
        match self {
            TunnelError::Refused { status, code, .. } => {
                *status == 401 || *status == 403 || code == "certificate_revoked"
            }
            _ => false,
        }
    }

    /// Whether retrying later may succeed (false: stop and tell the operator).
    /// A refusal other than of the certificate (404 from a service that does not
    /// offer the tunnel yet, 400, 426) may pass with a service upgrade, so it is
    /// retried, slowly.
    pub fn is_retryable(&self) -> bool {
        match self {
            TunnelError::Transport(_) => true,
            TunnelError::Refused { .. } => !self.needs_registration(),
            TunnelError::Config(_) => false,
        }
    }
}

/// An error with its sources, for logs (never shown to users).
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
