//! Pass-through sign-ins across several service instances over NATS JetStream
//! (BEY-1, PTA-4, PTA-5, PTA-6).
//!
//! - **The queue**: one JetStream stream (`{PREFIX}_PTA`, work-queue retention,
//!   file storage) whose subjects carry the tenant ID,
//!   `{prefix}.pta.offer.{tenant}`, with one durable pull consumer per tenant
//!   filtered on that tenant's subject. The STS of any instance publishes a
//!   validation request there (still only ciphertexts); only instances with an
//!   agent *of that tenant* attached pull from the tenant's consumer, so no
//!   sign-in of tenant A ever reaches an agent of tenant B.
//! - **Taking**: an instance pulls only as many offers as its agents have free
//!   places, hands each to its least-loaded agent not excluded by the offer (the
//!   agents already tried), acknowledges it and tells the origin instance which
//!   agent took it (`{prefix}.pta.origin.{instance}`). An offer none of its
//!   agents may take is returned (NAK) for another instance.
//! - **Answers**: an agent posts its result to whichever instance its HTTP
//!   connection reaches; that instance asks the origin, on the request's own
//!   subject `{prefix}.pta.result.{tenant}.{request}`, which accepts it only from
//!   an agent it was offered to, once (no responder: the request is unknown,
//!   given up or another tenant's).
//! - **Re-offer (PTA-6)**: the origin drives the attempts exactly as the embedded
//!   relay does: an attempt ends on an answer, a decline or an unreachable
//!   directory, the agent's removal, or the attempt timeout; the request is then
//!   published again excluding the agents tried, within the overall deadline.
//! - **Presence**: every instance announces the agents attached to it each second
//!   (`{prefix}.pta.presence`); the origin uses it to say "no agent" at once and
//!   to know when every agent has been tried.
//!
//! NATS down: publishing fails and the sign-in is refused with
//! [`RelayError::Unavailable`] (a clear message, nothing queued twice: offers
//! carry a message ID for JetStream's duplicate window). The client reconnects
//! by itself; subscriptions and pulls resume without a restart.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{RetentionPolicy, StorageType};
use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use postern_proto::relay::{ValidationOutcome, ValidationRequest, ValidationResult};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::{
    AgentAnswer, AttemptEnd, BoxFuture, Deadlines, Relay, RelayError, RelayLimits, RelayStats, ResultRejected,
    SignInRelay, Subscription, Tally, log_attempt_end,
};

/// How often an instance announces the agents attached to it.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// An instance not heard from for this long has no agents.
pub const PRESENCE_STALE: Duration = Duration::from_secs(3);
/// How long an instance that received an agent's result waits for the origin.
const RESULT_WAIT: Duration = Duration::from_secs(3);
/// An offer no agent of an instance may take goes back for this long.
const NAK_DELAY: Duration = Duration::from_millis(30);
/// Offers older than this are dropped by the stream.
const OFFER_MAX_AGE: Duration = Duration::from_secs(120);

/// Where the NATS relay lives.
#[derive(Clone, Debug)]
pub struct NatsRelayOptions {
    /// Prefix of every subject and stream (several installations, or tests,
    /// can share a NATS server); letters, digits, `-` and `_`.
    pub prefix: String,
    /// This instance's ID (unique among the instances).
    pub instance_id: String,
    /// Limits of this instance.
    pub limits: RelayLimits,
}

/// Why the NATS relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsRelayError {
    /// A prefix or instance ID that cannot be part of a subject.
    #[error("{0}")]
    Config(String),
    /// NATS refused a subscription or JetStream is not enabled.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Names of the subjects, the stream and the consumers.
#[derive(Clone, Debug)]
struct Names {
    prefix: String,
}

impl Names {
    fn stream(&self) -> String {
        format!("{}_PTA", self.prefix.replace('-', "_"))
    }
    fn offers(&self) -> String {
        format!("{}.pta.offer.*", self.prefix)
    }
    fn offer(&self, tenant_id: &str) -> String {
        format!("{}.pta.offer.{tenant_id}", self.prefix)
    }
    fn consumer(&self, tenant_id: &str) -> String {
        format!("agents_{tenant_id}")
    }
    fn origin(&self, instance: &str) -> String {
        format!("{}.pta.origin.{instance}", self.prefix)
    }
    fn taker(&self, instance: &str) -> String {
        format!("{}.pta.taker.{instance}", self.prefix)
    }
    fn result(&self, tenant_id: &str, request_id: &str) -> String {
        format!("{}.pta.result.{tenant_id}.{request_id}", self.prefix)
    }
    fn presence(&self) -> String {
        format!("{}.pta.presence", self.prefix)
    }
}

