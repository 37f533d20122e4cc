//! The administration REST API under /api/v1, authorized by STS-issued bearer tokens.

use std::sync::Arc;

use axum::Router;
use postern_sts::Sts;

/// The admin API's routes (absolute paths under `/api/v1`), with state applied.
pub fn router(sts: Arc<Sts>) -> Router {
    let _ = sts;
    Router::new()
}
