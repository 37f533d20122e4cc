//! The tenant's directory: domains, users (with MFA state) and groups.

pub use postern_model::{DomainAuthMode, UserSource};
use postern_time::UnixTime;
use sqlx::{Any, FromRow as _, Row as _, Transaction};

use crate::error::SqlxResultExt;
use crate::lockout::{LocationClass, LockoutContext, lockout_state_of};
use crate::roles::{ensure_global_admin_remains, lock_tenant};
use crate::{DbFlag, Store, StoreError, flag, new_id};

/// A DNS domain a tenant uses for its usernames.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Domain {
    /// Owning tenant.
    pub tenant_id: String,
    /// Lowercase domain name.
    pub name: String,
    /// Whether ownership was verified; only verified domains can hold users.
    #[sqlx(try_from = "DbFlag")]
    pub verified: bool,
    /// Value to publish in a DNS TXT record to prove ownership.
    pub verification_token: String,
    /// How passwords of this domain's users are checked.
    #[sqlx(try_from = "String")]
    pub auth_mode: DomainAuthMode,
    /// When the domain was added.
    pub created_at: UnixTime,
}

/// The placeholder stable ID of a directory account named before its first
/// sign-in ([`Store::name_directory_user`]); the first sign-in replaces it.
pub fn pending_external_id(username: &str) -> String {
    format!("pending:{}", normalize_username(username))
}

/// A user account.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Stable identifier; the `sub` of tokens.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Sign-in name (UPN), lowercase.
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Email address, if known.
    pub email: Option<String>,
    /// Where the account lives.
    #[sqlx(try_from = "String")]
    pub source: UserSource,
    /// Stable ID in the on-prem directory, for directory accounts.
    pub external_id: Option<String>,
    /// Argon2id hash (PHC string), for cloud accounts with a password.
    pub password_hash: Option<String>,
    /// Disabled accounts cannot sign in.
    #[sqlx(try_from = "DbFlag")]
    pub enabled: bool,
    /// Whether this user must always complete MFA.
    #[sqlx(try_from = "DbFlag")]
    pub mfa_required: bool,
    /// The TOTP seed, sealed with the KEK (context `totp:<user id>`).
    pub totp_sealed: Option<Vec<u8>>,
    /// When TOTP enrolment completed.
    pub totp_enrolled_at: Option<UnixTime>,
    /// The last TOTP time step accepted, so a code is never accepted twice.
    pub totp_last_step: Option<i64>,
    /// When the account was created.
    pub created_at: UnixTime,
    /// When the account last changed.
    pub updated_at: UnixTime,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("username", &self.username)
            .field("source", &self.source)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// What is needed to create a user.
#[derive(Clone)]
pub struct NewUser {
    /// Identifier chosen by the caller (so sealed values can be bound to it).
    pub id: String,
    /// Sign-in name; stored normalized.
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Email address.
    pub email: Option<String>,
    /// Where the account lives.
    pub source: UserSource,
    /// Stable ID in the on-prem directory.
    pub external_id: Option<String>,
    /// Argon2id hash of the initial password.
    pub password_hash: Option<String>,
    /// Whether this user must always complete MFA.
    pub mfa_required: bool,
    /// An already enrolled TOTP seed, sealed.
    pub totp_sealed: Option<Vec<u8>>,
    /// Digests of recovery codes to store with the account.
    pub recovery_code_digests: Vec<Vec<u8>>,
}

impl NewUser {
    /// A cloud user with a fresh ID and nothing but a name and password hash.
    pub fn cloud(username: &str, display_name: &str, password_hash: Option<String>) -> Self {
        Self {
            id: new_id(),
            username: username.to_owned(),
            display_name: display_name.to_owned(),
            email: None,
            source: UserSource::Cloud,
            external_id: None,
            password_hash,
            mfa_required: false,
            totp_sealed: None,
            recovery_code_digests: Vec::new(),
        }
    }
}

