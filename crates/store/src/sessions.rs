//! Browser sessions at the STS (single sign-on across a tenant's apps).

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError, new_id};

/// A signed-in browser.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// Public identifier (the `sid` claim); not the cookie value.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Signed-in user.
    pub user_id: String,
    /// When the user last entered their password.
    pub auth_time: UnixTime,
    /// When the user last completed MFA in this session.
    pub mfa_at: Option<UnixTime>,
    /// Authentication methods used, space-separated (`pwd`, `otp`, ...).
    pub amr: String,
    /// When the session began.
    pub created_at: UnixTime,
    /// When it ends at the latest.
    pub expires_at: UnixTime,
}

macro_rules! session_columns {
    () => {
        "id, tenant_id, user_id, auth_time, mfa_at, amr, created_at, expires_at"
    };
}

impl Store {
    /// Starts a session whose cookie value digests to `id_digest`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        id_digest: &[u8],
        tenant_id: &str,
        user_id: &str,
        auth_time: UnixTime,
        mfa_at: Option<UnixTime>,
        amr: &str,
        now: UnixTime,
        expires_at: UnixTime,
    ) -> Result<Session, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO sessions (id_digest, id, tenant_id, user_id, auth_time, mfa_at, amr, \
             created_at, expires_at, ended_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
        )
        .bind(id_digest)
        .bind(&id)
        .bind(tenant_id)
        .bind(user_id)
        .bind(auth_time)
        .bind(mfa_at)
        .bind(amr)
        .bind(now)
        .bind(expires_at)
        .execute(&self.db)
        .await
        .db()?;
        Ok(Session {
            id,
            tenant_id: tenant_id.to_owned(),
            user_id: user_id.to_owned(),
            auth_time,
            mfa_at,
            amr: amr.to_owned(),
            created_at: now,
            expires_at,
        })
    }

    /// The live session whose cookie value digests to `id_digest`, in this tenant.
    pub async fn session_by_cookie(
        &self,
        id_digest: &[u8],
        tenant_id: &str,
        now: UnixTime,
    ) -> Result<Session, StoreError> {
        sqlx::query_as::<_, Session>(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id_digest = $1 AND tenant_id = $2 \
             AND ended_at IS NULL AND expires_at > $3"
        ))
        .bind(id_digest)
        .bind(tenant_id)
        .bind(now)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The live session with this public ID.
    pub async fn session(&self, tenant_id: &str, id: &str, now: UnixTime) -> Result<Session, StoreError> {
        sqlx::query_as::<_, Session>(concat!(
            "SELECT ",
            session_columns!(),
            " FROM sessions WHERE id = $1 AND tenant_id = $2 \
             AND ended_at IS NULL AND expires_at > $3"
        ))
        .bind(id)
        .bind(tenant_id)
        .bind(now)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// Records a completed MFA step in a session.
    pub async fn mark_session_mfa(&self, id: &str, amr: &str, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET mfa_at = $1, amr = $2 WHERE id = $3")
            .bind(now)
            .bind(amr)
            .bind(id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Ends a session and revokes the refresh tokens issued in it.
    pub async fn end_session(&self, tenant_id: &str, id: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE sessions SET ended_at = $1 WHERE id = $2 AND tenant_id = $3 AND ended_at IS NULL")
            .bind(now)
            .bind(id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE session_id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    /// Ends every session of a user and revokes all their refresh tokens (after a
    /// password reset, MFA reset or disabling the account).
    pub async fn end_user_sessions(&self, tenant_id: &str, user_id: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE sessions SET ended_at = $1 WHERE user_id = $2 AND tenant_id = $3 AND ended_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(tenant_id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 \
             WHERE user_id = $2 AND tenant_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }
}
