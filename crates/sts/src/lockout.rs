//! Smart lockout (PTA-9): stops password guessing in the cloud, before a password is
//! checked anywhere, so brute force and spraying never reach the directory.
//!
//! - Failures are counted per account, apart for *familiar* locations (networks the
//!   user signed in from successfully before) and *unfamiliar* ones, so an attacker
//!   elsewhere cannot lock the user out of their usual place.
//! - At the tenant's threshold the account is locked for the tenant's period; each
//!   further lockout doubles it (up to [`MAX_LOCKOUT_DOUBLINGS`] times). Counters
//!   decay after [`OBSERVATION_WINDOW`] without failures.
//! - An attempt is *reserved* in the database before its password is checked, and
//!   only while failures plus attempts in flight stay under the threshold; the
//!   outcome settles it. So no burst, on one instance or across instances sharing
//!   the database, checks more passwords than the threshold; the attempts beyond
//!   it are refused as busy without a check. A reservation whose request dies is
//!   given back when its [`Attempt`] drops, and lapses after [`RESERVATION_TTL`]
//!   (or twice the pass-through deadline, if longer) should its instance crash.
//! - The same wrong password repeated counts once (its reservation is given back).
//!   To know that, a keyed tag of the last few wrong passwords is kept **in this
//!   process's memory only**, under a key made at start-up: nothing derived from a
//!   password reaches the database.
//! - Unknown accounts are counted like real ones, so lockout reveals nothing about
//!   which accounts exist.
//!
//! Every password path (cloud passwords and pass-through authentication) goes
//! through [`Sts::check_lockout`] first and [`Sts::record_attempt`] after.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use aws_lc_rs::hmac;
use postern_keyring::SecretString;
use postern_store::{LocationClass, LockoutContext, LockoutKey, LockoutReservation, LockoutRules, Store, Tenant, User};
use postern_time::{SharedClock, UnixTime};

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
/// A reservation not settled within this long lapses (at least; see
/// [`Sts::check_lockout`]): far longer than any password check takes.
pub const RESERVATION_TTL: Duration = Duration::from_secs(120);
/// Wrong passwords remembered per account (to count repeats once).
const REMEMBERED_BAD_PASSWORDS: usize = 3;
/// Accounts whose wrong passwords are remembered, at most.
const REMEMBERED_ACCOUNTS: usize = 100_000;

/// In-memory state of smart lockout: the wrong-password memory.
pub(crate) struct SmartLockout {
    tag_key: hmac::Key,
    bad: Mutex<BadPasswordMemory>,
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
    /// [`Sts::record_attempt`]. (Boxed: it holds a handle to the store.)
    Proceed(Box<Attempt>),
    /// Refused without checking the password.
    Locked {
        /// When the account unlocks for this location class.
        until: UnixTime,
    },
    /// As many attempts on this account as may still fail before it locks are
    /// being checked right now (on any instance): refused without a check.
    Busy,
}

/// A permitted attempt, holding its reservation until the outcome is reported.
#[must_use = "report the outcome with Sts::record_attempt"]
#[derive(Debug)]
pub struct Attempt {
    reservation: Reservation,
    memory_key: String,
    location: LocationClass,
    network_seen: Option<UnixTime>,
    /// The user the attempt was checked for, and their groups from the
    /// directory as read with the counters.
    directory_groups: Option<(String, Vec<String>)>,
}

impl Attempt {
    /// The directory groups of `user_id` as read when the attempt began, if it
    /// began for that user.
    pub(crate) fn directory_groups_of(&self, user_id: &str) -> Option<&[String]> {
        self.directory_groups
            .as_ref()
            .filter(|(id, _)| id == user_id)
            .map(|(_, groups)| groups.as_slice())
    }
}

/// A reservation held in the database; given back when dropped unsettled,
/// however the request ended (cancelled, failed).
struct Reservation {
    store: Store,
    clock: SharedClock,
    key: LockoutKey,
    lapses_at: UnixTime,
    settled: bool,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("location", &self.key.location)
            .field("lapses_at", &self.lapses_at)
            .field("settled", &self.settled)
            .finish_non_exhaustive()
    }
}