/// Whether `s` can be one token of a subject (and part of a stream or
/// consumer name).
pub(crate) fn token_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A request on the tenant's queue.
#[derive(Serialize, Deserialize)]
struct Offer {
    request: ValidationRequest,
    /// The instance waiting for the answer.
    origin: String,
    /// Which attempt of the origin this is.
    attempt: u32,
    /// Agents not to offer it to (tried already in this round).
    exclude: Vec<String>,
    /// How long the attempt lasts, for the taker's bookkeeping.
    attempt_ms: u64,
}

/// From a taker to the origin.
#[derive(Serialize, Deserialize)]
struct Taken {
    request_id: String,
    attempt: u32,
    agent_id: String,
    taker: String,
}

/// From the origin to the taker: the attempt is over, the agent's place is free.
#[derive(Serialize, Deserialize)]
struct Released {
    request_id: String,
}

/// From the instance an agent posted to, to the origin.
#[derive(Serialize, Deserialize)]
struct PostedResult {
    agent_id: String,
    result: ValidationResult,
}

/// The origin's verdict on a posted result.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Accepted,
    NotOffered,
}

/// The agents attached to one instance.
#[derive(Serialize, Deserialize)]
struct Presence {
    instance: String,
    /// Tenant → agents.
    agents: HashMap<String, Vec<String>>,
}

/// What reaches a waiting sign-in besides results.
enum OriginEvent {
    Taken {
        attempt: u32,
        agent_id: String,
        taker: String,
    },
    AgentGone(String),
    TenantClosed,
}

struct OriginEntry {
    tenant_id: String,
    events: mpsc::UnboundedSender<OriginEvent>,
}

struct PresenceEntry {
    seen: Instant,
    agents: HashMap<String, Vec<String>>,
}

/// A request this instance handed to one of its agents.
struct TakenHere {
    tenant_id: String,
    slot: u64,
    until: Instant,
}

struct Shared {
    local: Arc<Relay>,
    client: async_nats::Client,
    js: jetstream::Context,
    names: Names,
    instance_id: String,
    limits: RelayLimits,
    origin: Mutex<HashMap<String, OriginEntry>>,
    presence: Mutex<HashMap<String, PresenceEntry>>,
    taken: Mutex<HashMap<String, TakenHere>>,
    pullers: Mutex<HashMap<String, AbortHandle>>,
}

/// The relay across instances. Agents attach to the instance they reach
/// (their queue streams are served by this instance's [`Relay`]); offers and
/// answers travel over NATS.
pub struct NatsRelay {
    shared: Arc<Shared>,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for NatsRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsRelay")
            .field("prefix", &self.shared.names.prefix)
            .field("instance", &self.shared.instance_id)
            .finish_non_exhaustive()
    }
}

impl Drop for NatsRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(pullers) = self.shared.pullers.lock() {
            for puller in pullers.values() {
                puller.abort();
            }
        }
    }
}

fn nats_down(e: impl std::fmt::Display) -> RelayError {
    RelayError::Unavailable(format!("NATS: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl NatsRelay {
    /// Starts the relay on `client`: subscribes this instance's subjects and
    /// begins announcing its agents. The stream is created on first use.
    pub async fn start(client: async_nats::Client, options: NatsRelayOptions) -> Result<Arc<Self>, NatsRelayError> {
        if !token_ok(&options.prefix) || !token_ok(&options.instance_id) {
            return Err(NatsRelayError::Config(
                "the NATS prefix and instance ID may hold only letters, digits, - and _".into(),
            ));
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(3))
            .build(client.clone());
        let shared = Arc::new(Shared {
            local: Relay::new(options.limits.clone()),
            client: client.clone(),
            js,
            names: Names {
                prefix: options.prefix.clone(),
            },
            instance_id: options.instance_id.clone(),
            limits: options.limits,
            origin: Mutex::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            taken: Mutex::new(HashMap::new()),
            pullers: Mutex::new(HashMap::new()),
        });
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject)
                    .await
                    .map_err(|e| NatsRelayError::Nats(e.to_string()))
            }
        };
        let origin_sub = subscribe(shared.names.origin(&shared.instance_id)).await?;
        let taker_sub = subscribe(shared.names.taker(&shared.instance_id)).await?;
        let presence_sub = subscribe(shared.names.presence()).await?;
        let weak = Arc::downgrade(&shared);
        let tasks = vec![
            tokio::spawn(origin_inbox(weak.clone(), origin_sub)).abort_handle(),
            tokio::spawn(taker_inbox(weak.clone(), taker_sub)).abort_handle(),
            tokio::spawn(presence_inbox(weak.clone(), presence_sub)).abort_handle(),
            tokio::spawn(announce_and_reconcile(weak.clone(), shared.local.agents_changed())).abort_handle(),
            tokio::spawn(sweep_taken(weak)).abort_handle(),
        ];
        tracing::info!(prefix = %options.prefix, instance = %options.instance_id, "pass-through queue on NATS JetStream");
        Ok(Arc::new(Self { shared, tasks }))
    }

    /// The tenant's agents attached to any live instance (as last announced).
    pub fn agents_anywhere(&self, tenant_id: &str) -> Vec<String> {
        self.shared.present_agents(tenant_id)
    }
}

