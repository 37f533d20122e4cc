//! Cloud passwords: argon2id hashes computed within a memory budget.
//!
//! argon2id needs its whole memory parameter for every hash and every
//! verification (19 MiB by default). Anyone on the internet can post passwords
//! to the sign-in page, so the hashes run in a bounded pool
//! ([`HashingSettings`]): at most `workers` at once, each in a buffer the pool
//! keeps (the pool's worst case is `workers × memory_kib`, checked against the
//! installation's budget at start), at most `queue` more waiting, each at most
//! `queue_wait`; more are refused at once with [`HashingBusy`], which the
//! sign-in page turns into "try again" (503 with `Retry-After`). The buffers
//! are given back to the system after a quiet spell.
//!
//! Unknown accounts are checked against a dummy hash with the current
//! parameters, so they take exactly as long as known ones. A stored hash made
//! with other parameters is replaced at the account's next successful sign-in.

mod argon;
mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postern_keyring::SecretString;

use crate::error::StsError;
pub use pool::HashingBusy;

/// Shortest password accepted for a cloud account.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted anywhere (bytes); longer input is refused unread.
pub const MAX_PASSWORD_LEN: usize = 256;

/// argon2id's memory per hash by default: 19 MiB (OWASP's first choice).
pub const DEFAULT_MEMORY_KIB: u32 = 19 * 1024;
/// argon2id's passes by default (with 19 MiB, OWASP's first choice).
pub const DEFAULT_ITERATIONS: u32 = 2;
/// Memory the hashing pool may use at once by default (MiB).
pub const DEFAULT_MEMORY_BUDGET_MIB: u32 = 256;

/// The argon2id parameters and the pool that runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashingSettings {
    /// Memory per hash or verification, KiB (argon2 `m`).
    pub memory_kib: u32,
    /// Passes over the memory (argon2 `t`); one lane (`p = 1`) always.
    pub iterations: u32,
    /// Hashes computed at once.
    pub workers: usize,
    /// Hashes waiting for a worker at most; more are refused at once.
    pub queue: usize,
    /// Longest a hash waits for a worker before it is refused.
    pub queue_wait: Duration,
    /// The pool's buffers go back to the system after this long without a hash.
    pub release_after: Duration,
}

impl Default for HashingSettings {
    /// 19 MiB and two passes; a worker per core within
    /// [`DEFAULT_MEMORY_BUDGET_MIB`], 16 waiting per worker for at most 2 s;
    /// buffers back to the system after 10 s without a hash.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        let workers = cores.min(Self::workers_within(DEFAULT_MEMORY_BUDGET_MIB, DEFAULT_MEMORY_KIB));
        Self {
            memory_kib: DEFAULT_MEMORY_KIB,
            iterations: DEFAULT_ITERATIONS,
            workers,
            queue: 16 * workers,
            queue_wait: Duration::from_secs(2),
            release_after: Duration::from_secs(10),
        }
    }
}

impl HashingSettings {
    /// The most workers whose buffers fit `budget_mib` at `memory_kib` each (at
    /// least one).
    pub fn workers_within(budget_mib: u32, memory_kib: u32) -> usize {
        let per_worker = u64::from(memory_kib.max(1));
        usize::try_from(u64::from(budget_mib) * 1024 / per_worker)
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The pool's memory when every worker is busy (bytes): the most password
    /// hashing ever holds at once.
    pub fn worst_case_bytes(&self) -> u64 {
        (self.workers as u64).saturating_mul(u64::from(self.memory_kib) * 1024)
    }

    /// Every problem with these settings under a budget of `budget_mib`.
    pub fn problems(&self, budget_mib: u32) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = argon::Argon::new(self.memory_kib, self.iterations) {
            problems.push(e);
        }
        if self.workers == 0 {
            problems.push("at least one hashing worker is needed".into());
        }
        if self.queue_wait.is_zero() && self.queue > 0 {
            problems.push("a queue needs a wait longer than zero".into());
        }
        let worst = self.worst_case_bytes();
        if worst > u64::from(budget_mib) * 1024 * 1024 {
            problems.push(format!(
                "{} workers × {} KiB = {} MiB exceed the memory budget of {budget_mib} MiB: \
                 lower workers or memory_kib, or raise memory_budget_mib",
                self.workers,
                self.memory_kib,
                worst.div_ceil(1024 * 1024)
            ));
        }
        problems
    }
}

/// What a password check found.
#[derive(Debug)]
pub struct Verification {
    /// The password matches the account's hash.
    pub matched: bool,
    /// A hash of the same password with the current parameters, when the
    /// stored one was made with other parameters: store it in place of the old.
    pub rehashed: Option<String>,
}

/// Hashes and checks passwords within the pool's bounds.
#[derive(Debug)]
pub struct PasswordHasher {
    settings: HashingSettings,
    argon: argon::Argon,
    pool: Arc<pool::Pool>,
    verifications: AtomicU64,
}

