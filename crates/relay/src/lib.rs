//! The relay between the STS and pass-through authentication agents: one queue per tenant, offered to one agent at a time, retried on another within the deadline.
//!
//! Every agent of a tenant attaches to the tenant's queue (PTA-4) through a
//! [`Subscription`]. The STS hands a [`ValidationRequest`] to
//! [`Relay::validate`], which offers it to the least-loaded connected agent of
//! that tenant and waits. When no answer comes within the attempt timeout, or the
//! agent reports that its directory is unreachable, the same request (it holds a
//! ciphertext for every agent) is offered to another agent, until the overall
//! deadline (PTA-6: the seeds' provider simply drops it). Results are accepted
//! only from an agent the request was offered to, of the request's tenant, once
//! ([`Relay::deliver_result`]).
//!
//! Memory is bounded: each agent's subscription holds at most
//! `per_agent_capacity` undelivered requests, and the number of requests waiting
//! for an answer is capped by `max_pending`.
//!
//! This is the embedded (single-instance) relay. Several service instances need
//! a shared queue (NATS JetStream); the STS and the control endpoints only use
//! the API below.
#![warn(missing_docs)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_proto::relay::{ValidationOutcome, ValidationRequest, ValidationResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Limits of the relay.
#[derive(Clone, Debug)]
pub struct RelayLimits {
    /// Undelivered requests an agent's subscription may hold.
    pub per_agent_capacity: usize,
    /// Requests waiting for an answer, across all tenants.
    pub max_pending: usize,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            per_agent_capacity: 256,
            max_pending: 10_000,
        }
    }
}

/// How long to wait for answers.
#[derive(Clone, Copy, Debug)]
pub struct Deadlines {
    /// Wait this long for one agent before offering the request to another.
    pub attempt: Duration,
    /// Give up after this long in all.
    pub overall: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            attempt: Duration::from_secs(3),
            overall: Duration::from_secs(10),
        }
    }
}

/// An agent's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAnswer {
    /// The agent that answered.
    pub agent_id: String,
    /// What it said.
    pub result: ValidationResult,
    /// Agents the request was offered to, in order.
    pub offered_to: Vec<String>,
}

/// Why no agent answered. Each tells the user something different.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// No agent of the tenant is connected: pass-through sign-in is unavailable.
    #[error("no authentication agent of this tenant is connected")]
    NoAgents,
    /// Agents were asked but none answered in time.
    #[error("no authentication agent answered in time (asked {0})")]
    Timeout(usize),
    /// Every agent asked said its directory is unreachable.
    #[error("the directory is unreachable from every agent asked")]
    DirectoryUnreachable,
    /// Too many sign-ins are waiting; retry shortly.
    #[error("too many sign-ins are waiting for agents")]
    Busy,
}

/// Why a result was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResultRejected {
    /// No such pending request (never existed, already answered, or given up).
    #[error("no pending request with this ID")]
    Unknown,
    /// The request belongs to another tenant.
    #[error("the request belongs to another tenant")]
    WrongTenant,
    /// The request was never offered to this agent.
    #[error("the request was not offered to this agent")]
    NotOffered,
}

struct AgentSlot {
    id: u64,
    agent_id: String,
    tx: mpsc::Sender<Arc<ValidationRequest>>,
    in_flight: usize,
}

struct Pending {
    tenant_id: String,
    offered_to: HashSet<String>,
    answer: Option<oneshot::Sender<(String, ValidationResult)>>,
    attempt: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Vec<AgentSlot>>,
    pending: HashMap<String, Pending>,
    next_slot: u64,
}

/// The in-process relay.
pub struct Relay {
    state: Mutex<State>,
    limits: RelayLimits,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An agent's attachment to its tenant's queue. Requests offered to the agent
/// arrive on [`Subscription::recv`]; dropping it detaches the agent.
pub struct Subscription {
    relay: Arc<Relay>,
    tenant_id: String,
    slot: u64,
    rx: mpsc::Receiver<Arc<ValidationRequest>>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next request offered to this agent.
    pub async fn recv(&mut self) -> Option<Arc<ValidationRequest>> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut state) = self.relay.state.lock()
            && let Some(slots) = state.tenants.get_mut(&self.tenant_id)
        {
            slots.retain(|s| s.id != self.slot);
            if slots.is_empty() {
                state.tenants.remove(&self.tenant_id);
            }
        }
    }
}

/// Removes a request from the pending table however `validate` ends.
struct PendingGuard<'a> {
    relay: &'a Relay,
    request_id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.relay.state.lock() {
            state.pending.remove(&self.request_id);
        }
    }
}

