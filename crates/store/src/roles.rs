//! Administrative roles and their assignment to users.

pub use postern_model::Role;
use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

impl Store {
    /// Gives a user a role. Idempotent.
    pub async fn assign_role(&self, user_id: &str, role: Role, now: UnixTime) -> Result<(), StoreError> {
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM role_assignments WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role.as_str())
            .fetch_one(&self.db)
            .await
            .db()?;
        if held == 0 {
            sqlx::query("INSERT INTO role_assignments (user_id, role, created_at) VALUES ($1, $2, $3)")
                .bind(user_id)
                .bind(role.as_str())
                .bind(now)
                .execute(&self.db)
                .await
                .db()?;
        }
        Ok(())
    }

    /// Takes a role from a user. Refused (conflict) when it would leave the user's
    /// tenant without an enabled global administrator.
    pub async fn revoke_role(&self, user_id: &str, role: Role) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let tenant_id: Option<String> = sqlx::query_scalar("SELECT tenant_id FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        let tenant_id = tenant_id.ok_or(StoreError::NotFound)?;
        lock_tenant(&mut tx, &tenant_id).await?;
        let done = sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role.as_str())
            .execute(&mut *tx)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        ensure_global_admin_remains(&mut tx, &tenant_id).await?;
        tx.commit().await.db()
    }

    /// The roles a user holds.
    pub async fn user_roles(&self, user_id: &str) -> Result<Vec<Role>, StoreError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT role FROM role_assignments WHERE user_id = $1 ORDER BY role")
                .bind(user_id)
                .fetch_all(&self.db)
                .await
                .db()?;
        names
            .iter()
            .map(|n| Role::parse(n).ok_or_else(|| StoreError::Corrupt(format!("role {n:?}"))))
            .collect()
    }

    /// How many enabled users of a tenant hold `role` (to refuse removing the last
    /// global administrator).
    pub async fn count_role_holders(&self, tenant_id: &str, role: Role) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM role_assignments r JOIN users u ON u.id = r.user_id \
             WHERE u.tenant_id = $1 AND r.role = $2 AND u.enabled = 1",
        )
        .bind(tenant_id)
        .bind(role.as_str())
        .fetch_one(&self.db)
        .await
        .db()
    }
}

/// Serializes changes that can affect a tenant's administrators: an update of the
/// tenant row takes its row lock (PostgreSQL) or the write lock (SQLite) until the
/// transaction ends, so two such changes cannot both see "another admin remains".
pub(crate) async fn lock_tenant(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant_id: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tenants SET name = name WHERE id = $1")
        .bind(tenant_id)
        .execute(&mut **tx)
        .await
        .db()?;
    Ok(())
}

/// Fails (conflict) when the tenant, as changed in `tx`, has no enabled global
/// administrator left: nobody could manage it any more.
pub(crate) async fn ensure_global_admin_remains(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant_id: &str,
) -> Result<(), StoreError> {
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM role_assignments r JOIN users u ON u.id = r.user_id \
         WHERE u.tenant_id = $1 AND r.role = $2 AND u.enabled = 1",
    )
    .bind(tenant_id)
    .bind(Role::GlobalAdministrator.as_str())
    .fetch_one(&mut **tx)
    .await
    .db()?;
    if left == 0 {
        return Err(StoreError::Conflict(
            "this would leave the tenant without an enabled global administrator; make another user global \
             administrator first"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_administrator_satisfies_every_role() {
        for r in Role::ALL {
            assert!(Role::GlobalAdministrator.satisfies(r));
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(!Role::ApplicationAdministrator.satisfies(Role::HybridIdentityAdministrator));
        assert!(!Role::HybridIdentityAdministrator.satisfies(Role::GlobalAdministrator));
        assert_eq!(Role::parse("root"), None);
    }
}
