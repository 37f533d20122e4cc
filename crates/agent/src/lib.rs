//! The pass-through authentication agent runtime (PTA-4 to PTA-7): it holds an
//! outbound stream to its tenant's queue, decrypts each password sent to it with its
//! own key and checks it against the on-prem directory, and reports the outcome.
//!
//! # Protocol
//!
//! All calls go to the control endpoint over mTLS with the agent's client certificate
//! ([`postern_uplink::ControlClient`]); the wire types are in
//! [`postern_proto::relay`].
//!
//! 1. `POST /v1/t/{tenant}/agent/bootstrap` gives a short-lived credential for the
//!    tenant's queue, the heartbeat interval and how many requests to work on at once.
//! 2. `GET {queue_path}` with `Authorization: Bearer {credential}` is a long-lived
//!    response of newline-delimited JSON frames, read incrementally ([`queue`]). No
//!    frame for three heartbeat intervals, a line over 64 KiB, or the end of the
//!    response: the agent reconnects on a fresh TLS connection, with jittered
//!    exponential backoff that resets once a connection has stayed up a while. Before
//!    the credential expires (or when the queue answers 401) it bootstraps again.
//! 3. For each validation request: requests of another tenant, past their deadline or
//!    with no ciphertext for this agent's key are skipped; the password is decrypted
//!    ([`decrypt`]), checked with the [`Directory`], and the outcome posted to
//!    `POST /v1/t/{tenant}/agent/results/{id}`. A ciphertext the agent cannot decrypt
//!    gets no answer at all (never "wrong password"). Up to `max_in_flight`
//!    validations run at once while the stream keeps being read.
//! 4. Renewal (PTA-7) runs beside it; after a renewal the agent decrypts with the new
//!    key and reconnects with the new certificate.
//!
//! At shutdown the agent stops reading, lets the validations in flight finish within a
//! grace period, and returns.
//!
//! # Configuration
//!
//! `postern agent run --config /etc/postern/agent.toml` reads an [`AgentConfig`]; see
//! [`config`] for the format.
//!
//! # Use from a test
//!
//! ```no_run
//! # async fn demo(state: postern_uplink::StateDir, directory: std::sync::Arc<dyn postern_directory::Directory>) -> Result<(), postern_agent::AgentError> {
//! use std::sync::Arc;
//! let clock: postern_time::SharedClock = Arc::new(postern_time::SystemClock);
//! let agent = postern_agent::Agent::new(state, clock, directory)?;
//! let mut status = agent.status();
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let running = tokio::spawn(agent.run(async move { let _ = stopped.await; }));
//! status.wait_for(|s| s.phase == postern_agent::Phase::Connected).await.ok();
//! // ... put requests on the queue ...
//! let _ = stop.send(());
//! running.await.ok();
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod decrypt;
pub mod queue;
mod renewal;
mod results;
mod session;
mod status;
mod worker;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use config::{AgentConfig, BIND_PASSWORD_ENV, ConfigError, LoadedConfig};
pub use decrypt::{AgentKey, DecryptError, UnusableKey};
use postern_directory::Directory;
use postern_keyring::SecretString;
use postern_proto::ProtocolMismatch;
use postern_proto::relay::{BootstrapResponse, QueueFrame, ValidationRequest};
use postern_time::SharedClock;
use postern_uplink::{Backoff, StateDir, UplinkError};
pub use status::{AgentStats, AgentStatus, Phase, StatsSnapshot};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::{Flow, StreamEnd};
use crate::session::Session;
use crate::worker::{Job, Limiter, ServiceClock, Shared};

