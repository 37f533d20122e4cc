//! The relay between the STS and pass-through authentication agents: one queue per tenant, offered to one agent at a time, retried on another within the deadline.
//!
//! Every agent of a tenant attaches to the tenant's queue (PTA-4) through a
//! [`Subscription`]. The STS hands a [`ValidationRequest`] to
//! [`Relay::validate`], which offers it to the least-loaded connected agent of
//! that tenant and waits. When no answer comes within the attempt timeout, or the
//! agent reports that its directory is unreachable, the same request (it holds a
//! ciphertext for every agent) is offered to another agent, until the overall
//! deadline (PTA-6: the seeds' provider simply drops it). An agent that cannot
//! take a request (all its slots busy) declines it at once and the request moves
//! on without waiting for the timeout; when every agent declined, each is asked
//! again with leave to wait for a free slot. Results are accepted only from an
//! agent the request was offered to, of the request's tenant, once
//! ([`Relay::deliver_result`]).
//!
//! Revocation takes effect at once (BEY-6): [`Relay::close_agent`] and
//! [`Relay::close_tenant`] end the agents' subscriptions (so their queue streams
//! end) and move the requests they hold on to other agents.
//!
//! Memory is bounded: each agent's subscription holds at most
//! `per_agent_capacity` undelivered requests, and the number of requests waiting
//! for an answer is capped by `max_pending`, and per tenant by the cap the STS
//! passes to [`Relay::validate_capped`] (SEC-9: one tenant's flood of sign-ins
//! cannot take every place).
//!
//! [`Relay`] is the embedded (single-instance) relay, the default. Several
//! service instances share one queue per tenant over NATS JetStream
//! ([`nats::NatsRelay`]): the STS of any instance publishes, an agent attached
//! to any instance takes the request, and the answer returns to the instance
//! that waits for it. The STS and the control endpoints use either through
//! the one trait [`SignInRelay`].
#![warn(missing_docs)]

pub mod nats;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use postern_proto::relay::{ValidationOutcome, ValidationRequest, ValidationResult};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// A boxed future of a [`SignInRelay`] method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The relay as the STS and the control endpoints use it: the embedded
/// [`Relay`] on one instance, [`nats::NatsRelay`] across several.
pub trait SignInRelay: Send + Sync + std::fmt::Debug {
    /// Attaches an agent (connected to this instance) to its tenant's queue.
    fn subscribe(&self, tenant_id: &str, agent_id: &str) -> Subscription;

    /// Asks the tenant's agents to check a password and waits for the answer
    /// (see [`Relay::validate_capped`]); `tenant_cap` bounds the tenant's
    /// sign-ins waiting on this instance.
    fn validate_capped(
        &self,
        request: ValidationRequest,
        deadlines: Deadlines,
        tenant_cap: Option<usize>,
    ) -> BoxFuture<'_, Result<AgentAnswer, RelayError>>;

    /// Like [`SignInRelay::validate_capped`] without a tenant cap.
    fn validate(
        &self,
        request: ValidationRequest,
        deadlines: Deadlines,
    ) -> BoxFuture<'_, Result<AgentAnswer, RelayError>> {
        self.validate_capped(request, deadlines, None)
    }

    /// Hands an agent's result (posted to this instance) to the sign-in that
    /// waits for it, on whichever instance that is.
    fn deliver_result<'a>(
        &'a self,
        tenant_id: &'a str,
        agent_id: &'a str,
        request_id: &'a str,
        result: ValidationResult,
    ) -> BoxFuture<'a, Result<(), ResultRejected>>;

    /// Detaches a removed agent here and moves the requests it holds on.
    fn close_agent(&self, tenant_id: &str, agent_id: &str) -> usize;

    /// Detaches every agent of a deleted tenant here and ends its sign-ins.
    fn close_tenant(&self, tenant_id: &str) -> usize;

    /// Agents of the tenant attached to this instance.
    fn connected_agents(&self, tenant_id: &str) -> usize;

    /// Sign-ins of this instance waiting for an answer.
    fn pending(&self) -> usize;

    /// Counters of this instance.
    fn stats(&self) -> RelayStats;
}

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
    /// Too many sign-ins of this tenant are waiting (its cap); retry shortly.
    #[error("too many sign-ins of this tenant are waiting for agents")]
    TenantBusy,
    /// The shared queue between the service instances (NATS) cannot be
    /// reached: sign-ins through agents are refused until it is back.
    #[error("the sign-in queue is unreachable ({0}); pass-through sign-in is unavailable for now")]
    Unavailable(String),
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

