//! The token endpoint (RFC 6749 §3.2) for the authorization code (with PKCE),
//! refresh token (rotating, with reuse detection) and device code (RFC 8628)
//! grants; and token revocation (RFC 7009).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_keyring::SecretString;
use postern_store::{
    CodeRedemption, DeviceStatus, OAuthClient, RefreshLookup, RefreshRotation, StoreError, Tenant, User,
};
use serde::Deserialize;

use super::{GRANT_CODE, GRANT_DEVICE, GRANT_REFRESH, Grant, RefreshPlan, has_scope, pkce_matches};
use crate::Sts;
use crate::client_ip::ClientIp;
use crate::conditional::AccessRequest;
use crate::error::{OAuthError, StsError};

/// Form of a token or revocation request.
#[derive(Default, Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<SecretString>,
    scope: Option<String>,
    device_code: Option<SecretString>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    token: Option<SecretString>,
}

fn no_store(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Decodes a `application/x-www-form-urlencoded` component of Basic credentials.
fn form_decode(s: &str) -> Option<String> {
    let replaced = s.replace('+', " ");
    url::form_urlencoded::parse(format!("v={replaced}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

/// Authenticates the client: HTTP Basic or form credentials for confidential
/// clients, `client_id` alone for public ones.
async fn authenticate_client(
    sts: &Sts,
    tenant: &Tenant,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<OAuthClient, OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let (client_id, secret) = match basic {
        Some(b64) => {
            let decoded = STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let id = form_decode(id).ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            let secret =
                form_decode(secret).ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
            if form.client_id.as_deref().is_some_and(|f| f != id) {
                return Err(OAuthError::invalid_request(
                    "client_id differs from the authenticated client",
                ));
            }
            if form.client_secret.is_some() {
                return Err(OAuthError::invalid_request("use one client authentication method"));
            }
            (id, Some(SecretString::new(secret)))
        }
        None => {
            let id = form
                .client_id
                .clone()
                .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
            (id, form.client_secret.clone())
        }
    };
    let client = match sts.store.client(&tenant.id, &client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Err(OAuthError::invalid_client("unknown client")),
        Err(e) => return Err(StsError::from(e).into()),
    };
    match (&client.secret_digest, secret) {
        (Some(expected), Some(given))
            if postern_keyring::constant_time_eq(expected, &postern_keyring::digest(given.expose())) =>
        {
            Ok(client)
        }
        (Some(_), _) => Err(OAuthError::invalid_client("client authentication failed")),
        (None, None) => Ok(client),
        (None, Some(_)) => Err(OAuthError::invalid_client("this client is public and has no secret")),
    }
}

/// `POST /t/{tenant}/token`.
pub(crate) async fn token(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let result = async {
        let tenant = sts.tenant_named(&tenant).await.map_err(|e| {
            if e.is_not_found() {
                OAuthError::invalid_request("unknown tenant")
            } else {
                e.into()
            }
        })?;
        let client = authenticate_client(&sts, &tenant, &headers, &form).await?;
        let grant_type = form.grant_type.as_deref().unwrap_or("");
        if ![GRANT_CODE, GRANT_REFRESH, GRANT_DEVICE].contains(&grant_type) {
            return Err(OAuthError::bad_request(
                "unsupported_grant_type",
                "unsupported grant_type",
            ));
        }
        if !client.allows_grant(grant_type) {
            return Err(OAuthError::bad_request(
                "unauthorized_client",
                format!("this client may not use {grant_type}"),
            ));
        }
        match grant_type {
            GRANT_CODE => code_grant(&sts, &tenant, &client, &form).await,
            GRANT_REFRESH => refresh_grant(&sts, &tenant, &client, &form, super::authorize::client_ip(ip)).await,
            _ => device_grant(&sts, &tenant, &client, &form).await,
        }
    }
    .await;
    match result {
        Ok(tokens) => no_store(Json(tokens).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn enabled_user(sts: &Sts, tenant: &Tenant, user_id: &str) -> Result<User, OAuthError> {
    match sts.store.user(&tenant.id, user_id).await {
        Ok(u) if u.enabled => Ok(u),
        Ok(_) | Err(StoreError::NotFound) => Err(OAuthError::invalid_grant("the user can no longer sign in")),
        Err(e) => Err(StsError::from(e).into()),
    }
}

async fn code_grant(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    form: &TokenForm,
) -> Result<super::TokenResponse, OAuthError> {
    let (Some(code), Some(redirect_uri), Some(verifier)) = (&form.code, &form.redirect_uri, &form.code_verifier) else {
        return Err(OAuthError::invalid_request(
            "code, redirect_uri and code_verifier are required",
        ));
    };
    redeem_code(sts, tenant, client, code, redirect_uri, verifier).await
}

/// Spends an authorization code issued to `client`: single use (a replay
/// revokes what it gave), not expired, the same redirect URI, the PKCE
/// verifier, a user who can still sign in. Returns the code's grant and user.
pub(crate) async fn spend_code(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<(postern_store::AuthCode, User), OAuthError> {
    let now = sts.now();
    let code = match sts
        .store
        .redeem_auth_code(&tenant.id, &postern_keyring::digest(code), now)
        .await
        .map_err(StsError::from)?
    {
        CodeRedemption::Redeemed(c) => *c,
        CodeRedemption::Replayed => {
            tracing::warn!(tenant = %tenant.name, client = %client.client_id, "authorization code replayed; its tokens are revoked");
            return Err(OAuthError::invalid_grant("the code was already used"));
        }
        CodeRedemption::Unknown => return Err(OAuthError::invalid_grant("the code is not valid")),
    };
    if code.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("the code was issued to another client"));
    }
    if code.expires_at <= now {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    if code.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    if !pkce_matches(verifier, &code.code_challenge) {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match the code_challenge",
        ));
    }
    let user = enabled_user(sts, tenant, &code.user_id).await?;
    Ok((code, user))
}

/// The authorization code grant: spends the code ([`spend_code`]) and issues
/// the tokens.
pub(crate) async fn redeem_code(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<super::TokenResponse, OAuthError> {
    let (code, user) = spend_code(sts, tenant, client, code, redirect_uri, verifier).await?;
    let refresh = if Sts::wants_refresh(&code.scope, client) {
        RefreshPlan::NewFamily(code.family_id.clone())
    } else {
        RefreshPlan::None
    };
    Ok(sts
        .issue_tokens(
            Grant {
                tenant,
                client,
                user: &user,
                scope: &code.scope,
                auth_time: code.auth_time,
                amr: &code.amr,
                session_id: code.session_id.as_deref(),
                nonce: code.nonce.as_deref(),
            },
            refresh,
        )
        .await?)
}

/// The refresh grant (RFC 6749 §6). Every check (token state, user, scope)
/// comes before the token is spent, so a refused request leaves it usable and
/// the client's corrected retry is not mistaken for reuse; only then is it
/// rotated, atomically, and a token already used revokes its family.
async fn refresh_grant(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    form: &TokenForm,
    ip: ClientIp,
) -> Result<super::TokenResponse, OAuthError> {
    let Some(old) = &form.refresh_token else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    let now = sts.now();
    let old_digest = postern_keyring::digest(old.expose());
    let grant = match sts
        .store
        .refresh_token_for_use(&tenant.id, &client.client_id, &old_digest, now)
        .await
        .map_err(StsError::from)?
    {
        RefreshLookup::Usable(g) => g,
        RefreshLookup::Reused => return Err(refresh_reused(tenant, client)),
        RefreshLookup::Invalid => return Err(OAuthError::invalid_grant("the refresh token is not valid")),
    };
    let user = match enabled_user(sts, tenant, &grant.user_id).await {
        Ok(u) => u,
        Err(e) => {
            sts.store
                .revoke_refresh_family(&grant.family_id, now)
                .await
                .map_err(StsError::from)?;
            return Err(e);
        }
    };
    let scope = narrowed_scope(form.scope.as_deref(), &grant.scope)?;
    refresh_admitted(sts, tenant, client, &user, &grant.amr, ip).await?;
    let next = postern_keyring::random_token().map_err(StsError::from)?;
    let rotated = sts
        .store
        .rotate_refresh_token(
            &tenant.id,
            &client.client_id,
            &old_digest,
            &postern_keyring::digest(next.expose()),
            now + sts.config.refresh_token_ttl,
            now,
        )
        .await
        .map_err(StsError::from)?;
    match rotated {
        RefreshRotation::Rotated(_) => {}
        // Spent or revoked by a concurrent request since the lookup.
        RefreshRotation::Reused => return Err(refresh_reused(tenant, client)),
        RefreshRotation::Invalid => return Err(OAuthError::invalid_grant("the refresh token is not valid")),
    }
    Ok(sts
        .issue_tokens(
            Grant {
                tenant,
                client,
                user: &user,
                scope: &scope,
                auth_time: grant.auth_time,
                amr: &grant.amr,
                session_id: grant.session_id.as_deref(),
                nonce: None,
            },
            RefreshPlan::Rotated(next.expose().to_owned()),
        )
        .await?)
}

/// The tenant's policies for a refresh (client kind `refresh`): a block, or a
/// second factor the grant was made without, refuses it (the token stays
/// usable: nothing is spent yet).
async fn refresh_admitted(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    user: &User,
    amr: &str,
    ip: ClientIp,
) -> Result<(), OAuthError> {
    let verdict = sts
        .evaluate_access(AccessRequest {
            tenant,
            username: &user.username,
            user: Some(user),
            client_id: Some(&client.client_id),
            app: None,
            ip,
            client_kind: postern_policy::ClientKind::Refresh,
            risk: None,
        })
        .await?;
    let mfa = amr.split(' ').any(|m| m == "mfa");
    let outcome = Sts::outcome_of(&verdict, mfa);
    sts.log_decision(tenant, user, Some(&client.client_id), ip, outcome, "refresh", &verdict)
        .await?;
    if verdict.decision.blocked() {
        let reason = verdict.decision.reason().unwrap_or("blocked by an access policy");
        return Err(OAuthError::invalid_grant(format!("the refresh was {reason}")));
    }
    if verdict.decision.requires_mfa() && !mfa {
        return Err(OAuthError::invalid_grant(
            "an access policy requires multi-factor authentication: sign in again",
        ));
    }
    Ok(())
}

/// The refusal of a refresh token presented again (its family is revoked).
fn refresh_reused(tenant: &Tenant, client: &OAuthClient) -> OAuthError {
    tracing::warn!(tenant = %tenant.name, client = %client.client_id, "refresh token reused; its family is revoked");
    OAuthError::invalid_grant("the refresh token was already used")
}

/// The scope of a refreshed grant: the one asked for, which may only narrow
/// the original grant (RFC 6749 §6), or the original when none is asked for.
fn narrowed_scope(requested: Option<&str>, granted: &str) -> Result<String, OAuthError> {
    let Some(requested) = requested else {
        return Ok(granted.to_owned());
    };
    let asked: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
    if !asked.iter().all(|s| has_scope(granted, s)) {
        return Err(OAuthError::bad_request(
            "invalid_scope",
            "a refresh cannot widen the scope",
        ));
    }
    Ok(asked.join(" "))
}

async fn device_grant(
    sts: &Sts,
    tenant: &Tenant,
    client: &OAuthClient,
    form: &TokenForm,
) -> Result<super::TokenResponse, OAuthError> {
    let Some(device_code) = &form.device_code else {
        return Err(OAuthError::invalid_request("device_code is required"));
    };
    let digest = postern_keyring::digest(device_code.expose());
    let device = match sts.store.device_code(&tenant.id, &digest).await {
        Ok(d) if d.client_id == client.client_id => d,
        Ok(_) | Err(StoreError::NotFound) => {
            return Err(OAuthError::invalid_grant("the device code is not valid"));
        }
        Err(e) => return Err(StsError::from(e).into()),
    };
    let now = sts.now();
    if device.expires_at <= now {
        return Err(OAuthError::bad_request(
            "expired_token",
            "the device code has expired; start again",
        ));
    }
    match device.status {
        DeviceStatus::Denied => {
            return Err(OAuthError::bad_request("access_denied", "the user denied the request"));
        }
        DeviceStatus::Consumed => {
            return Err(OAuthError::invalid_grant("the device code was already used"));
        }
        DeviceStatus::Pending => {
            let too_soon = device
                .last_poll_at
                .is_some_and(|last| now.secs() - last.secs() < device.interval_secs);
            let interval = if too_soon {
                device.interval_secs + 5
            } else {
                device.interval_secs
            };
            sts.store
                .record_device_poll(&digest, interval, now)
                .await
                .map_err(StsError::from)?;
            return Err(if too_soon {
                OAuthError::bad_request("slow_down", format!("poll at most every {interval} seconds"))
            } else {
                OAuthError::bad_request("authorization_pending", "the user has not finished yet")
            });
        }
        DeviceStatus::Approved => {}
    }
    if !sts.store.consume_device_code(&digest).await.map_err(StsError::from)? {
        return Err(OAuthError::invalid_grant("the device code was already used"));
    }
    let user_id = device.user_id.clone().unwrap_or_default();
    let user = enabled_user(sts, tenant, &user_id).await?;
    if let Some(kind) = crate::registration::registration_kind(&device.scope) {
        let Some(component_name) = device.component_name.as_deref() else {
            return Err(OAuthError::invalid_grant("the registration names no component"));
        };
        let approved = crate::registration::ApprovedRegistration {
            tenant,
            client_id: &client.client_id,
            user: &user,
            kind,
            component_name,
            auth_time: device.auth_time.unwrap_or(now),
            amr: device.amr.as_deref().unwrap_or("pwd"),
        };
        return Ok(sts.issue_registration_token(&approved).await?);
    }
    let refresh = if Sts::wants_refresh(&device.scope, client) {
        RefreshPlan::NewFamily(uuid::Uuid::new_v4().to_string())
    } else {
        RefreshPlan::None
    };
    Ok(sts
        .issue_tokens(
            Grant {
                tenant,
                client,
                user: &user,
                scope: &device.scope,
                auth_time: device.auth_time.unwrap_or(now),
                amr: device.amr.as_deref().unwrap_or("pwd"),
                session_id: None,
                nonce: None,
            },
            refresh,
        )
        .await?)
}

/// `POST /t/{tenant}/revoke` (RFC 7009): revokes a refresh token and every token
/// rotated from the same sign-in. Access tokens are short-lived JWTs and simply
/// expire. Answers 200 for unknown tokens too, as the RFC requires.
pub(crate) async fn revoke(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let result = async {
        let tenant = sts.tenant_named(&tenant).await.map_err(|e| {
            if e.is_not_found() {
                OAuthError::invalid_request("unknown tenant")
            } else {
                e.into()
            }
        })?;
        let client = authenticate_client(&sts, &tenant, &headers, &form).await?;
        let Some(token) = &form.token else {
            return Err(OAuthError::invalid_request("token is required"));
        };
        sts.store
            .revoke_refresh_token(
                &tenant.id,
                &client.client_id,
                &postern_keyring::digest(token.expose()),
                sts.now(),
            )
            .await
            .map_err(StsError::from)?;
        Ok(())
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => e.into_response(),
    }
}
