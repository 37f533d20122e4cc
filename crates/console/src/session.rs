//! The console session and its CSRF defence.
//!
//! The session is one cookie, `__Host-postern-console` (plain
//! `postern-console` when the service is reached over plain HTTP, where
//! browsers refuse `__Host-` cookies): `{tenant}.{access token}`, HttpOnly,
//! SameSite=Strict, Path=/, Secure over HTTPS, living as long as the token (10
//! minutes). The console keeps nothing on the server: the admin API verifies
//! the token on every call.
//!
//! Every POST passes [`guard`] before any handler: a request whose
//! `Sec-Fetch-Site` or `Origin` says it came from another site is refused; then
//! a valid session is required; then the form's `csrf` field must equal the
//! session's CSRF token, a SHA-256 of the access token (bound to the session,
//! unguessable without the HttpOnly cookie, the same on every instance).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;

use crate::Console;
use crate::html::{Notice, Page, esc};

/// Largest console form accepted (policies as JSON are the largest).
const MAX_FORM_BYTES: usize = 256 * 1024;
/// A token this close to its expiry counts as expired (the API call that
/// follows must not race it).
const EXPIRY_MARGIN_SECS: i64 = 5;

/// A signed-in console session, read from its cookie.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The tenant's short name.
    pub tenant: String,
    /// The admin access token.
    pub token: String,
    /// When the token expires (Unix seconds).
    pub exp: i64,
}

impl Session {
    /// The CSRF token of this session.
    pub(crate) fn csrf(&self) -> String {
        csrf_token(&self.token)
    }
}

/// The CSRF token bound to an access token.
pub(crate) fn csrf_token(access_token: &str) -> String {
    let mut input = b"postern-console-csrf\0".to_vec();
    input.extend_from_slice(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input))
}

/// The claims of a JWT's payload, unverified: only for what the console
/// itself received from the STS (the API verifies every token it is sent).
pub(crate) fn unverified_claims(jwt: &str) -> Option<serde_json::Value> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The value of cookie `name` in a request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    postern_proto::headers::request_cookie(headers, name).map(str::to_owned)
}

/// A `Set-Cookie` value: Path=/, HttpOnly, Secure over HTTPS.
pub(crate) fn set_cookie(name: &str, value: &str, same_site: &str, max_age: i64, secure: bool) -> HeaderValue {
    let mut c = format!(
        "{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={}",
        max_age.max(0)
    );
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("postern-console-invalid=; Max-Age=0"))
}

impl Console {
    /// The session cookie's name.
    pub(crate) fn session_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-postern-console"
        } else {
            "postern-console"
        }
    }

    /// The sign-in state cookie's name.
    pub(crate) fn login_cookie(&self) -> &'static str {
        if self.secure {
            "__Host-postern-console-login"
        } else {
            "postern-console-login"
        }
    }

    /// The session of a request, expired or not; `None` without a well-formed
    /// cookie.
    pub(crate) fn read_session(&self, headers: &HeaderMap) -> Option<Session> {
        let raw = cookie(headers, self.session_cookie())?;
        let (tenant, token) = raw.split_once('.')?;
        if postern_sts::validate_tenant_name(tenant).is_err() {
            return None;
        }
        let exp = unverified_claims(token)?.get("exp")?.as_i64()?;
        Some(Session {
            tenant: tenant.to_owned(),
            token: token.to_owned(),
            exp,
        })
    }

    /// Whether a session's token is still good for a call.
    pub(crate) fn is_live(&self, session: &Session) -> bool {
        session.exp - EXPIRY_MARGIN_SECS > self.sts.now().secs()
    }

    /// The cookie that clears the session.
    pub(crate) fn clear_session(&self) -> HeaderValue {
        set_cookie(self.session_cookie(), "", "Strict", 0, self.secure)
    }

    /// Where an expired session signs in again, coming back to `next`.
    pub(crate) fn relogin_location(tenant: Option<&str>, next: &str) -> String {
        let mut url = String::from("/admin/login?");
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        if let Some(t) = tenant {
            q.append_pair("tenant", t);
        }
        q.append_pair("next", next);
        url.push_str(&q.finish());
        url
    }

    /// The page a POST gets when its session is gone: nothing was changed.
    pub(crate) fn expired_page(&self, tenant: Option<&str>) -> Response {
        let href = Self::relogin_location(tenant, "/admin");
        // The expired cookie stays (it lapses by itself): it remembers the
        // tenant for the silent sign-in of the next page view.
        Page::new("Your session expired")
            .status(StatusCode::UNAUTHORIZED)
            .notice(Some(Notice::Failed(
                "Your session expired, so nothing was changed. Sign in again and repeat the change.".into(),
                vec![],
            )))
            .push(format!(
                r#"<p><a id="signin-again" href="{}">Sign in again</a></p>"#,
                esc(&href)
            ))
            .render(None)
    }
}

