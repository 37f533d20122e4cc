//! Smart lockout (PTA-9): stops password guessing in the cloud, before a password is
//! checked anywhere, so brute force and spraying never reach the directory.
//!
//! - Failures are counted per account, apart for *familiar* locations (networks the
//!   user signed in from successfully before) and *unfamiliar* ones, so an attacker
//!   elsewhere cannot lock the user out of their usual place.
//! - At the tenant's threshold the account is locked for the tenant's period; each
//!   further lockout doubles it (up to [`MAX_LOCKOUT_DOUBLINGS`] times). Counters
//!   decay after [`OBSERVATION_WINDOW`] without failures.
//! - The same wrong password repeated counts once. To know that, a keyed tag of the
//!   last few wrong passwords is kept **in this process's memory only**, under a
//!   key made at start-up: nothing derived from a password reaches the database.
//! - Unknown accounts are counted like real ones, so lockout reveals nothing about
//!   which accounts exist.
//! - Once an account has failures, attempts on it are serialized per instance, so
//!   parallel guesses cannot outrun the counter.
//!
//! Every password path (cloud passwords now, pass-through authentication later)
//! goes through [`Sts::check_lockout`] first and [`Sts::record_attempt`] after.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::hmac;
use postern_keyring::SecretString;
use postern_store::{LocationClass, LockoutState, Tenant, User};
use postern_time::UnixTime;

use crate::Sts;
use crate::client_ip::ClientIp;
use crate::error::StsError;

/// Counters reset after this long without a failure.
pub const OBSERVATION_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// A network stays familiar this long after the last successful sign-in from it.
pub const FAMILIAR_FOR: Duration = Duration::from_secs(90 * 24 * 3600);
/// A familiar network's last-seen time is refreshed at most this often.
const REFRESH_FAMILIAR_AFTER: Duration = Duration::from_secs(3600);
/// The lockout period doubles at most this many times.
pub const MAX_LOCKOUT_DOUBLINGS: u32 = 6;
/// Wrong passwords remembered per account (to count repeats once).
const REMEMBERED_BAD_PASSWORDS: usize = 3;
/// Accounts whose wrong passwords are remembered, at most.
const REMEMBERED_ACCOUNTS: usize = 100_000;

/// In-memory state of smart lockout.
pub(crate) struct SmartLockout {
    tag_key: hmac::Key,
    bad: Mutex<BadPasswordMemory>,
    inflight: Mutex<HashMap<String, u32>>,
}

#[derive(Default)]
struct BadPasswordMemory {
    tags: HashMap<String, VecDeque<u64>>,
    order: VecDeque<String>,
}

impl std::fmt::Debug for SmartLockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SmartLockout")
    }
}

/// The verdict before a password check.
#[derive(Debug)]
pub enum LockoutDecision {
    /// The password may be checked; report the outcome with
    /// [`Sts::record_attempt`].
    Proceed(Attempt),
    /// Refused without checking the password.
    Locked {
        /// When the account unlocks for this location class.
        until: UnixTime,
    },
    /// Another attempt on this account is being checked on this instance right now.
    Busy,
}

/// A permitted attempt, to be reported once its outcome is known.
#[must_use = "report the outcome with Sts::record_attempt"]
#[derive(Debug)]
pub struct Attempt {
    guard: InflightGuard,
    tenant_id: String,
    account: String,
    location: LocationClass,
    state: LockoutState,
    network_seen: Option<UnixTime>,
}

/// Counts an attempt as in flight until dropped, however the request ends.
#[derive(Debug)]
struct InflightGuard {
    lockout: Arc<SmartLockout>,
    key: String,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.lockout.leave(&self.key);
    }
}

impl Attempt {
    /// Whether the attempt came from a familiar location.
    pub fn location(&self) -> LocationClass {
        self.location
    }
}

/// The outcome of a password check, for the lockout counters.
pub enum AttemptOutcome<'a> {
    /// The password was right.
    Success {
        /// The account, so its network can be remembered as familiar.
        user_id: &'a str,
        /// The client's address.
        ip: ClientIp,
    },
    /// The password was wrong (or the account unknown).
    Failure {
        /// The wrong password, tagged in memory to count repeats once.
        password: &'a SecretString,
    },
    /// The check did not complete (directory down, agent gone): not counted.
    Inconclusive,
}

