//! Sign-in flows in progress: server-side state of one browser's way through the
//! sign-in pages. The STS owns the shape of `data` (JSON); the store only keeps it,
//! keyed by the digest of the flow's secret handle, until it expires.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// A stored sign-in flow.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct FlowRecord {
    /// Tenant the flow signs into.
    pub tenant_id: String,
    /// The STS's serialized state.
    pub data: String,
    /// When the flow began.
    pub created_at: UnixTime,
    /// When it stops being usable.
    pub expires_at: UnixTime,
}

impl Store {
    /// Stores a new flow.
    pub async fn create_flow(
        &self,
        id_digest: &[u8],
        tenant_id: &str,
        data: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signin_flows (id_digest, tenant_id, data, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_digest)
        .bind(tenant_id)
        .bind(data)
        .bind(now)
        .bind(expires_at)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// The flow with this digest in this tenant, if it has not expired.
    pub async fn flow(&self, id_digest: &[u8], tenant_id: &str, now: UnixTime) -> Result<FlowRecord, StoreError> {
        sqlx::query_as::<_, FlowRecord>(
            "SELECT tenant_id, data, created_at, expires_at FROM signin_flows \
             WHERE id_digest = $1 AND tenant_id = $2 AND expires_at > $3",
        )
        .bind(id_digest)
        .bind(tenant_id)
        .bind(now)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// Replaces a flow's state.
    pub async fn update_flow(&self, id_digest: &[u8], data: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE signin_flows SET data = $1 WHERE id_digest = $2")
            .bind(data)
            .bind(id_digest)
            .execute(&self.db)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Ends a flow.
    pub async fn delete_flow(&self, id_digest: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM signin_flows WHERE id_digest = $1")
            .bind(id_digest)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }
}
