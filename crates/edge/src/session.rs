//! What the front door's cookies hold: the app session (who signed in to which
//! app of which tenant, until when) and the sign-in flow in progress (`state`,
//! PKCE verifier, `nonce`, where to return). Both are sealed by
//! [`crate::cookies::CookieKeys`] for one purpose and one app.
//!
//! Where they live: an HTTPS app's cookies are `__Host-postern_…` with
//! `Secure`, `Path=/` and no `Domain`, so no other host (another tenant's
//! sibling subdomain included) can plant or overwrite them. `__Host-` demands
//! `Path=/`, so an app under a prefix receives the cookies of the other apps on
//! its host too: they carry the other app's name and do not open for this one
//! (the seal binds tenant and app), and every front-door cookie is stripped
//! before forwarding. (`__Secure-` would keep the prefix path but lets a sibling
//! host plant cookies with `Domain`.) Apps published over plain HTTP keep
//! `__postern_…` cookies scoped to their prefix.

use std::time::Duration;

use postern_store::App;
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::cookies::{COOKIE_PREFIX, CookieKeys, HOST_COOKIE_PREFIX, set_cookie};

/// A signed-in user of one app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppSession {
    /// Tenant ID.
    pub t: String,
    /// App ID.
    pub a: String,
    /// User ID.
    pub u: String,
    /// Sign-in name.
    pub n: String,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Issued at.
    pub i: i64,
    /// Expires at.
    pub x: i64,
    /// Whether the sign-in behind it had a second factor (`mfa` in the ID
    /// token's `amr`): a policy that demands one sends a session without it
    /// back to sign in (step-up).
    #[serde(default)]
    pub m: bool,
}

/// A sign-in in progress.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub(crate) struct SignInFlow {
    /// `state` sent to the STS.
    pub st: String,
    /// PKCE verifier.
    pub v: String,
    /// `nonce` sent to the STS.
    pub n: String,
    /// Where to go afterwards: a path (and query) on the app's host under its prefix.
    pub r: String,
    /// Expires at.
    pub x: i64,
}

/// Why a session cookie was not accepted (for logs and the JSON 401).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoSession {
    /// No cookie.
    Missing,
    /// It does not open (tampered, sealed for another app, key gone).
    Invalid,
    /// It expired.
    Expired,
}

impl NoSession {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NoSession::Missing => "no session",
            NoSession::Invalid => "invalid session cookie",
            NoSession::Expired => "session expired",
        }
    }
}

/// A short tag of the app for cookie names.
fn tag(app: &App) -> String {
    app.id.chars().filter(char::is_ascii_alphanumeric).take(12).collect()
}

/// One of an app's cookies: its name, `Path` and whether it is `Secure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppCookie {
    /// The cookie's name.
    pub name: String,
    /// Its `Path`.
    pub path: String,
    /// Whether it is `Secure` (HTTPS apps).
    pub secure: bool,
}

impl AppCookie {
    /// `Set-Cookie` with `value`, for `max_age` (a browser-session cookie when `None`).
    pub(crate) fn set(&self, value: &str, max_age: Option<Duration>) -> String {
        set_cookie(&self.name, value, &self.path, self.secure, max_age)
    }

    /// `Set-Cookie` that deletes it.
    pub(crate) fn clear(&self) -> String {
        self.set("", Some(Duration::ZERO))
    }
}

fn is_https(app: &App) -> bool {
    app.external_scheme == postern_store::ExternalScheme::Https
}

/// An app's cookie of `kind` (`s` session, `f` flow); `http_path` is its path
/// when the app is plain HTTP.
fn app_cookie(app: &App, kind: char, http_path: String) -> AppCookie {
    if is_https(app) {
        AppCookie {
            name: format!("{HOST_COOKIE_PREFIX}{kind}_{}", tag(app)),
            path: "/".to_owned(),
            secure: true,
        }
    } else {
        AppCookie {
            name: format!("{COOKIE_PREFIX}{kind}_{}", tag(app)),
            path: http_path,
            secure: false,
        }
    }
}

/// The app's session cookie. Over plain HTTP its path is the prefix without its
/// final `/`, so `/docs` gets the cookie as well as `/docs/…` (and `/docsx` does
/// not, RFC 6265 §5.1.4).
pub(crate) fn session_cookie(app: &App) -> AppCookie {
    let path = match app.path_prefix.trim_end_matches('/') {
        "" => "/".to_owned(),
        p => p.to_owned(),
    };
    app_cookie(app, 's', path)
}

/// The app's sign-in flow cookie. Over plain HTTP only the front door's own
/// endpoints see it.
pub(crate) fn flow_cookie(app: &App) -> AppCookie {
    app_cookie(app, 'f', format!("{}.postern", app.path_prefix))
}

/// When a new app session ends: after the front door's session lifetime, but
/// never after the STS sign-in session the ID token came from (APP-1 step 4:
/// the expiry is taken from what the STS granted). `sts_session_end` is that
/// session's end when the token names (`sid`) a live one; without it the app
/// session ends with the ID token itself (`token_exp`).
pub(crate) fn session_end(
    now: UnixTime,
    lifetime: Duration,
    sts_session_end: Option<UnixTime>,
    token_exp: UnixTime,
) -> UnixTime {
    (now + lifetime).min(sts_session_end.unwrap_or(token_exp))
}

pub(crate) fn session_purpose(app: &App) -> String {
    format!("postern-app-session:{}:{}", app.tenant_id, app.id)
}