impl SmartLockout {
    pub(crate) fn new() -> Result<Self, StsError> {
        let key = postern_keyring::random_bytes::<32>()?;
        Ok(Self {
            tag_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            bad: Mutex::new(BadPasswordMemory::default()),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn tag(&self, key: &str, password: &SecretString) -> u64 {
        let mut ctx = hmac::Context::with_key(&self.tag_key);
        ctx.update(key.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.expose().as_bytes());
        let sig = ctx.sign();
        let mut first = [0u8; 8];
        first.copy_from_slice(&sig.as_ref()[..8]);
        u64::from_be_bytes(first)
    }

    /// Remembers a wrong password; returns whether it was seen recently.
    fn seen_before(&self, key: &str, password: &SecretString) -> bool {
        let tag = self.tag(key, password);
        let Ok(mut memory) = self.bad.lock() else {
            return false;
        };
        if memory.tags.get(key).is_some_and(|tags| tags.contains(&tag)) {
            return true;
        }
        if !memory.tags.contains_key(key) {
            while memory.order.len() >= REMEMBERED_ACCOUNTS {
                if let Some(old) = memory.order.pop_front() {
                    memory.tags.remove(&old);
                }
            }
            memory.order.push_back(key.to_owned());
        }
        let tags = memory.tags.entry(key.to_owned()).or_default();
        if tags.len() >= REMEMBERED_BAD_PASSWORDS {
            tags.pop_front();
        }
        tags.push_back(tag);
        false
    }

    fn forget(&self, key: &str) {
        if let Ok(mut memory) = self.bad.lock() {
            memory.tags.remove(key);
        }
    }

    fn enter(&self, key: &str, exclusive: bool) -> bool {
        let Ok(mut inflight) = self.inflight.lock() else {
            return false;
        };
        let count = inflight.entry(key.to_owned()).or_insert(0);
        if exclusive && *count > 0 {
            return false;
        }
        *count += 1;
        true
    }

    fn leave(&self, key: &str) {
        if let Ok(mut inflight) = self.inflight.lock()
            && let Some(count) = inflight.get_mut(key)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                inflight.remove(key);
            }
        }
    }
}

/// The lockout period after the `count`-th lockout.
fn lockout_period(base_secs: i64, count: i64) -> Duration {
    let doublings = u32::try_from((count - 1).max(0))
        .unwrap_or(0)
        .min(MAX_LOCKOUT_DOUBLINGS);
    Duration::from_secs(u64::try_from(base_secs.max(1)).unwrap_or(60) << doublings)
}

impl Sts {
    /// Decides whether a password may be checked for `account` (the normalized
    /// sign-in name) from `ip`. `user` is the account if it exists.
    pub async fn check_lockout(
        &self,
        tenant: &Tenant,
        account: &str,
        user: Option<&User>,
        ip: ClientIp,
    ) -> Result<LockoutDecision, StsError> {
        let now = self.now();
        let context = self
            .store
            .lockout_context(&tenant.id, account, user.map(|u| u.id.as_str()), &ip.network())
            .await?;
        let network_seen = context.network_seen;
        let location = match network_seen {
            Some(seen) if seen > now - FAMILIAR_FOR => LocationClass::Familiar,
            _ => LocationClass::Unfamiliar,
        };
        let mut state = match location {
            LocationClass::Familiar => context.familiar,
            LocationClass::Unfamiliar => context.unfamiliar,
        };
        if state.locked_until > now {
            return Ok(LockoutDecision::Locked {
                until: state.locked_until,
            });
        }
        if now.since(state.last_failure_at) >= OBSERVATION_WINDOW {
            state.failures = 0;
            state.lockout_count = 0;
        }
        let key = format!("{}\u{0}{}\u{0}{}", tenant.id, account, location.as_str());
        if !self.lockout.enter(&key, state.failures > 0) {
            return Ok(LockoutDecision::Busy);
        }
        let guard = InflightGuard {
            lockout: self.lockout.clone(),
            key,
        };
        Ok(LockoutDecision::Proceed(Attempt {
            guard,
            tenant_id: tenant.id.clone(),
            account: account.to_owned(),
            location,
            state,
            network_seen,
        }))
    }

