//! What the front door's cookies hold: the app session (who signed in to which
//! app of which tenant, until when) and the sign-in flow in progress (`state`,
//! PKCE verifier, `nonce`, where to return). Both are sealed by
//! [`crate::cookies::CookieKeys`] for one purpose and one app.

use postern_store::App;
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::cookies::{COOKIE_PREFIX, CookieKeys};

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

/// Name of the app's session cookie.
pub(crate) fn session_cookie_name(app: &App) -> String {
    format!("{COOKIE_PREFIX}s_{}", tag(app))
}

/// Name of the app's sign-in flow cookie.
pub(crate) fn flow_cookie_name(app: &App) -> String {
    format!("{COOKIE_PREFIX}f_{}", tag(app))
}

fn session_purpose(app: &App) -> String {
    format!("postern-app-session:{}:{}", app.tenant_id, app.id)
}

fn flow_purpose(app: &App) -> String {
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
    let session: AppSession = serde_json::from_slice(&plain).map_err(|_| NoSession::Invalid)?;
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
    let flow: SignInFlow = serde_json::from_slice(&plain).ok()?;
    (flow.x > now.secs()).then_some(flow)
}
