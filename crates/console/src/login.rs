//! Signing in to the console: an authorization code flow with PKCE, state and
//! nonce against the tenant's issuer, with the built-in client
//! `postern-console`; the code is redeemed in-process at the STS's token
//! endpoint. The flow's secrets wait in a short-lived HttpOnly cookie
//! (`__Host-postern-console-login`, SameSite=Lax so it survives the redirect
//! back, 10 minutes) instead of on the server.
//!
//! When the session's token expires a GET goes through here again, silently
//! while the STS's own session is valid.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::BodyExt;
use serde::Deserialize;
use tower::ServiceExt;

use crate::Console;
use crate::html::{Notice, Page, esc};
use crate::session::{Session, cookie, set_cookie, unverified_claims};

/// How long a sign-in may take (the login cookie's lifetime).
const LOGIN_COOKIE_SECS: i64 = 600;

/// `GET /admin/login` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LoginParams {
    tenant: Option<String>,
    next: Option<String>,
}

/// A console path to return to after sign-in; anything else becomes `/admin`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/admin" || n.starts_with("/admin/") || n.starts_with("/admin?"))
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/admin".into(),
    }
}

fn organisation_form(error: Option<String>, tenant: &str, next: &str, status: StatusCode) -> Response {
    Page::new("Sign in to the admin console")
        .status(status)
        .notice(error.map(|e| Notice::Failed(e, vec![])))
        .push(format!(
            r#"<form id="login" method="get" action="/admin/login"><input type="hidden" name="next" value="{}"><fieldset>{}<p><button type="submit" id="login-continue">Continue</button></p></fieldset></form>"#,
            esc(next),
            crate::html::input("tenant", "Organisation (its short name, e.g. acme)", "text", tenant)
        ))
        .render(None)
}

/// `GET /admin/login?tenant=…`: asks for the organisation unless given, then
/// sends the browser to the tenant's `/authorize`.
pub(crate) async fn start(State(console): State<Arc<Console>>, Query(p): Query<LoginParams>) -> Response {
    let tenant = p.tenant.as_deref().map(str::trim).unwrap_or("").to_lowercase();
    let next = safe_next(p.next.as_deref());
    if tenant.is_empty() {
        return organisation_form(None, "", &next, StatusCode::OK);
    }
    if postern_sts::validate_tenant_name(&tenant).is_err() {
        return organisation_form(
            Some("That is not an organisation name: 3 to 32 lowercase letters, digits or dashes.".into()),
            &tenant,
            &next,
            StatusCode::BAD_REQUEST,
        );
    }
    match console.sts.ensure_console_client(&tenant).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            return organisation_form(
                Some(format!("There is no organisation named {tenant}.")),
                &tenant,
                &next,
                StatusCode::NOT_FOUND,
            );
        }
        Err(e) => {
            tracing::error!(error = %e, tenant = %tenant, "console: the console's client is not usable");
            return Page::new("The console is not available")
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .notice(Some(Notice::Failed(
                    "The console cannot sign you in to this organisation right now; the service log says why.".into(),
                    vec![],
                )))
                .render(None);
        }
    }
    let secrets = (
        postern_keyring::random_token(),
        postern_keyring::random_token(),
        postern_keyring::random_token(),
    );
    let (Ok(state), Ok(nonce), Ok(verifier)) = secrets else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let challenge = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.expose().as_bytes(),
    ));
    let value = format!(
        "{tenant}.{}.{}.{}.{}",
        state.expose(),
        nonce.expose(),
        verifier.expose(),
        URL_SAFE_NO_PAD.encode(next.as_bytes())
    );
    let mut url = format!("{}/authorize?", console.sts.issuer(&tenant));
    url.push_str(
        &url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", postern_sts::CONSOLE_CLIENT_ID)
            .append_pair("redirect_uri", &console.sts.console_redirect_uri())
            .append_pair("scope", &format!("openid {}", postern_sts::ADMIN_SCOPE))
            .append_pair("state", state.expose())
            .append_pair("nonce", nonce.expose())
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish(),
    );
    let mut r = Redirect::to(&url).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console.login_cookie(), &value, "Lax", LOGIN_COOKIE_SECS, console.secure),
    );
    crate::html::secure_headers(r)
}

/// `GET /admin/callback` parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the login cookie holds.
struct Pending {
    tenant: String,
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

fn pending(console: &Console, headers: &HeaderMap) -> Option<Pending> {
    let raw = cookie(headers, console.login_cookie())?;
    let mut parts = raw.split('.');
    let tenant = parts.next()?.to_owned();
    let state = parts.next()?.to_owned();
    let nonce = parts.next()?.to_owned();
    let verifier = parts.next()?.to_owned();
    let next = String::from_utf8(URL_SAFE_NO_PAD.decode(parts.next()?).ok()?).ok()?;
    postern_sts::validate_tenant_name(&tenant).ok()?;
    Some(Pending {
        tenant,
        state,
        nonce,
        verifier,
        next: safe_next(Some(&next)),
    })
}

fn sign_in_failed(console: &Console, tenant: Option<&str>, message: &str, status: StatusCode) -> Response {
    let href = Console::relogin_location(tenant, "/admin");
    let mut r = Page::new("Sign-in did not complete")
        .status(status)
        .notice(Some(Notice::Failed(message.into(), vec![])))
        .push(format!(
            r#"<p><a id="signin-again" href="{}">Start again</a></p>"#,
            esc(&href)
        ))
        .render(None);
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(console.login_cookie(), "", "Lax", 0, console.secure),
    );
    r
}