impl Relay {
    /// A relay with these limits.
    pub fn new(limits: RelayLimits) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the table is still
        // consistent (every mutation is a single step), so keep using it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches an agent to its tenant's queue.
    pub fn subscribe(self: &Arc<Self>, tenant_id: &str, agent_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(self.limits.per_agent_capacity.max(1));
        let mut state = self.lock();
        state.next_slot += 1;
        let slot = state.next_slot;
        state.tenants.entry(tenant_id.to_owned()).or_default().push(AgentSlot {
            id: slot,
            agent_id: agent_id.to_owned(),
            tx,
            in_flight: 0,
        });
        Subscription {
            relay: self.clone(),
            tenant_id: tenant_id.to_owned(),
            slot,
            rx,
        }
    }

    /// How many agents of a tenant are attached.
    pub fn connected_agents(&self, tenant_id: &str) -> usize {
        self.lock().tenants.get(tenant_id).map_or(0, Vec::len)
    }

    /// Requests waiting for an answer.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Offers the request to the least-loaded attached agent not yet tried;
    /// returns the agent ID, or `None` if every attached agent was tried (or none
    /// is attached, or all are full).
    fn offer(&self, request: &Arc<ValidationRequest>, tried: &[String]) -> Option<(u64, String)> {
        let mut state = self.lock();
        let slots = state.tenants.get_mut(&request.tenant_id)?;
        let mut candidates: Vec<&mut AgentSlot> = slots.iter_mut().filter(|s| !tried.contains(&s.agent_id)).collect();
        candidates.sort_by_key(|s| s.in_flight);
        for slot in candidates {
            if slot.tx.try_send(request.clone()).is_ok() {
                slot.in_flight += 1;
                return Some((slot.id, slot.agent_id.clone()));
            }
        }
        None
    }

    fn done_with(&self, tenant_id: &str, slot_id: u64) {
        let mut state = self.lock();
        if let Some(slot) = state
            .tenants
            .get_mut(tenant_id)
            .and_then(|s| s.iter_mut().find(|s| s.id == slot_id))
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }

