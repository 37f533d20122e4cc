//! The client's error type: each variant says what the caller (usually a
//! person at a terminal) should do, and keeps what the service said.

/// A call to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL or tenant name cannot form a request URL; fix the input.
    #[error("invalid server URL or tenant: {0}")]
    InvalidUrl(String),
    /// The service could not be reached or did not answer in time; check the
    /// URL and the network, then retry.
    #[error("cannot reach the service at {url}")]
    Transport {
        /// The URL called (never carries a secret).
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// The admin API refused the request; `message` (and `problems`) say why.
    #[error("{}", describe(.message, .problems))]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code (`invalid_request`, `not_found`, `conflict`, ...).
        error: String,
        /// The service's explanation.
        message: String,
        /// Every validation problem, for a 400.
        problems: Vec<String>,
    },
    /// The OAuth endpoints refused the request (RFC 6749 §5.2), e.g.
    /// `invalid_grant` when a refresh token is no longer valid: sign in again.
    #[error("{error}: {description}")]
    OAuth {
        /// HTTP status.
        status: u16,
        /// The OAuth error code.
        error: String,
        /// The service's explanation.
        description: String,
    },
    /// The user refused the device sign-in.
    #[error("the sign-in was denied")]
    AccessDenied,
    /// The device code expired before the user approved it; start again.
    #[error("the sign-in code expired before it was approved; start again")]
    Expired,
    /// The overall deadline passed while waiting for the user; start again.
    #[error("gave up waiting for the sign-in to be approved")]
    TimedOut,
    /// The service answered something this client does not understand: a
    /// version mismatch or something other than the service at that URL.
    #[error("unexpected answer from the service: {0}")]
    InvalidResponse(String),
    /// Stored credentials cannot be read or written.
    #[error("credentials file {path}: {message}")]
    Credentials {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// There are no stored credentials, or they can no longer be refreshed:
    /// run `postern admin login`.
    #[error("not signed in{}; run `postern admin login`", detail_suffix(.0))]
    NotSignedIn(String),
}

/// The service's message, then its problems unless the message is the one
/// problem.
fn describe(message: &str, problems: &[String]) -> String {
    match problems {
        [] => message.to_owned(),
        [only] if only == message => message.to_owned(),
        all => format!("{message}: {}", all.join("; ")),
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl ClientError {
    /// The HTTP status the service answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::OAuth { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The OAuth error code, for [`ClientError::OAuth`].
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            ClientError::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_show_the_message_and_every_problem() {
        let e = ClientError::Api {
            status: 400,
            error: "invalid_request".into(),
            message: "the request has 2 problems".into(),
            problems: vec!["a is wrong.".into(), "b is wrong.".into()],
        };
        assert_eq!(e.to_string(), "the request has 2 problems: a is wrong.; b is wrong.");
        assert_eq!(e.status(), Some(400));
        let one = ClientError::Api {
            status: 400,
            error: "invalid_request".into(),
            message: "a is wrong.".into(),
            problems: vec!["a is wrong.".into()],
        };
        assert_eq!(one.to_string(), "a is wrong.");
        assert_eq!(
            ClientError::NotSignedIn(String::new()).to_string(),
            "not signed in; run `postern admin login`"
        );
    }
}
