//! Tenants: the unit of isolation. Every other record belongs to exactly one.

use postern_time::UnixTime;

use crate::directory::{NewUser, User, insert_user};
use crate::error::SqlxResultExt;
use crate::{DbFlag, Role, Store, StoreError, flag, new_id};

/// A tenant: one organisation with its own users, apps, keys and on-prem parts.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Tenant {
    /// Internal identifier (UUID).
    pub id: String,
    /// Immutable short name used in URLs and as part of the STS issuer.
    pub name: String,
    /// Name shown on sign-in pages.
    pub display_name: String,
    /// Whether this is the operator's tenant, whose global administrators may manage
    /// other tenants.
    #[sqlx(try_from = "DbFlag")]
    pub is_system: bool,
    /// Failed sign-ins before an account is locked (smart lockout).
    pub lockout_threshold: i64,
    /// First lockout period in seconds; it doubles on each repeat.
    pub lockout_seconds: i64,
    /// Whether every user of the tenant must use MFA.
    #[sqlx(try_from = "DbFlag")]
    pub require_mfa: bool,
    /// When the tenant was created.
    pub created_at: UnixTime,
    /// The tenant's own limits at the front door, set by operators.
    #[sqlx(flatten)]
    pub limits: TenantLimits,
}

/// A tenant's own limits (SEC-9), set by operators; `None` means the
/// installation's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TenantLimits {
    /// Requests a second over all the tenant's apps (at least 1).
    pub rate_limit_per_sec: Option<i64>,
    /// Requests at once above that rate (at least 1).
    pub rate_limit_burst: Option<i64>,
    /// Sign-ins waiting on the tenant's pass-through authentication agents at
    /// once (at least 1).
    pub max_pending_signins: Option<i64>,
}

/// What is needed to create a tenant.
#[derive(Clone, Debug)]
pub struct NewTenant {
    /// Short name, validated by the caller (lowercase letters, digits, dashes).
    pub name: String,
    /// Name shown on sign-in pages.
    pub display_name: String,
    /// Whether this is the operator's tenant.
    pub is_system: bool,
    /// Initial settings.
    pub settings: TenantSettings,
}

/// Settings a tenant's global administrator may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantSettings {
    /// Failed sign-ins before an account is locked.
    pub lockout_threshold: i64,
    /// First lockout period in seconds.
    pub lockout_seconds: i64,
    /// Whether every user must use MFA.
    pub require_mfa: bool,
}

impl Default for TenantSettings {
    fn default() -> Self {
        Self {
            lockout_threshold: 10,
            lockout_seconds: 60,
            require_mfa: false,
        }
    }
}

macro_rules! tenant_columns {
    () => {
        "id, name, display_name, is_system, lockout_threshold, \
     lockout_seconds, require_mfa, created_at, rate_limit_per_sec, rate_limit_burst, max_pending_signins"
    };
}