impl Reservation {
    /// Whether the reservation is still counted (has not lapsed).
    fn held(&self) -> bool {
        self.clock.now() < self.lapses_at
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.settled || !self.held() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let key = self.key.clone();
        runtime.spawn(async move {
            if let Err(e) = store.release_lockout_attempt(&key).await {
                tracing::debug!(error = %e, "smart lockout: an abandoned reservation was not given back; it lapses");
            }
        });
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
}

impl Sts {
    /// Decides whether a password may be checked for `account` (the normalized
    /// sign-in name) from `ip`, and if so reserves the attempt. `user` is the
    /// account if it exists; `known` its lockout context if the caller read it
    /// with the account ([`Store::user_with_lockout_context`]), else it is read
    /// here.
    pub async fn check_lockout(
        &self,
        tenant: &Tenant,
        account: &str,
        user: Option<&User>,
        ip: ClientIp,
        known: Option<LockoutContext>,
    ) -> Result<LockoutDecision, StsError> {
        let now = self.now();
        let mut context = match known {
            Some(context) => context,
            None => {
                self.store
                    .lockout_context(&tenant.id, account, user.map(|u| u.id.as_str()), &ip.network())
                    .await?
            }
        };
        let directory_groups = user.map(|u| (u.id.clone(), std::mem::take(&mut context.directory_groups)));
        let network_seen = context.network_seen;
        let location = match network_seen {
            Some(seen) if seen > now - FAMILIAR_FOR => LocationClass::Familiar,
            _ => LocationClass::Unfamiliar,
        };
        let known = match location {
            LocationClass::Familiar => context.familiar,
            LocationClass::Unfamiliar => context.unfamiliar,
        };
        // Locked already: refused on a read, without a write.
        if known.locked_until > now {
            postern_metrics::record::lockout_refusal(&tenant.id);
            return Ok(LockoutDecision::Locked {
                until: known.locked_until,
            });
        }
        let key = LockoutKey {
            tenant_id: tenant.id.clone(),
            account: account.to_owned(),
            location,
        };
        let lapses_at = now + self.reservation_ttl();
        let reserved = self
            .store
            .reserve_lockout_attempt(&key, &lockout_rules(tenant, now), now, lapses_at)
            .await?;
        if let LockoutReservation::Refused(state) = reserved {
            return Ok(if state.locked_until > now {
                postern_metrics::record::lockout_refusal(&tenant.id);
                LockoutDecision::Locked {
                    until: state.locked_until,
                }
            } else {
                LockoutDecision::Busy
            });
        }
        Ok(LockoutDecision::Proceed(Box::new(Attempt {
            memory_key: format!("{}\u{0}{}\u{0}{}", tenant.id, account, location.as_str()),
            reservation: Reservation {
                store: self.store.clone(),
                clock: self.clock.clone(),
                key,
                lapses_at,
                settled: false,
            },
            location,
            network_seen,
            directory_groups,
        })))
    }

    /// Records the outcome of a permitted attempt, settling its reservation.
    /// Returns when the account is now locked, if this failure locked it.
    pub async fn record_attempt(
        &self,
        tenant: &Tenant,
        mut attempt: Attempt,
        outcome: AttemptOutcome<'_>,
    ) -> Result<Option<UnixTime>, StsError> {
        let locked = self.settle(tenant, &attempt, outcome).await?;
        // Settled: nothing to give back when the attempt drops. (On an error the
        // drop gives the reservation back instead.)
        attempt.reservation.settled = true;
        Ok(locked)
    }

    async fn settle(
        &self,
        tenant: &Tenant,
        attempt: &Attempt,
        outcome: AttemptOutcome<'_>,
    ) -> Result<Option<UnixTime>, StsError> {
        let now = self.now();
        let reservation = &attempt.reservation;
        let held = reservation.held();
        match outcome {
            AttemptOutcome::Inconclusive => {
                if held {
                    self.store.release_lockout_attempt(&reservation.key).await?;
                }
                Ok(None)
            }
            AttemptOutcome::Success { user_id, ip } => {
                let fresh = attempt
                    .network_seen
                    .is_some_and(|seen| now.since(seen) < REFRESH_FAMILIAR_AFTER);
                if !fresh {
                    self.store.remember_network(user_id, &ip.network(), now).await?;
                }
                self.store.settle_lockout_success(&reservation.key, held).await?;
                self.lockout.forget(&attempt.memory_key);
                Ok(None)
            }
            AttemptOutcome::Failure { password } => {
                if self.lockout.seen_before(&attempt.memory_key, password) {
                    if held {
                        self.store.release_lockout_attempt(&reservation.key).await?;
                    }
                    return Ok(None);
                }
                let locked = self
                    .store
                    .settle_lockout_failure(&reservation.key, &lockout_rules(tenant, now), now, held)
                    .await?;
                if locked.is_some() {
                    postern_metrics::record::lockout(&tenant.id);
                    tracing::warn!(
                        tenant = %tenant.name,
                        location = attempt.location.as_str(),
                        "account locked by smart lockout"
                    );
                }
                Ok(locked)
            }
        }
    }

    /// How long a reservation is held at most: [`RESERVATION_TTL`], or twice the
    /// pass-through deadline if that is longer.
    fn reservation_ttl(&self) -> Duration {
        RESERVATION_TTL.max(self.config.pta.overall.saturating_mul(2))
    }
}

/// The tenant's lockout policy at `now`.
fn lockout_rules(tenant: &Tenant, now: UnixTime) -> LockoutRules {
    LockoutRules {
        threshold: tenant.lockout_threshold.max(1),
        forget_before: now - OBSERVATION_WINDOW,
        period_secs: tenant.lockout_seconds.max(1),
        max_doublings: MAX_LOCKOUT_DOUBLINGS,
    }
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;

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
}
