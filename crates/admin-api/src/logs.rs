//! The sign-in and audit logs of a tenant, for administrators and SIEMs
//! (SEC-10), and the check of the installation-wide audit hash chain. (Both
//! logs are also pushed to a syslog receiver or webhook when the service's
//! `[export]` is configured: `postern-export`.)
//!
//! Both logs are read oldest first. To follow a log, pass the `at` of the last
//! sign-in event seen as `since` (events of that second come again: skip the IDs
//! already seen), or the `seq` of the last audit entry seen as `after`.

use crate::AdminState;
use axum::Json;
use axum::extract::State;
use postern_time::UnixTime;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Problems, Query, page_limit};
use crate::views;
use crate::wire::{AuditChainStatus, AuditQuery, AuditView, SigninQuery, SigninView};

/// `GET /api/v1/signins?since=&limit=`.
pub(crate) async fn signins(
    State(state): State<AdminState>,
    caller: Caller,
    Query(q): Query<SigninQuery>,
) -> Result<Json<Vec<SigninView>>, ApiError> {
    let mut problems = Problems::new();
    let since = q.since.unwrap_or(0);
    if since < 0 {
        problems.add("since must be a Unix time in seconds, 0 or more.");
    }
    let limit = page_limit(&mut problems, q.limit);
    problems.finish()?;
    let events = state
        .store
        .signins(&caller.tenant.id, UnixTime::from_secs(since), limit)
        .await?;
    Ok(Json(views::all(&events)))
}

/// `GET /api/v1/audit?after=&limit=`.
pub(crate) async fn audit(
    State(state): State<AdminState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let mut problems = Problems::new();
    let after = q.after.unwrap_or(0);
    if after < 0 {
        problems.add("after must be a sequence number, 0 or more.");
    }
    let limit = page_limit(&mut problems, q.limit);
    problems.finish()?;
    let entries = state.store.audit_entries(&caller.tenant.id, after, limit).await?;
    Ok(Json(views::all(&entries)))
}

/// `GET /api/v1/audit/verify`: recomputes the whole chain (every tenant's
/// entries, hence operators only) and names the first broken entry and what
/// is wrong with it.
pub(crate) async fn verify_audit(State(state): State<AdminState>) -> Result<Json<AuditChainStatus>, ApiError> {
    let v = state.store.verify_audit_chain().await?;
    Ok(Json(AuditChainStatus {
        entries: v.entries,
        intact: v.first_broken_seq.is_none(),
        first_broken_seq: v.first_broken_seq,
        problem: v.problem.map(|p| p.to_string()),
    }))
}
