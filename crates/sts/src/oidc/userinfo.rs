//! The userinfo endpoint (OIDC Core §5.3): claims about the user a bearer access
//! token of this tenant was issued for.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use postern_store::StoreError;
use serde_json::json;

use super::has_scope;
use crate::Sts;
use crate::error::{OAuthError, StsError};

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

/// `GET|POST /t/{tenant}/userinfo`.
pub(crate) async fn userinfo(State(sts): State<Arc<Sts>>, Path(tenant): Path<String>, headers: HeaderMap) -> Response {
    let result = async {
        let tenant = sts.tenant_named(&tenant).await.map_err(|e| {
            if e.is_not_found() {
                OAuthError::invalid_token("unknown tenant")
            } else {
                e.into()
            }
        })?;
        let token = bearer(&headers).ok_or_else(|| OAuthError::invalid_token("a bearer access token is required"))?;
        let claims = sts
            .verify_access_token_for_any_client(&tenant.name, token)
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