pub(crate) fn flow_purpose(app: &App) -> String {
    format!("postern-app-flow:{}:{}", app.tenant_id, app.id)
}

/// Seals a session for `app`.
pub(crate) fn seal_session(keys: &CookieKeys, app: &App, session: &AppSession) -> Result<String, crate::EdgeError> {
    let json =
        zeroize::Zeroizing::new(serde_json::to_vec(session).map_err(|e| crate::EdgeError::Internal(e.to_string()))?);
    keys.seal(&session_purpose(app), &json)
}

/// Opens and checks a session cookie value for `app` at `now`.
pub(crate) fn open_session(
    keys: &CookieKeys,
    app: &App,
    sealed: Option<&str>,
    now: UnixTime,
) -> Result<AppSession, NoSession> {
    let sealed = sealed.ok_or(NoSession::Missing)?;
    let plain = keys.open(&session_purpose(app), sealed).ok_or(NoSession::Invalid)?;
    session_from_plain(&plain, app, now)
}

/// Reads an opened session cookie: it must name `app` and its tenant, and
/// still be valid at `now`.
pub(crate) fn session_from_plain(plain: &[u8], app: &App, now: UnixTime) -> Result<AppSession, NoSession> {
    let session: AppSession = serde_json::from_slice(plain).map_err(|_| NoSession::Invalid)?;
    if session.a != app.id || session.t != app.tenant_id {
        return Err(NoSession::Invalid);
    }
    if session.x <= now.secs() {
        return Err(NoSession::Expired);
    }
    Ok(session)
}

/// Seals a sign-in flow for `app`.
pub(crate) fn seal_flow(keys: &CookieKeys, app: &App, flow: &SignInFlow) -> Result<String, crate::EdgeError> {
    let json =
        zeroize::Zeroizing::new(serde_json::to_vec(flow).map_err(|e| crate::EdgeError::Internal(e.to_string()))?);
    keys.seal(&flow_purpose(app), &json)
}

/// Opens a sign-in flow cookie of `app` still valid at `now`.
pub(crate) fn open_flow(keys: &CookieKeys, app: &App, sealed: &str, now: UnixTime) -> Option<SignInFlow> {
    let plain = keys.open(&flow_purpose(app), sealed)?;
    flow_from_plain(&plain, now)
}

/// Reads an opened sign-in flow cookie still valid at `now`.
pub(crate) fn flow_from_plain(plain: &[u8], now: UnixTime) -> Option<SignInFlow> {
    let flow: SignInFlow = serde_json::from_slice(plain).ok()?;
    (flow.x > now.secs()).then_some(flow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(scheme: postern_store::ExternalScheme, prefix: &str) -> App {
        App {
            id: "0f2c-APP-9a7b-41d2".into(),
            tenant_id: "t".into(),
            name: "a".into(),
            external_scheme: scheme,
            external_host: "h".into(),
            path_prefix: prefix.into(),
            internal_url: "http://i/".into(),
            preauth: postern_store::Preauth::Sts,
            connector_group_id: "g".into(),
            backend_timeout_secs: 85,
            validate_backend_tls: true,
            translate_headers: true,
            translate_links: false,
            identity_headers: Vec::new(),
            limits: postern_store::AppLimits::default(),
            client_id: "c".into(),
            created_at: UnixTime::from_secs(0),
            updated_at: UnixTime::from_secs(0),
        }
    }

    #[test]
    fn https_apps_get_host_cookies_at_the_root() {
        let docs = app(postern_store::ExternalScheme::Https, "/docs/");
        let session = session_cookie(&docs);
        assert_eq!(session.name, "__Host-postern_s_0f2cAPP9a7b4");
        assert_eq!(
            session.set("v", Some(Duration::from_secs(60))),
            "__Host-postern_s_0f2cAPP9a7b4=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        let flow = flow_cookie(&docs);
        assert_eq!(
            (flow.name.as_str(), flow.path.as_str(), flow.secure),
            ("__Host-postern_f_0f2cAPP9a7b4", "/", true)
        );
        assert!(!flow.clear().contains("Domain"));
    }

    #[test]
    fn http_apps_keep_cookies_on_their_prefix() {
        let docs = app(postern_store::ExternalScheme::Http, "/docs/");
        assert_eq!(session_cookie(&docs).path, "/docs");
        assert_eq!(flow_cookie(&docs).path, "/docs/.postern");
        assert_eq!(session_cookie(&docs).name, "__postern_s_0f2cAPP9a7b4");
        assert!(!session_cookie(&docs).secure);
        let root = app(postern_store::ExternalScheme::Http, "/");
        assert_eq!(session_cookie(&root).path, "/");
        assert_eq!(flow_cookie(&root).path, "/.postern");
    }

    #[test]
    fn sessions_end_no_later_than_the_sts_session() {
        let now = UnixTime::from_secs(1_000_000);
        let eight_hours = Duration::from_secs(8 * 3600);
        let token_exp = now + Duration::from_secs(600);
        // The STS session outlives the front door's lifetime: the lifetime wins.
        let sts_end = now + Duration::from_secs(12 * 3600);
        assert_eq!(
            session_end(now, eight_hours, Some(sts_end), token_exp),
            now + eight_hours
        );
        // It ends sooner: the app session ends with it.
        let sts_end = now + Duration::from_secs(3600);
        assert_eq!(session_end(now, eight_hours, Some(sts_end), token_exp), sts_end);
        // No live STS session: only as long as the ID token.
        assert_eq!(session_end(now, eight_hours, None, token_exp), token_exp);
    }
}