    /// Records the outcome of a permitted attempt. Returns when the account is now
    /// locked, if this failure locked it.
    pub async fn record_attempt(
        &self,
        tenant: &Tenant,
        attempt: Attempt,
        outcome: AttemptOutcome<'_>,
    ) -> Result<Option<UnixTime>, StsError> {
        // The attempt's guard leaves the in-flight count when it drops here.
        self.record_attempt_inner(tenant, &attempt, outcome).await
    }

    async fn record_attempt_inner(
        &self,
        tenant: &Tenant,
        attempt: &Attempt,
        outcome: AttemptOutcome<'_>,
    ) -> Result<Option<UnixTime>, StsError> {
        let now = self.now();
        let mut state = attempt.state;
        match outcome {
            AttemptOutcome::Inconclusive => Ok(None),
            AttemptOutcome::Success { user_id, ip } => {
                let fresh = attempt
                    .network_seen
                    .is_some_and(|seen| now.since(seen) < REFRESH_FAMILIAR_AFTER);
                if !fresh {
                    self.store.remember_network(user_id, &ip.network(), now).await?;
                }
                if state.failures != 0 || state.lockout_count != 0 {
                    state.failures = 0;
                    state.lockout_count = 0;
                    self.store
                        .put_lockout_state(&attempt.tenant_id, &attempt.account, attempt.location, &state)
                        .await?;
                }
                self.lockout.forget(&attempt.guard.key);
                Ok(None)
            }
            AttemptOutcome::Failure { password } => {
                if self.lockout.seen_before(&attempt.guard.key, password) {
                    return Ok(None);
                }
                state.failures += 1;
                state.last_failure_at = now;
                let mut locked = None;
                if state.failures >= tenant.lockout_threshold.max(1) {
                    state.lockout_count += 1;
                    state.failures = 0;
                    state.locked_until = now + lockout_period(tenant.lockout_seconds, state.lockout_count);
                    locked = Some(state.locked_until);
                    tracing::warn!(
                        tenant = %tenant.name,
                        location = attempt.location.as_str(),
                        lockout_count = state.lockout_count,
                        "account locked by smart lockout"
                    );
                }
                self.store
                    .put_lockout_state(&attempt.tenant_id, &attempt.account, attempt.location, &state)
                    .await?;
                Ok(locked)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn period_doubles_and_caps() {
        assert_eq!(lockout_period(60, 1), Duration::from_secs(60));
        assert_eq!(lockout_period(60, 2), Duration::from_secs(120));
        assert_eq!(lockout_period(60, 3), Duration::from_secs(240));
        assert_eq!(
            lockout_period(60, 100),
            Duration::from_secs(60 << MAX_LOCKOUT_DOUBLINGS)
        );
    }

    #[test]
    fn repeated_wrong_password_is_seen_once_memory_is_bounded() {
        let lockout = SmartLockout::new().unwrap();
        let a = SecretString::from("guess1");
        assert!(!lockout.seen_before("k", &a));
        assert!(lockout.seen_before("k", &a));
        assert!(!lockout.seen_before("other", &a), "tags are per account");
        for p in ["g2", "g3", "g4"] {
            assert!(!lockout.seen_before("k", &SecretString::from(p)));
        }
        assert!(!lockout.seen_before("k", &a), "only the last few are remembered");
        lockout.forget("k");
        assert!(!lockout.seen_before("k", &SecretString::from("g4")));
    }

    #[test]
    fn exclusive_entry() {
        let lockout = SmartLockout::new().unwrap();
        assert!(lockout.enter("k", false));
        assert!(lockout.enter("k", false));
        assert!(!lockout.enter("k", true));
        lockout.leave("k");
        lockout.leave("k");
        assert!(lockout.enter("k", true));
        assert!(!lockout.enter("k", true));
    }
}