impl Shared {
    fn present_agents(&self, tenant_id: &str) -> Vec<String> {
        let mut agents: Vec<String> = lock(&self.presence)
            .values()
            .filter(|p| p.seen.elapsed() < PRESENCE_STALE)
            .filter_map(|p| p.agents.get(tenant_id))
            .flatten()
            .cloned()
            .collect();
        // Agents attached here count at once, before the announcement returns.
        agents.extend(self.local.attached().remove(tenant_id).unwrap_or_default());
        agents.sort();
        agents.dedup();
        agents
    }

    /// Puts the sign-in in the origin table, within the caps.
    fn register(
        &self,
        request: &ValidationRequest,
        tenant_cap: Option<usize>,
        events: mpsc::UnboundedSender<OriginEvent>,
    ) -> Result<(), RelayError> {
        let mut origin = lock(&self.origin);
        if origin.len() >= self.limits.max_pending {
            return Err(RelayError::Busy);
        }
        let of_tenant = origin.values().filter(|e| e.tenant_id == request.tenant_id).count();
        if tenant_cap.is_some_and(|cap| of_tenant >= cap) {
            return Err(RelayError::TenantBusy);
        }
        origin.insert(
            request.request_id.clone(),
            OriginEntry {
                tenant_id: request.tenant_id.clone(),
                events,
            },
        );
        Ok(())
    }

    async fn publish_offer(&self, offer: &Offer) -> Result<u64, RelayError> {
        self.ensure_stream().await?;
        let payload = serde_json::to_vec(offer).map_err(|e| RelayError::Unavailable(e.to_string()))?;
        let id = format!("{}.{}", offer.request.request_id, offer.attempt);
        let ack = self
            .js
            .send_publish(
                self.names.offer(&offer.request.tenant_id),
                PublishMessage::build().payload(Bytes::from(payload)).message_id(id),
            )
            .await
            .map_err(nats_down)?
            .await
            .map_err(nats_down)?;
        Ok(ack.sequence)
    }

    async fn ensure_stream(&self) -> Result<jetstream::stream::Stream, RelayError> {
        self.js
            .get_or_create_stream(jetstream::stream::Config {
                name: self.names.stream(),
                subjects: vec![self.names.offers()],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                max_age: OFFER_MAX_AGE,
                duplicate_window: OFFER_MAX_AGE,
                ..Default::default()
            })
            .await
            .map_err(nats_down)
    }

    async fn consumer(&self, tenant_id: &str) -> Result<PullConsumer, RelayError> {
        let stream = self.ensure_stream().await?;
        let name = self.names.consumer(tenant_id);
        stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: self.names.offer(tenant_id),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(5),
                    inactive_threshold: Duration::from_secs(3600),
                    ..Default::default()
                },
            )
            .await
            .map_err(nats_down)
    }

    /// Withdraws an offer nobody took.
    async fn withdraw(&self, sequence: u64) {
        if let Ok(stream) = self.ensure_stream().await {
            let _ = stream.delete_message(sequence).await;
        }
    }

    async fn release(&self, taker: &str, request_id: &str) {
        if taker == self.instance_id {
            self.release_here(request_id);
            return;
        }
        if let Ok(payload) = serde_json::to_vec(&Released {
            request_id: request_id.to_owned(),
        }) {
            let _ = self.client.publish(self.names.taker(taker), payload.into()).await;
        }
    }

    fn release_here(&self, request_id: &str) {
        if let Some(t) = lock(&self.taken).remove(request_id) {
            self.local.release_slot(&t.tenant_id, t.slot);
        }
    }

    async fn announce(&self) {
        let presence = Presence {
            instance: self.instance_id.clone(),
            agents: self.local.attached(),
        };
        if let Ok(payload) = serde_json::to_vec(&presence) {
            let _ = self.client.publish(self.names.presence(), payload.into()).await;
        }
    }
}

/// How one attempt ended.
enum AttemptOutcome {
    /// No instance took the offer within the attempt timeout.
    NotTaken,
    /// An agent took it and the attempt ended without an answer.
    Ended(String, AttemptEnd),
}

