//! One-time first-run setup codes.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

impl Store {
    /// Stores a new first-run setup code (its digest), valid until `expires_at`.
    pub async fn create_setup_code(
        &self,
        code_digest: &[u8],
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO setup_codes (code_digest, created_at, expires_at, used_at) VALUES ($1, $2, $3, NULL)")
            .bind(code_digest)
            .bind(now)
            .bind(expires_at)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Whether a setup code is unused and unexpired (checked before showing the
    /// setup form; the code is consumed when the tenant is created).
    pub async fn setup_code_valid(&self, code_digest: &[u8], now: UnixTime) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM setup_codes WHERE code_digest = $1 AND used_at IS NULL AND expires_at > $2",
        )
        .bind(code_digest)
        .bind(now)
        .fetch_one(&self.db)
        .await
        .db()?;
        Ok(n > 0)
    }
}
