//! The userinfo endpoint (OIDC Core §5.3): claims about the user a bearer access
//! token of this tenant was issued for. The token comes in the `Authorization`
//! header (RFC 6750 §2.1) or, on a `POST`, as `access_token` in a form body
//! (§2.2, pyoidc's default); never both.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_keyring::SecretString;
use postern_store::StoreError;
use serde_json::json;

use super::has_scope;
use crate::Sts;
use crate::error::{OAuthError, StsError};

/// Largest form body read at userinfo: an access token is about a kilobyte.
const MAX_FORM_BODY: usize = 16 * 1024;

/// The bearer token of a request (RFC 6750 §2.1).
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Whether a request's body is a form (`application/x-www-form-urlencoded`,
/// parameters allowed).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// The `access_token` of a form body (RFC 6750 §2.2): none, one, or a refusal
/// when the body is too large or names it more than once.
async fn form_token(body: Body) -> Result<Option<SecretString>, OAuthError> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BODY)
        .await
        .map_err(|_| OAuthError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: "invalid_request",
            description: format!("the request body is larger than {MAX_FORM_BODY} bytes"),
        })?;
    let mut tokens = url::form_urlencoded::parse(&bytes)
        .filter(|(k, _)| k == "access_token")
        .map(|(_, v)| SecretString::new(v.into_owned()));
    let token = tokens.next();
    if tokens.next().is_some() {
        return Err(OAuthError::invalid_request("access_token is given more than once"));
    }
    Ok(token.filter(|t| !t.expose().is_empty()))
}

/// The access token of a userinfo request, from its header or its form body.
async fn presented_token(request: Request) -> Result<SecretString, OAuthError> {
    let (parts, body) = request.into_parts();
    let in_header = bearer(&parts.headers).map(|t| SecretString::new(t.to_owned()));
    let in_body = if parts.method == Method::POST && is_form(&parts.headers) {
        form_token(body).await?
    } else {
        None
    };
    match (in_header, in_body) {
        (Some(_), Some(_)) => Err(OAuthError::invalid_request(
            "send the access token in one place: the Authorization header or the form body",
        )),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(OAuthError::invalid_token("a bearer access token is required")),
    }
}

/// `GET|POST /t/{tenant}/userinfo`.
pub(crate) async fn userinfo(State(sts): State<Arc<Sts>>, Path(tenant): Path<String>, request: Request) -> Response {
    let result = async {
        let tenant = sts.tenant_named(&tenant).await.map_err(|e| {
            if e.is_not_found() {
                OAuthError::invalid_token("unknown tenant")
            } else {
                e.into()
            }
        })?;
        let token = presented_token(request).await?;
        let claims = sts
            .verify_access_token_for_any_client(&tenant.name, token.expose())
            .await?
            .map_err(|e| OAuthError::invalid_token(e.to_string()))?;
        if !has_scope(&claims.scope, "openid") {
            return Err(OAuthError::insufficient_scope("the openid scope is required"));
        }
        let user = match sts.store.user(&tenant.id, &claims.sub).await {
            Ok(u) if u.enabled => u,
            Ok(_) | Err(StoreError::NotFound) => {
                return Err(OAuthError::invalid_token("the user can no longer sign in"));
            }
            Err(e) => return Err(StsError::from(e).into()),
        };
        let mut body = json!({ "sub": user.id });
        if has_scope(&claims.scope, "profile") {
            body["name"] = json!(user.display_name);
            body["preferred_username"] = json!(user.username);
        }
        if has_scope(&claims.scope, "email")
            && let Some(email) = &user.email
        {
            body["email"] = json!(email);
            body["email_verified"] = json!(false);
        }
        Ok(body)
    }
    .await;
    match result {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}
