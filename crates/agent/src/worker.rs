//! One validation: wait for a free slot, decrypt the password, ask the directory,
//! report the outcome to the service over mTLS, all before the request's deadline.
//!
//! Deadlines are judged on the service's clock as the agent estimates it from the
//! heartbeats (an on-prem host whose clock is a few seconds off must not drop every
//! request as expired), at the one-second precision of [`postern_time::Clock`]; the
//! estimate errs towards "still in time", and the service refuses late results anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use postern_directory::{Directory, Outcome};
use postern_proto::PROTOCOL_VERSION;
use postern_proto::relay::{AccountAttributes, ValidationOutcome, ValidationResult};
use postern_time::SharedClock;
use postern_uplink::UplinkError;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::decrypt::AgentKey;
use crate::session::Session;
use crate::status::AgentStats;

/// Attempts to deliver one result when the connection fails.
const POST_ATTEMPTS: u32 = 3;
/// First pause between delivery attempts (doubles).
const POST_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A request accepted for work, with the ciphertext for this agent's key.
pub(crate) struct Job {
    pub request_id: String,
    pub tenant_id: String,
    pub username: String,
    pub deadline_ms: i64,
    pub ciphertext: String,
    pub key: Arc<AgentKey>,
}

/// What every validation shares.
pub(crate) struct Shared {
    pub directory: Arc<dyn Directory>,
    pub stats: Arc<AgentStats>,
    pub session: watch::Receiver<Arc<Session>>,
    pub limiter: Arc<Limiter>,
    pub clock: ServiceClock,
    /// Cancelled when the drain grace period is over.
    pub cancel: CancellationToken,
    /// The open two-way queue's body, if any: results go there first.
    pub results: crate::results::ResultsChannel,
}

/// The service's clock as seen from here: the local clock plus the offset the last
/// heartbeat showed.
pub(crate) struct ServiceClock {
    local: SharedClock,
    offset_secs: AtomicI64,
}

impl ServiceClock {
    pub fn new(local: SharedClock) -> Self {
        Self {
            local,
            offset_secs: AtomicI64::new(0),
        }
    }

    /// Learns the offset from a heartbeat stamped `service_secs`.
    pub fn observe(&self, service_secs: i64) {
        let offset = service_secs.saturating_sub(self.local.now().secs());
        let before = self.offset_secs.swap(offset, Ordering::Relaxed);
        if offset.abs() > 5 && (offset - before).abs() > 5 {
            tracing::warn!(
                offset_secs = offset,
                "this host's clock differs from the service's; deadlines follow the service's"
            );
        }
    }

    /// The service's time now, in Unix milliseconds (rounded down to the second).
    pub fn now_ms(&self) -> i64 {
        self.local
            .now()
            .secs()
            .saturating_add(self.offset_secs.load(Ordering::Relaxed))
            .saturating_mul(1000)
    }

    /// Time left until `deadline_ms`, if any.
    pub fn remaining(&self, deadline_ms: i64) -> Option<Duration> {
        let left = deadline_ms.saturating_sub(self.now_ms());
        (left > 0).then(|| Duration::from_millis(u64::try_from(left).unwrap_or(0)))
    }
}

/// Validations allowed at once; resized when the service says another number.
pub(crate) struct Limiter {
    slots: Arc<Semaphore>,
    size: std::sync::Mutex<usize>,
    /// Jobs accepted and not finished (waiting or running).
    pending: AtomicUsize,
}

/// Jobs that may wait for a slot, per slot. The service paces what it sends by
/// `max_in_flight` and deadlines drop what waits too long; this bound only keeps a
/// service that sends far too much from costing unbounded memory.
const WAITING_PER_SLOT: usize = 16;
/// Jobs that may wait in any case.
const WAITING_FLOOR: usize = 1024;

