//! A few tunnels kept open to the service: each slot dials, serves until its
//! connection ends, and dials again: at once (small jitter) when the tunnel had
//! stayed up a while, else after a jittered backoff that resets once a
//! connection has stayed up a while. A refusal of the certificate (401/403) stops
//! the slot and is reported; a drain sends GOAWAY on every tunnel and lets
//! requests finish.

use std::sync::Arc;
use std::time::Duration;

use postern_uplink::{Backoff, ControlClient};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::TunnelError;
use crate::apps::AppTable;
use crate::backend::Backends;
use crate::dial::{DialDeadlines, dial};
use crate::tunnel::{TunnelOptions, serve_tunnel};

/// Where the tunnels go and with which TLS identity.
#[derive(Clone)]
pub struct TunnelEndpoint {
    /// The control endpoint, `https://host[:port][/base]`.
    pub control_url: String,
    /// The connector's tenant (names the upgrade path).
    pub tenant_id: String,
    /// TLS client configuration: the connector's certificate, the control
    /// endpoint's trust anchors, ALPN `http/1.1`.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TunnelEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelEndpoint")
            .field("control_url", &self.control_url)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl TunnelEndpoint {
    /// The endpoint of a registered connector (call again after a certificate
    /// renewal and pass it to [`TunnelPool::set_endpoint`]).
    pub fn from_client(client: &ControlClient) -> Self {
        let (control_url, tls) = client.tunnel_connector();
        Self {
            control_url,
            tenant_id: client.enrolment().tenant_id.clone(),
            tls,
        }
    }
}

/// How many tunnels, and how they are dialled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    /// Tunnels kept open. Default 2.
    pub tunnels: usize,
    /// Deadline of the TCP connection. Default 10 s.
    pub connect_timeout: Duration,
    /// Deadline of the TLS handshake. Default 10 s.
    pub tls_timeout: Duration,
    /// Deadline of the upgrade (request sent to `101` received). Default 10 s.
    pub upgrade_timeout: Duration,
    /// Shortest wait before redialling after a failed dial. Default 250 ms. (A
    /// tunnel that was up and ended is redialled at once, after a small jitter:
    /// [`Backoff::soon`].)
    pub backoff_min: Duration,
    /// Longest wait before redialling. Default 60 s.
    pub backoff_max: Duration,
    /// A tunnel up at least this long resets the backoff. Default 5 s.
    pub stable_after: Duration,
    /// HTTP/2 settings, heartbeats and drain grace of each tunnel.
    pub tunnel: TunnelOptions,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            tunnels: 2,
            connect_timeout: Duration::from_secs(10),
            tls_timeout: Duration::from_secs(10),
            upgrade_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            stable_after: Duration::from_secs(5),
            tunnel: TunnelOptions::default(),
        }
    }
}

impl PoolOptions {
    /// Checks every value and reports all problems at once.
    pub fn validate(&self) -> Result<(), TunnelError> {
        let mut problems = Vec::new();
        if !(1..=64).contains(&self.tunnels) {
            problems.push("tunnels must be between 1 and 64".to_owned());
        }
        if self.connect_timeout.is_zero() || self.tls_timeout.is_zero() || self.upgrade_timeout.is_zero() {
            problems.push("dial timeouts must be above zero".to_owned());
        }
        if Backoff::try_new(self.backoff_min, self.backoff_max).is_err() {
            problems.push("backoff needs 0 < backoff_min <= backoff_max".to_owned());
        }
        if let Err(TunnelError::Config(p)) = self.tunnel.validate() {
            problems.push(p);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TunnelError::Config(problems.join("; ")))
        }
    }

    fn deadlines(&self) -> DialDeadlines {
        DialDeadlines {
            connect: self.connect_timeout,
            tls: self.tls_timeout,
            upgrade: self.upgrade_timeout,
        }
    }
}

/// What the pool is doing, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Tunnels the pool keeps open.
    pub wanted: usize,
    /// Tunnels open now (upgraded and serving).
    pub up: usize,
    /// Tunnels opened since the start.
    pub opened: u64,
    /// The last dial or tunnel failure.
    pub last_error: Option<String>,
    /// Set when a slot stopped dialling for good: the service refused the
    /// connector's certificate (401/403, [`TunnelError::needs_registration`]) or
    /// the endpoint is unusable ([`TunnelError::Config`]). The caller should stop.
    /// Other refusals (such as 404 from a service without tunnels) are retried
    /// every `backoff_max` and only show in `last_error`.
    pub stopped: Option<TunnelError>,
    /// Set once a drain has started.
    pub draining: bool,
}

/// What every slot shares.
struct Shared {
    endpoint: watch::Receiver<TunnelEndpoint>,
    apps: watch::Receiver<Arc<AppTable>>,
    backends: Backends,
    options: PoolOptions,
    status: watch::Sender<PoolStatus>,
    drain: CancellationToken,
}

/// The connector's tunnels to the service.
pub struct TunnelPool {
    shared: Arc<Shared>,
    endpoint: watch::Sender<TunnelEndpoint>,
    status: watch::Receiver<PoolStatus>,
    slots: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for TunnelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelPool")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl TunnelPool {
    /// Starts `options.tunnels` tunnels to `endpoint` (each dialled at once, then
    /// redialled whenever it ends). Requests are forwarded with the current table
    /// in `apps`. Fails only on bad options.
    pub fn start(
        endpoint: TunnelEndpoint,
        apps: watch::Receiver<Arc<AppTable>>,
        backends: Backends,
        options: PoolOptions,
    ) -> Result<Self, TunnelError> {
        options.validate()?;
        let (endpoint_tx, endpoint_rx) = watch::channel(endpoint);
        let (status_tx, status_rx) = watch::channel(PoolStatus {
            wanted: options.tunnels,
            ..PoolStatus::default()
        });
        let shared = Arc::new(Shared {
            endpoint: endpoint_rx,
            apps,
            backends,
            options,
            status: status_tx,
            drain: CancellationToken::new(),
        });
        let slots = (0..options.tunnels)
            .map(|slot| tokio::spawn(run_slot(slot, shared.clone())))
            .collect();
        Ok(Self {
            shared,
            endpoint: endpoint_tx,
            status: status_rx,
            slots,
        })
    }