/// Counters of the relay since it started, for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Requests offered to an agent (first offers and re-offers).
    pub offers: u64,
    /// Attempts that ended because the agent did not answer within the attempt
    /// timeout.
    pub attempts_timed_out: u64,
    /// Attempts that ended because the agent's directory was unreachable.
    pub attempts_unreachable: u64,
    /// Attempts the agent declined at once (busy, or no ciphertext for its key).
    pub attempts_declined: u64,
    /// Attempts that ended because the agent was removed while it held them.
    pub attempts_agent_gone: u64,
    /// Agents detached by the service (removed, or their tenant deleted).
    pub agents_closed: u64,
}

/// Why an attempt ended without an answer; each moves the request on to another
/// agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttemptEnd {
    /// The attempt timeout passed.
    TimedOut,
    /// The agent's directory is unreachable.
    Unreachable,
    /// The agent cannot take the request now.
    Declined,
    /// The agent was removed (or its tenant deleted).
    AgentGone,
}

impl AttemptEnd {
    pub(crate) fn count(self, stats: &mut RelayStats) {
        let counter = match self {
            AttemptEnd::TimedOut => &mut stats.attempts_timed_out,
            AttemptEnd::Unreachable => &mut stats.attempts_unreachable,
            AttemptEnd::Declined => &mut stats.attempts_declined,
            AttemptEnd::AgentGone => &mut stats.attempts_agent_gone,
        };
        *counter += 1;
    }
}

struct AgentSlot {
    id: u64,
    agent_id: String,
    tx: mpsc::Sender<Arc<ValidationRequest>>,
    in_flight: usize,
    /// Dropped with the slot: tells the subscription it was closed.
    _closed: oneshot::Sender<()>,
}

/// The attempt in progress: which agent holds the request, and how to end the
/// attempt early.
struct Attempt {
    agent_id: String,
    end: oneshot::Sender<AttemptEnd>,
}

struct Pending {
    tenant_id: String,
    offered_to: HashSet<String>,
    answer: Option<oneshot::Sender<(String, ValidationResult)>>,
    attempt: Option<Attempt>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Vec<AgentSlot>>,
    pending: HashMap<String, Pending>,
    /// Requests in `pending`, by tenant.
    pending_by_tenant: HashMap<String, usize>,
    next_slot: u64,
    stats: RelayStats,
}

impl State {
    /// Ends the current attempt of every pending request of `tenant_id` held by
    /// an agent `gone` picks.
    fn end_attempts(&mut self, tenant_id: &str, gone: impl Fn(&str) -> bool) {
        for pending in self.pending.values_mut() {
            if pending.tenant_id == tenant_id
                && pending.attempt.as_ref().is_some_and(|a| gone(&a.agent_id))
                && let Some(attempt) = pending.attempt.take()
            {
                let _ = attempt.end.send(AttemptEnd::AgentGone);
            }
        }
    }
}

/// The in-process relay.
pub struct Relay {
    state: Mutex<State>,
    limits: RelayLimits,
    /// This relay (for the subscriptions it hands out).
    me: Weak<Relay>,
    /// Moved whenever an agent attaches or detaches.
    agents_changed: watch::Sender<u64>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// An agent's attachment to its tenant's queue. Requests offered to the agent
/// arrive on [`Subscription::recv`]; dropping it detaches the agent, and
/// [`Relay::close_agent`] ends it from the service's side.
pub struct Subscription {
    relay: Weak<Relay>,
    tenant_id: String,
    slot: u64,
    rx: mpsc::Receiver<Arc<ValidationRequest>>,
    closed: oneshot::Receiver<()>,
    ended: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next request offered to this agent; `None` once the relay closed the
    /// subscription (then requests still buffered are not handed out: they
    /// were offered to an agent no longer trusted, and move on to another).
    pub async fn recv(&mut self) -> Option<Arc<ValidationRequest>> {
        if self.ended {
            return None;
        }
        let next = tokio::select! {
            biased;
            _ = &mut self.closed => None,
            request = self.rx.recv() => request,
        };
        self.ended = next.is_none();
        next
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(relay) = self.relay.upgrade() else {
            return;
        };
        if let Ok(mut state) = relay.state.lock()
            && let Some(slots) = state.tenants.get_mut(&self.tenant_id)
        {
            slots.retain(|s| s.id != self.slot);
            if slots.is_empty() {
                state.tenants.remove(&self.tenant_id);
            }
        }
        relay.agents_changed.send_modify(|n| *n += 1);
    }
}

/// Removes a request from the pending table however `validate` ends.
struct PendingGuard<'a> {
    relay: &'a Relay,
    request_id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.relay.lock();
        if let Some(pending) = state.pending.remove(&self.request_id)
            && let Some(count) = state.pending_by_tenant.get_mut(&pending.tenant_id)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                state.pending_by_tenant.remove(&pending.tenant_id);
            }
        }
    }
}

