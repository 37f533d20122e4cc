//! The device authorization endpoint (RFC 8628 §3.1–3.2): for command-line
//! sign-in on hosts without a browser (`postern admin login`) and for
//! registering a connector or agent (`postern connector register`). A
//! registration asks for one registration scope and names its component
//! (`component_name`); the endpoint records that and the address the request
//! came from, so the approval page can say what it approves (SEC-14).

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use postern_store::{NewDeviceCode, OAuthClient, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::GRANT_DEVICE;
use crate::Sts;
use crate::client_ip::ClientIp;
use crate::error::{OAuthError, StsError};
use crate::registration::registration_kind;

/// Characters of user codes: no vowels (no words), no look-alikes (RFC 8628 §6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Longest component name a registration may ask for.
pub(crate) const MAX_COMPONENT_NAME_LEN: usize = 64;

#[derive(Deserialize)]
pub(crate) struct DeviceAuthorizationForm {
    client_id: Option<String>,
    scope: Option<String>,
    /// The component a registration is for (registration scopes only).
    component_name: Option<String>,
}

/// Whether `name` may be shown on an approval page as a component's name: a
/// host name's characters (letters, digits, `.`, `-`, `_`), starting with a
/// letter or digit, at most [`MAX_COMPONENT_NAME_LEN`]. Nothing that could
/// pass for more of the page's sentence.
pub(crate) fn valid_component_name(name: &str) -> bool {
    (1..=MAX_COMPONENT_NAME_LEN).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The scope and component name to record for a request: a registration
/// (exactly one registration scope, from the command line, with a valid
/// component name) or anything else the client may ask for (without one).
fn requested_grant(
    form: &DeviceAuthorizationForm,
    client: &OAuthClient,
) -> Result<(String, Option<String>), OAuthError> {
    let requested = form.scope.as_deref().unwrap_or("openid");
    let Some(kind) = registration_kind(requested) else {
        let scope = super::validate_scope(requested, client)?;
        if form.component_name.is_some() {
            return Err(OAuthError::invalid_request(
                "component_name is only for connector and agent registrations",
            ));
        }
        return Ok((scope, None));
    };
    if !(client.builtin && client.client_id == crate::CLI_CLIENT_ID) {
        return Err(OAuthError::bad_request(
            "invalid_scope",
            "only the Postern command line may ask to register a component",
        ));
    }
    let name = form.component_name.as_deref().unwrap_or_default();
    if !valid_component_name(name) {
        return Err(OAuthError::invalid_request(format!(
            "component_name must name the {kind}: 1 to {MAX_COMPONENT_NAME_LEN} letters, digits, dots, \
             hyphens or underscores, starting with a letter or digit"
        )));
    }
    Ok((
        crate::registration::registration_scope(kind).to_owned(),
        Some(name.to_owned()),
    ))
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
    ip: Option<Extension<ClientIp>>,
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
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_client("client_id is required"))?;
        let client = match sts.store.client(&tenant.id, client_id).await {
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
        let (scope, component_name) = requested_grant(&form, &client)?;
        let requested_from = ip.map(|Extension(ip)| ip.to_string()).unwrap_or_default();
        let device_code = postern_keyring::random_token().map_err(StsError::from)?;
        let user_code = new_user_code()?;
        let now = sts.now();
        let ttl = sts.config.device_code_ttl;
        let interval = i64::try_from(sts.config.device_poll_interval.as_secs()).unwrap_or(5);
        sts.store
            .create_device_code(
                &NewDeviceCode {
                    device_code_digest: &postern_keyring::digest(device_code.expose()),
                    user_code_digest: &postern_keyring::digest(&user_code),
                    tenant_id: &tenant.id,
                    client_id: &client.client_id,
                    scope: &scope,
                    component_name: component_name.as_deref(),
                    requested_from: &requested_from,
                    interval_secs: interval,
                    expires_at: now + ttl,
                },
                now,
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

    #[test]
    fn component_names_are_host_names() {
        for ok in [
            "gw-1",
            "agent.corp.example",
            "DC01_pta",
            &"a".repeat(MAX_COMPONENT_NAME_LEN),
        ] {
            assert!(valid_component_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-gw",
            "gw 1 for organisation Other",
            "gw\u{202e}1",
            "gw<b>",
            "gw\n1",
            &"a".repeat(MAX_COMPONENT_NAME_LEN + 1),
        ] {
            assert!(!valid_component_name(bad), "{bad:?}");
        }
    }
}