impl Limiter {
    pub fn new() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(0)),
            size: std::sync::Mutex::new(0),
            pending: AtomicUsize::new(0),
        }
    }

    pub fn size(&self) -> usize {
        self.size.lock().map(|s| *s).unwrap_or(0)
    }

    /// Allows `size` (at least one) validations at once from now on. Shrinking takes
    /// effect as running validations finish.
    pub fn resize(&self, size: usize) {
        let size = size.max(1);
        let Ok(mut current) = self.size.lock() else {
            return;
        };
        if size > *current {
            self.slots.add_permits(size - *current);
        } else if size < *current {
            let excess = *current - size;
            let forgotten = self.slots.forget_permits(excess);
            if forgotten < excess {
                let slots = self.slots.clone();
                let owed = u32::try_from(excess - forgotten).unwrap_or(u32::MAX);
                tokio::spawn(async move {
                    if let Ok(permits) = slots.acquire_many_owned(owed).await {
                        permits.forget();
                    }
                });
            }
        }
        *current = size;
    }

    /// Takes a place in the line, unless too many are waiting already.
    pub fn enter(self: &Arc<Self>) -> Option<Pending> {
        self.enter_below(self.size().saturating_mul(WAITING_PER_SLOT).max(WAITING_FLOOR))
    }

    /// Takes a place only if a slot is free for it now (every job accepted
    /// earlier counts, waiting or running): an agent at its limit declines
    /// rather than keeping a sign-in waiting that another agent could serve.
    pub fn enter_if_free(self: &Arc<Self>) -> Option<Pending> {
        self.enter_below(self.size())
    }

    fn enter_below(self: &Arc<Self>, limit: usize) -> Option<Pending> {
        let before = self.pending.fetch_add(1, Ordering::SeqCst);
        let entered = Pending(self.clone());
        (before < limit).then_some(entered)
    }
}

/// A job's place in the line; leaves it when dropped.
pub(crate) struct Pending(Arc<Limiter>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one job to its end (or to the deadline, or the end of the drain).
pub(crate) async fn run(shared: Arc<Shared>, job: Job, pending: Pending) {
    let cancel = shared.cancel.clone();
    tokio::select! {
        () = work(&shared, &job) => {}
        () = cancel.cancelled() => {
            tracing::warn!(request = %job.request_id, "validation abandoned at shutdown");
        }
    }
    drop(pending);
}

async fn work(shared: &Shared, job: &Job) {
    let Some(left) = shared.clock.remaining(job.deadline_ms) else {
        AgentStats::count(&shared.stats.skipped_expired);
        return;
    };
    let deadline = Instant::now() + left;
    let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, shared.limiter.slots.acquire()).await else {
        tracing::debug!(request = %job.request_id, "deadline passed while waiting for a free slot");
        AgentStats::count(&shared.stats.skipped_expired);
        return;
    };
    let _running = shared.stats.start();
    let _in_flight = postern_metrics::record::agent_validation_started();

    // RSA decryption (a quarter of a millisecond of CPU): off the async threads.
    let key = job.key.clone();
    let (tenant, id, ct) = (job.tenant_id.clone(), job.request_id.clone(), job.ciphertext.clone());
    let decrypted = tokio::task::spawn_blocking(move || key.decrypt(&tenant, &id, &ct)).await;
    let password = match decrypted {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            // Never "wrong password": this agent could not read what it was sent.
            tracing::warn!(request = %job.request_id, error = %e, "could not decrypt a password; not answering");
            AgentStats::count(&shared.stats.decrypt_failed);
            return;
        }
        Err(e) => {
            tracing::error!(request = %job.request_id, error = %e, "decryption task failed");
            AgentStats::count(&shared.stats.decrypt_failed);
            return;
        }
    };

    let asked = Instant::now();
    let outcome = tokio::time::timeout_at(deadline, shared.directory.validate(&job.username, &password)).await;
    drop(password);
    let kind = outcome.as_ref().map_or("timeout", Outcome::kind);
    postern_metrics::record::agent_validation(kind, asked.elapsed());
    let Ok(outcome) = outcome else {
        tracing::debug!(request = %job.request_id, "the directory did not answer before the deadline");
        AgentStats::count(&shared.stats.late);
        return;
    };
    if let Outcome::DirectoryUnreachable(why) = &outcome {
        tracing::warn!(request = %job.request_id, why, "directory unreachable");
    }
    tracing::debug!(request = %job.request_id, username = %job.username, outcome = outcome.kind(), "validated");
    let result = to_result(outcome);
    shared.stats.validated(result.outcome);
    report(shared, job, result, deadline).await;
}

