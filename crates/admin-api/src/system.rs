//! Installation-wide operations, for operators.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use postern_sts::Sts;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::wire::SigningKeyRotated;

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
