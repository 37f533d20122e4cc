//! Administrative roles and their assignment to users.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// An administrative role within a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant; in the operator's tenant, also other tenants.
    GlobalAdministrator,
    /// Published apps, OAuth clients and connectors.
    ApplicationAdministrator,
    /// Domains' authentication modes and pass-through authentication agents.
    HybridIdentityAdministrator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [
        Role::GlobalAdministrator,
        Role::ApplicationAdministrator,
        Role::HybridIdentityAdministrator,
    ];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "global_administrator",
            Role::ApplicationAdministrator => "application_administrator",
            Role::HybridIdentityAdministrator => "hybrid_identity_administrator",
        }
    }

    /// Parses the stored and wire form.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role an administrator needs to register (or mint a registration token
    /// for) a component of `kind`: application administrator for connectors,
    /// hybrid identity administrator for agents (PTA-2); global administrators
    /// satisfy both.
    pub fn to_register(kind: postern_proto::ComponentKind) -> Role {
        match kind {
            postern_proto::ComponentKind::Connector => Role::ApplicationAdministrator,
            postern_proto::ComponentKind::Agent => Role::HybridIdentityAdministrator,
        }
    }

    /// Whether holding `self` grants what `required` grants ("or higher").
    pub fn satisfies(self, required: Role) -> bool {
        self == required || self == Role::GlobalAdministrator
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Store {
    /// Gives a user a role. Idempotent.
    pub async fn assign_role(&self, user_id: &str, role: Role, now: UnixTime) -> Result<(), StoreError> {
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM role_assignments WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role.as_str())
            .fetch_one(&self.pool)
            .await
            .db()?;
        if held == 0 {
            sqlx::query("INSERT INTO role_assignments (user_id, role, created_at) VALUES ($1, $2, $3)")
                .bind(user_id)
                .bind(role.as_str())
                .bind(now)
                .execute(&self.pool)
                .await
                .db()?;
        }
        Ok(())
    }

    /// Takes a role from a user. Refused (conflict) when it would leave the user's
    /// tenant without an enabled global administrator.
    pub async fn revoke_role(&self, user_id: &str, role: Role) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.db()?;
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
                .fetch_all(&self.pool)
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
        .fetch_one(&self.pool)
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