/// One sign-in on its origin instance: the attempts, the results that come in.
struct Waiter<'a> {
    shared: &'a Shared,
    request: Arc<ValidationRequest>,
    events: mpsc::UnboundedReceiver<OriginEvent>,
    results: async_nats::Subscriber,
    tally: Tally,
    /// Agents the request was handed to (results are accepted from these only).
    offered: HashSet<String>,
    /// Results from agents not (yet) known to hold the request: the taker's
    /// notice may still be on its way.
    held: Vec<(PostedResult, Option<async_nats::Subject>)>,
    attempt: u32,
    /// Whether any agent took the request.
    ever_taken: bool,
}

/// Removes the sign-in from the origin table however it ends.
struct OriginGuard<'a> {
    shared: &'a Shared,
    request_id: String,
}

impl Drop for OriginGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.origin).remove(&self.request_id);
    }
}

impl Waiter<'_> {
    async fn reply(&self, to: Option<async_nats::Subject>, verdict: Verdict) {
        if let (Some(to), Ok(payload)) = (to, serde_json::to_vec(&verdict)) {
            let _ = self.shared.client.publish(to, payload.into()).await;
        }
    }

    fn failure(&self) -> RelayError {
        if self.ever_taken {
            self.tally.failure()
        } else {
            RelayError::Timeout(0)
        }
    }

    /// Runs attempts until an answer or the deadline.
    async fn run(&mut self, deadlines: Deadlines) -> Result<AgentAnswer, RelayError> {
        let overall = Instant::now() + deadlines.overall;
        loop {
            if Instant::now() >= overall {
                return Err(self.failure());
            }
            let present = self.shared.present_agents(&self.request.tenant_id);
            if present.is_empty() && !self.ever_taken {
                return Err(RelayError::NoAgents);
            }
            let eligible: Vec<String> = present.into_iter().filter(|a| !self.tally.tried.contains(a)).collect();
            if eligible.is_empty() {
                if let Some(again) = self.tally.second_round(&self.request) {
                    tracing::debug!(request = %self.request.request_id, "every agent is busy; asking again, allowed to wait");
                    self.request = again;
                    continue;
                }
                return Err(self.failure());
            }
            self.attempt += 1;
            let offer = Offer {
                request: (*self.request).clone(),
                origin: self.shared.instance_id.clone(),
                attempt: self.attempt,
                exclude: self.tally.tried.clone(),
                attempt_ms: u64::try_from(deadlines.attempt.as_millis()).unwrap_or(u64::MAX),
            };
            let sequence = self.shared.publish_offer(&offer).await?;
            let ends = (Instant::now() + deadlines.attempt).min(overall);
            match self.attempt_until(ends).await? {
                Ok(answer) => return Ok(answer),
                Err(AttemptOutcome::NotTaken) => {
                    self.shared.withdraw(sequence).await;
                    tracing::warn!(request = %self.request.request_id, "no instance took the sign-in in time");
                    self.shared.local.count_end(AttemptEnd::TimedOut);
                    // Nobody could place it: this round is over for everyone.
                    self.tally.tried.extend(eligible);
                }
                Err(AttemptOutcome::Ended(agent_id, end)) => {
                    self.shared.local.count_end(end);
                    self.tally.record(&agent_id, end);
                    log_attempt_end(&self.request.request_id, &agent_id, end);
                }
            }
        }
    }

    /// One attempt: waits for the taker's notice, then for the agent's word.
    /// `Ok(Ok(answer))` ends the sign-in.
    async fn attempt_until(&mut self, ends: Instant) -> Result<Result<AgentAnswer, AttemptOutcome>, RelayError> {
        let mut current: Option<(String, String)> = None;
        let outcome = loop {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(OriginEvent::Taken { attempt, agent_id, taker }) => {
                        self.offered.insert(agent_id.clone());
                        if attempt == self.attempt && current.is_none() {
                            self.ever_taken = true;
                            self.tally.tried.push(agent_id.clone());
                            self.tally.offered_to.push(agent_id.clone());
                            self.tally.asked.insert(agent_id.clone());
                            tracing::debug!(request = %self.request.request_id, agent = %agent_id, %taker, "validation taken");
                            current = Some((agent_id, taker));
                            if let Some(done) = self.replay_held(current.as_ref()).await {
                                break done;
                            }
                        } else {
                            // A late notice of an earlier attempt: that agent may
                            // still answer, but it is not this attempt's.
                            self.shared.release(&taker, &self.request.request_id).await;
                        }
                    }
                    Some(OriginEvent::AgentGone(agent)) => {
                        if current.as_ref().is_some_and(|(a, _)| *a == agent) {
                            break Err(AttemptOutcome::Ended(agent, AttemptEnd::AgentGone));
                        }
                    }
                    Some(OriginEvent::TenantClosed) | None => return Err(self.tally.failure()),
                },
                message = self.results.next() => {
                    let Some(message) = message else {
                        return Err(RelayError::Unavailable("the result subscription ended".into()));
                    };
                    let Ok(posted) = serde_json::from_slice::<PostedResult>(&message.payload) else {
                        continue;
                    };
                    if let Some(done) = self.consider(posted, message.reply, current.as_ref()).await {
                        break done;
                    }
                }
                () = tokio::time::sleep_until(ends) => {
                    break match &current {
                        None => Err(AttemptOutcome::NotTaken),
                        Some((agent, _)) => Err(AttemptOutcome::Ended(agent.clone(), AttemptEnd::TimedOut)),
                    };
                }
            }
        };
        if let Some((_, taker)) = &current {
            self.shared.release(taker, &self.request.request_id).await;
        }
        if outcome.is_err() && current.is_none() {
            // Results held for an agent that never showed up are refused.
            for (_, reply) in std::mem::take(&mut self.held) {
                self.reply(reply, Verdict::NotOffered).await;
            }
        }
        Ok(outcome)
    }

    /// Results that came before the taker's notice, now that it is here.
    async fn replay_held(&mut self, current: Option<&(String, String)>) -> Option<Result<AgentAnswer, AttemptOutcome>> {
        for (posted, reply) in std::mem::take(&mut self.held) {
            if let Some(done) = self.consider(posted, reply, current).await {
                return Some(done);
            }
        }
        None
    }

    /// An agent's result: accepted only from an agent the request was handed
    /// to. `Some` ends the attempt (an answer, or that agent's decline).
    async fn consider(
        &mut self,
        posted: PostedResult,
        reply: Option<async_nats::Subject>,
        current: Option<&(String, String)>,
    ) -> Option<Result<AgentAnswer, AttemptOutcome>> {
        if !self.offered.contains(&posted.agent_id) {
            if current.is_none() {
                self.held.push((posted, reply));
            } else {
                tracing::warn!(request = %self.request.request_id, agent = %posted.agent_id, "result refused: the request was not offered to this agent");
                self.reply(reply, Verdict::NotOffered).await;
            }
            return None;
        }
        self.reply(reply, Verdict::Accepted).await;
        let ends_attempt = match posted.result.outcome {
            ValidationOutcome::DirectoryUnreachable => Some(AttemptEnd::Unreachable),
            ValidationOutcome::Declined => Some(AttemptEnd::Declined),
            _ => None,
        };
        match ends_attempt {
            // A late word from an earlier agent changes nothing.
            Some(end) => current
                .filter(|(a, _)| *a == posted.agent_id)
                .map(|(a, _)| Err(AttemptOutcome::Ended(a.clone(), end))),
            None => Some(Ok(AgentAnswer {
                agent_id: posted.agent_id,
                result: posted.result,
                offered_to: self.tally.offered_to.clone(),
            })),
        }
    }
}

