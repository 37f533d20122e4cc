//! What the front door answers by itself: error pages that name the cause (and
//! the request ID to quote), the JSON 401 for scripts, `robots.txt`, the
//! sign-out confirmation.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, VARY, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};
use postern_pages::Page;

/// SEC-8: every published host tells crawlers to stay out.
pub(crate) const ROBOTS_TXT: &str = "User-agent: *\nDisallow: /\n";

/// `GET /robots.txt` on an app host.
pub(crate) fn robots() -> Response {
    let mut r = (StatusCode::OK, ROBOTS_TXT).into_response();
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// An error page: `title`, what happened, and the request ID.
pub(crate) fn error(status: StatusCode, title: &str, cause: &str, request_id: &str) -> Response {
    let mut r = Page::error(status, title, cause)
        .para(format!("Request ID: {request_id}"))
        .into_response();
    no_store(&mut r);
    r
}

/// The page asking to confirm signing out of `app_name`: a form posting
/// `token_field`=`token` to `action`.
pub(crate) fn confirm_sign_out(app_name: &str, action: &str, token_field: &str, token: &str) -> Response {
    let mut r = Page::new("Sign out?")
        .para(format!("Do you want to sign out of {app_name}?"))
        .form(action, "Sign out")
        .hidden(token_field, token)
        .into_response();
    no_store(&mut r);
    r
}

/// The answer to a script (XHR, `fetch`, an API client) without a session: 401
/// with a JSON body naming where a browser signs in, never a redirect it cannot
/// follow. No `Access-Control-Allow-*` headers: a cross-origin caller learns
/// nothing more than the browser lets it.
pub(crate) fn unauthenticated_json(reason: &str, sign_in_url: &str) -> Response {
    let body = serde_json::json!({
        "error": "unauthenticated",
        "error_description": reason,
        "sign_in_url": sign_in_url,
    });
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Postern realm=\"app\""));
    h.insert(VARY, HeaderValue::from_static("Accept, X-Requested-With"));
    no_store(&mut r);
    r
}

/// A redirect (302 for sign-in hops, 308 to HTTPS).
pub(crate) fn redirect(status: StatusCode, location: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    no_store(&mut r);
    r
}

fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
