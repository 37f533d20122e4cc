//! Errors of the control plane and their one mapping to HTTP: a JSON
//! [`ErrorBody`] whose code and message tell the operator of the component what
//! to do. Internal detail goes to the log only.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use postern_pki::PkiError;
use postern_proto::ErrorBody;
use postern_store::StoreError;

/// A control-plane request failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No or an invalid credential (401): register again or sign in again.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated but not allowed (403), e.g. the admin lacks the role.
    #[error("{0}")]
    Forbidden(String),
    /// The certificate is not (or no longer) valid for any component (403): the
    /// component was removed or replaced and must be registered again.
    #[error("{0}")]
    Revoked(String),
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The CSR or key was refused (400).
    #[error("{0}")]
    BadCsr(String),
    /// The component's protocol version differs (400).
    #[error(transparent)]
    Protocol(#[from] postern_proto::ProtocolMismatch),
    /// The component is older than the service's minimum (426): install the
    /// release the message names (the updater does it unless updates are
    /// paused).
    #[error("{0}")]
    Outdated(String),
    /// Something else holds what is needed, try later (409).
    #[error("{0}")]
    Conflict(String),
    /// Not found (404).
    #[error("not found")]
    NotFound,
    /// Not found (404), with an explanation.
    #[error("{0}")]
    NotFoundMsg(String),
    /// The database is unavailable (503).
    #[error("database unavailable")]
    Unavailable,
    /// A bug or impossible state (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ControlError::NotFound,
            StoreError::Conflict(m) => ControlError::Conflict(m),
            e if e.is_transient() => {
                tracing::warn!(error = %e, "control plane: store unavailable");
                ControlError::Unavailable
            }
            e => ControlError::Internal(e.to_string()),
        }
    }
}

impl From<PkiError> for ControlError {
    fn from(e: PkiError) -> Self {
        if e.is_requester_fault() {
            ControlError::BadCsr(e.to_string())
        } else {
            ControlError::Internal(e.to_string())
        }
    }
}

impl From<postern_keyring::KeyringError> for ControlError {
    fn from(e: postern_keyring::KeyringError) -> Self {
        ControlError::Internal(e.to_string())
    }
}

impl From<postern_sts::StsError> for ControlError {
    fn from(e: postern_sts::StsError) -> Self {
        ControlError::Internal(e.to_string())
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ControlError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ControlError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ControlError::Revoked(_) => (StatusCode::FORBIDDEN, "certificate_revoked"),
            ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ControlError::BadCsr(_) => (StatusCode::BAD_REQUEST, "bad_csr"),
            ControlError::Protocol(_) => (StatusCode::BAD_REQUEST, "protocol_mismatch"),
            ControlError::Outdated(_) => (StatusCode::UPGRADE_REQUIRED, postern_proto::updates::OUTDATED),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ControlError::NotFound | ControlError::NotFoundMsg(_) => (StatusCode::NOT_FOUND, "not_found"),
            ControlError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        let message = match &self {
            ControlError::Internal(detail) => {
                tracing::error!(error = %detail, "control plane internal error");
                "internal error; see the service log".to_owned()
            }
            ControlError::Unavailable => "the service's database is unavailable; retry shortly".to_owned(),
            other => other.to_string(),
        };
        (
            status,
            Json(ErrorBody {
                error: code.into(),
                message,
            }),
        )
            .into_response()
    }
}
