//! Installation-wide operations, for operators.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use postern_sts::Sts;
use serde_json::json;

use crate::FrontDoorKeys;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Body;
use crate::wire::{CookieKeyRotated, RotateCookieKey, SigningKeyRotated};

/// `POST /api/v1/system/signing-keys/rotate`: a new token-signing key now; the
/// old one stays published until the tokens it signed have expired.
pub(crate) async fn rotate_signing_key(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
) -> Result<Json<SigningKeyRotated>, ApiError> {
    let kid = sts.rotate_signing_key().await?;
    caller
        .audit(&sts, "signing_key.rotate", format!("signing_key:{kid}"), json!({}))
        .await?;
    Ok(Json(SigningKeyRotated { kid }))
}

/// `POST /api/v1/system/cookie-keys/rotate`: a new front-door cookie key now;
/// with `revoke_older`, every older key is deleted and every app session ends.
pub(crate) async fn rotate_cookie_key(
    State(sts): State<Arc<Sts>>,
    front_door: Option<Extension<Arc<dyn FrontDoorKeys>>>,
    caller: Caller,
    Body(req): Body<RotateCookieKey>,
) -> Result<Json<CookieKeyRotated>, ApiError> {
    let Some(Extension(front_door)) = front_door else {
        return Err(ApiError::Unavailable(
            "the front door does not run in this process".into(),
        ));
    };
    let kid = front_door
        .rotate_cookie_key(req.revoke_older)
        .await
        .map_err(ApiError::Internal)?;
    caller
        .audit(
            &sts,
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
