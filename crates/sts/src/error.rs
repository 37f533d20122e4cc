//! Errors of the STS and their one mapping to HTTP: OAuth JSON errors for protocol
//! endpoints (RFC 6749 §5.2), HTML pages naming the cause for browser pages.
//! Clients never see internal detail; it goes to the log.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_keyring::KeyringError;
use postern_store::StoreError;

use crate::pages::Page;

/// A failure inside the STS that is not the client's fault, or a missing record.
#[derive(Debug, thiserror::Error)]
pub enum StsError {
    /// The store failed; transient failures become 503 (retry later).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Sealed data could not be opened: the KEK is wrong or the data was altered.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// Password hashing is at capacity (the pool is full): 503, try again in
    /// a moment.
    #[error(transparent)]
    HashingBusy(#[from] crate::password::HashingBusy),
    /// A bug or an impossible state; a 500 and a log line.
    #[error("internal error: {0}")]
    Internal(String),
}

impl StsError {
    pub(crate) fn internal(msg: impl Into<String>) -> Self {
        StsError::Internal(msg.into())
    }

    /// Whether the store reported the record missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StsError::Store(StoreError::NotFound))
    }

    fn status(&self) -> StatusCode {
        match self {
            StsError::Store(StoreError::NotFound) => StatusCode::NOT_FOUND,
            StsError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            StsError::HashingBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Logs the detail and returns what a browser may be shown.
    pub(crate) fn to_page(&self) -> Page {
        let status = self.status();
        if status == StatusCode::NOT_FOUND {
            return Page::error(status, "Not found", "The page you asked for does not exist.");
        }
        if let StsError::HashingBusy(_) = self {
            return Page::error(status, "Busy", BUSY_HASHING);
        }
        tracing::error!(error = %self, "sign-in service error");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            Page::error(
                status,
                "Temporarily unavailable",
                "The sign-in service cannot reach its database. Please try again in a moment.",
            )
        } else {
            Page::error(
                status,
                "Something went wrong",
                "The sign-in service hit an internal error. It has been logged; please try again.",
            )
        }
    }
}

/// What a user refused by a full hashing pool reads.
pub(crate) const BUSY_HASHING: &str =
    "Many people are signing in right now and we could not check your password. Wait a few seconds, then try again.";

/// Seconds a client refused by a full hashing pool is told to wait.
pub(crate) const HASHING_RETRY_AFTER_SECS: u64 = 2;

/// Adds `Retry-After` to a response.
pub(crate) fn retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

impl IntoResponse for StsError {
    fn into_response(self) -> Response {
        let busy = matches!(self, StsError::HashingBusy(_));
        let response = self.to_page().into_response();
        if busy {
            return retry_after(response, HASHING_RETRY_AFTER_SECS);
        }
        response
    }
}

/// An OAuth 2.0 error response (RFC 6749 §5.2, RFC 8628 §3.5, RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `error` code.
    pub error: &'static str,
    /// Human-readable `error_description`.
    pub description: String,
}

impl OAuthError {
    /// A 400 with `error` and `description`.
    pub fn bad_request(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", description)
    }

    /// `invalid_grant`.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::bad_request("invalid_grant", description)
    }

    /// `invalid_client` (401).
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_client",
            description: description.into(),
        }
    }

    /// `invalid_token` (401), for bearer-token protected resources.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "invalid_token",
            description: description.into(),
        }
    }

    /// `insufficient_scope` (403).
    pub fn insufficient_scope(description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            error: "insufficient_scope",
            description: description.into(),
        }
    }

    /// `server_error` / `temporarily_unavailable`, after logging the cause.
    pub fn from_internal(e: &StsError) -> Self {
        match e {
            StsError::HashingBusy(_) => {
                return Self {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    error: "temporarily_unavailable",
                    description: "the service is busy; try again in a moment".into(),
                };
            }
            _ => tracing::error!(error = %e, "token service error"),
        }
        match e {
            StsError::Store(s) if s.is_transient() => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                error: "temporarily_unavailable",
                description: "the service is temporarily unavailable".into(),
            },
            _ => Self {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                error: "server_error",
                description: "internal error".into(),
            },
        }
    }
}

impl From<StsError> for OAuthError {
    fn from(e: StsError) -> Self {
        OAuthError::from_internal(&e)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.error == "invalid_client" {
                "Basic realm=\"postern\"".to_owned()
            } else {
                format!("Bearer error=\"{}\"", self.error)
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}