/// A place in the hashing queue: taken before any other work for a password
/// (so a full pool refuses a sign-in before it costs anything else), spent by
/// one hash or verification.
#[derive(Debug)]
pub struct Ticket<'a> {
    hasher: &'a PasswordHasher,
    admitted: pool::Admitted,
}

impl PasswordHasher {
    /// A hasher with `settings` (checked: see [`HashingSettings::problems`]).
    pub fn new(settings: HashingSettings) -> Result<Self, StsError> {
        let argon = argon::Argon::new(settings.memory_kib, settings.iterations).map_err(StsError::internal)?;
        let pool = pool::Pool::new(pool::PoolShape {
            workers: settings.workers,
            queue: settings.queue,
            queue_wait: settings.queue_wait,
            release_after: settings.release_after,
            block_count: argon.block_count(),
        });
        Ok(Self {
            settings,
            argon,
            pool,
            verifications: AtomicU64::new(0),
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &HashingSettings {
        &self.settings
    }

    /// Passwords verified so far (dummy verifications of unknown accounts
    /// included): what smart lockout bounds.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// Hashes and verifications refused so far because the pool was full.
    pub fn refusals(&self) -> u64 {
        self.pool.refused()
    }

    /// Hashing buffers the pool holds now (each `memory_kib` KiB).
    pub fn buffers_held(&self) -> usize {
        self.pool.buffers_held()
    }

    /// Keeps every worker busy until the returned guard drops: tests fill the
    /// pool this way.
    #[cfg(feature = "testing")]
    pub async fn occupy_workers(&self) -> Result<impl Drop + Send + 'static, StsError> {
        self.pool.occupy_workers().await
    }

    /// A place in the queue, or [`HashingBusy::QueueFull`] at once.
    pub fn admit(&self) -> Result<Ticket<'_>, HashingBusy> {
        Ok(Ticket {
            hasher: self,
            admitted: self.pool.admit()?,
        })
    }

    /// The argon2id hash (PHC string) of `password`, waiting for a worker as
    /// any sign-in would; a full pool is [`StsError::HashingBusy`].
    pub async fn hash(&self, password: &SecretString) -> Result<String, StsError> {
        Ok(self.admit()?.hash(password).await??)
    }

    /// Whether `password` matches `hash` (see [`Ticket::verify`]); a full pool
    /// is [`StsError::HashingBusy`].
    pub async fn verify(&self, password: &SecretString, hash: Option<&str>) -> Result<bool, StsError> {
        Ok(self.admit()?.verify(password, hash).await??.matched)
    }
}

impl Ticket<'_> {
    /// Hashes `password` with the current parameters and a fresh salt.
    pub async fn hash(self, password: &SecretString) -> Result<Result<String, HashingBusy>, StsError> {
        let salt = argon::new_salt()?;
        let password = password.clone();
        let argon = self.hasher.argon.clone();
        let done = self
            .hasher
            .pool
            .run(self.admitted, move |memory| {
                argon.hash(password.expose().as_bytes(), &salt, memory)
            })
            .await?;
        Ok(match done {
            Ok(hash) => Ok(hash?),
            Err(busy) => Err(busy),
        })
    }

    /// Checks `password` against the stored `hash`. With no hash (unknown
    /// account, or one without a cloud password) it spends the same effort on
    /// a dummy hash, then answers no match. A match against a hash with
    /// outdated parameters comes with a fresh hash to store.
    pub async fn verify(
        self,
        password: &SecretString,
        hash: Option<&str>,
    ) -> Result<Result<Verification, HashingBusy>, StsError> {
        let (stored, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.hasher.argon.dummy()?, false),
        };
        let salt = argon::new_salt()?;
        let password = password.clone();
        let argon = self.hasher.argon.clone();
        let hasher = self.hasher;
        let done = hasher
            .pool
            .run(self.admitted, move |memory| {
                let checked = argon.verify(password.expose().as_bytes(), &stored, memory)?;
                let matched = checked.matched && real;
                let rehashed = if matched && checked.outdated {
                    Some(argon.hash(password.expose().as_bytes(), &salt, memory)?)
                } else {
                    None
                };
                Ok::<_, StsError>(Verification { matched, rehashed })
            })
            .await?;
        Ok(match done {
            Ok(verification) => {
                let verification = verification?;
                hasher.verifications.fetch_add(1, Ordering::Relaxed);
                Ok(verification)
            }
            Err(busy) => Err(busy),
        })
    }
}

/// Why a new cloud password is refused: the person choosing it must pick
/// another, and the message says what to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejected {
    /// Shorter than [`MIN_PASSWORD_LEN`] characters.
    #[error("The password must be at least {} characters long.", MIN_PASSWORD_LEN)]
    TooShort,
    /// Longer than [`MAX_PASSWORD_LEN`] bytes.
    #[error("The password must be at most {} bytes long.", MAX_PASSWORD_LEN)]
    TooLong,
    /// The password contains the local part of the username.
    #[error("The password must not contain the username.")]
    ContainsUsername,
}

