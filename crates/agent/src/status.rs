//! What the agent is doing, for operators and tests: its connection state (a `watch`
//! of [`AgentStatus`]) and counters of what happened to the requests it was sent
//! ([`AgentStats`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use postern_proto::relay::ValidationOutcome;

/// Where the run loop is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not started yet.
    Starting,
    /// Bootstrapping or opening the queue stream.
    Connecting,
    /// Reading the queue stream.
    Connected,
    /// Waiting before the next attempt, after a failure.
    Waiting(Duration),
    /// Shutting down: no new requests, finishing the ones in flight.
    Draining,
    /// Stopped.
    Stopped,
}

/// The run loop's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentStatus {
    /// Where the loop is.
    pub phase: Phase,
    /// Queue streams opened so far.
    pub connections: u64,
    /// Successful bootstrap calls so far.
    pub bootstraps: u64,
    /// ID of the key the agent decrypts with (changes on renewal).
    pub key_id: String,
    /// Validations allowed at once now.
    pub max_in_flight: usize,
    /// Why the last queue stream ended, if one did.
    pub last_disconnect: Option<String>,
}

impl AgentStatus {
    pub(crate) fn new(key_id: String) -> Self {
        Self {
            phase: Phase::Starting,
            connections: 0,
            bootstraps: 0,
            key_id,
            max_in_flight: 0,
            last_disconnect: None,
        }
    }
}

const OUTCOMES: [ValidationOutcome; 8] = [
    ValidationOutcome::Success,
    ValidationOutcome::WrongCredentials,
    ValidationOutcome::PasswordExpired,
    ValidationOutcome::AccountDisabled,
    ValidationOutcome::AccountExpired,
    ValidationOutcome::AccountLocked,
    ValidationOutcome::MustChangePassword,
    ValidationOutcome::DirectoryUnreachable,
];

/// The counter of a directory's outcome (`None` for what the agent says of
/// itself, such as "declined").
fn index(outcome: ValidationOutcome) -> Option<usize> {
    OUTCOMES.iter().position(|o| *o == outcome)
}

/// Counters of the requests the agent was sent. Shared; read with [`Self::snapshot`].
#[derive(Debug, Default)]
pub struct AgentStats {
    validated: [AtomicU64; 8],
    pub(crate) received: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) skipped_expired: AtomicU64,
    pub(crate) skipped_other_keys: AtomicU64,
    pub(crate) skipped_other_tenant: AtomicU64,
    pub(crate) skipped_overloaded: AtomicU64,
    pub(crate) skipped_malformed: AtomicU64,
    pub(crate) decrypt_failed: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) results_posted: AtomicU64,
    pub(crate) results_streamed: AtomicU64,
    pub(crate) results_refused: AtomicU64,
    pub(crate) results_failed: AtomicU64,
    pub(crate) results_resent: AtomicU64,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Directory answers, by outcome.
    pub validated: HashMap<ValidationOutcome, u64>,
    /// Validation requests that reached this agent (every one counts, whatever
    /// became of it).
    pub received: u64,
    /// Requests declined at once so the service offers them to another agent:
    /// every validation slot busy, or no ciphertext for this agent's key.
    pub declined: u64,
    /// Requests dropped because their deadline had passed before work began.
    pub skipped_expired: u64,
    /// Requests with no ciphertext for this agent's key (encrypted for other agents).
    pub skipped_other_keys: u64,
    /// Requests naming another tenant than this agent's (never validated).
    pub skipped_other_tenant: u64,
    /// Requests dropped because too many were waiting already.
    pub skipped_overloaded: u64,
    /// Requests whose ID is not a plain identifier.
    pub skipped_malformed: u64,
    /// Ciphertexts that did not decrypt (wrong label, altered, another key).
    pub decrypt_failed: u64,
    /// Validations that finished after the deadline (not reported).
    pub late: u64,
    /// Results the service accepted, each posted on its own.
    pub results_posted: u64,
    /// Results sent on the two-way queue (the service answers none of them).
    pub results_streamed: u64,
    /// Results the service refused (request no longer pending, ...).
    pub results_refused: u64,
    /// Results that could not be delivered.
    pub results_failed: u64,
    /// Results sent on a two-way queue that broke soon after, which the service
    /// then accepted when posted again (so the queue had lost them); also
    /// counted in `results_posted`.
    pub results_resent: u64,
    /// Validations running now.
    pub in_flight: usize,
    /// Most validations that ran at once.
    pub peak_in_flight: usize,
}

impl StatsSnapshot {
    /// Directory answers of one outcome.
    pub fn validated(&self, outcome: ValidationOutcome) -> u64 {
        self.validated.get(&outcome).copied().unwrap_or(0)
    }

    /// Directory answers of every outcome.
    pub fn validated_total(&self) -> u64 {
        self.validated.values().sum()
    }
}

/// Counts one validation as running while it lives.
pub(crate) struct InFlight<'a>(&'a AgentStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AgentStats {
    pub(crate) fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn validated(&self, outcome: ValidationOutcome) {
        if let Some(c) = index(outcome).and_then(|i| self.validated.get(i)) {
            Self::count(c);
        }
    }

    pub(crate) fn start(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            validated: OUTCOMES
                .iter()
                .zip(&self.validated)
                .map(|(o, c)| (*o, get(c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            received: get(&self.received),
            declined: get(&self.declined),
            skipped_expired: get(&self.skipped_expired),
            skipped_other_keys: get(&self.skipped_other_keys),
            skipped_other_tenant: get(&self.skipped_other_tenant),
            skipped_overloaded: get(&self.skipped_overloaded),
            skipped_malformed: get(&self.skipped_malformed),
            decrypt_failed: get(&self.decrypt_failed),
            late: get(&self.late),
            results_posted: get(&self.results_posted),
            results_streamed: get(&self.results_streamed),
            results_refused: get(&self.results_refused),
            results_failed: get(&self.results_failed),
            results_resent: get(&self.results_resent),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_outcome_and_tracks_the_peak() {
        let stats = AgentStats::default();
        stats.validated(ValidationOutcome::Success);
        stats.validated(ValidationOutcome::Success);
        stats.validated(ValidationOutcome::DirectoryUnreachable);
        {
            let _a = stats.start();
            let _b = stats.start();
            assert_eq!(stats.snapshot().in_flight, 2);
        }
        let s = stats.snapshot();
        assert_eq!(s.validated(ValidationOutcome::Success), 2);
        assert_eq!(s.validated(ValidationOutcome::DirectoryUnreachable), 1);
        assert_eq!(s.validated(ValidationOutcome::AccountLocked), 0);
        assert_eq!(s.validated_total(), 3);
        assert_eq!((s.in_flight, s.peak_in_flight), (0, 2));
        // Every outcome has its own counter.
        for o in OUTCOMES {
            assert_eq!(index(o).map(|i| OUTCOMES[i]), Some(o));
        }
        // "Declined" is no directory outcome: never counted as one.
        stats.validated(ValidationOutcome::Declined);
        assert_eq!(stats.snapshot().validated_total(), 3);
    }
}