/// What stopped the agent, or what went wrong on the way. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing is registered, the certificate expired, or the service removed this
    /// agent: exit; an administrator must register it again.
    #[error(transparent)]
    NeedsRegistration(UplinkError),
    /// The stored key cannot decrypt passwords (not RSA): exit; register the agent again.
    #[error(transparent)]
    UnusableKey(#[from] UnusableKey),
    /// The state directory holds a connector's registration: exit; point `--state-dir`
    /// at the agent's.
    #[error("the state directory {0} holds a connector's registration, not an agent's")]
    NotAnAgent(String),
    /// The state directory could not be read (permissions, a half-written renewal): the
    /// run loop retries with backoff; at start, fix the directory and start again.
    #[error("state directory: {0}")]
    State(UplinkError),
    /// The service could not be reached or refused a call: the run loop retries with
    /// backoff.
    #[error("service: {0}")]
    Service(UplinkError),
    /// Agent and service speak different protocol versions: the run loop keeps
    /// retrying (slowly); upgrade the older side.
    #[error(transparent)]
    Protocol(#[from] ProtocolMismatch),
    /// The configuration file is not usable: exit; fix it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bug (a task died): exit; the supervisor restarts the agent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AgentError {
    /// Sorts an uplink error by what to do about it.
    pub fn from_uplink(e: UplinkError) -> Self {
        if e.needs_registration() {
            return AgentError::NeedsRegistration(e);
        }
        match e {
            UplinkError::State { .. } | UplinkError::Corrupt(_) | UplinkError::Pki(_) => AgentError::State(e),
            other => AgentError::Service(other),
        }
    }

    /// Whether the agent must stop (retrying cannot help).
    pub fn is_fatal(&self) -> bool {
        match self {
            AgentError::NeedsRegistration(_)
            | AgentError::UnusableKey(_)
            | AgentError::NotAnAgent(_)
            | AgentError::Config(_)
            | AgentError::Internal(_) => true,
            AgentError::State(_) | AgentError::Service(_) | AgentError::Protocol(_) => false,
        }
    }

    /// Whether an administrator must register the agent again.
    pub fn needs_registration(&self) -> bool {
        matches!(self, AgentError::NeedsRegistration(_) | AgentError::UnusableKey(_))
    }
}

/// Tuning of the run loop. The defaults suit production.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// Most validations at once on this host; the lower of this and the service's
    /// number applies.
    pub max_in_flight: Option<usize>,
    /// Shortest wait before reconnecting after a failure.
    pub reconnect_min: Duration,
    /// Longest wait before reconnecting.
    pub reconnect_max: Duration,
    /// A queue connection that stayed up this long resets the reconnect backoff,
    /// and its end is followed by a reconnection at once (small jitter).
    pub stable_after: Duration,
    /// How long validations in flight may take to finish at shutdown.
    pub drain_grace: Duration,
    /// Longest wait before retrying a failed renewal check.
    pub renewal_retry_max: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            max_in_flight: None,
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(5),
            drain_grace: Duration::from_secs(10),
            renewal_retry_max: Duration::from_secs(300),
        }
    }
}

/// A backoff from `min` to `max`, both made sane first.
fn backoff(min: Duration, max: Duration) -> Result<Backoff, AgentError> {
    let min = min.max(Duration::from_millis(1));
    Backoff::try_new(min, max.max(min)).map_err(|e| AgentError::Internal(e.to_string()))
}

/// The agent: build it with [`Agent::new`], watch it with [`Agent::status`] and
/// [`Agent::stats`], run it with [`Agent::run`].
pub struct Agent {
    state: StateDir,
    clock: SharedClock,
    directory: Arc<dyn Directory>,
    options: AgentOptions,
    session: Session,
    status: watch::Sender<AgentStatus>,
    stats: Arc<AgentStats>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("state", &self.state)
            .field("key_id", &self.session.key.key_id())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// An agent for the registration in `state`, checking passwords against
    /// `directory`. Fails when nothing usable is registered there.
    pub fn new(state: StateDir, clock: SharedClock, directory: Arc<dyn Directory>) -> Result<Self, AgentError> {
        let session = Session::load(&state, &clock)?;
        let (status, _) = watch::channel(AgentStatus::new(session.key.key_id().to_owned()));
        Ok(Self {
            state,
            clock,
            directory,
            options: AgentOptions::default(),
            session,
            status,
            stats: Arc::new(AgentStats::default()),
        })
    }

    /// The same agent with other tuning.
    pub fn with_options(mut self, options: AgentOptions) -> Self {
        self.options = options;
        self
    }

