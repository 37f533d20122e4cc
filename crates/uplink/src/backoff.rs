//! Jittered exponential backoff for reconnecting components: each failure waits
//! longer (doubling from `min` up to `max`), with "full jitter" so a fleet of
//! components that lost the service at once does not return in lockstep. A
//! success resets it.

use std::time::Duration;

/// Longest wait of [`Backoff::soon`].
pub const SOON_JITTER: Duration = Duration::from_millis(100);

/// A backoff schedule.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
}

/// Bounds that make no schedule (`min` zero, or `max` below `min`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("backoff needs 0 < min <= max")]
pub struct InvalidBackoff;

impl Backoff {
    /// A schedule from `min` to `max`.
    pub fn try_new(min: Duration, max: Duration) -> Result<Self, InvalidBackoff> {
        if min.is_zero() || max < min {
            return Err(InvalidBackoff);
        }
        Ok(Self { min, max, attempt: 0 })
    }

    /// The ceiling of the next wait (before jitter).
    fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// How long to wait before the next attempt: uniformly random between `min`
    /// and the current ceiling; the ceiling doubles each time.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(self.min).as_millis();
        let random = postern_keyring::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or(0);
        let offset = if span == 0 { 0 } else { u128::from(random) % span };
        self.min + Duration::from_millis(u64::try_from(offset).unwrap_or(0))
    }

    /// The wait before dialling again after a connection that was up ended
    /// (the service restarted or said it is going away): a small random wait,
    /// at most [`SOON_JITTER`], so a fleet does not return in lockstep; the
    /// backoff applies only if that dial fails too.
    pub fn soon() -> Duration {
        let random = postern_keyring::random_bytes::<2>()
            .map(u16::from_le_bytes)
            .unwrap_or(0);
        let span = u64::try_from(SOON_JITTER.as_millis()).unwrap_or(100).max(1);
        Duration::from_millis(u64::from(random) % span)
    }

    /// Back to the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_within_bounds_and_resets() {
        assert!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        let mut b = Backoff::try_new(min, max).unwrap();
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            let d = b.next_delay();
            assert!(d >= min && d <= max, "{d:?}");
        }
        assert_eq!(ceilings[0], min);
        assert_eq!(ceilings[1], min * 2);
        assert_eq!(*ceilings.last().unwrap(), max, "capped");
        // Jitter: many draws at the cap are not all equal.
        let draws: std::collections::HashSet<_> = (0..20).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 1);
        b.reset();
        assert_eq!(b.ceiling(), min);
        assert!((0..50).all(|_| Backoff::soon() < SOON_JITTER));
    }
}
