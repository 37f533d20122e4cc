//! The sign-in log: one row per sign-in attempt, for admins and SIEMs (SEC-10).

pub use postern_model::SigninOutcome;
use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError, new_id};

/// One sign-in attempt.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SigninEvent {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// When.
    pub at: UnixTime,
    /// The sign-in name typed (normalized).
    pub username: String,
    /// The account, when it exists.
    pub user_id: Option<String>,
    /// The client the user was signing in to.
    pub client_id: Option<String>,
    /// Client IP address.
    pub ip: String,
    /// How it ended.
    #[sqlx(try_from = "String")]
    pub outcome: SigninOutcome,
    /// A short, secret-free explanation.
    pub detail: String,
}

impl Store {
    /// Appends a sign-in event; `id` is assigned here.
    pub async fn log_signin(&self, event: &SigninEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signin_log (id, tenant_id, at, username, user_id, client_id, ip, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(new_id())
        .bind(&event.tenant_id)
        .bind(event.at)
        .bind(&event.username)
        .bind(&event.user_id)
        .bind(&event.client_id)
        .bind(&event.ip)
        .bind(event.outcome.as_str())
        .bind(&event.detail)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// A tenant's sign-in events at or after `since`, oldest first, at most `limit`.
    pub async fn signins(&self, tenant_id: &str, since: UnixTime, limit: i64) -> Result<Vec<SigninEvent>, StoreError> {
        sqlx::query_as::<_, SigninEvent>(
            "SELECT id, tenant_id, at, username, user_id, client_id, ip, outcome, detail FROM signin_log \
             WHERE tenant_id = $1 AND at >= $2 ORDER BY at, id LIMIT $3",
        )
        .bind(tenant_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.db)
        .await
        .db()
    }
}