/// The wire form of a directory's answer.
pub(crate) fn to_result(outcome: Outcome) -> ValidationResult {
    let (outcome, account) = match outcome {
        Outcome::Success(info) => (
            ValidationOutcome::Success,
            Some(AccountAttributes {
                upn: info.upn,
                display_name: info.display_name,
                mail: info.mail,
                groups: info.groups,
                stable_id: info.stable_id,
            }),
        ),
        Outcome::WrongCredentials => (ValidationOutcome::WrongCredentials, None),
        Outcome::PasswordExpired => (ValidationOutcome::PasswordExpired, None),
        Outcome::AccountDisabled => (ValidationOutcome::AccountDisabled, None),
        Outcome::AccountLocked => (ValidationOutcome::AccountLocked, None),
        Outcome::MustChangePassword => (ValidationOutcome::MustChangePassword, None),
        Outcome::AccountExpired => (ValidationOutcome::AccountExpired, None),
        Outcome::DirectoryUnreachable(_) => (ValidationOutcome::DirectoryUnreachable, None),
    };
    ValidationResult {
        protocol: PROTOCOL_VERSION,
        outcome,
        account,
    }
}

/// How long telling the service "declined" may take; after that the service's own
/// attempt timeout moves the request on anyway.
const DECLINE_TIMEOUT: Duration = Duration::from_secs(3);

/// Tells the service at once that this agent cannot take a request, so that it
/// offers the request to another agent without waiting for its attempt timeout.
pub(crate) async fn decline(shared: Arc<Shared>, request_id: String) {
    let result = ValidationResult {
        protocol: PROTOCOL_VERSION,
        outcome: ValidationOutcome::Declined,
        account: None,
    };
    let Err(result) = shared.results.send(&request_id, result) else {
        return;
    };
    let session = shared.session.borrow().clone();
    match tokio::time::timeout(DECLINE_TIMEOUT, session.client.agent_result(&request_id, &result)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(request = %request_id, error = %e, "the service did not take the decline"),
        Err(_) => tracing::debug!(request = %request_id, "declining took too long"),
    }
}

/// How long posting one result again may take.
const POST_AGAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Posts again the results a broken two-way queue may have lost
/// ([`crate::results::ResultsChannel::take_unconfirmed`]), one after another,
/// each once. The service refuses those it did read (no longer pending), which
/// is the usual answer and logged at debug only; the first one the service
/// cannot be reached for ends the lot, as its own attempt timeouts then move
/// the requests on.
pub(crate) async fn post_again(shared: Arc<Shared>, results: Vec<(String, ValidationResult)>) {
    let count = results.len();
    tracing::debug!(count, "posting again the results of a queue that broke");
    for (request_id, result) in results {
        let session = shared.session.borrow().clone();
        let sent = tokio::time::timeout(POST_AGAIN_TIMEOUT, session.client.agent_result(&request_id, &result)).await;
        match sent {
            Ok(Ok(())) => {
                AgentStats::count(&shared.stats.results_resent);
                AgentStats::count(&shared.stats.results_posted);
            }
            Ok(Err(e)) if no_longer_pending(&e) => {}
            Ok(Err(e)) => {
                tracing::debug!(request = %request_id, error = %e, "could not post the result again");
                return;
            }
            Err(_) => {
                tracing::debug!(request = %request_id, "posting the result again took too long");
                return;
            }
        }
    }
}

/// Whether the service refused a result because the request is no longer waiting for
/// one (answered by another agent, timed out, unknown).
fn no_longer_pending(e: &UplinkError) -> bool {
    matches!(
        e,
        UplinkError::Refused {
            status: 404 | 409 | 410,
            ..
        }
    )
}

