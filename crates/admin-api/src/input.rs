//! Reading requests: JSON bodies and query strings whose rejections become JSON
//! [`ApiError`]s, and a collector that reports every validation problem at once.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body; a malformed one is a JSON 400 (413/415 for too large or not
/// JSON), unknown fields included.
pub(crate) struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    // A body of the wrong shape is a 400 like every other invalid request (axum
    // would say 422); not JSON at all or too large keep their 415 and 413.
    let status = match rejection {
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => StatusCode::BAD_REQUEST,
        other => other.status(),
    };
    ApiError::Invalid {
        status,
        message: rejection.body_text(),
        problems: Vec::new(),
    }
}

/// A query string; a malformed one is a JSON 400.
pub(crate) struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::bad_request(rejection.body_text())
}

/// Validation problems of one request, reported together.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    /// No problems yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a problem.
    pub(crate) fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// Records the error of `result`, if any.
    pub(crate) fn check<E: std::fmt::Display>(&mut self, result: Result<(), E>) {
        if let Err(e) = result {
            self.add(e.to_string());
        }
    }

    /// `Ok` when nothing was recorded, else a 400 listing everything.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(self.0))
        }
    }
}

/// Trims `value` and checks it is 1 to `max` characters without control
/// characters; `what` names the field in the problem.
pub(crate) fn check_text(problems: &mut Problems, what: &str, value: &str, max: usize) -> String {
    let value = value.trim();
    let len = value.chars().count();
    if len == 0 || len > max {
        problems.add(format!("{what} must be 1 to {max} characters."));
    } else if value.chars().any(char::is_control) {
        problems.add(format!("{what} must not contain control characters."));
    }
    value.to_owned()
}

/// Trims a free-text description and checks it is at most
/// [`MAX_DESCRIPTION`] characters (empty is fine).
pub(crate) fn check_description(problems: &mut Problems, value: &str) -> String {
    let value = value.trim();
    if value.chars().count() > MAX_DESCRIPTION {
        problems.add(format!("description must be at most {MAX_DESCRIPTION} characters."));
    }
    value.to_owned()
}

/// Longest description of a group.
const MAX_DESCRIPTION: usize = 1000;

/// A page size: `limit` in 1..=1000, default 100.
pub(crate) fn page_limit(problems: &mut Problems, limit: Option<i64>) -> i64 {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        problems.add(format!("limit must be 1 to {MAX_PAGE}."));
    }
    limit
}

/// Default number of log entries per page.
const DEFAULT_PAGE: i64 = 100;
/// Largest number of log entries per page.
const MAX_PAGE: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_collected() {
        let mut p = Problems::new();
        assert_eq!(check_text(&mut p, "name", "  ok  ", 10), "ok");
        check_text(&mut p, "name", "", 10);
        check_text(&mut p, "name", "a\u{7}b", 10);
        check_text(&mut p, "name", "abcdefghijk", 10);
        assert_eq!(page_limit(&mut p, None), 100);
        page_limit(&mut p, Some(1001));
        page_limit(&mut p, Some(0));
        assert_eq!(p.0.len(), 5);
        assert!(p.finish().is_err());
        assert!(Problems::new().finish().is_ok());
    }
}