async fn validate(
    shared: &Shared,
    request: ValidationRequest,
    deadlines: Deadlines,
    tenant_cap: Option<usize>,
) -> Result<AgentAnswer, RelayError> {
    if !token_ok(&request.tenant_id) || !token_ok(&request.request_id) {
        return Err(RelayError::Unavailable(
            "the tenant or request ID cannot travel over NATS".into(),
        ));
    }
    let (events_tx, events) = mpsc::unbounded_channel();
    shared.register(&request, tenant_cap, events_tx)?;
    let _guard = OriginGuard {
        shared,
        request_id: request.request_id.clone(),
    };
    if shared.present_agents(&request.tenant_id).is_empty() {
        return Err(RelayError::NoAgents);
    }
    let results = shared
        .client
        .subscribe(shared.names.result(&request.tenant_id, &request.request_id))
        .await
        .map_err(nats_down)?;
    // The subscription must be in place before any agent can answer.
    shared.client.flush().await.map_err(nats_down)?;
    let mut waiter = Waiter {
        shared,
        request: Arc::new(request),
        events,
        results,
        tally: Tally::default(),
        offered: HashSet::new(),
        held: Vec::new(),
        attempt: 0,
        ever_taken: false,
    };
    let answer = waiter.run(deadlines).await;
    let _ = waiter.results.unsubscribe().await;
    answer
}

async fn deliver(
    shared: &Shared,
    tenant_id: &str,
    agent_id: &str,
    request_id: &str,
    result: ValidationResult,
) -> Result<(), ResultRejected> {
    if !token_ok(tenant_id) || !token_ok(request_id) {
        return Err(ResultRejected::Unknown);
    }
    let payload = serde_json::to_vec(&PostedResult {
        agent_id: agent_id.to_owned(),
        result,
    })
    .map_err(|_| ResultRejected::Unknown)?;
    let asked = tokio::time::timeout(
        RESULT_WAIT,
        shared
            .client
            .request(shared.names.result(tenant_id, request_id), payload.into()),
    )
    .await;
    match asked {
        Ok(Ok(reply)) => match serde_json::from_slice::<Verdict>(&reply.payload) {
            Ok(Verdict::Accepted) => Ok(()),
            Ok(Verdict::NotOffered) => Err(ResultRejected::NotOffered),
            Err(_) => Err(ResultRejected::Unknown),
        },
        // No responder: no instance waits for this request of this tenant.
        Ok(Err(_)) | Err(_) => Err(ResultRejected::Unknown),
    }
}

