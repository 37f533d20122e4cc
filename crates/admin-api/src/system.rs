//! Installation-wide operations, for operators.

use crate::AdminState;
use axum::Json;
use axum::extract::State;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Body;
use crate::wire::{CookieKeyRotated, RotateCookieKey, SigningKeyRotated};

/// `POST /api/v1/system/signing-keys/rotate`: a new token-signing key now; the
/// old one stays published until the tokens it signed have expired.
pub(crate) async fn rotate_signing_key(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<SigningKeyRotated>, ApiError> {
    let kid = state.sts.rotate_signing_key().await?;
    caller
        .audit(&state, "signing_key.rotate", format!("signing_key:{kid}"), json!({}))
        .await?;
    Ok(Json(SigningKeyRotated { kid }))
}

/// `POST /api/v1/system/cookie-keys/rotate`: a new front-door cookie key now;
/// with `revoke_older`, every older key is deleted and every app session ends.
pub(crate) async fn rotate_cookie_key(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<RotateCookieKey>,
) -> Result<Json<CookieKeyRotated>, ApiError> {
    let front_door = state.front_door()?;
    let kid = front_door
        .rotate_cookie_key(req.revoke_older)
        .await
        .map_err(ApiError::Internal)?;
    caller
        .audit(
            &state,
            "cookie_key.rotate",
            format!("cookie_key:{kid}"),
            json!({ "revoke_older": req.revoke_older }),
        )
        .await?;
    Ok(Json(CookieKeyRotated {
        kid,
        revoked_older: req.revoke_older,
    }))
}