/// `GET /admin/callback`: checks the state, redeems the code with the PKCE
/// verifier, checks the ID token's nonce, and requires an administrative role
/// (`GET /api/v1/me`) before the session cookie is set.
pub(crate) async fn callback(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(p): Query<CallbackParams>,
) -> Response {
    let Some(pending) = pending(&console, &headers) else {
        return sign_in_failed(
            &console,
            None,
            "This sign-in was not started in this browser, or took longer than ten minutes.",
            StatusCode::BAD_REQUEST,
        );
    };
    let tenant = Some(pending.tenant.as_str());
    let state_ok = p
        .state
        .as_deref()
        .is_some_and(|s| postern_keyring::constant_time_eq(s.as_bytes(), pending.state.as_bytes()));
    if !state_ok {
        tracing::warn!(tenant = %pending.tenant, "console: sign-in callback with a wrong state refused");
        return sign_in_failed(
            &console,
            tenant,
            "This sign-in answer does not belong to the sign-in this browser started.",
            StatusCode::BAD_REQUEST,
        );
    }
    if let Some(error) = p.error.as_deref() {
        let why = p.error_description.as_deref().unwrap_or(error);
        return sign_in_failed(
            &console,
            tenant,
            &format!("The sign-in was refused: {why}"),
            StatusCode::FORBIDDEN,
        );
    }
    let Some(code) = p.code.as_deref() else {
        return sign_in_failed(&console, tenant, "The answer carries no code.", StatusCode::BAD_REQUEST);
    };
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &console.sts.console_redirect_uri())
        .append_pair("code_verifier", &pending.verifier)
        .append_pair("client_id", postern_sts::CONSOLE_CLIENT_ID)
        .finish();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("/t/{}/token", pending.tenant))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form));
    let Ok(request) = request else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let response = match console.sts_router.clone().oneshot(request).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = response.status();
    let body = match http_body_util::Limited::new(response.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        let why = json
            .get("error_description")
            .and_then(|v| v.as_str())
            .unwrap_or("the code was refused");
        tracing::warn!(tenant = %pending.tenant, %status, why, "console: code redemption failed");
        return sign_in_failed(
            &console,
            tenant,
            &format!("The sign-in could not be completed: {why}."),
            StatusCode::BAD_REQUEST,
        );
    }
    let (Some(token), Some(id_token)) = (
        json.get("access_token").and_then(|v| v.as_str()),
        json.get("id_token").and_then(|v| v.as_str()),
    ) else {
        return sign_in_failed(
            &console,
            tenant,
            "The STS answered without tokens.",
            StatusCode::BAD_GATEWAY,
        );
    };
    // The ID token came straight from the STS in-process; its nonce binds it
    // to this browser's sign-in.
    let nonce_ok = unverified_claims(id_token)
        .and_then(|c| c.get("nonce").and_then(|n| n.as_str()).map(str::to_owned))
        .is_some_and(|n| postern_keyring::constant_time_eq(n.as_bytes(), pending.nonce.as_bytes()));
    let exp = unverified_claims(token).and_then(|c| c.get("exp").and_then(|e| e.as_i64()));
    let (true, Some(exp)) = (nonce_ok, exp) else {
        tracing::warn!(tenant = %pending.tenant, "console: ID token nonce mismatch");
        return sign_in_failed(
            &console,
            tenant,
            "The tokens do not match this sign-in.",
            StatusCode::BAD_REQUEST,
        );
    };
    let session = Session {
        tenant: pending.tenant.clone(),
        token: token.to_owned(),
        exp,
    };
    if let Err(f) = console.get(&session, "/api/v1/me").await {
        let mut r = if f.status == StatusCode::FORBIDDEN {
            crate::no_role_page()
        } else {
            sign_in_failed(&console, tenant, &f.message, f.status)
        };
        r.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(console.login_cookie(), "", "Lax", 0, console.secure),
        );
        return r;
    }
    let mut r = Redirect::to(&pending.next).into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(console.login_cookie(), "", "Lax", 0, console.secure),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(
            console.session_cookie(),
            &format!("{}.{}", session.tenant, session.token),
            "Strict",
            exp - console.sts.now().secs(),
            console.secure,
        ),
    );
    crate::html::secure_headers(r)
}

/// `POST /admin/logout`: ends the console session (the guard already checked
/// origin, session and CSRF token). The STS session is the tenant's own:
/// a link offers to end it too.
pub(crate) async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let tenant = console.read_session(&headers).map(|s| s.tenant);
    let mut page = Page::new("Signed out of the console").push(r#"<p>Your console session has ended.</p>"#);
    if let Some(t) = &tenant {
        page = page.push(format!(
            r#"<p><a id="sts-logout" href="/t/{t}/logout">Also sign out of {t}</a> (every application using your sign-in) · <a href="/admin/login?tenant={t}">Sign in again</a></p>"#,
            t = esc(t)
        ));
    }
    let mut r = page.render(None);
    r.headers_mut().append(header::SET_COOKIE, console.clear_session());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_returned_to() {
        assert_eq!(safe_next(Some("/admin/apps")), "/admin/apps");
        assert_eq!(safe_next(Some("/admin?x=1")), "/admin?x=1");
        for bad in [
            "https://evil.test/admin",
            "//evil.test",
            "/admin//evil",
            "/adminx",
            "/t/acme",
            "/admin\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/admin", "{bad}");
        }
        assert_eq!(safe_next(None), "/admin");
    }
}
