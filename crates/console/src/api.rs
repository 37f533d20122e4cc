//! Calls to the admin API, in-process: each builds an HTTP request carrying the
//! session's bearer token and sends it to the API's router with
//! `tower::ServiceExt::oneshot`. Every permission check, validation and audit
//! entry is therefore the API's own; the console only renders the answers.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::Console;
use crate::html::Notice;
use crate::session::Session;

/// Largest API answer the console reads.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Why an API call did not succeed, as the API said it.
#[derive(Clone, Debug)]
pub(crate) struct ApiFailure {
    /// The API's status (or 500 when the call itself failed).
    pub status: StatusCode,
    /// Its message.
    pub message: String,
    /// Every validation problem it listed.
    pub problems: Vec<String>,
}

impl ApiFailure {
    /// The failure as a notice, prefixed with what was attempted.
    pub(crate) fn notice(&self, doing: &str) -> Notice {
        let why = match self.status {
            StatusCode::FORBIDDEN => format!(
                "{doing}: your roles do not allow this ({}).",
                self.message.trim_end_matches('.')
            ),
            StatusCode::NOT_FOUND => format!("{doing}: it does not exist (or no longer)."),
            _ => format!("{doing}: {}", self.message),
        };
        Notice::Failed(why, self.problems.clone())
    }
}

impl Console {
    /// Sends `method path` with an optional JSON body to the admin API as the
    /// session's user; the JSON answer (`null` when it has no body).
    pub(crate) async fn call(
        &self,
        session: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiFailure> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.token))
            .header(header::ACCEPT, "application/json");
        let body = match body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let internal = |m: String| ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: m,
            problems: vec![],
        };
        let request = builder.body(body).map_err(|e| internal(format!("bad request: {e}")))?;
        let response = match self.api.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status();
        let bytes = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| internal(format!("reading the answer: {e}")))?
            .to_bytes();
        let json: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if status.is_success() {
            return Ok(json);
        }
        Err(ApiFailure {
            status,
            message: json
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| status.to_string(), str::to_owned),
            problems: json
                .get("problems")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }

    /// `GET path`.
    pub(crate) async fn get(&self, session: &Session, path: &str) -> Result<Value, ApiFailure> {
        self.call(session, Method::GET, path, None).await
    }
}

/// A string field of a JSON object (`""` when absent).
pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A number field of a JSON object.
pub(crate) fn n(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// A boolean field of a JSON object (`false` when absent).
pub(crate) fn b(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// The elements of a JSON array (none when it is not one).
pub(crate) fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}
