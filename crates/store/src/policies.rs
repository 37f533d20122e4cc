//! Conditional access at rest: a tenant's named locations and policies, the
//! risk level an administrator set for a user, and the sign-in history the
//! risk signals read (recent failures, a user's last success, how many
//! networks a user is known from). Every change moves the routing generation,
//! so the STS's and the front door's caches of decisions refresh at once.

use postern_policy::{NamedLocation, Policy, PolicyRules, PolicyState, RiskLevel};
use postern_time::UnixTime;
use sqlx::Row;

use crate::error::SqlxResultExt;
use crate::{DbFlag, Store, StoreError, flag, new_id};

/// The risk level an administrator set for a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRisk {
    /// The user.
    pub user_id: String,
    /// The level.
    pub level: RiskLevel,
    /// Why, as the administrator wrote it.
    pub reason: String,
    /// Who set it (`user:<id>`).
    pub set_by: String,
    /// When.
    pub set_at: UnixTime,
}

/// A failed password from the recent sign-in log: which account, from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentFailure {
    /// The sign-in name typed.
    pub username: String,
    /// The client address.
    pub ip: String,
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn named(what: &str, name: &str) -> impl Fn(sqlx::Error) -> StoreError {
    let message = format!("a {what} named {name} exists");
    move |e| match StoreError::from_sqlx(e) {
        StoreError::Conflict(_) => StoreError::Conflict(message.clone()),
        other => other,
    }
}

fn policy_from_row(row: &sqlx::any::AnyRow) -> Result<Policy, StoreError> {
    let state: String = row.try_get("state").db()?;
    let rules: String = row.try_get("rules").db()?;
    Ok(Policy {
        id: row.try_get("id").db()?,
        name: row.try_get("name").db()?,
        state: state.parse().map_err(|e| corrupt("policy state", e))?,
        rules: serde_json::from_str(&rules).map_err(|e| corrupt("policy rules", e))?,
    })
}

fn location_from_row(row: &sqlx::any::AnyRow) -> Result<NamedLocation, StoreError> {
    let ranges: String = row.try_get("ranges").db()?;
    let trusted: DbFlag = row.try_get("trusted").db()?;
    Ok(NamedLocation {
        id: row.try_get("id").db()?,
        name: row.try_get("name").db()?,
        ranges: ranges
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| r.parse().map_err(|e| corrupt("location range", e)))
            .collect::<Result<_, _>>()?,
        trusted: trusted.into(),
    })
}