impl Store {
    /// Creates a tenant, its first verified domain and its first global
    /// administrator in one transaction. With `setup_code`, also consumes that
    /// first-run code, so a code creates at most one tenant.
    pub async fn create_tenant_with_admin(
        &self,
        tenant: NewTenant,
        domain: &str,
        admin: NewUser,
        setup_code: Option<&[u8]>,
        now: UnixTime,
    ) -> Result<(Tenant, User), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        if let Some(code) = setup_code {
            let consumed = sqlx::query(
                "UPDATE setup_codes SET used_at = $1 \
                 WHERE code_digest = $2 AND used_at IS NULL AND expires_at > $1",
            )
            .bind(now)
            .bind(code)
            .execute(&mut *tx)
            .await
            .db()?;
            if consumed.rows_affected() != 1 {
                return Err(StoreError::NotFound);
            }
        }
        let id = new_id();
        if let Some(other) = crate::directory::overlapping_verified(&mut *tx, &id, domain).await? {
            return Err(StoreError::Conflict(crate::directory::overlap_message(domain, &other)));
        }
        sqlx::query(
            "INSERT INTO tenants (id, name, display_name, is_system, lockout_threshold, \
             lockout_seconds, require_mfa, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&tenant.name)
        .bind(&tenant.display_name)
        .bind(flag(tenant.is_system))
        .bind(tenant.settings.lockout_threshold)
        .bind(tenant.settings.lockout_seconds)
        .bind(flag(tenant.settings.require_mfa))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("tenant {} exists", tenant.name)),
            other => other,
        })?;
        sqlx::query(
            "INSERT INTO domains (tenant_id, name, verified, verification_token, auth_mode, created_at) \
             VALUES ($1, $2, 1, '', 'cloud', $3)",
        )
        .bind(&id)
        .bind(domain)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("domain {domain} belongs to another tenant")),
            other => other,
        })?;
        let user = insert_user(&mut tx, &id, admin, now).await?;
        sqlx::query("INSERT INTO role_assignments (user_id, role, created_at) VALUES ($1, $2, $3)")
            .bind(&user.id)
            .bind(Role::GlobalAdministrator.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .db()?;
        let tenant = sqlx::query_as::<_, Tenant>(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok((tenant, user))
    }

    /// Whether any tenant exists (false means the service awaits first-run setup).
    pub async fn has_tenants(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants")
            .fetch_one(&self.db)
            .await
            .db()?;
        Ok(n > 0)
    }

    /// The tenant with this short name (cached: see [`crate::cache`]).
    pub async fn tenant_by_name(&self, name: &str) -> Result<Tenant, StoreError> {
        let key = format!("name:{name}");
        let generation = self.routing_generation();
        if let Some(tenant) = self.tenants.get(&key, generation) {
            return Ok(tenant);
        }
        let tenant =
            sqlx::query_as::<_, Tenant>(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE name = $1"))
                .bind(name)
                .fetch_one(&self.db)
                .await
                .db()?;
        self.tenants.put(key, tenant.clone(), generation);
        Ok(tenant)
    }

    /// The tenant with this ID (cached: see [`crate::cache`]).
    pub async fn tenant(&self, id: &str) -> Result<Tenant, StoreError> {
        let key = format!("id:{id}");
        let generation = self.routing_generation();
        if let Some(tenant) = self.tenants.get(&key, generation) {
            return Ok(tenant);
        }
        let tenant = sqlx::query_as::<_, Tenant>(concat!("SELECT ", tenant_columns!(), " FROM tenants WHERE id = $1"))
            .bind(id)
            .fetch_one(&self.db)
            .await
            .db()?;
        self.tenants.put(key, tenant.clone(), generation);
        Ok(tenant)
    }

    /// All tenants, by name.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query_as::<_, Tenant>(concat!("SELECT ", tenant_columns!(), " FROM tenants ORDER BY name"))
            .fetch_all(&self.db)
            .await
            .db()
    }

    /// Changes a tenant's settings.
    pub async fn update_tenant_settings(&self, id: &str, settings: TenantSettings) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query(
            "UPDATE tenants SET lockout_threshold = $1, lockout_seconds = $2, require_mfa = $3 \
             WHERE id = $4",
        )
        .bind(settings.lockout_threshold)
        .bind(settings.lockout_seconds)
        .bind(flag(settings.require_mfa))
        .bind(id)
        .execute(&self.db)
        .await
        .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets a tenant's own limits at the front door (operators only). The
    /// routing generation moves, so the front door applies them at once.
    pub async fn update_tenant_limits(&self, id: &str, limits: TenantLimits) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query(
            "UPDATE tenants SET rate_limit_per_sec = $1, rate_limit_burst = $2, max_pending_signins = $3 \
             WHERE id = $4",
        )
        .bind(limits.rate_limit_per_sec)
        .bind(limits.rate_limit_burst)
        .bind(limits.max_pending_signins)
        .bind(id)
        .execute(&self.db)
        .await
        .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes a tenant and everything it owns, revoking its components'
    /// certificates first. The operator's tenant cannot be deleted.
    pub async fn delete_tenant(&self, id: &str, now: UnixTime) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        let is_system: Option<i64> = sqlx::query_scalar("SELECT is_system FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .db()?;
        if is_system != Some(0) {
            return Err(StoreError::NotFound);
        }
        Store::revoke_tenant_components(&mut tx, id, now).await?;
        sqlx::query("DELETE FROM tenants WHERE id = $1 AND is_system = 0")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        self.announce(crate::Revocation::TenantDeleted {
            tenant_id: id.to_owned(),
        });
        Ok(())
    }
}