/// Changes to a user's profile; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// New display name.
    pub display_name: Option<String>,
    /// New email (`Some(None)` clears it).
    pub email: Option<Option<String>>,
    /// Enable or disable the account.
    pub enabled: Option<bool>,
    /// Require MFA always.
    pub mfa_required: Option<bool>,
}

/// A group of users, used for app assignment and policy.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct Group {
    /// Identifier.
    pub id: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where the group lives.
    #[sqlx(try_from = "String")]
    pub source: UserSource,
    /// Stable ID in the on-prem directory, for directory groups.
    pub external_id: Option<String>,
    /// When the group was created.
    pub created_at: UnixTime,
}

/// The canonical form of a sign-in name: trimmed and lowercase.
pub fn normalize_username(name: &str) -> String {
    name.trim().to_lowercase()
}

macro_rules! user_columns {
    () => {
        "id, tenant_id, username, display_name, email, source, external_id, \
     password_hash, enabled, mfa_required, totp_sealed, totp_enrolled_at, totp_last_step, \
     created_at, updated_at"
    };
}
macro_rules! domain_columns {
    () => {
        "tenant_id, name, verified, verification_token, auth_mode, created_at"
    };
}
macro_rules! group_columns {
    () => {
        "id, tenant_id, name, description, source, external_id, created_at"
    };
}

/// Inserts a user (and its recovery codes) inside `tx`.
pub(crate) async fn insert_user(
    tx: &mut Transaction<'static, Any>,
    tenant_id: &str,
    user: NewUser,
    now: UnixTime,
) -> Result<User, StoreError> {
    let enrolled_at = user.totp_sealed.as_ref().map(|_| now);
    sqlx::query(
        "INSERT INTO users (id, tenant_id, username, display_name, email, source, external_id, \
         password_hash, enabled, mfa_required, totp_sealed, totp_enrolled_at, totp_last_step, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10, $11, NULL, $12, $12)",
    )
    .bind(&user.id)
    .bind(tenant_id)
    .bind(normalize_username(&user.username))
    .bind(&user.display_name)
    .bind(&user.email)
    .bind(user.source.as_str())
    .bind(&user.external_id)
    .bind(&user.password_hash)
    .bind(flag(user.mfa_required))
    .bind(&user.totp_sealed)
    .bind(enrolled_at)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict(format!("user {} exists", user.username)),
        other => other,
    })?;
    for digest in &user.recovery_code_digests {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_digest, used_at) VALUES ($1, $2, NULL)")
            .bind(&user.id)
            .bind(digest)
            .execute(&mut **tx)
            .await
            .db()?;
    }
    sqlx::query_as::<_, User>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(&user.id)
        .fetch_one(&mut **tx)
        .await
        .db()
}

