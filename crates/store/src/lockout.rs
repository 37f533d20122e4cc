//! Smart-lockout counters and the networks a user usually signs in from.
//!
//! A password is checked only after a *reservation* succeeded: one conditional
//! `UPDATE` that counts the attempt as in flight while the account's failures and
//! attempts in flight stay under the threshold. Concurrent requests, on one
//! instance or on several sharing the database, are serialized on the counter
//! row by the database, so a burst never checks more passwords than the
//! threshold. The outcome then *settles* the reservation: a failure turns it into
//! a counted failure (locking the account at the threshold, in the same
//! statement), anything else gives it back. Reservations lapse at
//! `in_flight_until`, so those of a crashed instance cannot hold an account.

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutContext {
    /// When the user last signed in successfully from the network, if ever.
    pub network_seen: Option<UnixTime>,
    /// The account's counters from familiar locations.
    pub familiar: LockoutState,
    /// The account's counters from anywhere else.
    pub unfamiliar: LockoutState,
    /// The names of the user's groups from the directory (none without a
    /// user), so that a pass-through sign-in can tell whether the directory's
    /// answer changes them without reading them again
    /// ([`Store::set_directory_groups_known`]).
    pub directory_groups: Vec<String>,
}

/// Whose counters: one account (the normalized sign-in name, existing or not) of a
/// tenant, from one class of location.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockoutKey {
    /// The tenant.
    pub tenant_id: String,
    /// The account's sign-in name.
    pub account: String,
    /// Where the attempt comes from.
    pub location: LocationClass,
}

/// The tenant's smart-lockout policy, as reservations and failures apply it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutRules {
    /// Failures (with attempts in flight) at which the account locks; at least 1.
    pub threshold: i64,
    /// Failures before this time are forgotten (the end of the observation window).
    pub forget_before: UnixTime,
    /// Seconds the first lockout lasts.
    pub period_secs: i64,
    /// Each further lockout doubles the period, at most this many times.
    pub max_doublings: u32,
}

/// The answer to [`Store::reserve_lockout_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockoutReservation {
    /// The attempt may be checked; the counters as they stood (forgotten failures
    /// cleared). Settle it once the outcome is known.
    Granted(LockoutState),
    /// Refused without a check: the account is locked, or its failures and the
    /// attempts in flight reach the threshold. The counters now.
    Refused(LockoutState),
}

/// The SQL factor a lockout period is multiplied by: 2 to the power of the
/// lockouts so far (`lockout_count` before this one), capped at `max_doublings`.
fn doubling_factor(max_doublings: u32) -> String {
    let max = max_doublings.min(30);
    let mut sql = format!("(CASE WHEN lockout_count >= {max} THEN {}", 1_i64 << max);
    for count in (1..max).rev() {
        sql.push_str(&format!(" WHEN lockout_count = {count} THEN {}", 1_i64 << count));
    }
    sql.push_str(" ELSE 1 END)");
    sql
}

/// The counters of `class` from a row of [`Store::user_with_lockout_context`],
/// whose columns for them are named `{class}_failures`, `{class}_lockout_count`,
/// `{class}_locked_until` and `{class}_last_failure_at` (all NULL without a
/// row of counters: clean).
pub(crate) fn lockout_state_of(row: &sqlx::any::AnyRow, class: LocationClass) -> Result<LockoutState, StoreError> {
    let [failures, lockout_count, locked_until, last_failure_at] = match class {
        LocationClass::Familiar => [
            "familiar_failures",
            "familiar_lockout_count",
            "familiar_locked_until",
            "familiar_last_failure_at",
        ],
        LocationClass::Unfamiliar => [
            "unfamiliar_failures",
            "unfamiliar_lockout_count",
            "unfamiliar_locked_until",
            "unfamiliar_last_failure_at",
        ],
    };
    let number = |column: &str| -> Result<Option<i64>, StoreError> { row.try_get::<Option<i64>, _>(column).db() };
    let Some(failures) = number(failures)? else {
        return Ok(LockoutState::CLEAN);
    };
    Ok(LockoutState {
        failures,
        lockout_count: number(lockout_count)?.unwrap_or(0),
        locked_until: UnixTime::from_secs(number(locked_until)?.unwrap_or(0)),
        last_failure_at: UnixTime::from_secs(number(last_failure_at)?.unwrap_or(0)),
    })
}