    /// Asks the tenant's agents to check a password and waits for the answer,
    /// offering the request to another agent when one does not answer in time or
    /// reports its directory unreachable.
    pub async fn validate(&self, request: ValidationRequest, deadlines: Deadlines) -> Result<AgentAnswer, RelayError> {
        let started = Instant::now();
        let overall = started + deadlines.overall;
        let request = Arc::new(request);
        let (answer_tx, mut answer_rx) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.pending.len() >= self.limits.max_pending {
                return Err(RelayError::Busy);
            }
            if state.tenants.get(&request.tenant_id).is_none_or(Vec::is_empty) {
                return Err(RelayError::NoAgents);
            }
            state.pending.insert(
                request.request_id.clone(),
                Pending {
                    tenant_id: request.tenant_id.clone(),
                    offered_to: HashSet::new(),
                    answer: Some(answer_tx),
                    attempt: None,
                },
            );
        }
        let _guard = PendingGuard {
            relay: self,
            request_id: request.request_id.clone(),
        };
        let mut tried: Vec<String> = Vec::new();
        let mut unreachable = 0;
        loop {
            let now = Instant::now();
            if now >= overall {
                return Err(if unreachable > 0 && unreachable == tried.len() {
                    RelayError::DirectoryUnreachable
                } else {
                    RelayError::Timeout(tried.len())
                });
            }
            let Some((slot, agent_id)) = self.offer(&request, &tried) else {
                if tried.is_empty() {
                    return Err(RelayError::NoAgents);
                }
                return Err(if unreachable == tried.len() {
                    RelayError::DirectoryUnreachable
                } else {
                    RelayError::Timeout(tried.len())
                });
            };
            let (attempt_tx, attempt_rx) = oneshot::channel();
            {
                let mut state = self.lock();
                if let Some(p) = state.pending.get_mut(&request.request_id) {
                    p.offered_to.insert(agent_id.clone());
                    p.attempt = Some(attempt_tx);
                }
            }
            tried.push(agent_id.clone());
            tracing::debug!(request = %request.request_id, agent = %agent_id, attempt = tried.len(), "validation offered");
            let wait = (overall - now).min(deadlines.attempt);
            // Either the answer, or this attempt's timeout, or an early "directory
            // unreachable" (which moves on at once).
            let outcome = tokio::select! {
                a = &mut answer_rx => Some(a),
                _ = tokio::time::sleep(wait) => None,
                _ = attempt_rx => None,
            };
            self.done_with(&request.tenant_id, slot);
            match outcome {
                Some(Ok((from, result))) => {
                    return Ok(AgentAnswer {
                        agent_id: from,
                        result,
                        offered_to: tried,
                    });
                }
                Some(Err(_)) => return Err(RelayError::Timeout(tried.len())),
                None => {
                    // Was it a "directory unreachable" answer? Then the answer
                    // channel is still open and the pending entry says so below.
                    if self.take_unreachable(&request.request_id) {
                        unreachable += 1;
                        tracing::info!(request = %request.request_id, agent = %agent_id, "agent's directory unreachable; offering to another agent");
                    } else {
                        tracing::warn!(request = %request.request_id, agent = %agent_id, "agent did not answer in time; offering to another agent");
                    }
                }
            }
        }
    }

    fn take_unreachable(&self, request_id: &str) -> bool {
        // The attempt channel was consumed by deliver_result only for
        // "unreachable" answers, leaving `attempt` empty while `answer` remains.
        let state = self.lock();
        state
            .pending
            .get(request_id)
            .is_some_and(|p| p.attempt.is_none() && p.answer.is_some())
    }

    /// Hands an agent's result to the waiting sign-in. Accepted only from an agent
    /// of the request's tenant to which the request was offered, and only once.
    /// "Directory unreachable" ends the current attempt (the request moves to
    /// another agent) instead of answering.
    pub fn deliver_result(
        &self,
        tenant_id: &str,
        agent_id: &str,
        request_id: &str,
        result: ValidationResult,
    ) -> Result<(), ResultRejected> {
        let mut state = self.lock();
        let Some(pending) = state.pending.get_mut(request_id) else {
            return Err(ResultRejected::Unknown);
        };
        if pending.tenant_id != tenant_id {
            return Err(ResultRejected::WrongTenant);
        }
        if !pending.offered_to.contains(agent_id) {
            return Err(ResultRejected::NotOffered);
        }
        if result.outcome == ValidationOutcome::DirectoryUnreachable {
            return match pending.attempt.take() {
                Some(tx) => {
                    let _ = tx.send(());
                    Ok(())
                }
                None => Err(ResultRejected::Unknown),
            };
        }
        match pending.answer.take() {
            Some(tx) => {
                let _ = tx.send((agent_id.to_owned(), result));
                Ok(())
            }
            None => Err(ResultRejected::Unknown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_proto::PROTOCOL_VERSION;

    fn request(tenant: &str, id: &str) -> ValidationRequest {
        ValidationRequest {
            request_id: id.into(),
            tenant_id: tenant.into(),
            username: "alice@acme.test".into(),
            deadline_ms: 0,
            ciphertexts: vec![],
        }
    }

    fn result(outcome: ValidationOutcome) -> ValidationResult {
        ValidationResult {
            protocol: PROTOCOL_VERSION,
            outcome,
            account: None,
        }
    }

    fn fast() -> Deadlines {
        Deadlines {
            attempt: Duration::from_millis(200),
            overall: Duration::from_millis(1000),
        }
    }

    /// An agent that answers every request with `outcome` (or never, if `None`);
    /// returns how many requests it has seen so far.
    fn agent(
        relay: &Arc<Relay>,
        tenant: &str,
        id: &str,
        outcome: Option<ValidationOutcome>,
    ) -> Arc<std::sync::atomic::AtomicUsize> {
        let mut sub = relay.subscribe(tenant, id);
        let relay = relay.clone();
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Some(req) = sub.recv().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Some(o) = outcome {
                    let _ = relay.deliver_result(&tenant, &id, &req.request_id, result(o));
                }
            }
        });
        seen
    }

    #[tokio::test]
    async fn no_agents_is_reported_at_once() {
        let relay = Relay::new(RelayLimits::default());
        let err = relay.validate(request("t1", "r1"), fast()).await.unwrap_err();
        assert_eq!(err, RelayError::NoAgents);
    }

    #[tokio::test]
    async fn an_answer_comes_back_and_is_accepted_once() {
        let relay = Relay::new(RelayLimits::default());
        let _a = agent(&relay, "t1", "a1", Some(ValidationOutcome::Success));
        let answer = relay.validate(request("t1", "r1"), fast()).await.unwrap();
        assert_eq!(
            (answer.agent_id.as_str(), answer.result.outcome),
            ("a1", ValidationOutcome::Success)
        );
        assert_eq!(relay.pending(), 0, "nothing left behind");
        assert_eq!(
            relay.deliver_result("t1", "a1", "r1", result(ValidationOutcome::Success)),
            Err(ResultRejected::Unknown),
            "a second answer is refused"
        );
    }

    #[tokio::test]
    async fn a_silent_agent_is_bypassed_within_the_deadline() {
        let relay = Relay::new(RelayLimits::default());
        let silent = agent(&relay, "t1", "dead", None);
        let _good = agent(&relay, "t1", "good", Some(ValidationOutcome::WrongCredentials));
        // Equal load: the first attached ("dead") is offered the request first.
        let answer = relay.validate(request("t1", "r1"), fast()).await.unwrap();
        assert_eq!(answer.result.outcome, ValidationOutcome::WrongCredentials);
        assert_eq!(answer.agent_id, "good");
        assert_eq!(answer.offered_to, vec!["dead".to_string(), "good".to_string()]);
        assert_eq!(silent.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unreachable_directories_move_on_and_are_reported() {
        let relay = Relay::new(RelayLimits::default());
        let _a = agent(&relay, "t1", "a1", Some(ValidationOutcome::DirectoryUnreachable));
        let _b = agent(&relay, "t1", "a2", Some(ValidationOutcome::DirectoryUnreachable));
        let started = Instant::now();
        let err = relay.validate(request("t1", "r1"), fast()).await.unwrap_err();
        assert_eq!(err, RelayError::DirectoryUnreachable);
        assert!(
            started.elapsed() < Duration::from_millis(150),
            "moved on without waiting for timeouts"
        );
        let _c = agent(&relay, "t1", "a3", Some(ValidationOutcome::Success));
        tokio::task::yield_now().await;
        let ok = relay.validate(request("t1", "r2"), fast()).await.unwrap();
        assert_eq!(ok.agent_id, "a3", "the agent that can reach its directory answers");
    }

    #[tokio::test]
    async fn results_from_other_tenants_or_unasked_agents_are_refused() {
        let relay = Relay::new(RelayLimits::default());
        let mut sub = relay.subscribe("t1", "a1");
        let _other_tenant = relay.subscribe("t2", "b1");
        let r = relay.clone();
        let waiter = tokio::spawn(async move { r.validate(request("t1", "r1"), fast()).await });
        let offered = sub.recv().await.unwrap();
        assert_eq!(offered.request_id, "r1");
        let ok = result(ValidationOutcome::Success);
        assert_eq!(
            relay.deliver_result("t2", "b1", "r1", ok.clone()),
            Err(ResultRejected::WrongTenant)
        );
        assert_eq!(
            relay.deliver_result("t1", "a2", "r1", ok.clone()),
            Err(ResultRejected::NotOffered)
        );
        assert_eq!(
            relay.deliver_result("t1", "a1", "nope", ok.clone()),
            Err(ResultRejected::Unknown)
        );
        relay.deliver_result("t1", "a1", "r1", ok).unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().agent_id, "a1");
    }

    #[tokio::test]
    async fn tenant_b_agents_never_see_tenant_a_requests() {
        let relay = Relay::new(RelayLimits::default());
        let a = agent(&relay, "tA", "a1", Some(ValidationOutcome::Success));
        let b = agent(&relay, "tB", "b1", Some(ValidationOutcome::Success));
        for i in 0..20 {
            relay.validate(request("tA", &format!("r{i}")), fast()).await.unwrap();
        }
        assert_eq!(a.load(std::sync::atomic::Ordering::SeqCst), 20);
        assert_eq!(b.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn load_is_spread_and_pending_is_bounded() {
        let relay = Relay::new(RelayLimits {
            per_agent_capacity: 4,
            max_pending: 2,
        });
        let _silent = relay.subscribe("t1", "a1");
        let r1 = relay.clone();
        let r2 = relay.clone();
        let slow = Deadlines {
            attempt: Duration::from_secs(5),
            overall: Duration::from_secs(5),
        };
        let w1 = tokio::spawn(async move { r1.validate(request("t1", "x1"), slow).await });
        let w2 = tokio::spawn(async move { r2.validate(request("t1", "x2"), slow).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(relay.pending(), 2);
        assert_eq!(
            relay.validate(request("t1", "x3"), fast()).await.unwrap_err(),
            RelayError::Busy
        );
        w1.abort();
        w2.abort();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(relay.pending(), 0, "abandoned sign-ins leave nothing behind");
        // Detaching removes the agent.
        drop(_silent);
        assert_eq!(relay.connected_agents("t1"), 0);
    }
}
