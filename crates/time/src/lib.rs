//! Time as a parameter: the clock trait, the system clock and a manual clock for tests.
//!
//! Every rule that depends on time (token expiry, lockout, certificate age) takes a
//! [`UnixTime`] from a [`Clock`] so that tests move time forward instead of sleeping.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. The unit of every timestamp the service stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "sqlx", derive(sqlx::Type), sqlx(transparent))]
pub struct UnixTime(i64);

impl UnixTime {
    /// The instant `secs` seconds after the epoch.
    pub const fn from_secs(secs: i64) -> Self {
        Self(secs)
    }

    /// Seconds since the epoch.
    pub const fn secs(self) -> i64 {
        self.0
    }

    /// Whole seconds from `earlier` to `self`, saturating at zero.
    pub fn since(self, earlier: UnixTime) -> Duration {
        Duration::from_secs(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl Add<Duration> for UnixTime {
    type Output = UnixTime;
    fn add(self, rhs: Duration) -> UnixTime {
        UnixTime(self.0.saturating_add(i64::try_from(rhs.as_secs()).unwrap_or(i64::MAX)))
    }
}

impl Sub<Duration> for UnixTime {
    type Output = UnixTime;
    fn sub(self, rhs: Duration) -> UnixTime {
        UnixTime(self.0.saturating_sub(i64::try_from(rhs.as_secs()).unwrap_or(i64::MAX)))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> UnixTime;

    /// The current time as a duration since the epoch, finer than a second where
    /// the clock can tell (for ages measured in fractions of a second, such as a
    /// read cache's). A clock that counts whole seconds keeps this default.
    fn since_epoch(&self) -> Duration {
        Duration::from_secs(u64::try_from(self.now().secs()).unwrap_or(0))
    }
}

/// A shared clock handle, as held by the service's components.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock of the machine.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixTime {
        // The one reading of the wall clock (clippy.toml bans it elsewhere).
        #[allow(clippy::disallowed_methods)]
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        UnixTime(secs)
    }

    fn since_epoch(&self) -> Duration {
        // The same reading as `now`, kept to the nanosecond.
        #[allow(clippy::disallowed_methods)]
        let now = SystemTime::now();
        now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
    }
}

/// A clock that only moves when told to. Starts at the system time it was created at,
/// so that timestamps stay plausible for clients that check them (e.g. an OIDC
/// relying party validating `iat`).
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A manual clock set to the current system time.
    pub fn starting_now() -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(SystemClock.now().secs()),
        })
    }

    /// A manual clock set to `at`.
    pub fn starting_at(at: UnixTime) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(at.secs()),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap_or(i64::MAX);
        self.now.fetch_add(secs, Ordering::SeqCst);
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: UnixTime) {
        self.now.store(at.secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.now.load(Ordering::SeqCst))
    }
}

/// A [`Clock`] as rustls's source of time, so certificate validity in TLS is
/// judged by the same clock as the service's own certificate rules.
#[cfg(feature = "rustls")]
#[derive(Debug)]
pub struct RustlsTime(pub SharedClock);

#[cfg(feature = "rustls")]
impl rustls::time_provider::TimeProvider for RustlsTime {
    fn current_time(&self) -> Option<rustls_pki_types::UnixTime> {
        let secs = u64::try_from(self.0.now().secs()).ok()?;
        Some(rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_at(UnixTime::from_secs(1_000));
        assert_eq!(clock.now(), UnixTime::from_secs(1_000));
        clock.advance(Duration::from_secs(61));
        assert_eq!(clock.now(), UnixTime::from_secs(1_061));
        clock.set(UnixTime::from_secs(5));
        assert_eq!(clock.now().secs(), 5);
        assert_eq!(clock.since_epoch(), Duration::from_secs(5));
    }

    #[test]
    fn system_clock_agrees_with_itself_to_the_second() {
        let precise = SystemClock.since_epoch();
        let secs = SystemClock.now().secs();
        let precise_secs = i64::try_from(precise.as_secs()).unwrap_or(i64::MAX);
        assert!((secs - precise_secs).abs() <= 1, "{secs} vs {precise:?}");
    }

    #[test]
    fn arithmetic_saturates() {
        let t = UnixTime::from_secs(10);
        assert_eq!((t + Duration::from_secs(5)).secs(), 15);
        assert_eq!((t - Duration::from_secs(5)).secs(), 5);
        assert_eq!(UnixTime::from_secs(3).since(t), Duration::ZERO);
        assert_eq!(t.since(UnixTime::from_secs(3)), Duration::from_secs(7));
    }
}