impl Store {
    /// The account's counters for both classes of location and, for an existing
    /// user, when they last signed in from `network` and their groups from the
    /// directory: one round trip, as every sign-in asks for them before its
    /// password is checked.
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
             WHERE tenant_id = $3 AND account = $4 \
             UNION ALL \
             SELECT 'group:' || g.name, 0, 0, 0, 0 FROM group_members m JOIN groups g ON g.id = m.group_id \
             WHERE m.user_id = $1 AND g.tenant_id = $3 AND g.source = 'directory'",
        )
        // User IDs are never empty: no user, no network row.
        .bind(user_id.unwrap_or(""))
        .bind(network)
        .bind(tenant_id)
        .bind(account)
        .fetch_all(&self.db)
        .await
        .db()?;
        let mut context = LockoutContext {
            network_seen: None,
            familiar: LockoutState::CLEAN,
            unfamiliar: LockoutState::CLEAN,
            directory_groups: Vec::new(),
        };
        for row in rows {
            let kind: String = row.try_get(0).db()?;
            if let Some(group) = kind.strip_prefix("group:") {
                context.directory_groups.push(group.to_owned());
                continue;
            }
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
        .fetch_optional(&self.db)
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
        .execute(&self.db)
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
            .execute(&self.db)
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

    /// Reserves an attempt on `key` before its password is checked: granted while
    /// the account is not locked and its failures (those since
    /// `rules.forget_before`) plus the attempts in flight (those not lapsed at
    /// `now`) stay under `rules.threshold`. A granted reservation lapses at
    /// `lapses_at` unless settled before.
    pub async fn reserve_lockout_attempt(
        &self,
        key: &LockoutKey,
        rules: &LockoutRules,
        now: UnixTime,
        lapses_at: UnixTime,
    ) -> Result<LockoutReservation, StoreError> {
        if let Some(state) = self.reserve_on_row(key, rules, now, lapses_at).await? {
            return Ok(LockoutReservation::Granted(state));
        }
        // No row yet (the account's first attempt), or the row refuses.
        let inserted = sqlx::query(
            "INSERT INTO lockouts (tenant_id, account, location, failures, lockout_count, locked_until, \
             last_failure_at, in_flight, in_flight_until) VALUES ($1, $2, $3, 0, 0, 0, 0, 1, $4) \
             ON CONFLICT (tenant_id, account, location) DO NOTHING",
        )
        .bind(&key.tenant_id)
        .bind(&key.account)
        .bind(key.location.as_str())
        .bind(lapses_at)
        .execute(&self.db)
        .await
        .db()?;
        if inserted.rows_affected() == 1 {
            return Ok(LockoutReservation::Granted(LockoutState::CLEAN));
        }
        // Another attempt created the row meanwhile: ask the row again.
        if let Some(state) = self.reserve_on_row(key, rules, now, lapses_at).await? {
            return Ok(LockoutReservation::Granted(state));
        }
        let state = self.lockout_state(&key.tenant_id, &key.account, key.location).await?;
        Ok(LockoutReservation::Refused(state))
    }

    /// The conditional update of a reservation; `None` when it refuses or the row
    /// does not exist. Forgotten failures are cleared on the way.
    async fn reserve_on_row(
        &self,
        key: &LockoutKey,
        rules: &LockoutRules,
        now: UnixTime,
        lapses_at: UnixTime,
    ) -> Result<Option<LockoutState>, StoreError> {
        sqlx::query_as::<_, LockoutState>(
            "UPDATE lockouts SET \
             failures = CASE WHEN last_failure_at > $1 THEN failures ELSE 0 END, \
             lockout_count = CASE WHEN last_failure_at > $1 THEN lockout_count ELSE 0 END, \
             in_flight = (CASE WHEN in_flight_until > $2 THEN in_flight ELSE 0 END) + 1, \
             in_flight_until = CASE WHEN in_flight_until > $3 THEN in_flight_until ELSE $3 END \
             WHERE tenant_id = $4 AND account = $5 AND location = $6 AND locked_until <= $2 \
             AND (CASE WHEN last_failure_at > $1 THEN failures ELSE 0 END) \
             + (CASE WHEN in_flight_until > $2 THEN in_flight ELSE 0 END) < $7 \
             RETURNING failures, lockout_count, locked_until, last_failure_at",
        )
        .bind(rules.forget_before)
        .bind(now)
        .bind(lapses_at)
        .bind(&key.tenant_id)
        .bind(&key.account)
        .bind(key.location.as_str())
        .bind(rules.threshold.max(1))
        .fetch_optional(&self.db)
        .await
        .db()
    }

    /// Settles a reservation as a wrong password: counts the failure and, at the
    /// threshold, locks the account for the period its lockouts so far call for
    /// (doubling each time), in one statement. `release` says whether the
    /// reservation is still held (not lapsed). Returns when the account is locked
    /// until, if this failure locked it.
    pub async fn settle_lockout_failure(
        &self,
        key: &LockoutKey,
        rules: &LockoutRules,
        now: UnixTime,
        release: bool,
    ) -> Result<Option<UnixTime>, StoreError> {
        let sql = format!(
            "UPDATE lockouts SET \
             failures = CASE WHEN failures + 1 >= $1 THEN 0 ELSE failures + 1 END, \
             lockout_count = CASE WHEN failures + 1 >= $1 THEN lockout_count + 1 ELSE lockout_count END, \
             locked_until = CASE WHEN failures + 1 >= $1 THEN $2 + $3 * {doubling} ELSE locked_until END, \
             last_failure_at = $2, \
             in_flight = CASE WHEN in_flight > $4 THEN in_flight - $4 ELSE 0 END \
             WHERE tenant_id = $5 AND account = $6 AND location = $7 \
             RETURNING failures, lockout_count, locked_until, last_failure_at",
            doubling = doubling_factor(rules.max_doublings),
        );
        let after = sqlx::query_as::<_, LockoutState>(sqlx::AssertSqlSafe(sql))
            .bind(rules.threshold.max(1))
            .bind(now)
            .bind(rules.period_secs.max(1))
            .bind(i64::from(release))
            .bind(&key.tenant_id)
            .bind(&key.account)
            .bind(key.location.as_str())
            .fetch_optional(&self.db)
            .await
            .db()?;
        // A failure that does not lock leaves at least one failure counted.
        Ok(after.filter(|s| s.failures == 0).map(|s| s.locked_until))
    }

    /// Settles a reservation as a right password: the account's failures and
    /// lockouts are forgotten. `release` as for [`Store::settle_lockout_failure`].
    pub async fn settle_lockout_success(&self, key: &LockoutKey, release: bool) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE lockouts SET failures = 0, lockout_count = 0, \
             in_flight = CASE WHEN in_flight > $1 THEN in_flight - $1 ELSE 0 END \
             WHERE tenant_id = $2 AND account = $3 AND location = $4",
        )
        .bind(i64::from(release))
        .bind(&key.tenant_id)
        .bind(&key.account)
        .bind(key.location.as_str())
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// Gives a held reservation back without counting anything (the check did not
    /// conclude, or repeated a wrong password already counted).
    pub async fn release_lockout_attempt(&self, key: &LockoutKey) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE lockouts SET in_flight = CASE WHEN in_flight > 1 THEN in_flight - 1 ELSE 0 END \
             WHERE tenant_id = $1 AND account = $2 AND location = $3",
        )
        .bind(&key.tenant_id)
        .bind(&key.account)
        .bind(key.location.as_str())
        .execute(&self.db)
        .await
        .db()?;
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
            .fetch_optional(&self.db)
            .await
            .db()
    }

    /// Remembers `network` as familiar for the user after a successful sign-in.
    pub async fn remember_network(&self, user_id: &str, network: &str, now: UnixTime) -> Result<(), StoreError> {
        let updated = sqlx::query("UPDATE familiar_networks SET last_seen_at = $1 WHERE user_id = $2 AND network = $3")
            .bind(now)
            .bind(user_id)
            .bind(network)
            .execute(&self.db)
            .await
            .db()?;
        if updated.rows_affected() == 0 {
            let inserted =
                sqlx::query("INSERT INTO familiar_networks (user_id, network, last_seen_at) VALUES ($1, $2, $3)")
                    .bind(user_id)
                    .bind(network)
                    .bind(now)
                    .execute(&self.db)
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