/// What one sign-in's attempts so far add up to.
#[derive(Default)]
pub(crate) struct Tally {
    /// Agents not to offer the request to again in this round.
    pub(crate) tried: Vec<String>,
    /// Every agent asked, in order (an agent asked again appears again).
    pub(crate) offered_to: Vec<String>,
    /// Distinct agents asked.
    pub(crate) asked: HashSet<String>,
    unreachable: usize,
    declined: usize,
    /// Agents that declined in the first round.
    declined_first: Vec<String>,
    /// Whether the second round (agents that declined may wait) has begun.
    waiting_round: bool,
}

impl Tally {
    pub(crate) fn record(&mut self, agent_id: &str, end: AttemptEnd) {
        match end {
            AttemptEnd::Unreachable => self.unreachable += 1,
            AttemptEnd::Declined => {
                self.declined += 1;
                if !self.waiting_round {
                    self.declined_first.push(agent_id.to_owned());
                }
            }
            AttemptEnd::TimedOut | AttemptEnd::AgentGone => {}
        }
    }

    /// When every agent was asked and some declined as busy: the request again,
    /// marked so that those agents wait for a free slot instead of declining.
    pub(crate) fn second_round(&mut self, request: &ValidationRequest) -> Option<Arc<ValidationRequest>> {
        if self.waiting_round || self.declined_first.is_empty() {
            return None;
        }
        self.waiting_round = true;
        let again = std::mem::take(&mut self.declined_first);
        self.tried.retain(|a| !again.contains(a));
        Some(Arc::new(ValidationRequest {
            wait_if_busy: true,
            ..request.clone()
        }))
    }

    /// Why nobody answered.
    pub(crate) fn failure(&self) -> RelayError {
        let asked = self.offered_to.len();
        if asked == 0 {
            RelayError::NoAgents
        } else if self.unreachable == asked {
            RelayError::DirectoryUnreachable
        } else if self.declined > 0 && self.declined + self.unreachable == asked {
            RelayError::Busy
        } else {
            RelayError::Timeout(self.asked.len())
        }
    }
}

impl Relay {
    /// A relay with these limits.
    pub fn new(limits: RelayLimits) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            state: Mutex::new(State::default()),
            limits,
            me: me.clone(),
            agents_changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the table is still
        // consistent (every mutation is a single step), so keep using it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Attaches an agent to its tenant's queue.
    pub fn subscribe(&self, tenant_id: &str, agent_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(self.limits.per_agent_capacity.max(1));
        let (closed_tx, closed) = oneshot::channel();
        let mut state = self.lock();
        state.next_slot += 1;
        let slot = state.next_slot;
        state.tenants.entry(tenant_id.to_owned()).or_default().push(AgentSlot {
            id: slot,
            agent_id: agent_id.to_owned(),
            tx,
            in_flight: 0,
            _closed: closed_tx,
        });
        drop(state);
        self.agents_changed.send_modify(|n| *n += 1);
        Subscription {
            relay: self.me.clone(),
            tenant_id: tenant_id.to_owned(),
            slot,
            rx,
            closed,
            ended: false,
        }
    }