/// Checks a new cloud password against the policy.
pub fn check_new_password(password: &SecretString, username: &str) -> Result<(), PasswordRejected> {
    let p = password.expose();
    if p.chars().count() < MIN_PASSWORD_LEN {
        return Err(PasswordRejected::TooShort);
    }
    if p.len() > MAX_PASSWORD_LEN {
        return Err(PasswordRejected::TooLong);
    }
    let local = username.split('@').next().unwrap_or(username);
    if !local.is_empty() && p.to_lowercase().contains(&local.to_lowercase()) {
        return Err(PasswordRejected::ContainsUsername);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(workers: usize, queue: usize) -> HashingSettings {
        HashingSettings {
            memory_kib: 256,
            iterations: 1,
            workers,
            queue,
            queue_wait: Duration::from_secs(2),
            release_after: Duration::from_secs(20),
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_fail() {
        let hasher = PasswordHasher::new(small(2, 4)).unwrap();
        let pw = SecretString::from("correct horse battery");
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=256,t=1,p=1$"), "{hash}");
        assert!(!hash.contains("correct"));
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&SecretString::from("wrong"), Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&pw, None).await.unwrap());
        assert!(hasher.verify(&pw, Some("not a hash")).await.is_err());
        assert_eq!(
            hasher.verifications(),
            3,
            "unknown accounts count; broken hashes do not"
        );
    }

    #[tokio::test]
    async fn outdated_hashes_come_back_rehashed_on_a_match_only() {
        let old = PasswordHasher::new(HashingSettings {
            iterations: 2,
            ..small(1, 1)
        })
        .unwrap();
        let pw = SecretString::from("correct horse battery");
        let stored = old.hash(&pw).await.unwrap();
        let current = PasswordHasher::new(small(1, 1)).unwrap();
        let wrong = current
            .admit()
            .unwrap()
            .verify(&"wrong".into(), Some(&stored))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !wrong.matched && wrong.rehashed.is_none(),
            "no rehash of a wrong password"
        );
        let right = current
            .admit()
            .unwrap()
            .verify(&pw, Some(&stored))
            .await
            .unwrap()
            .unwrap();
        assert!(right.matched);
        let fresh = right.rehashed.expect("rehashed with the current parameters");
        assert!(fresh.contains("m=256,t=1,p=1"), "{fresh}");
        let again = current
            .admit()
            .unwrap()
            .verify(&pw, Some(&fresh))
            .await
            .unwrap()
            .unwrap();
        assert!(again.matched && again.rehashed.is_none(), "current hashes stay");
    }

    #[tokio::test]
    async fn a_full_pool_refuses_with_try_again() {
        let hasher = PasswordHasher::new(small(1, 0)).unwrap();
        let first = hasher.admit().unwrap();
        assert_eq!(hasher.admit().unwrap_err(), HashingBusy::QueueFull);
        let err = hasher.hash(&"x".into()).await.unwrap_err();
        assert!(matches!(err, StsError::HashingBusy(HashingBusy::QueueFull)), "{err:?}");
        drop(first);
        assert!(hasher.verify(&"x".into(), None).await.is_ok(), "the place came back");
        assert_eq!(hasher.refusals(), 2);
    }

    #[test]
    fn the_budget_bounds_the_workers() {
        assert_eq!(HashingSettings::workers_within(256, DEFAULT_MEMORY_KIB), 13);
        assert_eq!(
            HashingSettings::workers_within(1, DEFAULT_MEMORY_KIB),
            1,
            "at least one"
        );
        let d = HashingSettings::default();
        assert!(
            d.problems(DEFAULT_MEMORY_BUDGET_MIB).is_empty(),
            "{:?}",
            d.problems(256)
        );
        assert!(d.worst_case_bytes() <= 256 * 1024 * 1024);
        let greedy = HashingSettings { workers: 14, ..d };
        let problems = greedy.problems(256);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("14 workers × 19456 KiB = 266 MiB"), "{problems:?}");
        let broken = HashingSettings {
            memory_kib: 1,
            workers: 0,
            ..d
        };
        assert_eq!(broken.problems(256).len(), 2);
    }

    #[test]
    fn policy() {
        assert_eq!(
            check_new_password(&"short".into(), "a@b"),
            Err(PasswordRejected::TooShort)
        );
        assert_eq!(
            check_new_password(&"aliceAlice12345".into(), "alice@x.test"),
            Err(PasswordRejected::ContainsUsername)
        );
        assert_eq!(
            check_new_password(&"x".repeat(300).as_str().into(), "a@b"),
            Err(PasswordRejected::TooLong)
        );
        assert_eq!(
            PasswordRejected::TooShort.to_string(),
            "The password must be at least 12 characters long."
        );
        assert!(check_new_password(&"a long enough pass".into(), "bob@x.test").is_ok());
    }
}
