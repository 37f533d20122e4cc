//! The admin API's errors and their one mapping to HTTP: a JSON [`ErrorBody`]
//! with a stable code. Internal detail (database errors, keyring failures) goes
//! to the log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_store::StoreError;
use postern_sts::StsError;

use crate::wire::ErrorBody;

/// Why a request failed. Each variant is one status code and says what the
/// client should do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// No usable bearer token: 401, sign in again.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the caller's roles do not allow this: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed or invalid; every problem is listed. Usually a
    /// 400; 413/415 for bodies that are too large or not JSON.
    #[error("{message}")]
    Invalid {
        /// Status to answer with.
        status: StatusCode,
        /// Summary.
        message: String,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// No such object in the caller's tenant: 404.
    #[error("not found")]
    NotFound,
    /// The request conflicts with the current state: 409, with why.
    #[error("{0}")]
    Conflict(String),
    /// The database is unreachable or overloaded: 503, retry later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// The database's disk is full, so nothing was changed: 503 saying so (an
    /// operator must free space), logged as an error.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// A bug or broken invariant: 500, logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 400 listing `problems`.
    pub(crate) fn invalid(problems: Vec<String>) -> Self {
        let message = match problems.as_slice() {
            [one] => one.clone(),
            _ => format!("the request has {} problems", problems.len()),
        };
        ApiError::Invalid {
            status: StatusCode::BAD_REQUEST,
            message,
            problems,
        }
    }

    /// A 400 with one problem.
    pub(crate) fn bad_request(problem: impl Into<String>) -> Self {
        Self::invalid(vec![problem.into()])
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Invalid { status, .. } => (*status, "invalid_request"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::Unavailable(_) | ApiError::StorageFull(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound,
            // The store's conflict messages are written for clients ("user x exists").
            StoreError::Conflict(msg) => ApiError::Conflict(msg),
            e @ StoreError::StorageFull(_) => ApiError::StorageFull(e.to_string()),
            e if e.is_transient() => ApiError::Unavailable(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<StsError> for ApiError {
    fn from(e: StsError) -> Self {
        match e {
            StsError::Store(s) => s.into(),
            // Password hashing at capacity: retry shortly.
            StsError::HashingBusy(busy) => ApiError::Unavailable(busy.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<postern_keyring::KeyringError> for ApiError {
    fn from(e: postern_keyring::KeyringError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (message, problems) = match self {
            ApiError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "admin API: store unavailable");
                (
                    "the service is temporarily unavailable; retry later".to_owned(),
                    Vec::new(),
                )
            }
            ApiError::StorageFull(detail) => {
                tracing::error!(error = %detail, "admin API: the database's storage is full; free space for changes to work");
                (
                    "the service cannot save changes: its storage is full; nothing was changed, retry once an operator has freed space".to_owned(),
                    Vec::new(),
                )
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "admin API: internal error");
                ("internal error; it has been logged".to_owned(), Vec::new())
            }
            ApiError::NotFound => ("no such object in this tenant".to_owned(), Vec::new()),
            ApiError::Invalid { message, problems, .. } => (message, problems),
            ApiError::Unauthenticated(m) | ApiError::Forbidden(m) | ApiError::Conflict(m) => (m, Vec::new()),
        };
        let body = ErrorBody {
            error: code.to_owned(),
            message,
            problems,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"postern\", error=\"invalid_token\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_to_statuses_without_detail() {
        let cases = [
            (ApiError::from(StoreError::NotFound), StatusCode::NOT_FOUND),
            (
                ApiError::from(StoreError::Conflict("user x exists".into())),
                StatusCode::CONFLICT,
            ),
            (
                ApiError::from(StoreError::Corrupt("role \"root\"".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status_and_code().0, status);
        }
    }

    #[test]
    fn several_problems_are_summarised() {
        let ApiError::Invalid { message, problems, .. } = ApiError::invalid(vec!["a".into(), "b".into()]) else {
            panic!("not invalid");
        };
        assert_eq!(message, "the request has 2 problems");
        assert_eq!(problems.len(), 2);
    }
}