    /// The pool's status, updated as tunnels come and go.
    pub fn status(&self) -> watch::Receiver<PoolStatus> {
        self.status.clone()
    }

    /// Uses `endpoint` for the next dials (after a certificate renewal); open
    /// tunnels stay as they are.
    pub fn set_endpoint(&self, endpoint: TunnelEndpoint) {
        self.endpoint.send_replace(endpoint);
    }

    /// Completes when a slot has stopped dialling for good (never otherwise; see
    /// [`PoolStatus::stopped`]): the caller should stop, and when
    /// [`TunnelError::needs_registration`] say that the connector must be
    /// registered again.
    pub async fn failed(&self) -> TunnelError {
        let mut status = self.status.clone();
        loop {
            if let Some(e) = status.borrow_and_update().stopped.clone() {
                return e;
            }
            if status.changed().await.is_err() {
                // All slots are gone without a refusal: nothing more will come.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Drains: every tunnel sends GOAWAY so the service opens no new streams
    /// there, requests in flight get the drain grace period to finish, then the
    /// connections close. Nothing is redialled.
    pub async fn shutdown(mut self) {
        self.shared.status.send_modify(|s| s.draining = true);
        self.shared.drain.cancel();
        let slots = std::mem::take(&mut self.slots);
        let deadline = Instant::now() + self.shared.options.tunnel.drain_grace + Duration::from_secs(5);
        for slot in slots {
            let abort = slot.abort_handle();
            if tokio::time::timeout_at(deadline, slot).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for TunnelPool {
    fn drop(&mut self) {
        // Dropped without `shutdown`: still drain, in the background.
        self.shared.drain.cancel();
    }
}

/// One tunnel, dialled again and again until a drain or a refusal.
async fn run_slot(slot: usize, shared: Arc<Shared>) {
    let options = &shared.options;
    let Ok(mut backoff) = Backoff::try_new(options.backoff_min, options.backoff_max) else {
        return;
    };
    loop {
        let endpoint = shared.endpoint.borrow().clone();
        let dialled = tokio::select! {
            r = dial(&endpoint, options.deadlines()) => r,
            () = shared.drain.cancelled() => return,
        };
        match dialled {
            Ok(io) => {
                tracing::info!(slot, control_url = %endpoint.control_url, "tunnel up");
                shared.status.send_modify(|s| {
                    s.up += 1;
                    s.opened += 1;
                });
                let since = Instant::now();
                let up = postern_metrics::record::connector_tunnel_up();
                let ended = serve_tunnel(
                    io,
                    shared.apps.clone(),
                    shared.backends.clone(),
                    &options.tunnel,
                    shared.drain.clone().cancelled_owned(),
                )
                .await;
                drop(up);
                shared.status.send_modify(|s| s.up = s.up.saturating_sub(1));
                if shared.drain.is_cancelled() {
                    tracing::info!(slot, "tunnel drained");
                    return;
                }
                // Closed cleanly (the service went away: GOAWAY) after a moment up.
                let went_away = ended.is_ok() && since.elapsed() >= Duration::from_secs(1);
                match ended {
                    Ok(()) => tracing::info!(slot, "tunnel closed by the service; redialling"),
                    Err(e) => {
                        tracing::warn!(slot, error = %e, "tunnel broke; redialling");
                        shared.status.send_modify(|s| s.last_error = Some(e.to_string()));
                    }
                }
                // A tunnel that stayed up a while, or that the service closed
                // because it is going away, is dialled again at once (small
                // jitter); one that ended soon after it came up waits its
                // backoff, so a service that closes every tunnel at once is not
                // dialled in a tight loop.
                if since.elapsed() >= options.stable_after {
                    backoff.reset();
                }
                if since.elapsed() >= options.stable_after || went_away {
                    if wait_or_drain(Backoff::soon(), &shared.drain).await {
                        return;
                    }
                    continue;
                }
            }
            Err(e) if !e.is_retryable() => {
                tracing::error!(slot, error = %e, "tunnel refused; this slot stops dialling");
                shared.status.send_modify(|s| {
                    s.last_error = Some(e.to_string());
                    s.stopped = Some(e);
                });
                return;
            }
            Err(e @ TunnelError::Refused { .. }) => {
                tracing::error!(slot, error = %e, wait = ?options.backoff_max, "the service does not offer this connector a tunnel; retrying slowly");
                shared.status.send_modify(|s| s.last_error = Some(e.to_string()));
                if wait_or_drain(options.backoff_max, &shared.drain).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "tunnel dial failed");
                shared.status.send_modify(|s| s.last_error = Some(e.to_string()));
            }
        }
        if wait_or_drain(backoff.next_delay(), &shared.drain).await {
            return;
        }
    }
}

/// Sleeps `wait`; true if a drain started first.
async fn wait_or_drain(wait: Duration, drain: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(wait) => false,
        () = drain.cancelled() => true,
    }
}