fn ranges_text(location: &NamedLocation) -> String {
    location
        .ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn rules_json(rules: &PolicyRules) -> Result<String, StoreError> {
    serde_json::to_string(rules).map_err(|e| corrupt("policy rules", e))
}

impl Store {
    /// Creates a policy; its name must be new in the tenant.
    pub async fn create_policy(
        &self,
        tenant_id: &str,
        name: &str,
        state: PolicyState,
        rules: &PolicyRules,
        now: UnixTime,
    ) -> Result<Policy, StoreError> {
        let _changed = self.routing_change();
        let id = new_id();
        sqlx::query(
            "INSERT INTO access_policies (id, tenant_id, name, state, rules, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(name)
        .bind(state.as_str())
        .bind(rules_json(rules)?)
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(named("policy", name))?;
        self.policy(tenant_id, &id).await
    }

    /// One policy of a tenant.
    pub async fn policy(&self, tenant_id: &str, id: &str) -> Result<Policy, StoreError> {
        let row = sqlx::query("SELECT id, name, state, rules FROM access_policies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_one(&self.db)
            .await
            .db()?;
        policy_from_row(&row)
    }

    /// A tenant's policies, by name.
    pub async fn policies(&self, tenant_id: &str) -> Result<Vec<Policy>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, state, rules FROM access_policies WHERE tenant_id = $1 ORDER BY name, id")
                .bind(tenant_id)
                .fetch_all(&self.db)
                .await
                .db()?;
        rows.iter().map(policy_from_row).collect()
    }

    /// Replaces a policy's name, state and rules.
    pub async fn replace_policy(
        &self,
        tenant_id: &str,
        id: &str,
        name: &str,
        state: PolicyState,
        rules: &PolicyRules,
        now: UnixTime,
    ) -> Result<Policy, StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query(
            "UPDATE access_policies SET name = $1, state = $2, rules = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND id = $6",
        )
        .bind(name)
        .bind(state.as_str())
        .bind(rules_json(rules)?)
        .bind(now)
        .bind(tenant_id)
        .bind(id)
        .execute(&self.db)
        .await
        .map_err(named("policy", name))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.policy(tenant_id, id).await
    }

    /// Deletes a policy.
    pub async fn delete_policy(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query("DELETE FROM access_policies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.db)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Creates a named location (`id` is assigned here); its name must be new
    /// in the tenant.
    pub async fn create_location(
        &self,
        tenant_id: &str,
        location: &NamedLocation,
        now: UnixTime,
    ) -> Result<NamedLocation, StoreError> {
        let _changed = self.routing_change();
        let id = new_id();
        sqlx::query(
            "INSERT INTO named_locations (id, tenant_id, name, ranges, trusted, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&location.name)
        .bind(ranges_text(location))
        .bind(flag(location.trusted))
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(named("location", &location.name))?;
        self.location(tenant_id, &id).await
    }

    /// One named location of a tenant.
    pub async fn location(&self, tenant_id: &str, id: &str) -> Result<NamedLocation, StoreError> {
        let row = sqlx::query("SELECT id, name, ranges, trusted FROM named_locations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_one(&self.db)
            .await
            .db()?;
        location_from_row(&row)
    }

    /// A tenant's named locations, by name.
    pub async fn locations(&self, tenant_id: &str) -> Result<Vec<NamedLocation>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, ranges, trusted FROM named_locations WHERE tenant_id = $1 ORDER BY name, id")
                .bind(tenant_id)
                .fetch_all(&self.db)
                .await
                .db()?;
        rows.iter().map(location_from_row).collect()
    }

    /// Replaces a named location's name, ranges and trust (`location.id` names it).
    pub async fn replace_location(
        &self,
        tenant_id: &str,
        location: &NamedLocation,
        now: UnixTime,
    ) -> Result<NamedLocation, StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query(
            "UPDATE named_locations SET name = $1, ranges = $2, trusted = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND id = $6",
        )
        .bind(&location.name)
        .bind(ranges_text(location))
        .bind(flag(location.trusted))
        .bind(now)
        .bind(tenant_id)
        .bind(&location.id)
        .execute(&self.db)
        .await
        .map_err(named("location", &location.name))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.location(tenant_id, &location.id).await
    }

    /// Deletes a named location no policy names (409 naming the policies that do).
    pub async fn delete_location(&self, tenant_id: &str, id: &str) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        let named_by: Vec<String> = self
            .policies(tenant_id)
            .await?
            .into_iter()
            .filter(|p| {
                p.rules.conditions.locations.as_ref().is_some_and(|l| {
                    l.include
                        .iter()
                        .chain(&l.exclude)
                        .any(|r| matches!(r, postern_policy::LocationRef::Named(n) if n == id))
                })
            })
            .map(|p| p.name)
            .collect();
        if !named_by.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the location is named by the policies {}; change them first",
                named_by.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM named_locations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(&self.db)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Sets (or replaces) the risk level of a user of the tenant.
    pub async fn set_user_risk(&self, tenant_id: &str, risk: &UserRisk) -> Result<(), StoreError> {
        let _changed = self.routing_change();
        // The user must be the tenant's: refuse anyone else's as not found.
        self.user(tenant_id, &risk.user_id).await?;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM user_risk WHERE user_id = $1")
            .bind(&risk.user_id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "INSERT INTO user_risk (user_id, tenant_id, level, reason, set_by, set_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&risk.user_id)
        .bind(tenant_id)
        .bind(risk.level.as_str())
        .bind(&risk.reason)
        .bind(&risk.set_by)
        .bind(risk.set_at)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    /// The risk an administrator set for a user of the tenant, if any.
    /// Cached (see [`crate::cache`]): setting or dismissing it moves the
    /// routing generation.
    pub async fn user_risk(&self, tenant_id: &str, user_id: &str) -> Result<Option<UserRisk>, StoreError> {
        let key = (tenant_id.to_owned(), user_id.to_owned());
        let generation = self.routing_generation();
        if let Some(risk) = self.reads.user_risk.get(&key, generation) {
            return Ok(risk);
        }
        let risk = self.user_risk_now(tenant_id, user_id).await?;
        self.reads.user_risk.put(key, risk.clone(), generation);
        Ok(risk)
    }

    async fn user_risk_now(&self, tenant_id: &str, user_id: &str) -> Result<Option<UserRisk>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id, level, reason, set_by, set_at FROM user_risk WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant_id)
        .bind(user_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let level: String = row.try_get("level").db()?;
        Ok(Some(UserRisk {
            user_id: row.try_get("user_id").db()?,
            level: level.parse().map_err(|e| corrupt("user risk", e))?,
            reason: row.try_get("reason").db()?,
            set_by: row.try_get("set_by").db()?,
            set_at: row.try_get("set_at").db()?,
        }))
    }

    /// Dismisses a user's risk. Returns whether there was one.
    pub async fn dismiss_user_risk(&self, tenant_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let _changed = self.routing_change();
        let done = sqlx::query("DELETE FROM user_risk WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(done.rows_affected() > 0)
    }

    /// Wrong passwords of the tenant since `since`, newest first, at most `limit`.
    pub async fn recent_failures(
        &self,
        tenant_id: &str,
        since: UnixTime,
        limit: i64,
    ) -> Result<Vec<RecentFailure>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, ip FROM signin_log WHERE tenant_id = $1 AND at >= $2 AND outcome = 'bad_credentials' \
             ORDER BY at DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.db)
        .await
        .db()?;
        rows.iter()
            .map(|r| {
                Ok(RecentFailure {
                    username: r.try_get("username").db()?,
                    ip: r.try_get("ip").db()?,
                })
            })
            .collect()
    }

    /// The address and time of the user's last successful sign-in, if any.
    pub async fn last_success(&self, user_id: &str) -> Result<Option<(String, UnixTime)>, StoreError> {
        let row = sqlx::query(
            "SELECT ip, at FROM signin_log WHERE user_id = $1 AND outcome = 'success' ORDER BY at DESC LIMIT 1",
        )
        .bind(user_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        row.map(|r| Ok((r.try_get("ip").db()?, r.try_get("at").db()?)))
            .transpose()
    }

    /// How many networks the user signed in from successfully since `since`.
    pub async fn familiar_network_count(&self, user_id: &str, since: UnixTime) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM familiar_networks WHERE user_id = $1 AND last_seen_at >= $2")
            .bind(user_id)
            .bind(since)
            .fetch_one(&self.db)
            .await
            .db()
    }
}
