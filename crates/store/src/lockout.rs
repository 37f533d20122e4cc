//! Smart-lockout counters and the networks a user usually signs in from.

use postern_time::UnixTime;
use sqlx::Row;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// Whether a sign-in comes from somewhere the account was used successfully before.
/// Failures are counted apart, so an attacker elsewhere cannot lock a user out of
/// their usual place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocationClass {
    /// A network the user signed in from successfully before.
    Familiar,
    /// Anywhere else.
    Unfamiliar,
}

impl LocationClass {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            LocationClass::Familiar => "familiar",
            LocationClass::Unfamiliar => "unfamiliar",
        }
    }
}

/// Lockout counters of one account from one class of location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LockoutState {
    /// Failures since the last success or lockout.
    pub failures: i64,
    /// Lockouts so far (the period doubles with each).
    pub lockout_count: i64,
    /// Locked until this time (0 if never locked).
    pub locked_until: UnixTime,
    /// Last failure.
    pub last_failure_at: UnixTime,
}

impl LockoutState {
    /// No failures, never locked.
    pub const CLEAN: LockoutState = LockoutState {
        failures: 0,
        lockout_count: 0,
        locked_until: UnixTime::from_secs(0),
        last_failure_at: UnixTime::from_secs(0),
    };
}

/// What smart lockout needs before a password is checked, read at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutContext {
    /// When the user last signed in successfully from the network, if ever.
    pub network_seen: Option<UnixTime>,
    /// The account's counters from familiar locations.
    pub familiar: LockoutState,
    /// The account's counters from anywhere else.
    pub unfamiliar: LockoutState,
}

impl Store {
    /// The account's counters for both classes of location and, for an existing
    /// user, when they last signed in from `network`: one round trip, as every
    /// sign-in asks for them before its password is checked.
    pub async fn lockout_context(
        &self,
        tenant_id: &str,
        account: &str,
        user_id: Option<&str>,
        network: &str,
    ) -> Result<LockoutContext, StoreError> {
        let rows = sqlx::query(
            "SELECT 'network' AS kind, last_seen_at AS failures, 0 AS lockout_count, 0 AS locked_until, \
             0 AS last_failure_at FROM familiar_networks WHERE user_id = $1 AND network = $2 \
             UNION ALL \
             SELECT location, failures, lockout_count, locked_until, last_failure_at FROM lockouts \
             WHERE tenant_id = $3 AND account = $4",
        )
        // User IDs are never empty: no user, no network row.
        .bind(user_id.unwrap_or(""))
        .bind(network)
        .bind(tenant_id)
        .bind(account)
        .fetch_all(&self.pool)
        .await
        .db()?;
        let mut context = LockoutContext {
            network_seen: None,
            familiar: LockoutState::CLEAN,
            unfamiliar: LockoutState::CLEAN,
        };
        for row in rows {
            let kind: String = row.try_get(0).db()?;
            let number = |i: usize| -> Result<i64, StoreError> { row.try_get::<i64, _>(i).db() };
            let state = LockoutState {
                failures: number(1)?,
                lockout_count: number(2)?,
                locked_until: UnixTime::from_secs(number(3)?),
                last_failure_at: UnixTime::from_secs(number(4)?),
            };
            match kind.as_str() {
                "network" => context.network_seen = Some(UnixTime::from_secs(number(1)?)),
                "familiar" => context.familiar = state,
                "unfamiliar" => context.unfamiliar = state,
                _ => {}
            }
        }
        Ok(context)
    }

    /// Current counters for an account (all zero if none).
    pub async fn lockout_state(
        &self,
        tenant_id: &str,
        account: &str,
        location: LocationClass,
    ) -> Result<LockoutState, StoreError> {
        let row = sqlx::query_as::<_, LockoutState>(
            "SELECT failures, lockout_count, locked_until, last_failure_at FROM lockouts \
             WHERE tenant_id = $1 AND account = $2 AND location = $3",
        )
        .bind(tenant_id)
        .bind(account)
        .bind(location.as_str())
        .fetch_optional(&self.pool)
        .await
        .db()?;
        Ok(row.unwrap_or(LockoutState::CLEAN))
    }

    /// Stores new counters for an account.
    pub async fn put_lockout_state(
        &self,
        tenant_id: &str,
        account: &str,
        location: LocationClass,
        state: &LockoutState,
    ) -> Result<(), StoreError> {
        let updated = sqlx::query(
            "UPDATE lockouts SET failures = $1, lockout_count = $2, locked_until = $3, \
             last_failure_at = $4 WHERE tenant_id = $5 AND account = $6 AND location = $7",
        )
        .bind(state.failures)
        .bind(state.lockout_count)
        .bind(state.locked_until)
        .bind(state.last_failure_at)
        .bind(tenant_id)
        .bind(account)
        .bind(location.as_str())
        .execute(&self.pool)
        .await
        .db()?;
        if updated.rows_affected() == 0 {
            let inserted = sqlx::query(
                "INSERT INTO lockouts (tenant_id, account, location, failures, lockout_count, \
                 locked_until, last_failure_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(tenant_id)
            .bind(account)
            .bind(location.as_str())
            .bind(state.failures)
            .bind(state.lockout_count)
            .bind(state.locked_until)
            .bind(state.last_failure_at)
            .execute(&self.pool)
            .await;
            match inserted.map_err(StoreError::from_sqlx) {
                Ok(_) => {}
                // Another instance inserted first: retry as an update.
                Err(StoreError::Conflict(_)) => {
                    Box::pin(self.put_lockout_state(tenant_id, account, location, state)).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether the user signed in successfully from `network` before.
    pub async fn is_familiar_network(&self, user_id: &str, network: &str, since: UnixTime) -> Result<bool, StoreError> {
        Ok(self
            .network_last_seen(user_id, network)
            .await?
            .is_some_and(|seen| seen > since))
    }

    /// When the user last signed in successfully from `network`, if ever.
    pub async fn network_last_seen(&self, user_id: &str, network: &str) -> Result<Option<UnixTime>, StoreError> {
        sqlx::query_scalar("SELECT last_seen_at FROM familiar_networks WHERE user_id = $1 AND network = $2")
            .bind(user_id)
            .bind(network)
            .fetch_optional(&self.pool)
            .await
            .db()
    }

    /// Remembers `network` as familiar for the user after a successful sign-in.
    pub async fn remember_network(&self, user_id: &str, network: &str, now: UnixTime) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE familiar_networks SET last_seen_at = $1 WHERE user_id = $2 AND network = $3")
            .bind(now)
            .bind(user_id)
            .bind(network)
            .execute(&self.pool)
            .await
            .db()?;
        if updated.rows_affected() == 0 {
            let inserted =
                sqlx::query("INSERT INTO familiar_networks (user_id, network, last_seen_at) VALUES ($1, $2, $3)")
                    .bind(user_id)
                    .bind(network)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx);
            match inserted {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