    /// The run loop's state, as it changes.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.subscribe()
    }

    /// Counters of the requests handled.
    pub fn stats(&self) -> Arc<AgentStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` completes (then drains and returns `Ok`) or an error
    /// that retrying cannot fix.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AgentError> {
        let Agent {
            state,
            clock,
            directory,
            options,
            session,
            status,
            stats,
        } = self;
        let reconnect = backoff(options.reconnect_min, options.reconnect_max)?;
        let renewal_retry = backoff(options.reconnect_min, options.renewal_retry_max)?;
        let state_lock = Arc::new(Mutex::new(()));
        let (renewed_tx, renewed_rx) = watch::channel(0u64);
        let maintenance = tokio::spawn(renewal::maintain(
            state.clone(),
            clock.clone(),
            state_lock.clone(),
            renewed_tx,
            session.alg,
            renewal_retry,
        ));
        let (session_tx, session_rx) = watch::channel(Arc::new(session));
        let shared = Arc::new(Shared {
            directory,
            stats,
            session: session_rx,
            limiter: Arc::new(Limiter::new()),
            clock: ServiceClock::new(clock.clone()),
            cancel: CancellationToken::new(),
            results: results::ResultsChannel::default(),
        });
        let tracker = TaskTracker::new();
        let mut runner = Runner {
            backoff: reconnect,
            state,
            clock,
            options,
            status,
            shared: shared.clone(),
            session: session_tx,
            renewed: renewed_rx,
            tracker: tracker.clone(),
            state_lock,
        };
        let mut stops = Stops {
            shutdown: Box::pin(shutdown),
            maintenance: Some(maintenance),
        };
        let result = match runner.connect_loop(&mut stops).await {
            Ok(never) => match never {},
            Err(Stop::Shutdown) => Ok(()),
            Err(Stop::Fatal(e)) => Err(e),
        };
        if let Some(m) = stops.maintenance.take() {
            m.abort();
        }
        runner.drain().await;
        result
    }
}

/// Why the connect loop ended.
enum Stop {
    /// The shutdown signal.
    Shutdown,
    /// An error retrying cannot fix.
    Fatal(AgentError),
}

/// What ends the run loop from outside: the shutdown signal, or the renewal task
/// meeting a fatal error.
struct Stops<'a> {
    shutdown: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    maintenance: Option<JoinHandle<AgentError>>,
}

impl Stops<'_> {
    /// Runs `work` unless a stop comes first.
    async fn until<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Stop> {
        let Stops { shutdown, maintenance } = self;
        let failed = async {
            let Some(handle) = maintenance.as_mut() else {
                return std::future::pending().await;
            };
            let ended = handle.await;
            *maintenance = None;
            match ended {
                Ok(e) => e,
                Err(e) => AgentError::Internal(format!("the renewal task ended: {e}")),
            }
        };
        tokio::select! {
            biased;
            () = shutdown => Err(Stop::Shutdown),
            e = failed => Err(Stop::Fatal(e)),
            t = work => Ok(t),
        }
    }
}

/// A credential for the queue, and what came with it.
struct QueueCredential {
    path: String,
    /// The two-way queue, when the service has one.
    duplex_path: Option<String>,
    secret: SecretString,
    refresh_at: Instant,
    silence: Duration,
    /// Bootstrapped for this connection attempt (so a 401 is not the credential's age).
    fresh: bool,
}

/// Why a connected queue stream was left.
enum Leave {
    Stream(StreamEnd),
    Refresh,
    Renewed,
}

/// An uplink error, unless it is fatal (then the loop stops).
fn fatal_or(e: UplinkError) -> Result<AgentError, Stop> {
    let e = AgentError::from_uplink(e);
    if e.is_fatal() { Err(Stop::Fatal(e)) } else { Ok(e) }
}

/// The run loop's state.
struct Runner {
    state: StateDir,
    clock: SharedClock,
    options: AgentOptions,
    status: watch::Sender<AgentStatus>,
    shared: Arc<Shared>,
    session: watch::Sender<Arc<Session>>,
    renewed: watch::Receiver<u64>,
    tracker: TaskTracker,
    state_lock: Arc<Mutex<()>>,
    backoff: Backoff,
}

/// What to do after a connection attempt.
enum Retry {
    /// Reconnect at once (credential refresh, renewal).
    Now,
    /// Reconnect after the backoff delay (a failure).
    AfterPause,
}

impl Runner {
    /// Bootstraps, connects and reads until a stop; every failure is retried unless
    /// it is fatal. Each attempt starts with a fresh client (a fresh TLS connection,
    /// used at once by the validations still reporting) and then waits its backoff.
    async fn connect_loop(&mut self, stops: &mut Stops<'_>) -> Result<Infallible, Stop> {
        let mut credential: Option<QueueCredential> = None;
        let mut reload = false;
        let mut pause = false;
        loop {
            self.set_phase(Phase::Connecting);
            if reload && let Err(e) = stops.until(self.reload()).await? {
                if e.is_fatal() {
                    return Err(Stop::Fatal(e));
                }
                tracing::error!(error = %e, "cannot load this agent's key and certificate");
                self.pause(stops).await?;
                continue;
            }
            reload = true;
            if pause {
                self.pause(stops).await?;
                self.set_phase(Phase::Connecting);
            }
            pause = match self.attempt(stops, &mut credential).await? {
                Retry::Now => false,
                Retry::AfterPause => true,
            };
        }
    }

    /// One connection: bootstrap when the credential is missing or due, open the queue
    /// and read it until it ends.
    async fn attempt(
        &mut self,
        stops: &mut Stops<'_>,
        credential: &mut Option<QueueCredential>,
    ) -> Result<Retry, Stop> {
        let session = self.session.borrow().clone();
        let mut cred = match credential.take().filter(|c| c.refresh_at > Instant::now()) {
            Some(mut c) => {
                c.fresh = false;
                c
            }
            None => match stops.until(session.client.agent_bootstrap()).await? {
                Ok(answer) => match self.accept_bootstrap(answer) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot use the bootstrap answer");
                        return Ok(Retry::AfterPause);
                    }
                },
                Err(e) => {
                    let e = fatal_or(e)?;
                    tracing::warn!(error = %e, "bootstrap failed");
                    return Ok(Retry::AfterPause);
                }
            },
        };

        let opened = match &cred.duplex_path {
            Some(duplex_path) => {
                let (body, new) = results::new_body();
                let opened = stops
                    .until(session.client.agent_duplex_queue(duplex_path, &cred.secret, body))
                    .await?;
                // Both directions on one request need HTTP/2; on another version
                // the body ends here (`new` dropped) and results are posted.
                opened.map(|response| {
                    let drained =
                        (response.version() == reqwest::Version::HTTP_2).then(|| self.shared.results.attach(new));
                    (response, drained)
                })
            }
            None => stops
                .until(session.client.agent_queue(&cred.path, &cred.secret))
                .await?
                .map(|response| (response, None)),
        };
        let (response, drained) = match opened {
            Ok(r) => r,
            Err(UplinkError::Refused { status: 401, .. }) => {
                tracing::info!("the queue refused the credential; bootstrapping again");
                return Ok(if cred.fresh { Retry::AfterPause } else { Retry::Now });
            }
            Err(e) => {
                let e = fatal_or(e)?;
                tracing::warn!(error = %e, "cannot open the queue");
                *credential = Some(cred);
                return Ok(Retry::AfterPause);
            }
        };

        self.status.send_modify(|s| {
            s.phase = Phase::Connected;
            s.connections += 1;
        });
        tracing::info!(key_id = session.key.key_id(), "connected to the queue");
        let connected_at = Instant::now();
        let leave = {
            let (shared, tracker) = (&self.shared, &self.tracker);
            let reading = queue::read_frames(queue::body_chunks(response), cred.silence, |frame| {
                handle(shared, tracker, &session, frame);
                Flow::Continue
            });
            let mut reading = std::pin::pin!(reading);
            let renewed = &mut self.renewed;
            let left = stops
                .until(async {
                    tokio::select! {
                        end = &mut reading => Leave::Stream(end),
                        () = tokio::time::sleep_until(cred.refresh_at) => Leave::Refresh,
                        () = changed(renewed) => Leave::Renewed,
                    }
                })
                .await;
            // Leaving: results from now on are posted, and those already on the
            // two-way queue are sent before its response (still held by
            // `reading`) is dropped, which would cut the request off.
            shared.results.close();
            let drained = match drained {
                Some(drained) => drained.wait(results::DRAIN_WAIT).await,
                None => true,
            };
            let left = left?;
            // The service answers none of the lines: when the queue broke, or
            // its body was not sent in time, those of the last seconds are
            // posted again.
            if drained && !matches!(left, Leave::Stream(_)) {
                shared.results.confirm();
            } else {
                let again = shared.results.take_unconfirmed();
                if !again.is_empty() {
                    tracker.spawn(worker::post_again(shared.clone(), again));
                }
            }
            left
        };
        let stable = connected_at.elapsed() >= self.options.stable_after;
        if stable {
            self.backoff.reset();
        }
        match leave {
            Leave::Refresh => {
                tracing::debug!("refreshing the queue credential");
                Ok(Retry::Now)
            }
            Leave::Renewed => {
                tracing::info!("certificate renewed; reconnecting with the new key");
                Ok(Retry::Now)
            }
            Leave::Stream(end) => {
                let why = describe(&end);
                match end {
                    StreamEnd::Closed | StreamEnd::Stopped => tracing::info!(why, "queue stream ended"),
                    _ => tracing::warn!(why, "queue stream lost"),
                }
                self.status.send_modify(|s| s.last_disconnect = Some(why));
                cred.fresh = false;
                *credential = Some(cred);
                // The service ended the stream (it is going away, or restarted)
                // or a connection that was up a while broke: back at once, after
                // a small jitter; the backoff applies if that fails. A stream
                // ended as soon as it opened waits its backoff (no tight loop).
                let ended_cleanly =
                    matches!(end, StreamEnd::Closed) && connected_at.elapsed() >= Duration::from_secs(1);
                if stable || ended_cleanly {
                    stops.until(tokio::time::sleep(Backoff::soon())).await?;
                    Ok(Retry::Now)
                } else {
                    Ok(Retry::AfterPause)
                }
            }
        }
    }

    /// Reloads client and key (a fresh TLS connection; the new key after a renewal).
    async fn reload(&mut self) -> Result<(), AgentError> {
        let session = {
            let _guard = self.state_lock.lock().await;
            // Seen before loading: a renewal finishing later is noticed again.
            self.renewed.borrow_and_update();
            Session::load(&self.state, &self.clock)?
        };
        let key_id = session.key.key_id().to_owned();
        if key_id != self.status.borrow().key_id {
            tracing::info!(key_id, "decrypting with the renewed key");
        }
        self.status.send_modify(|s| s.key_id = key_id);
        self.session.send_replace(Arc::new(session));
        Ok(())
    }

    /// Takes in a bootstrap answer.
    fn accept_bootstrap(&self, answer: BootstrapResponse) -> Result<QueueCredential, AgentError> {
        postern_proto::check_protocol(answer.protocol)?;
        let lifetime = answer.expires_at.saturating_sub(self.clock.now().secs());
        let refresh_in = if lifetime < 2 {
            tracing::warn!(
                expires_at = answer.expires_at,
                "the queue credential expires at once: are this host's and the service's clocks in step?"
            );
            Duration::from_secs(30)
        } else {
            Duration::from_millis(u64::try_from(lifetime).unwrap_or(0).saturating_mul(800))
        };
        let offered = usize::try_from(answer.max_in_flight).unwrap_or(usize::MAX);
        let size = offered
            .min(self.options.max_in_flight.unwrap_or(usize::MAX))
            .clamp(1, config::MAX_IN_FLIGHT_LIMIT);
        self.shared.limiter.resize(size);
        self.status.send_modify(|s| {
            s.bootstraps += 1;
            s.max_in_flight = size;
        });
        Ok(QueueCredential {
            path: answer.queue_path,
            duplex_path: answer.duplex_queue_path,
            secret: SecretString::new(answer.queue_credential),
            refresh_at: Instant::now() + refresh_in,
            silence: Duration::from_secs(answer.heartbeat_secs.clamp(1, 600) * 3),
            fresh: true,
        })
    }

    fn set_phase(&self, phase: Phase) {
        self.status.send_if_modified(|s| {
            let changed = s.phase != phase;
            s.phase = phase;
            changed
        });
    }

    /// Waits the next backoff delay.
    async fn pause(&mut self, stops: &mut Stops<'_>) -> Result<(), Stop> {
        let wait = self.backoff.next_delay();
        self.set_phase(Phase::Waiting(wait));
        stops.until(tokio::time::sleep(wait)).await
    }

    /// Lets the validations in flight finish within the grace period.
    async fn drain(&self) {
        self.set_phase(Phase::Draining);
        self.tracker.close();
        let running = self.tracker.len();
        if running > 0 {
            tracing::info!(running, "letting validations in flight finish");
        }
        if tokio::time::timeout(self.options.drain_grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = self.tracker.len(),
                "validations still running after the grace period; abandoning them"
            );
            self.shared.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.tracker.wait()).await;
        }
        self.set_phase(Phase::Stopped);
    }
}

/// Resolves when `renewed` changes; never, once the renewal task is gone.
async fn changed(renewed: &mut watch::Receiver<u64>) {
    if renewed.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn describe(end: &StreamEnd) -> String {
    match end {
        StreamEnd::Closed => "the service ended the stream".into(),
        StreamEnd::Silent(d) => format!("no frame for {}s", d.as_secs()),
        StreamEnd::LineTooLong => format!("a line longer than {} bytes", queue::MAX_LINE),
        StreamEnd::Broken(e) => format!("reading failed: {e}"),
        StreamEnd::Stopped => "stopped".into(),
    }
}

/// Handles one frame: heartbeats set the service clock, requests become jobs.
fn handle(shared: &Arc<Shared>, tracker: &TaskTracker, session: &Arc<Session>, frame: QueueFrame) {
    match frame {
        QueueFrame::Heartbeat { at } => shared.clock.observe(at),
        QueueFrame::Validate(request) => dispatch(shared, tracker, session, request),
    }
}

/// Whether a request ID can be put in a URL path as it is.
fn plain_id(id: &str) -> bool {
    postern_pki::check_id(id).is_ok() && id != "." && id != ".."
}

/// Starts work on a request, or says why not. A request this agent cannot take
/// now (every slot busy, or no ciphertext for its key) is declined at once, so
/// the service offers it to another agent instead of waiting for this one; when
/// the service says every agent is busy (`wait_if_busy`), it waits its turn.
fn dispatch(shared: &Arc<Shared>, tracker: &TaskTracker, session: &Arc<Session>, mut request: ValidationRequest) {
    AgentStats::count(&shared.stats.received);
    let id = &request.request_id;
    if request.tenant_id != session.tenant_id() {
        tracing::warn!(request = %id, "a request for another tenant reached this agent; ignored");
        AgentStats::count(&shared.stats.skipped_other_tenant);
        return;
    }
    if !plain_id(id) {
        tracing::warn!("a request with a malformed ID; ignored");
        AgentStats::count(&shared.stats.skipped_malformed);
        return;
    }
    if shared.clock.remaining(request.deadline_ms).is_none() {
        tracing::debug!(request = %id, "request past its deadline; skipped");
        AgentStats::count(&shared.stats.skipped_expired);
        return;
    }
    let Some(index) = request
        .ciphertexts
        .iter()
        .position(|c| c.key_id == session.key.key_id())
    else {
        tracing::debug!(
            request = %id,
            key_id = session.key.key_id(),
            "no ciphertext for this agent's key (encrypted for other agents only, e.g. just after a renewal); declined"
        );
        AgentStats::count(&shared.stats.skipped_other_keys);
        decline(shared, tracker, request.request_id);
        return;
    };
    let place = if request.wait_if_busy {
        shared.limiter.enter()
    } else {
        shared.limiter.enter_if_free()
    };
    let Some(place) = place else {
        if request.wait_if_busy {
            tracing::warn!(request = %id, "too many requests waiting here; leaving this one to another agent");
            AgentStats::count(&shared.stats.skipped_overloaded);
        } else {
            tracing::debug!(request = %id, "every validation slot is busy; declined");
        }
        decline(shared, tracker, request.request_id);
        return;
    };
    let ciphertext = request.ciphertexts.swap_remove(index).ciphertext;
    let job = Job {
        request_id: request.request_id,
        tenant_id: request.tenant_id,
        username: request.username,
        deadline_ms: request.deadline_ms,
        ciphertext,
        key: session.key.clone(),
    };
    tracker.spawn(worker::run(shared.clone(), job, place));
}

/// Declines a request (see [`dispatch`]) without holding up the stream.
fn decline(shared: &Arc<Shared>, tracker: &TaskTracker, request_id: String) {
    AgentStats::count(&shared.stats.declined);
    tracker.spawn(worker::decline(shared.clone(), request_id));
}