fn not_found_if_none(rows: u64) -> Result<(), StoreError> {
    if rows == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

impl Store {
    // ---- domains -------------------------------------------------------------

    /// Adds an unverified domain to a tenant.
    pub async fn add_domain(
        &self,
        tenant_id: &str,
        name: &str,
        verification_token: &str,
        now: UnixTime,
    ) -> Result<Domain, StoreError> {
        let _changed = self.routing_change();
        let name = name.trim().to_lowercase();
        if let Some(other) = overlapping_verified(&self.db, tenant_id, &name).await? {
            return Err(StoreError::Conflict(overlap_message(&name, &other)));
        }
        sqlx::query(
            "INSERT INTO domains (tenant_id, name, verified, verification_token, auth_mode, created_at) \
             VALUES ($1, $2, 0, $3, 'cloud', $4)",
        )
        .bind(tenant_id)
        .bind(&name)
        .bind(verification_token)
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("{name} is already a domain of this tenant")),
            other => other,
        })?;
        self.domain(tenant_id, &name).await
    }

    /// One domain of a tenant.
    pub async fn domain(&self, tenant_id: &str, name: &str) -> Result<Domain, StoreError> {
        sqlx::query_as::<_, Domain>(concat!(
            "SELECT ",
            domain_columns!(),
            " FROM domains WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The domains of a tenant.
    pub async fn domains(&self, tenant_id: &str) -> Result<Vec<Domain>, StoreError> {
        sqlx::query_as::<_, Domain>(concat!(
            "SELECT ",
            domain_columns!(),
            " FROM domains WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Marks a domain verified. Fails with a conflict if another tenant has
    /// verified the same name, a domain above it or one below it: every host
    /// name lies under the verified domains of one tenant at most (SEC-12).
    pub async fn verify_domain(&self, tenant_id: &str, name: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        if let Some(other) = overlapping_verified(&mut *tx, tenant_id, name).await? {
            return Err(StoreError::Conflict(overlap_message(name, &other)));
        }
        let done = sqlx::query("UPDATE domains SET verified = 1 WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from_sqlx(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("domain {name} is verified by another tenant")),
                other => other,
            })?;
        not_found_if_none(done.rows_affected())?;
        tx.commit().await.db()
    }

    /// Sets how passwords of a domain's users are checked.
    pub async fn set_domain_auth_mode(
        &self,
        tenant_id: &str,
        name: &str,
        mode: DomainAuthMode,
    ) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query("UPDATE domains SET auth_mode = $1 WHERE tenant_id = $2 AND name = $3")
            .bind(mode.as_str())
            .bind(tenant_id)
            .bind(name)
            .execute(&self.db)
            .await
            .db()?;
        not_found_if_none(done.rows_affected())
    }

    /// Removes a domain. Refused while users of the tenant still sign in with it.
    pub async fn remove_domain(&self, tenant_id: &str, name: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE tenant_id = $1 AND username LIKE $2")
            .bind(tenant_id)
            .bind(format!("%@{}", name.replace(['%', '_'], "")))
            .fetch_one(&self.db)
            .await
            .db()?;
        if users > 0 {
            return Err(StoreError::Conflict(format!("{users} users still use domain {name}")));
        }
        let apps: Vec<(String, String)> = sqlx::query_as("SELECT name, external_host FROM apps WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_all(&self.db)
            .await
            .db()?;
        let under: Vec<String> = apps
            .into_iter()
            .filter(|(_, host)| {
                let host = crate::hosts::host_name(host);
                host == name || host.ends_with(&format!(".{name}"))
            })
            .map(|(app, _)| app)
            .collect();
        if !under.is_empty() {
            return Err(StoreError::Conflict(format!(
                "apps are published under domain {name}: {}",
                under.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM domains WHERE tenant_id = $1 AND name = $2")
            .bind(tenant_id)
            .bind(name)
            .execute(&self.db)
            .await
            .db()?;
        not_found_if_none(done.rows_affected())
    }

    // ---- users ---------------------------------------------------------------

    /// Creates a user in a tenant.
    pub async fn create_user(&self, tenant_id: &str, user: NewUser, now: UnixTime) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = insert_user(&mut tx, tenant_id, user, now).await?;
        tx.commit().await.db()?;
        Ok(user)
    }

    /// The user with this ID in this tenant.
    pub async fn user(&self, tenant_id: &str, id: &str) -> Result<User, StoreError> {
        sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The user with this sign-in name in this tenant.
    pub async fn user_by_username(&self, tenant_id: &str, username: &str) -> Result<User, StoreError> {
        sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 AND username = $2"
        ))
        .bind(tenant_id)
        .bind(normalize_username(username))
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The user with this sign-in name in this tenant, if any, and the smart-lockout
    /// context of the name (as given: the account smart lockout counts) from
    /// `network`, read in one statement: what every password check reads before
    /// it starts, as [`Store::user_by_username`] and [`Store::lockout_context`]
    /// would in two.
    pub async fn user_with_lockout_context(
        &self,
        tenant_id: &str,
        username: &str,
        network: &str,
    ) -> Result<(Option<User>, LockoutContext), StoreError> {
        // One row per membership of the user (at least one): the user's columns
        // and the counters repeat, a directory group's name differs. Every join
        // is on a key or an index, and the anchor gives a row without a user.
        let rows = sqlx::query(concat!(
            "SELECT u.*, f.last_seen_at AS network_seen, \
             lf.failures AS familiar_failures, lf.lockout_count AS familiar_lockout_count, \
             lf.locked_until AS familiar_locked_until, lf.last_failure_at AS familiar_last_failure_at, \
             lu.failures AS unfamiliar_failures, lu.lockout_count AS unfamiliar_lockout_count, \
             lu.locked_until AS unfamiliar_locked_until, lu.last_failure_at AS unfamiliar_last_failure_at, \
             g.name AS directory_group \
             FROM (SELECT 1 AS anchor) a \
             LEFT JOIN (SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 AND username = $2) u ON 1 = 1 \
             LEFT JOIN familiar_networks f ON f.user_id = u.id AND f.network = $3 \
             LEFT JOIN lockouts lf ON lf.tenant_id = $1 AND lf.account = $4 AND lf.location = 'familiar' \
             LEFT JOIN lockouts lu ON lu.tenant_id = $1 AND lu.account = $4 AND lu.location = 'unfamiliar' \
             LEFT JOIN group_members m ON m.user_id = u.id \
             LEFT JOIN groups g ON g.id = m.group_id AND g.tenant_id = $1 AND g.source = 'directory'"
        ))
        .bind(tenant_id)
        .bind(normalize_username(username))
        .bind(network)
        .bind(username)
        .fetch_all(&self.db)
        .await
        .db()?;
        let Some(first) = rows.first() else {
            return Err(StoreError::Corrupt("the sign-in read returned no row".into()));
        };
        let user_id: Option<String> = first.try_get("id").db()?;
        let user = match user_id {
            Some(_) => Some(User::from_row(first).db()?),
            None => None,
        };
        let mut context = LockoutContext {
            network_seen: first
                .try_get::<Option<i64>, _>("network_seen")
                .db()?
                .map(UnixTime::from_secs),
            familiar: lockout_state_of(first, LocationClass::Familiar)?,
            unfamiliar: lockout_state_of(first, LocationClass::Unfamiliar)?,
            directory_groups: Vec::new(),
        };
        for row in &rows {
            if let Some(group) = row.try_get::<Option<String>, _>("directory_group").db()? {
                context.directory_groups.push(group);
            }
        }
        Ok((user, context))
    }

    /// The users of a tenant, by name.
    pub async fn users(&self, tenant_id: &str) -> Result<Vec<User>, StoreError> {
        sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 ORDER BY username"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Applies a profile update. Disabling the tenant's last enabled global
    /// administrator is refused (conflict).
    pub async fn update_user(
        &self,
        tenant_id: &str,
        id: &str,
        update: &UserUpdate,
        now: UnixTime,
    ) -> Result<User, StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant_id).await?;
        let current = sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .db()?
        .ok_or(StoreError::NotFound)?;
        let display_name = update.display_name.clone().unwrap_or(current.display_name);
        let email = update.email.clone().unwrap_or(current.email);
        let enabled = update.enabled.unwrap_or(current.enabled);
        let mfa_required = update.mfa_required.unwrap_or(current.mfa_required);
        sqlx::query(
            "UPDATE users SET display_name = $1, email = $2, enabled = $3, mfa_required = $4, \
             updated_at = $5 WHERE tenant_id = $6 AND id = $7",
        )
        .bind(display_name)
        .bind(email)
        .bind(flag(enabled))
        .bind(flag(mfa_required))
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await
        .db()?;
        if current.enabled && !enabled {
            ensure_global_admin_remains(&mut tx, tenant_id).await?;
        }
        tx.commit().await.db()?;
        self.user(tenant_id, id).await
    }

    /// Replaces a cloud user's password hash.
    pub async fn set_password_hash(
        &self,
        tenant_id: &str,
        id: &str,
        hash: &str,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND source = 'cloud'",
        )
        .bind(hash)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&self.db)
        .await
        .db()?;
        not_found_if_none(done.rows_affected())
    }

    /// Replaces a cloud user's password hash `old` by `new` (the same password
    /// with other parameters), unless it changed meanwhile: a reset is never
    /// undone. Returns whether it was replaced.
    pub async fn replace_password_hash(
        &self,
        tenant_id: &str,
        id: &str,
        old: &str,
        new: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND source = 'cloud' AND password_hash = $5",
        )
        .bind(new)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .bind(old)
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a user and everything that hangs off it (sessions, tokens, roles,
    /// app assignments).
    /// Deleting the tenant's last enabled global administrator is refused
    /// (conflict).
    pub async fn delete_user(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        lock_tenant(&mut tx, tenant_id).await?;
        let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        not_found_if_none(done.rows_affected())?;
        ensure_global_admin_remains(&mut tx, tenant_id).await?;
        // Its app assignments too (they name it by ID, without a foreign key).
        sqlx::query(
            "DELETE FROM app_assignments WHERE principal_kind = 'user' AND principal_id = $1 \
             AND app_id IN (SELECT id FROM apps WHERE tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    // ---- MFA -----------------------------------------------------------------

    /// Completes TOTP enrolment: stores the sealed seed, the step just used and the
    /// recovery codes (replacing any earlier ones).
    pub async fn enroll_totp(
        &self,
        user_id: &str,
        sealed_seed: &[u8],
        used_step: i64,
        recovery_code_digests: &[Vec<u8>],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET totp_sealed = $1, totp_enrolled_at = $2, totp_last_step = $3, \
             updated_at = $2 WHERE id = $4",
        )
        .bind(sealed_seed)
        .bind(now)
        .bind(used_step)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .db()?;
        not_found_if_none(done.rows_affected())?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .db()?;
        for digest in recovery_code_digests {
            sqlx::query("INSERT INTO recovery_codes (user_id, code_digest, used_at) VALUES ($1, $2, NULL)")
                .bind(user_id)
                .bind(digest)
                .execute(&mut *tx)
                .await
                .db()?;
        }
        tx.commit().await.db()
    }

    /// Records that TOTP step `step` was used, if it is later than the last one.
    /// Returns false when the step (or a later one) was already used: a replay.
    pub async fn advance_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 \
             WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() == 1)
    }

    /// Uses a recovery code once. Returns false if it is unknown or already used.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        code_digest: &[u8],
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 \
             WHERE user_id = $2 AND code_digest = $3 AND used_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .bind(code_digest)
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() == 1)
    }

    /// How many unused recovery codes a user has left.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .fetch_one(&self.db)
            .await
            .db()
    }

    /// Removes a user's TOTP and recovery codes, so they enrol again on next need.
    pub async fn reset_mfa(&self, tenant_id: &str, user_id: &str, now: UnixTime) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE users SET totp_sealed = NULL, totp_enrolled_at = NULL, totp_last_step = NULL, \
             updated_at = $1 WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await
        .db()?;
        not_found_if_none(done.rows_affected())?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()
    }

    // ---- directory accounts (pass-through authentication) ---------------------

    /// Names a directory account before its first sign-in, so apps and groups
    /// can be assigned to it now. Its stable directory ID is not known yet: the
    /// account holds a placeholder ([`pending_external_id`]) until the first
    /// pass-through sign-in finds it by name ([`Store::upsert_directory_user`])
    /// and records the real one, keeping the account's ID and assignments.
    /// A name already taken, by any account, is a conflict.
    pub async fn name_directory_user(
        &self,
        tenant_id: &str,
        username: &str,
        display_name: &str,
        email: Option<&str>,
        mfa_required: bool,
        now: UnixTime,
    ) -> Result<User, StoreError> {
        let username = normalize_username(username);
        let mut new = NewUser::cloud(&username, display_name, None);
        new.source = UserSource::Directory;
        new.external_id = Some(pending_external_id(&username));
        new.email = email.map(str::to_owned);
        new.mfa_required = mfa_required;
        self.create_user(tenant_id, new, now).await
    }

    /// Makes sure a directory group `name` exists before any member signs in,
    /// so it can be assigned now; a pass-through sign-in whose agent reports a
    /// group of exactly this name makes the user a member
    /// ([`Store::set_directory_groups`]). Answers the group and whether it was
    /// made now. A cloud group of the same name is a conflict: names are
    /// unique within a tenant, and a cloud group never stands in for a
    /// directory one.
    pub async fn ensure_directory_group(
        &self,
        tenant_id: &str,
        name: &str,
        description: &str,
        now: UnixTime,
    ) -> Result<(Group, bool), StoreError> {
        if let Some(g) = self.directory_group_named(tenant_id, name).await? {
            return Ok((g, false));
        }
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, description, source, external_id, created_at) \
             VALUES ($1, $2, $3, $4, 'directory', NULL, $5)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(StoreError::from_sqlx);
        match inserted {
            Ok(_) => Ok((self.group(tenant_id, &id).await?, true)),
            // Made at the same moment, by a sign-in or another administrator.
            Err(StoreError::Conflict(_)) => match self.directory_group_named(tenant_id, name).await? {
                Some(g) => Ok((g, false)),
                None => Err(StoreError::Conflict(format!("group {name} exists"))),
            },
            Err(e) => Err(e),
        }
    }

    /// The directory group `name`, if there is one; a conflict if the name is
    /// a cloud group's.
    async fn directory_group_named(&self, tenant_id: &str, name: &str) -> Result<Option<Group>, StoreError> {
        let existing = sqlx::query_as::<_, Group>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(tenant_id)
        .bind(name)
        .fetch_optional(&self.db)
        .await
        .db()?;
        match existing {
            Some(g) if g.source == UserSource::Cloud => Err(StoreError::Conflict(format!(
                "{name} is a cloud group; a directory group cannot have the same name"
            ))),
            other => Ok(other),
        }
    }

    /// Creates or updates a directory account after a pass-through sign-in: found
    /// by its stable directory ID (so a rename in the directory follows), else by
    /// sign-in name among directory accounts. A cloud account with the same name
    /// is never taken over (conflict).
    pub async fn upsert_directory_user(
        &self,
        tenant_id: &str,
        external_id: &str,
        username: &str,
        display_name: &str,
        email: Option<&str>,
        now: UnixTime,
    ) -> Result<User, StoreError> {
        let username = normalize_username(username);
        let by_external = sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE tenant_id = $1 AND source = 'directory' AND external_id = $2"
        ))
        .bind(tenant_id)
        .bind(external_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        let existing = match by_external {
            Some(u) => Some(u),
            None => match self.user_by_username(tenant_id, &username).await {
                Ok(u) if u.source == UserSource::Directory => Some(u),
                Ok(_) => {
                    return Err(StoreError::Conflict(format!(
                        "{username} is a cloud account; a directory account cannot take it over"
                    )));
                }
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            },
        };
        match existing {
            Some(u)
                if u.username == username
                    && u.display_name == display_name
                    && u.email.as_deref() == email
                    && u.external_id.as_deref() == Some(external_id) =>
            {
                // Nothing changed: the common case of a returning user.
                Ok(u)
            }
            Some(u) => {
                sqlx::query(
                    "UPDATE users SET username = $1, display_name = $2, email = $3, external_id = $4, updated_at = $5 \
                     WHERE tenant_id = $6 AND id = $7",
                )
                .bind(&username)
                .bind(display_name)
                .bind(email)
                .bind(external_id)
                .bind(now)
                .bind(tenant_id)
                .bind(&u.id)
                .execute(&self.db)
                .await
                .db()?;
                self.user(tenant_id, &u.id).await
            }
            None => {
                let mut new = NewUser::cloud(&username, display_name, None);
                new.source = UserSource::Directory;
                new.external_id = Some(external_id.to_owned());
                new.email = email.map(str::to_owned);
                self.create_user(tenant_id, new, now).await
            }
        }
    }

    /// Makes a directory account's memberships in directory groups exactly
    /// `names`, creating missing directory groups. Cloud groups are untouched.
    pub async fn set_directory_groups(
        &self,
        tenant_id: &str,
        user_id: &str,
        names: &[String],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let current_names: Vec<String> = sqlx::query_scalar(
            "SELECT g.name FROM group_members m JOIN groups g ON g.id = m.group_id \
             WHERE m.user_id = $1 AND g.source = 'directory'",
        )
        .bind(user_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        self.set_directory_groups_known(tenant_id, user_id, names, current_names, now)
            .await
    }

    /// [`Store::set_directory_groups`] for a user whose directory groups were
    /// read a moment ago (`current_names`, as [`Store::lockout_context`] gives
    /// them): nothing is written, and nothing read, when they are the same as
    /// `names`. A change is applied against the memberships as they are then.
    pub async fn set_directory_groups_known(
        &self,
        tenant_id: &str,
        user_id: &str,
        names: &[String],
        current_names: Vec<String>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut sorted_current = current_names;
        sorted_current.sort();
        let mut sorted_wanted: Vec<String> = names.to_vec();
        sorted_wanted.sort();
        sorted_wanted.dedup();
        if sorted_current == sorted_wanted {
            // Nothing changed: the common case of a returning user.
            return Ok(());
        }
        // Memberships change: the caches of groups and assignments must hear.
        let _changed = self.routing_change();
        let mut wanted = Vec::new();
        for name in names {
            let found: Option<String> =
                sqlx::query_scalar("SELECT id FROM groups WHERE tenant_id = $1 AND name = $2 AND source = 'directory'")
                    .bind(tenant_id)
                    .bind(name)
                    .fetch_optional(&self.db)
                    .await
                    .db()?;
            let id = match found {
                Some(id) => id,
                None => {
                    let id = new_id();
                    let inserted = sqlx::query(
                        "INSERT INTO groups (id, tenant_id, name, description, source, external_id, created_at) \
                         VALUES ($1, $2, $3, 'From the on-prem directory', 'directory', NULL, $4)",
                    )
                    .bind(&id)
                    .bind(tenant_id)
                    .bind(name)
                    .bind(now)
                    .execute(&self.db)
                    .await
                    .map_err(StoreError::from_sqlx);
                    match inserted {
                        Ok(_) => id,
                        // A cloud group of that name exists, or another sign-in made it.
                        Err(StoreError::Conflict(_)) => {
                            let again: Option<String> = sqlx::query_scalar(
                                "SELECT id FROM groups WHERE tenant_id = $1 AND name = $2 AND source = 'directory'",
                            )
                            .bind(tenant_id)
                            .bind(name)
                            .fetch_optional(&self.db)
                            .await
                            .db()?;
                            match again {
                                Some(id) => id,
                                None => {
                                    tracing::warn!(group = %name, "directory group shadowed by a cloud group of the same name; membership skipped");
                                    continue;
                                }
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            wanted.push(id);
        }
        let current: Vec<String> = sqlx::query_scalar(
            "SELECT m.group_id FROM group_members m JOIN groups g ON g.id = m.group_id \
             WHERE m.user_id = $1 AND g.source = 'directory'",
        )
        .bind(user_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        for gone in current.iter().filter(|g| !wanted.contains(g)) {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(gone)
                .bind(user_id)
                .execute(&self.db)
                .await
                .db()?;
        }
        for id in wanted.iter().filter(|g| !current.contains(g)) {
            self.add_member(tenant_id, id, user_id).await?;
        }
        Ok(())
    }

    // ---- groups --------------------------------------------------------------

    /// Creates a cloud group.
    pub async fn create_group(
        &self,
        tenant_id: &str,
        name: &str,
        description: &str,
        now: UnixTime,
    ) -> Result<Group, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO groups (id, tenant_id, name, description, source, external_id, created_at) \
             VALUES ($1, $2, $3, $4, 'cloud', NULL, $5)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(description)
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("group {name} exists")),
            other => other,
        })?;
        self.group(tenant_id, &id).await
    }

    /// One group of a tenant.
    pub async fn group(&self, tenant_id: &str, id: &str) -> Result<Group, StoreError> {
        sqlx::query_as::<_, Group>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The groups of a tenant, by name.
    pub async fn groups(&self, tenant_id: &str) -> Result<Vec<Group>, StoreError> {
        sqlx::query_as::<_, Group>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant_id)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Deletes a group (memberships and app assignments go with it).
    pub async fn delete_group(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM groups WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        not_found_if_none(done.rows_affected())?;
        sqlx::query(
            "DELETE FROM app_assignments WHERE principal_kind = 'group' AND principal_id = $1 \
             AND app_id IN (SELECT id FROM apps WHERE tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant_id)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    /// Adds a user to a group; both must belong to `tenant_id`. Idempotent.
    pub async fn add_member(&self, tenant_id: &str, group_id: &str, user_id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        self.group(tenant_id, group_id).await?;
        self.user(tenant_id, user_id).await?;
        // One statement, so that two sign-ins of one directory user at once
        // (each adding the groups the directory reports) cannot both insert.
        sqlx::query("INSERT INTO group_members (group_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(group_id)
            .bind(user_id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Removes a user from a group of `tenant_id`.
    pub async fn remove_member(&self, tenant_id: &str, group_id: &str, user_id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        self.group(tenant_id, group_id).await?;
        let done = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
            .bind(group_id)
            .bind(user_id)
            .execute(&self.db)
            .await
            .db()?;
        not_found_if_none(done.rows_affected())
    }

    /// The members of a group of `tenant_id`.
    pub async fn group_members(&self, tenant_id: &str, group_id: &str) -> Result<Vec<User>, StoreError> {
        self.group(tenant_id, group_id).await?;
        sqlx::query_as::<_, User>(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id IN (SELECT user_id FROM group_members WHERE group_id = $1) \
             ORDER BY username"
        ))
        .bind(group_id)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// The groups a user belongs to.
    /// Cached (see [`crate::cache`]): memberships and groups move the routing
    /// generation when they change.
    pub async fn user_groups(&self, tenant_id: &str, user_id: &str) -> Result<Vec<Group>, StoreError> {
        let key = (tenant_id.to_owned(), user_id.to_owned());
        let generation = self.routing_generation();
        if let Some(groups) = self.reads.user_groups.get(&key, generation) {
            return Ok(groups);
        }
        let groups = sqlx::query_as::<_, Group>(concat!(
            "SELECT ",
            group_columns!(),
            " FROM groups WHERE tenant_id = $1 \
             AND id IN (SELECT group_id FROM group_members WHERE user_id = $2) ORDER BY name"
        ))
        .bind(tenant_id)
        .bind(user_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        self.reads.user_groups.put(key, groups.clone(), generation);
        Ok(groups)
    }
}

/// A verified domain of a tenant other than `tenant_id` that is `name`, lies
/// above it or below it, if there is one.
pub(crate) async fn overlapping_verified<'e, E>(
    executor: E,
    tenant_id: &str,
    name: &str,
) -> Result<Option<String>, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    // Domain names hold no `%` or `_` (checked before they get here), so LIKE
    // matches labels literally.
    sqlx::query_scalar(
        "SELECT name FROM domains WHERE verified = 1 AND tenant_id <> $1 \
         AND (name = $2 OR $2 LIKE ('%.' || name) OR name LIKE ('%.' || $2)) ORDER BY name LIMIT 1",
    )
    .bind(tenant_id)
    .bind(name)
    .fetch_optional(executor)
    .await
    .db()
}

/// The conflict of `name` with another tenant's verified domain `other`,
/// without naming that tenant.
pub(crate) fn overlap_message(name: &str, other: &str) -> String {
    if other == name {
        format!("domain {name} is verified by another organisation")
    } else {
        format!("domain {name} overlaps {other}, which another organisation has verified")
    }
}