/// Notices from takers to this (origin) instance.
async fn origin_inbox(shared: Weak<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(message) = sub.next().await {
        let Some(shared) = shared.upgrade() else { return };
        let Ok(taken) = serde_json::from_slice::<Taken>(&message.payload) else {
            continue;
        };
        let sender = lock(&shared.origin).get(&taken.request_id).map(|e| e.events.clone());
        match sender {
            Some(events) => {
                let _ = events.send(OriginEvent::Taken {
                    attempt: taken.attempt,
                    agent_id: taken.agent_id,
                    taker: taken.taker,
                });
            }
            // Given up meanwhile: free the agent's place.
            None => shared.release(&taken.taker, &taken.request_id).await,
        }
    }
}

/// Notices from origins to this (taker) instance.
async fn taker_inbox(shared: Weak<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(message) = sub.next().await {
        let Some(shared) = shared.upgrade() else { return };
        if let Ok(released) = serde_json::from_slice::<Released>(&message.payload) {
            shared.release_here(&released.request_id);
        }
    }
}

/// Other instances' agents. A newcomer hears from this instance at once.
async fn presence_inbox(shared: Weak<Shared>, mut sub: async_nats::Subscriber) {
    while let Some(message) = sub.next().await {
        let Some(shared) = shared.upgrade() else { return };
        let Ok(presence) = serde_json::from_slice::<Presence>(&message.payload) else {
            continue;
        };
        if presence.instance == shared.instance_id {
            continue;
        }
        let newcomer = lock(&shared.presence)
            .insert(
                presence.instance.clone(),
                PresenceEntry {
                    seen: Instant::now(),
                    agents: presence.agents,
                },
            )
            .is_none_or(|old| old.seen.elapsed() >= PRESENCE_STALE);
        if newcomer {
            shared.announce().await;
        }
    }
}

/// Announces this instance's agents every [`PRESENCE_EVERY`] and whenever they
/// change, and keeps one puller per tenant with agents here.
async fn announce_and_reconcile(shared: Weak<Shared>, mut changed: tokio::sync::watch::Receiver<u64>) {
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            moved = changed.changed() => if moved.is_err() { return },
        }
        let Some(shared) = shared.upgrade() else { return };
        reconcile_pullers(&shared);
        shared.announce().await;
    }
}

fn reconcile_pullers(shared: &Arc<Shared>) {
    let attached = shared.local.attached();
    let mut pullers = lock(&shared.pullers);
    pullers.retain(|tenant, task| {
        let keep = attached.contains_key(tenant) && !task.is_finished();
        if !keep {
            task.abort();
        }
        keep
    });
    for tenant in attached.keys() {
        if !pullers.contains_key(tenant) && token_ok(tenant) {
            let task = tokio::spawn(pull_offers(Arc::downgrade(shared), tenant.clone()));
            pullers.insert(tenant.clone(), task.abort_handle());
        }
    }
}

/// Frees the places of requests whose origin never said the attempt ended
/// (the origin instance died).
async fn sweep_taken(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<String> = lock(&shared.taken)
            .iter()
            .filter(|(_, t)| t.until <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            shared.release_here(&id);
        }
    }
}