/// A GET handler's signed-in session: without one (or with an expired one)
/// the browser is sent to sign in again, coming back to the same page.
pub(crate) struct SignedIn(pub Session);

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Arc<Console>) -> Result<Self, Response> {
        let session = console.read_session(&parts.headers);
        match session {
            Some(s) if console.is_live(&s) => Ok(SignedIn(s)),
            other => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map_or("/admin".to_owned(), |p| p.as_str().to_owned());
                if parts.method == Method::GET {
                    Err(Redirect::to(&Console::relogin_location(
                        other.as_ref().map(|s| s.tenant.as_str()),
                        &next,
                    ))
                    .into_response())
                } else {
                    Err(console.expired_page(other.as_ref().map(|s| s.tenant.as_str())))
                }
            }
        }
    }
}

/// Whether fetch metadata or `Origin` say the request came from another site
/// (or another origin of this site: a published app's host is same-site).
/// Fetch metadata decides when a browser sends it: a same-origin form may
/// come with `Origin: null` (Chromium sends that under a `no-referrer`
/// policy), which says nothing about where it came from. Without it,
/// `Origin` must be this one; `null` is refused (a sandboxed frame's).
fn cross_origin(headers: &HeaderMap, own_origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(header::ORIGIN) {
        None => false,
        Some(origin) => origin.to_str().map_or(true, |o| o != own_origin),
    }
}

/// The form fields of a body.
pub(crate) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The POST guard: same origin, a live session, the session's CSRF token.
/// GETs pass untouched (they change nothing).
pub(crate) async fn guard(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let refused = |title: &str, message: &str| {
        Page::new(title)
            .status(StatusCode::FORBIDDEN)
            .notice(Some(Notice::Failed(message.into(), vec![])))
            .push(r#"<p><a href="/admin">Back to the console</a></p>"#)
            .render(None)
    };
    if cross_origin(request.headers(), &console.origin) {
        tracing::warn!(path = %request.uri().path(), "console: cross-site POST refused");
        return refused(
            "Request refused",
            "This request came from another site, so nothing was changed.",
        );
    }
    let session = console.read_session(request.headers());
    let session = match session {
        Some(s) if console.is_live(&s) => s,
        other => return console.expired_page(other.as_ref().map(|s| s.tenant.as_str())),
    };
    let (parts, body) = request.into_parts();
    let bytes = match http_body_util::Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Page::new("Form too large")
                .status(StatusCode::PAYLOAD_TOO_LARGE)
                .notice(Some(Notice::Failed(
                    "The form is too large; nothing was changed.".into(),
                    vec![],
                )))
                .render(None);
        }
    };
    let sent = form_fields(&bytes)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v);
    let expected = session.csrf();
    let good = sent
        .as_deref()
        .is_some_and(|s| postern_keyring::constant_time_eq(s.as_bytes(), expected.as_bytes()));
    if !good {
        tracing::warn!(path = %parts.uri.path(), "console: POST without the session's CSRF token refused");
        return refused(
            "Form out of date",
            "This form was not sent from your current console session (it may be from before your session was renewed), so nothing was changed. Reload the page and try again.",
        );
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_origin_requests_are_recognized() {
        let own = "https://login.acme.test";
        let mut h = HeaderMap::new();
        assert!(!cross_origin(&h, own), "no metadata: the CSRF token decides");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://login.acme.test"));
        assert!(!cross_origin(&h, own));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(cross_origin(&h, own), "a published app's host is same-site");
        h.remove("sec-fetch-site");
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.test"));
        assert!(cross_origin(&h, own));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(cross_origin(&h, own), "null without fetch metadata");
        // What Chromium sends for the console's own forms under a
        // no-referrer policy: fetch metadata decides.
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(!cross_origin(&h, own));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://login.acme.test"));
        assert!(
            cross_origin(&h, own),
            "fetch metadata wins over a forged-looking Origin"
        );
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session() {
        assert_eq!(csrf_token("a.b.c"), csrf_token("a.b.c"));
        assert_ne!(csrf_token("a.b.c"), csrf_token("a.b.d"));
        assert_eq!(csrf_token("x").len(), 43);
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-postern-console-login=a; __Host-postern-console=t.x"),
        );
        assert_eq!(cookie(&h, "__Host-postern-console").as_deref(), Some("t.x"));
        assert_eq!(cookie(&h, "__Host-postern-console-login").as_deref(), Some("a"));
        let v = set_cookie("__Host-postern-console", "v", "Strict", 60, true);
        assert_eq!(
            v.to_str().unwrap(),
            "__Host-postern-console=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
    }
}