/// Sends the result on the open two-way queue, or else posts it with the
/// current session's client (after a renewal the old certificate no longer
/// works), retrying a failed connection while time is left.
async fn report(shared: &Shared, job: &Job, result: ValidationResult, deadline: Instant) {
    let Err(result) = shared.results.send(&job.request_id, result) else {
        AgentStats::count(&shared.stats.results_streamed);
        return;
    };
    let mut pause = POST_RETRY_PAUSE;
    for attempt in 1..=POST_ATTEMPTS {
        let session = shared.session.borrow().clone();
        let sent = tokio::time::timeout_at(deadline, session.client.agent_result(&job.request_id, &result)).await;
        match sent {
            Ok(Ok(())) => {
                AgentStats::count(&shared.stats.results_posted);
                return;
            }
            Ok(Err(e)) if no_longer_pending(&e) => {
                tracing::debug!(request = %job.request_id, error = %e, "the service no longer waits for this result");
                AgentStats::count(&shared.stats.results_refused);
                return;
            }
            Ok(Err(e @ UplinkError::Transport(_))) if attempt < POST_ATTEMPTS && Instant::now() + pause < deadline => {
                tracing::debug!(request = %job.request_id, error = %e, "posting the result failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Ok(Err(e)) => {
                tracing::warn!(request = %job.request_id, error = %e, "could not post the result");
                AgentStats::count(&shared.stats.results_failed);
                return;
            }
            Err(_) => {
                tracing::debug!(request = %job.request_id, "deadline passed while posting the result");
                AgentStats::count(&shared.stats.late);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use postern_directory::AccountInfo;
    use postern_time::{ManualClock, UnixTime};

    use super::*;

    #[test]
    fn every_outcome_maps_and_only_success_carries_attributes() {
        let info = AccountInfo {
            upn: "alice@example.test".into(),
            display_name: "Alice".into(),
            mail: Some("alice@example.test".into()),
            groups: vec!["staff".into()],
            stable_id: "0f8c".into(),
            dn: Some("cn=alice".into()),
            password_warning: None,
        };
        let ok = to_result(Outcome::Success(info));
        assert_eq!(ok.outcome, ValidationOutcome::Success);
        assert_eq!(ok.protocol, PROTOCOL_VERSION);
        let account = ok.account.unwrap();
        assert_eq!(
            (
                account.upn.as_str(),
                account.display_name.as_str(),
                account.stable_id.as_str()
            ),
            ("alice@example.test", "Alice", "0f8c")
        );
        assert_eq!(account.groups, vec!["staff"]);
        for (outcome, wire) in [
            (Outcome::WrongCredentials, ValidationOutcome::WrongCredentials),
            (Outcome::PasswordExpired, ValidationOutcome::PasswordExpired),
            (Outcome::AccountDisabled, ValidationOutcome::AccountDisabled),
            (Outcome::AccountLocked, ValidationOutcome::AccountLocked),
            (Outcome::MustChangePassword, ValidationOutcome::MustChangePassword),
            (Outcome::AccountExpired, ValidationOutcome::AccountExpired),
            (
                Outcome::DirectoryUnreachable("ldaps://dc1: timed out".into()),
                ValidationOutcome::DirectoryUnreachable,
            ),
        ] {
            let r = to_result(outcome);
            assert_eq!((r.outcome, r.account), (wire, None));
        }
    }

    #[test]
    fn deadlines_follow_the_service_clock() {
        let local = ManualClock::starting_at(UnixTime::from_secs(1_000));
        let clock = ServiceClock::new(local.clone());
        assert_eq!(clock.remaining(1_002_000), Some(Duration::from_secs(2)));
        assert_eq!(clock.remaining(1_000_000), None);
        // The service is 30 s ahead: a deadline 10 s ahead of local time has passed.
        clock.observe(1_030);
        assert_eq!(clock.now_ms(), 1_030_000);
        assert_eq!(clock.remaining(1_010_000), None);
        assert_eq!(clock.remaining(1_031_500), Some(Duration::from_millis(1_500)));
        local.advance(Duration::from_secs(1));
        assert_eq!(clock.now_ms(), 1_031_000);
    }

    #[tokio::test]
    async fn the_limiter_grows_shrinks_and_bounds_the_line() {
        let limiter = Arc::new(Limiter::new());
        limiter.resize(2);
        let a = limiter.slots.acquire().await.unwrap();
        let b = limiter.slots.acquire().await.unwrap();
        assert!(limiter.slots.try_acquire().is_err());
        limiter.resize(3);
        let c = limiter.slots.try_acquire().unwrap();
        // Shrink to one while three run: nothing frees up until two have finished.
        limiter.resize(1);
        drop(a);
        tokio::task::yield_now().await;
        assert!(limiter.slots.try_acquire().is_err());
        drop(b);
        drop(c);
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let only = limiter.slots.try_acquire().unwrap();
        assert!(limiter.slots.try_acquire().is_err());
        drop(only);

        // Only as many as there are slots get in without waiting; leaving frees one.
        let running = limiter.enter_if_free().unwrap();
        assert!(limiter.enter_if_free().is_none(), "one slot, taken");
        drop(running);
        let running = limiter.enter_if_free().unwrap();
        drop(running);

        // One slot: the floor may wait, one more is turned away; leaving frees a place.
        let places: Vec<_> = (0..WAITING_FLOOR).map(|_| limiter.enter().unwrap()).collect();
        assert!(limiter.enter().is_none());
        drop(places);
        assert!(limiter.enter().is_some());
    }
}
