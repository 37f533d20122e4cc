//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0). With a valid
//! `id_token_hint` for the current session the session ends at once; otherwise the
//! user confirms on a page (so a cross-site link cannot sign anyone out). The
//! browser is sent back only to a post-logout URI registered for the client.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_store::{Session, StoreError, Tenant};
use serde::Deserialize;
use url::Url;

use crate::Sts;
use crate::cookies;
use crate::error::StsError;
use crate::pages::Page;
use crate::signin::see_other;

/// Parameters of a logout request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogoutParams {
    id_token_hint: Option<String>,
    post_logout_redirect_uri: Option<String>,
    state: Option<String>,
    client_id: Option<String>,
    #[serde(default)]
    csrf: String,
}

/// The confirmation token of a session: only the browser holding the session
/// cookie can compute it.
fn confirm_token(cookie_value: &str) -> String {
    URL_SAFE_NO_PAD.encode(postern_keyring::digest(&format!("logout:{cookie_value}")))
}

/// Where to send the browser afterwards, if the client registered that URI.
async fn return_url(
    sts: &Sts,
    tenant: &Tenant,
    client_id: Option<&str>,
    uri: Option<&str>,
    state: Option<&str>,
) -> Result<Option<String>, StsError> {
    let (Some(client_id), Some(uri)) = (client_id, uri) else {
        return Ok(None);
    };
    let client = match sts.store.client(&tenant.id, client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !client.post_logout_redirect_uris.iter().any(|u| u == uri) {
        tracing::warn!(tenant = %tenant.name, client = %client_id, "logout with an unregistered post_logout_redirect_uri ignored");
        return Ok(None);
    }
    let Ok(mut url) = Url::parse(uri) else {
        return Ok(None);
    };
    if let Some(s) = state {
        url.query_pairs_mut().append_pair("state", s);
    }
    Ok(Some(url.into()))
}

async fn finish(
    sts: &Sts,
    tenant: &Tenant,
    session: Option<&Session>,
    target: Option<String>,
) -> Result<Response, StsError> {
    if let Some(s) = session {
        sts.store.end_session(&tenant.id, &s.id, sts.now()).await?;
        tracing::info!(tenant = %tenant.name, session = %s.id, "signed out");
    }
    let clear = sts.clear_session_cookie(tenant);
    Ok(match target {
        Some(url) => see_other(&url, [clear]),
        None => crate::signin::with_cookies(
            Page::new("Signed out")
                .context(&tenant.display_name)
                .para("You have signed out. You can close this window.")
                .into_response(),
            [clear],
        ),
    })
}

/// `GET /t/{tenant}/logout`.
pub(crate) async fn logout(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Query(p): Query<LogoutParams>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let hint = match &p.id_token_hint {
        Some(t) => sts.verify_id_token_hint(&tenant.name, t).await?,
        None => None,
    };
    if p.id_token_hint.is_some() && hint.is_none() {
        return Ok(Page::error(
            StatusCode::BAD_REQUEST,
            "Sign-out request not valid",
            "The application sent an ID token this service did not issue.",
        )
        .context(&tenant.display_name)
        .into_response());
    }
    let client_id = hint.as_ref().map(|h| h.aud.clone()).or(p.client_id.clone());
    if let (Some(h), Some(given)) = (&hint, &p.client_id)
        && &h.aud != given
    {
        return Ok(Page::error(
            StatusCode::BAD_REQUEST,
            "Sign-out request not valid",
            "client_id does not match the ID token.",
        )
        .context(&tenant.display_name)
        .into_response());
    }
    let target = return_url(
        &sts,
        &tenant,
        client_id.as_deref(),
        p.post_logout_redirect_uri.as_deref(),
        p.state.as_deref(),
    )
    .await?;
    let session = sts.current_session(&tenant, &headers).await?;
    let Some(session) = session else {
        return finish(&sts, &tenant, None, target).await;
    };
    if hint.as_ref().and_then(|h| h.sid.as_deref()) == Some(session.id.as_str()) {
        return finish(&sts, &tenant, Some(&session), target).await;
    }
    let cookie = cookies::get(&headers, cookies::SSO).unwrap_or_default();
    let mut page = Page::new("Sign out?")
        .context(&tenant.display_name)
        .para(format!("Do you want to sign out of {}?", tenant.display_name))
        .form(format!("{}/logout", sts.issuer(&tenant.name)), "Sign out")
        .hidden("csrf", confirm_token(&cookie));
    for (name, value) in [
        ("post_logout_redirect_uri", &p.post_logout_redirect_uri),
        ("state", &p.state),
        ("client_id", &client_id),
    ] {
        if let Some(v) = value {
            page = page.hidden(name, v.clone());
        }
    }
    Ok(page.into_response())
}

/// `POST /t/{tenant}/logout`: the user confirmed.
pub(crate) async fn logout_confirm(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(p): Form<LogoutParams>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let session = sts.current_session(&tenant, &headers).await?;
    let target = return_url(
        &sts,
        &tenant,
        p.client_id.as_deref(),
        p.post_logout_redirect_uri.as_deref(),
        p.state.as_deref(),
    )
    .await?;
    let Some(session) = session else {
        return finish(&sts, &tenant, None, target).await;
    };
    let cookie = cookies::get(&headers, cookies::SSO).unwrap_or_default();
    if !postern_keyring::constant_time_eq(confirm_token(&cookie).as_bytes(), p.csrf.as_bytes()) {
        return Ok(Page::error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This sign-out form is not valid. Open the sign-out link again.",
        )
        .context(&tenant.display_name)
        .into_response());
    }
    finish(&sts, &tenant, Some(&session), target).await
}