    /// Detaches agent `agent_id` of `tenant_id` at once (it was removed): its
    /// subscriptions end, and a request it holds moves on to another agent
    /// without waiting for the attempt timeout. Returns how many subscriptions
    /// were closed.
    pub fn close_agent(&self, tenant_id: &str, agent_id: &str) -> usize {
        let mut state = self.lock();
        let mut closed = 0;
        if let Some(slots) = state.tenants.get_mut(tenant_id) {
            let before = slots.len();
            slots.retain(|s| s.agent_id != agent_id);
            closed = before - slots.len();
            if slots.is_empty() {
                state.tenants.remove(tenant_id);
            }
        }
        state.end_attempts(tenant_id, |held_by| held_by == agent_id);
        state.stats.agents_closed += closed as u64;
        drop(state);
        self.agents_changed.send_modify(|n| *n += 1);
        closed
    }

    /// Detaches every agent of a tenant at once (the tenant was deleted); its
    /// pending sign-ins end without waiting for their timeouts. Returns how many
    /// subscriptions were closed.
    pub fn close_tenant(&self, tenant_id: &str) -> usize {
        let mut state = self.lock();
        let closed = state.tenants.remove(tenant_id).map_or(0, |slots| slots.len());
        state.end_attempts(tenant_id, |_| true);
        state.stats.agents_closed += closed as u64;
        drop(state);
        self.agents_changed.send_modify(|n| *n += 1);
        closed
    }

    /// How many agents of a tenant are attached.
    pub fn connected_agents(&self, tenant_id: &str) -> usize {
        self.lock().tenants.get(tenant_id).map_or(0, Vec::len)
    }