/// Takes the tenant's offers while agents of the tenant are attached here, as
/// many as they have free places.
async fn pull_offers(shared: Weak<Shared>, tenant_id: String) {
    let mut consumer: Option<PullConsumer> = None;
    loop {
        let Some(strong) = shared.upgrade() else { return };
        let per_agent = strong.limits.per_agent_capacity.max(1);
        let free = strong.local.free_capacity(&tenant_id, per_agent);
        if free == 0 {
            drop(strong);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let pulling = match &consumer {
            Some(c) => c.clone(),
            None => match strong.consumer(&tenant_id).await {
                Ok(c) => {
                    consumer = Some(c.clone());
                    c
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant_id, error = %e, "cannot pull the tenant's sign-ins; retrying");
                    drop(strong);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        drop(strong);
        let batch = pulling
            .fetch()
            .max_messages(free.min(64))
            .expires(Duration::from_secs(1))
            .messages()
            .await;
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(tenant = %tenant_id, error = %e, "pulling sign-ins failed; retrying");
                consumer = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            let Some(strong) = shared.upgrade() else { return };
            match message {
                Ok(message) => take(&strong, &tenant_id, message).await,
                Err(e) => {
                    tracing::debug!(tenant = %tenant_id, error = %e, "pull ended");
                    break;
                }
            }
        }
    }
}

/// Hands one offer to an agent here, or gives it back for another instance.
async fn take(shared: &Shared, tenant_id: &str, message: jetstream::Message) {
    let offer = match serde_json::from_slice::<Offer>(&message.payload) {
        Ok(o) if o.request.tenant_id == tenant_id && token_ok(&o.origin) => o,
        _ => {
            tracing::warn!(tenant = %tenant_id, "malformed or misaddressed sign-in offer dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let request = Arc::new(offer.request);
    let Some((slot, agent_id)) = shared.local.offer(&request, &offer.exclude) else {
        let _ = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await;
        return;
    };
    lock(&shared.taken).insert(
        request.request_id.clone(),
        TakenHere {
            tenant_id: tenant_id.to_owned(),
            slot,
            until: Instant::now() + Duration::from_millis(offer.attempt_ms) + Duration::from_secs(2),
        },
    );
    let notice = Taken {
        request_id: request.request_id.clone(),
        attempt: offer.attempt,
        agent_id,
        taker: shared.instance_id.clone(),
    };
    if let Ok(payload) = serde_json::to_vec(&notice) {
        let _ = shared
            .client
            .publish(shared.names.origin(&offer.origin), payload.into())
            .await;
    }
    let _ = message.ack().await;
}

impl SignInRelay for NatsRelay {
    fn subscribe(&self, tenant_id: &str, agent_id: &str) -> Subscription {
        self.shared.local.subscribe(tenant_id, agent_id)
    }

    fn validate_capped(
        &self,
        request: ValidationRequest,
        deadlines: Deadlines,
        tenant_cap: Option<usize>,
    ) -> BoxFuture<'_, Result<AgentAnswer, RelayError>> {
        Box::pin(validate(&self.shared, request, deadlines, tenant_cap))
    }

    fn deliver_result<'a>(
        &'a self,
        tenant_id: &'a str,
        agent_id: &'a str,
        request_id: &'a str,
        result: ValidationResult,
    ) -> BoxFuture<'a, Result<(), ResultRejected>> {
        Box::pin(deliver(&self.shared, tenant_id, agent_id, request_id, result))
    }

    fn close_agent(&self, tenant_id: &str, agent_id: &str) -> usize {
        for entry in lock(&self.shared.origin).values() {
            if entry.tenant_id == tenant_id {
                let _ = entry.events.send(OriginEvent::AgentGone(agent_id.to_owned()));
            }
        }
        self.shared.local.close_agent(tenant_id, agent_id)
    }

    fn close_tenant(&self, tenant_id: &str) -> usize {
        for entry in lock(&self.shared.origin).values() {
            if entry.tenant_id == tenant_id {
                let _ = entry.events.send(OriginEvent::TenantClosed);
            }
        }
        self.shared.local.close_tenant(tenant_id)
    }

    fn connected_agents(&self, tenant_id: &str) -> usize {
        self.shared.local.connected_agents(tenant_id)
    }

    fn pending(&self) -> usize {
        lock(&self.shared.origin).len()
    }

    fn stats(&self) -> RelayStats {
        self.shared.local.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_proto::PROTOCOL_VERSION;

    fn nats_url() -> String {
        std::env::var("POSTERN_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
    }

    /// Two or more instances' relays on the test NATS server under a prefix of
    /// their own; the stream is deleted when dropped (in the background).
    struct Instances {
        prefix: String,
        relays: Vec<Arc<NatsRelay>>,
    }

    impl Instances {
        async fn start(n: usize) -> Self {
            let prefix = format!("tr{}", &uuid_like()[..12]);
            let mut relays = Vec::new();
            for i in 0..n {
                let client = async_nats::connect(nats_url())
                    .await
                    .expect("tests need NATS with JetStream (scripts/test starts it)");
                let options = NatsRelayOptions {
                    prefix: prefix.clone(),
                    instance_id: format!("i{i}"),
                    limits: RelayLimits::default(),
                };
                relays.push(NatsRelay::start(client, options).await.unwrap());
            }
            Self { prefix, relays }
        }

        /// Waits until instance `at` sees `agents` of `tenant` anywhere.
        async fn sees(&self, at: usize, tenant: &str, agents: usize) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.relays[at].agents_anywhere(tenant).len() != agents {
                assert!(Instant::now() < deadline, "presence never converged");
                tokio::time::sleep(Duration::from_millis(10)).await; // poll pause, bounded above
            }
        }

        async fn cleanup(&self) {
            if let Ok(client) = async_nats::connect(nats_url()).await {
                let _ = jetstream::new(client)
                    .delete_stream(format!("{}_PTA", self.prefix))
                    .await;
            }
        }
    }

    #[allow(clippy::disallowed_methods)] // a unique name, not a time
    fn uuid_like() -> String {
        use std::time::{SystemTime, UNIX_EPOCH};
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{nanos:x}{:x}", std::process::id())
    }

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

    fn deadlines() -> Deadlines {
        Deadlines {
            attempt: Duration::from_millis(800),
            overall: Duration::from_secs(5),
        }
    }

    /// An agent attached to `at` that answers `outcome` (never, if `None`)
    /// through instance `posts_to`; counts what it was offered.
    fn agent(
        instances: &Instances,
        at: usize,
        posts_to: usize,
        tenant: &str,
        id: &str,
        outcome: Option<ValidationOutcome>,
    ) -> Arc<std::sync::atomic::AtomicUsize> {
        let mut sub = instances.relays[at].subscribe(tenant, id);
        let relay = instances.relays[posts_to].clone();
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Some(req) = sub.recv().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if let Some(o) = outcome {
                    let _ = relay.deliver_result(&tenant, &id, &req.request_id, result(o)).await;
                }
            }
        });
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sign_in_on_one_instance_is_answered_by_an_agent_attached_to_another() {
        let i = Instances::start(3).await;
        assert_eq!(
            i.relays[0]
                .validate(request("t1", "r0"), deadlines())
                .await
                .unwrap_err(),
            RelayError::NoAgents,
            "no agent anywhere: said at once"
        );
        // Attached to instance 1, posting its results through instance 2.
        let seen = agent(&i, 1, 2, "t1", "a1", Some(ValidationOutcome::Success));
        i.sees(0, "t1", 1).await;
        for n in 0..5 {
            let answer = i.relays[0]
                .validate(request("t1", &format!("r{n}")), deadlines())
                .await
                .unwrap();
            assert_eq!(
                (answer.agent_id.as_str(), answer.result.outcome),
                ("a1", ValidationOutcome::Success)
            );
        }
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 5, "each offered once");
        assert_eq!(i.relays[0].pending(), 0);
        i.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_count_only_from_the_agent_handed_the_request_of_its_tenant_once() {
        let i = Instances::start(2).await;
        let mut sub = i.relays[1].subscribe("t1", "a1");
        let _other_tenant = i.relays[1].subscribe("t2", "b1");
        i.sees(0, "t1", 1).await;
        let origin = i.relays[0].clone();
        let waiter = tokio::spawn(async move { origin.validate(request("t1", "r1"), deadlines()).await });
        let offered = sub.recv().await.unwrap();
        assert_eq!(offered.request_id, "r1");
        let ok = result(ValidationOutcome::Success);
        let posted = &i.relays[1];
        assert_eq!(
            posted.deliver_result("t2", "b1", "r1", ok.clone()).await,
            Err(ResultRejected::Unknown),
            "another tenant's agent reaches no pending request"
        );
        assert_eq!(
            posted.deliver_result("t1", "a2", "r1", ok.clone()).await,
            Err(ResultRejected::NotOffered)
        );
        assert_eq!(
            posted.deliver_result("t1", "a1", "nope", ok.clone()).await,
            Err(ResultRejected::Unknown)
        );
        posted.deliver_result("t1", "a1", "r1", ok.clone()).await.unwrap();
        assert_eq!(waiter.await.unwrap().unwrap().agent_id, "a1");
        assert_eq!(
            posted.deliver_result("t1", "a1", "r1", ok).await,
            Err(ResultRejected::Unknown),
            "a second answer is refused"
        );
        i.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_agent_is_bypassed_for_another_instances_agent_and_tenants_stay_apart() {
        let i = Instances::start(2).await;
        let silent = agent(&i, 0, 0, "t1", "dead", None);
        let good = agent(&i, 1, 0, "t1", "good", Some(ValidationOutcome::WrongCredentials));
        let other = agent(&i, 1, 1, "t2", "b1", Some(ValidationOutcome::Success));
        i.sees(0, "t1", 2).await;
        for n in 0..4 {
            let answer = i.relays[0]
                .validate(request("t1", &format!("s{n}")), deadlines())
                .await
                .unwrap();
            assert_eq!(answer.agent_id, "good");
            assert_eq!(answer.result.outcome, ValidationOutcome::WrongCredentials);
        }
        assert!(good.load(std::sync::atomic::Ordering::SeqCst) >= 4);
        let dead = silent.load(std::sync::atomic::Ordering::SeqCst);
        assert!(dead <= 4, "the silent agent saw {dead}");
        assert_eq!(
            other.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "t2's agent saw none of t1's"
        );
        i.cleanup().await;
    }
}
