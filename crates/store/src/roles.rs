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

    /// Takes a role from a user.
    pub async fn revoke_role(&self, user_id: &str, role: Role) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM role_assignments WHERE user_id = $1 AND role = $2")
            .bind(user_id)
            .bind(role.as_str())
            .execute(&self.pool)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
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
