//! Discovery (OIDC Discovery 1.0 §4) and the JWKS (RFC 7517).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Sts;
use crate::error::StsError;

/// `GET /t/{tenant}/.well-known/openid-configuration`.
pub(crate) async fn configuration(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let iss = sts.issuer(&tenant.name);
    let doc = json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "jwks_uri": format!("{iss}/jwks.json"),
        "end_session_endpoint": format!("{iss}/logout"),
        "device_authorization_endpoint": format!("{iss}/device_authorization"),
        "revocation_endpoint": format!("{iss}/revoke"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [super::GRANT_CODE, super::GRANT_REFRESH, super::GRANT_DEVICE],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access", crate::ADMIN_SCOPE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "amr", "sid", "tid",
                             "name", "preferred_username", "email", "email_verified"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
        "frontchannel_logout_supported": false,
        "backchannel_logout_supported": false,
    });
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(doc)).into_response())
}

/// `GET /t/{tenant}/jwks.json`: the active signing key and retired keys whose tokens
/// may still be valid.
pub(crate) async fn jwks(State(sts): State<Arc<Sts>>, Path(tenant): Path<String>) -> Result<Response, StsError> {
    sts.tenant_named(&tenant).await?;
    let keys = sts.jwks().await?;
    Ok(([(header::CACHE_CONTROL, "public, max-age=300")], Json(keys)).into_response())
}