    /// Requests waiting for an answer.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.lock().stats
    }

    /// Moves whenever an agent attaches to or detaches from this relay.
    pub(crate) fn agents_changed(&self) -> watch::Receiver<u64> {
        self.agents_changed.subscribe()
    }

    /// The agents attached here, by tenant.
    pub(crate) fn attached(&self) -> HashMap<String, Vec<String>> {
        self.lock()
            .tenants
            .iter()
            .map(|(tenant, slots)| (tenant.clone(), slots.iter().map(|s| s.agent_id.clone()).collect()))
            .collect()
    }

    /// Requests the tenant's agents attached here could still take before
    /// each holds `per_agent` at once.
    pub(crate) fn free_capacity(&self, tenant_id: &str, per_agent: usize) -> usize {
        self.lock().tenants.get(tenant_id).map_or(0, |slots| {
            slots.iter().map(|s| per_agent.saturating_sub(s.in_flight)).sum()
        })
    }

    /// The agent's slot is free again (its attempt ended elsewhere).
    pub(crate) fn release_slot(&self, tenant_id: &str, slot_id: u64) {
        let mut state = self.lock();
        if let Some(slot) = state
            .tenants
            .get_mut(tenant_id)
            .and_then(|s| s.iter_mut().find(|s| s.id == slot_id))
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }

    /// Counts an attempt that ended without an answer.
    pub(crate) fn count_end(&self, end: AttemptEnd) {
        end.count(&mut self.lock().stats);
    }

    /// Offers the request to the least-loaded attached agent not yet tried;
    /// returns the agent ID, or `None` if every attached agent was tried (or none
    /// is attached, or all are full).
    pub(crate) fn offer(&self, request: &Arc<ValidationRequest>, tried: &[String]) -> Option<(u64, String)> {
        let mut state = self.lock();
        let slots = state.tenants.get_mut(&request.tenant_id)?;
        let mut candidates: Vec<&mut AgentSlot> = slots.iter_mut().filter(|s| !tried.contains(&s.agent_id)).collect();
        candidates.sort_by_key(|s| s.in_flight);
        let offered = candidates.into_iter().find_map(|slot| {
            slot.tx.try_send(request.clone()).ok()?;
            slot.in_flight += 1;
            Some((slot.id, slot.agent_id.clone()))
        });
        if offered.is_some() {
            state.stats.offers += 1;
        }
        offered
    }

    /// Notes who holds the request now; `end` ends the attempt early.
    fn begin_attempt(&self, request_id: &str, agent_id: &str, end: oneshot::Sender<AttemptEnd>) {
        let mut state = self.lock();
        if let Some(p) = state.pending.get_mut(request_id) {
            p.offered_to.insert(agent_id.to_owned());
            p.attempt = Some(Attempt {
                agent_id: agent_id.to_owned(),
                end,
            });
        }
    }

    /// The attempt is over: the agent's slot is free again, and why it ended
    /// (if it did without an answer) is counted.
    fn finish_attempt(&self, request: &ValidationRequest, slot_id: u64, ended: Option<AttemptEnd>) {
        let mut state = self.lock();
        if let Some(slot) = state
            .tenants
            .get_mut(&request.tenant_id)
            .and_then(|s| s.iter_mut().find(|s| s.id == slot_id))
        {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
        if let Some(p) = state.pending.get_mut(&request.request_id) {
            p.attempt = None;
        }
        if let Some(end) = ended {
            end.count(&mut state.stats);
        }
    }

    /// Puts the request in the pending table; refuses it when too many wait
    /// (in all, or of its tenant beyond `tenant_cap`) or no agent of the tenant
    /// is attached.
    fn register(
        &self,
        request: &ValidationRequest,
        tenant_cap: Option<usize>,
    ) -> Result<oneshot::Receiver<(String, ValidationResult)>, RelayError> {
        let (answer_tx, answer_rx) = oneshot::channel();
        let mut state = self.lock();
        if state.pending.len() >= self.limits.max_pending {
            return Err(RelayError::Busy);
        }
        let of_tenant = state.pending_by_tenant.get(&request.tenant_id).copied().unwrap_or(0);
        if tenant_cap.is_some_and(|cap| of_tenant >= cap) {
            return Err(RelayError::TenantBusy);
        }
        if state.tenants.get(&request.tenant_id).is_none_or(Vec::is_empty) {
            return Err(RelayError::NoAgents);
        }
        *state.pending_by_tenant.entry(request.tenant_id.clone()).or_default() += 1;
        state.pending.insert(
            request.request_id.clone(),
            Pending {
                tenant_id: request.tenant_id.clone(),
                offered_to: HashSet::new(),
                answer: Some(answer_tx),
                attempt: None,
            },
        );
        Ok(answer_rx)
    }

    /// Asks the tenant's agents to check a password and waits for the answer,
    /// offering the request to another agent at once when one declines it,
    /// reports its directory unreachable or is removed, and after the attempt
    /// timeout when one stays silent. When every agent declined as busy, each is
    /// asked once more, allowed to wait for a free slot.
    pub async fn validate(&self, request: ValidationRequest, deadlines: Deadlines) -> Result<AgentAnswer, RelayError> {
        self.validate_capped(request, deadlines, None).await
    }

    /// Like [`Relay::validate`], refused at once with
    /// [`RelayError::TenantBusy`] when `tenant_cap` sign-ins of the request's
    /// tenant are waiting already.
    pub async fn validate_capped(
        &self,
        request: ValidationRequest,
        deadlines: Deadlines,
        tenant_cap: Option<usize>,
    ) -> Result<AgentAnswer, RelayError> {
        let overall = Instant::now() + deadlines.overall;
        let mut answer_rx = self.register(&request, tenant_cap)?;
        let _guard = PendingGuard {
            relay: self,
            request_id: request.request_id.clone(),
        };
        let mut request = Arc::new(request);
        let mut tally = Tally::default();
        loop {
            let now = Instant::now();
            if now >= overall {
                return Err(tally.failure());
            }
            let Some((slot, agent_id)) = self.offer(&request, &tally.tried) else {
                if let Some(again) = tally.second_round(&request) {
                    tracing::debug!(request = %request.request_id, "every agent is busy; asking again, allowed to wait");
                    request = again;
                    continue;
                }
                return Err(tally.failure());
            };
            let (end_tx, end_rx) = oneshot::channel();
            self.begin_attempt(&request.request_id, &agent_id, end_tx);
            tally.tried.push(agent_id.clone());
            tally.offered_to.push(agent_id.clone());
            tally.asked.insert(agent_id.clone());
            tracing::debug!(request = %request.request_id, agent = %agent_id, attempt = tally.offered_to.len(), "validation offered");
            let wait = (overall - now).min(deadlines.attempt);
            let ended = tokio::select! {
                biased;
                answer = &mut answer_rx => match answer {
                    Ok((from, result)) => {
                        self.finish_attempt(&request, slot, None);
                        return Ok(AgentAnswer {
                            agent_id: from,
                            result,
                            offered_to: tally.offered_to,
                        });
                    }
                    // The sender lives in the pending table until we return.
                    Err(_) => return Err(tally.failure()),
                },
                end = end_rx => end.unwrap_or(AttemptEnd::AgentGone),
                () = tokio::time::sleep(wait) => AttemptEnd::TimedOut,
            };
            self.finish_attempt(&request, slot, Some(ended));
            tally.record(&agent_id, ended);
            log_attempt_end(&request.request_id, &agent_id, ended);
        }
    }

    /// Hands an agent's result to the waiting sign-in. Accepted only from an agent
    /// of the request's tenant to which the request was offered, and only once.
    /// "Directory unreachable" and "declined" end the agent's attempt (the
    /// request moves to another agent at once) instead of answering; from an
    /// agent whose attempt is already over they change nothing.
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
        let ends_attempt = match result.outcome {
            ValidationOutcome::DirectoryUnreachable => Some(AttemptEnd::Unreachable),
            ValidationOutcome::Declined => Some(AttemptEnd::Declined),
            _ => None,
        };
        if let Some(end) = ends_attempt {
            if pending.attempt.as_ref().is_some_and(|a| a.agent_id == agent_id)
                && let Some(attempt) = pending.attempt.take()
            {
                let _ = attempt.end.send(end);
            }
            return Ok(());
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

impl SignInRelay for Relay {
    fn subscribe(&self, tenant_id: &str, agent_id: &str) -> Subscription {
        Relay::subscribe(self, tenant_id, agent_id)
    }

    fn validate_capped(
        &self,
        request: ValidationRequest,
        deadlines: Deadlines,
        tenant_cap: Option<usize>,
    ) -> BoxFuture<'_, Result<AgentAnswer, RelayError>> {
        Box::pin(Relay::validate_capped(self, request, deadlines, tenant_cap))
    }

    fn deliver_result<'a>(
        &'a self,
        tenant_id: &'a str,
        agent_id: &'a str,
        request_id: &'a str,
        result: ValidationResult,
    ) -> BoxFuture<'a, Result<(), ResultRejected>> {
        let delivered = Relay::deliver_result(self, tenant_id, agent_id, request_id, result);
        Box::pin(std::future::ready(delivered))
    }

    fn close_agent(&self, tenant_id: &str, agent_id: &str) -> usize {
        Relay::close_agent(self, tenant_id, agent_id)
    }

    fn close_tenant(&self, tenant_id: &str) -> usize {
        Relay::close_tenant(self, tenant_id)
    }

    fn connected_agents(&self, tenant_id: &str) -> usize {
        Relay::connected_agents(self, tenant_id)
    }

    fn pending(&self) -> usize {
        Relay::pending(self)
    }

    fn stats(&self) -> RelayStats {
        Relay::stats(self)
    }
}

