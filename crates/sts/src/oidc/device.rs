//! The device authorization endpoint (RFC 8628 §3.1–3.2): for command-line
//! sign-in on hosts without a browser (`postern admin login`, `postern connector
//! register`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use postern_store::StoreError;
use serde::Deserialize;
use serde_json::json;

use super::{GRANT_DEVICE, validate_scope};
use crate::Sts;
use crate::error::{OAuthError, StsError};

/// Characters of user codes: no vowels (no words), no look-alikes (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

#[derive(Deserialize)]
pub(crate) struct DeviceAuthorizationForm {
    client_id: Option<String>,
    scope: Option<String>,
}

/// A user code's canonical form: uppercase letters of the alphabet only.
pub(crate) fn normalize_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .take(16)
        .collect()
}

fn new_user_code() -> Result<String, StsError> {
    let bytes = postern_keyring::random_bytes::<8>()?;
    Ok(bytes
        .iter()
        .map(|b| USER_CODE_ALPHABET[usize::from(*b) % USER_CODE_ALPHABET.len()] as char)
        .collect())
}

/// `POST /t/{tenant}/device_authorization`.
pub(crate) async fn device_authorization(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    _headers: HeaderMap,
    Form(form): Form<DeviceAuthorizationForm>,
) -> Response {
    let result = async {
        let tenant = sts.tenant_named(&tenant).await.map_err(|e| {
            if e.is_not_found() {
                OAuthError::invalid_request("unknown tenant")
            } else {
                e.into()
            }
        })?;
        let client_id = form
            .client_id
            .ok_or_else(|| OAuthError::invalid_client("client_id is required"))?;
        let client = match sts.store.client(&tenant.id, &client_id).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => return Err(OAuthError::invalid_client("unknown client")),
            Err(e) => return Err(StsError::from(e).into()),
        };
        if client.is_confidential() {
            return Err(OAuthError::invalid_client("the device flow here is for public clients"));
        }
        if !client.allows_grant(GRANT_DEVICE) {
            return Err(OAuthError::bad_request(
                "unauthorized_client",
                "this client may not use the device flow",
            ));
        }
        let scope = validate_scope(form.scope.as_deref().unwrap_or("openid"), &client)?;
        let device_code = postern_keyring::random_token().map_err(StsError::from)?;
        let user_code = new_user_code()?;
        let now = sts.now();
        let ttl = sts.config.device_code_ttl;
        let interval = i64::try_from(sts.config.device_poll_interval.as_secs()).unwrap_or(5);
        sts.store
            .create_device_code(
                &postern_keyring::digest(device_code.expose()),
                &postern_keyring::digest(&user_code),
                &tenant.id,
                &client.client_id,
                &scope,
                interval,
                now,
                now + ttl,
            )
            .await
            .map_err(StsError::from)?;
        let display = format!("{}-{}", &user_code[..4], &user_code[4..]);
        let verification_uri = format!("{}/device", sts.issuer(&tenant.name));
        Ok(json!({
            "device_code": device_code.expose(),
            "user_code": display,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={display}"),
            "expires_in": ttl.as_secs(),
            "interval": interval,
        }))
    }
    .await;
    match result {
        Ok(body) => {
            let mut r = Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes() {
        let c = new_user_code().unwrap();
        assert_eq!(c.len(), 8);
        assert!(c.bytes().all(|b| USER_CODE_ALPHABET.contains(&b)));
        assert_eq!(normalize_user_code(" bcdf-ghjk "), "BCDFGHJK");
    }
}