/// Logs why an attempt ended without an answer.
pub(crate) fn log_attempt_end(request_id: &str, agent_id: &str, ended: AttemptEnd) {
    match ended {
        AttemptEnd::TimedOut => {
            tracing::warn!(request = %request_id, agent = %agent_id, "agent did not answer in time; offering to another agent");
        }
        AttemptEnd::Unreachable => {
            tracing::info!(request = %request_id, agent = %agent_id, "agent's directory unreachable; offering to another agent");
        }
        AttemptEnd::Declined => {
            tracing::debug!(request = %request_id, agent = %agent_id, "agent declined (busy); offering to another agent");
        }
        AttemptEnd::AgentGone => {
            tracing::info!(request = %request_id, agent = %agent_id, "agent removed while holding the request; offering to another agent");
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
            wait_if_busy: false,
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
        pending_reaches(&relay, 2).await;
        assert_eq!(
            relay.validate(request("t1", "x3"), fast()).await.unwrap_err(),
            RelayError::Busy
        );
        w1.abort();
        w2.abort();
        // A join handle resolves once its aborted task has been dropped.
        assert!(w1.await.unwrap_err().is_cancelled());
        assert!(w2.await.unwrap_err().is_cancelled());
        assert_eq!(relay.pending(), 0, "abandoned sign-ins leave nothing behind");
        // Detaching removes the agent.
        drop(_silent);
        assert_eq!(relay.connected_agents("t1"), 0);
    }

    #[tokio::test]
    async fn one_tenant_cannot_take_every_place() {
        let relay = Relay::new(RelayLimits::default());
        let _silent_a = relay.subscribe("tA", "a1");
        let _silent_b = relay.subscribe("tB", "b1");
        let slow = Deadlines {
            attempt: Duration::from_secs(5),
            overall: Duration::from_secs(5),
        };
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                let r = relay.clone();
                tokio::spawn(async move { r.validate_capped(request("tA", &format!("a{i}")), slow, Some(2)).await })
            })
            .collect();
        pending_reaches(&relay, 2).await;
        assert_eq!(
            relay
                .validate_capped(request("tA", "a2"), fast(), Some(2))
                .await
                .unwrap_err(),
            RelayError::TenantBusy,
            "the tenant's third sign-in is refused at once"
        );
        let r = relay.clone();
        let other = tokio::spawn(async move { r.validate_capped(request("tB", "b0"), slow, Some(2)).await });
        // Another tenant's sign-in still waits for its agent.
        pending_reaches(&relay, 3).await;
        for w in waiting {
            w.abort();
            assert!(w.await.unwrap_err().is_cancelled());
        }
        let r = relay.clone();
        let again = tokio::spawn(async move { r.validate_capped(request("tA", "a3"), slow, Some(2)).await });
        // Places are given back when sign-ins end: the tenant's next one waits again.
        pending_reaches(&relay, 2).await;
        assert!(
            !again.is_finished(),
            "the tenant's sign-in was refused after its places came back"
        );
        again.abort();
        other.abort();
    }

    /// Waits until `n` sign-ins are pending: the spawned ones run whenever
    /// this task yields (a current-thread runtime). Fails after 5 s.
    async fn pending_reaches(relay: &Relay, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while relay.pending() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "pending stayed {} (want {n})",
                relay.pending()
            );
            tokio::task::yield_now().await;
        }
    }

    /// An agent that declines every request unless it may wait, then answers
    /// `outcome`; returns how many offers it has seen.
    fn busy_agent(
        relay: &Arc<Relay>,
        tenant: &str,
        id: &str,
        outcome: ValidationOutcome,
    ) -> Arc<std::sync::atomic::AtomicUsize> {
        let mut sub = relay.subscribe(tenant, id);
        let relay = relay.clone();
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Some(req) = sub.recv().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let said = if req.wait_if_busy {
                    outcome
                } else {
                    ValidationOutcome::Declined
                };
                let _ = relay.deliver_result(&tenant, &id, &req.request_id, result(said));
            }
        });
        seen
    }

    fn patient() -> Deadlines {
        Deadlines {
            attempt: Duration::from_secs(3),
            overall: Duration::from_secs(10),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_declined_request_moves_on_without_waiting_for_the_timeout() {
        let relay = Relay::new(RelayLimits::default());
        // Equal load: the first attached ("busy") is offered the request first.
        let busy = busy_agent(&relay, "t1", "busy", ValidationOutcome::Success);
        let _free = agent(&relay, "t1", "free", Some(ValidationOutcome::Success));
        let started = Instant::now();
        let answer = relay.validate(request("t1", "r1"), patient()).await.unwrap();
        assert_eq!(answer.agent_id, "free");
        assert_eq!(answer.offered_to, ["busy", "free"]);
        assert_eq!(busy.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The paused clock only moves when something sleeps: no attempt timed out.
        assert!(started.elapsed() < Duration::from_millis(10), "{:?}", started.elapsed());
        let stats = relay.stats();
        assert_eq!((stats.attempts_declined, stats.attempts_timed_out), (1, 0), "{stats:?}");
        assert_eq!(stats.offers, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn when_every_agent_is_busy_each_is_asked_again_and_may_wait() {
        let relay = Relay::new(RelayLimits::default());
        let a = busy_agent(&relay, "t1", "a", ValidationOutcome::WrongCredentials);
        let b = busy_agent(&relay, "t1", "b", ValidationOutcome::WrongCredentials);
        let answer = relay.validate(request("t1", "r1"), patient()).await.unwrap();
        assert_eq!(answer.result.outcome, ValidationOutcome::WrongCredentials);
        assert_eq!(
            answer.offered_to,
            ["a", "b", "a"],
            "the least loaded again, allowed to wait"
        );
        assert_eq!(a.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(b.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(relay.stats().attempts_timed_out, 0);

        // Agents that decline even when allowed to wait (no ciphertext for their
        // key, a full line): "busy", at once.
        let relay = Relay::new(RelayLimits::default());
        let _never = agent(&relay, "t1", "never", Some(ValidationOutcome::Declined));
        let started = Instant::now();
        let err = relay.validate(request("t1", "r2"), patient()).await.unwrap_err();
        assert_eq!(err, RelayError::Busy);
        assert!(started.elapsed() < Duration::from_millis(10));
        assert_eq!(relay.stats().attempts_declined, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_word_from_an_earlier_agent_does_not_end_the_current_attempt() {
        let relay = Relay::new(RelayLimits::default());
        let mut first = relay.subscribe("t1", "first");
        let mut second = relay.subscribe("t1", "second");
        let r = relay.clone();
        let deadlines = Deadlines {
            attempt: Duration::from_millis(200),
            overall: Duration::from_secs(5),
        };
        let waiter = tokio::spawn(async move { r.validate(request("t1", "r1"), deadlines).await });
        first.recv().await.unwrap();
        // "first" stays silent past its attempt; "second" gets the request.
        second.recv().await.unwrap();
        for late in [ValidationOutcome::DirectoryUnreachable, ValidationOutcome::Declined] {
            relay.deliver_result("t1", "first", "r1", result(late)).unwrap();
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "second's attempt goes on");
        let stats = relay.stats();
        assert_eq!(
            (
                stats.attempts_unreachable,
                stats.attempts_declined,
                stats.attempts_timed_out
            ),
            (0, 0, 1)
        );
        relay
            .deliver_result("t1", "second", "r1", result(ValidationOutcome::Success))
            .unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().agent_id, "second");
    }

    #[tokio::test(start_paused = true)]
    async fn closing_an_agent_ends_its_subscription_and_moves_its_request_on_at_once() {
        let relay = Relay::new(RelayLimits::default());
        let mut doomed = relay.subscribe("t1", "doomed");
        let mut other_tenant = relay.subscribe("t2", "doomed");
        let started = Instant::now();
        let r = relay.clone();
        let first = tokio::spawn(async move { r.validate(request("t1", "r1"), patient()).await });
        let r = relay.clone();
        let second = tokio::spawn(async move { r.validate(request("t1", "r2"), patient()).await });
        // "doomed" holds one request and has another buffered when it is removed.
        assert_eq!(doomed.recv().await.unwrap().request_id, "r1");
        tokio::task::yield_now().await;
        let good = agent(&relay, "t1", "good", Some(ValidationOutcome::Success));
        assert_eq!(relay.close_agent("t1", "doomed"), 1);
        assert_eq!(doomed.recv().await, None, "nothing more reaches a removed agent");
        assert_eq!(doomed.recv().await, None);
        for waiter in [first, second] {
            assert_eq!(waiter.await.unwrap().unwrap().agent_id, "good");
        }
        assert!(started.elapsed() < Duration::from_millis(10), "{:?}", started.elapsed());
        assert_eq!(relay.stats().attempts_agent_gone, 2);
        assert_eq!(relay.stats().agents_closed, 1);
        assert_eq!(relay.connected_agents("t1"), 1);
        // The same agent ID in another tenant is another agent.
        assert_eq!(relay.connected_agents("t2"), 1);
        // Later sign-ins never reach it.
        relay.validate(request("t1", "r3"), patient()).await.unwrap();
        assert_eq!(good.load(std::sync::atomic::Ordering::SeqCst), 3);

        // A deleted tenant: every agent of it goes, nobody else's.
        let _third = relay.subscribe("t1", "third");
        assert_eq!(relay.close_tenant("t1"), 2);
        assert_eq!(relay.connected_agents("t1"), 0);
        assert_eq!(relay.connected_agents("t2"), 1);
        assert_eq!(
            relay.validate(request("t1", "r4"), patient()).await.unwrap_err(),
            RelayError::NoAgents
        );
        let r = relay.clone();
        let t2 = tokio::spawn(async move { r.validate(request("t2", "r5"), fast()).await });
        assert_eq!(other_tenant.recv().await.unwrap().request_id, "r5");
        t2.abort();
    }
}
