//! The connector as a whole: configuration at start (CON-2), then a watch for
//! changes plus a periodic refresh (CON-3), renewing the certificate in the
//! exchange when due (CON-4). After the first configuration the tunnel pool
//! serves the apps; each new configuration swaps the app table (tunnels stay
//! up), and a shutdown drains the tunnels (GOAWAY; requests in flight finish).
//!
//! `postern connector run` is this with the process's signals as the shutdown;
//! tests and `postern demo` run it in process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::Shared;
use postern_uplink::{Backoff, ControlClient, UplinkError};
use tokio::sync::watch;

use crate::{AppTable, BackendOptions, Backends, PoolOptions, TunnelEndpoint, TunnelError, TunnelPool};

/// Shortest wait between two configuration refreshes, whatever the service says.
const MIN_REFRESH: Duration = Duration::from_secs(10);

/// Why the connector stopped before a shutdown was asked for.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The service no longer accepts this connector (unknown, revoked, or its
    /// certificate expired): an administrator must register it again.
    #[error("the service no longer accepts this connector ({0}); register it again")]
    NeedsRegistration(String),
    /// The control API failed in a way retrying cannot fix.
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    /// The tunnels could not be started or failed for good.
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
}

/// A registered connector, ready to run.
pub struct Connector {
    client: ControlClient,
    backends: BackendOptions,
    pool: PoolOptions,
    retry: (Duration, Duration),
}

impl Connector {
    /// The connector of `client` (loaded from its state directory), with the
    /// default backend and pool options.
    pub fn new(client: ControlClient) -> Self {
        Self {
            client,
            backends: BackendOptions::default(),
            pool: PoolOptions::default(),
            retry: (Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    /// Uses `options` for the connections to the backends.
    pub fn with_backend_options(mut self, options: BackendOptions) -> Self {
        self.backends = options;
        self
    }

    /// Uses `options` for the tunnel pool.
    pub fn with_pool_options(mut self, options: PoolOptions) -> Self {
        self.pool = options;
        self
    }

    /// Waits between `min` and `max` (doubling) before retrying a failed
    /// configuration exchange.
    pub fn with_retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry = (min, max);
        self
    }

    /// Runs until `shutdown` completes (then drains the tunnels and returns
    /// `Ok`) or an error that needs an administrator.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ConnectorError> {
        let shutdown: Shared<futures_util::future::BoxFuture<'static, ()>> = shutdown.boxed().shared();
        let backends = Backends::new(&self.backends)?;
        let (tables, table) = watch::channel(Arc::new(AppTable::default()));
        let mut running = Running {
            client: self.client,
            tables,
            table,
            backends,
            pool_options: self.pool,
            pool: None,
            shutdown,
        };
        let result = running.configuration_loop(self.retry).await;
        if let Some(pool) = running.pool {
            tracing::info!("draining the tunnels");
            pool.shutdown().await;
        }
        result
    }
}

/// What a running connector holds.
struct Running {
    client: ControlClient,
    tables: watch::Sender<Arc<AppTable>>,
    table: watch::Receiver<Arc<AppTable>>,
    backends: Backends,
    pool_options: PoolOptions,
    pool: Option<TunnelPool>,
    shutdown: Shared<futures_util::future::BoxFuture<'static, ()>>,
}

impl Running {
    /// Sleeps `d`; true if the shutdown came first (or had come before).
    async fn wait_or_stop(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => false,
            () = self.shutdown.clone() => true,
        }
    }

    /// Exchanges the configuration, applies it, and waits for the next change;
    /// returns at the shutdown or on an error that needs an administrator.
    async fn configuration_loop(&mut self, (min, max): (Duration, Duration)) -> Result<(), ConnectorError> {
        let mut backoff =
            Backoff::try_new(min, max).map_err(|_| UplinkError::Internal("the retry bounds are invalid".into()))?;
        loop {
            tracing::debug!("exchanging the configuration");
            let version = postern_uplink::reported_version();
            let exchanged = tokio::select! {
                r = self.client.connector_config(&version) => r,
                () = self.shutdown.clone() => return Ok(()),
            };
            let config = match exchanged {
                Ok(c) => {
                    backoff.reset();
                    c
                }
                Err(e) if e.needs_registration() => return Err(ConnectorError::NeedsRegistration(e.to_string())),
                Err(e) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %e, ?wait, "configuration exchange failed; retrying");
                    if self.wait_or_stop(wait).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            self.apply(&config)?;
            let refresh = Duration::from_secs(config.timing.refresh_secs).max(MIN_REFRESH);
            let changed = self.until_changed(config.config_version);
            let failed = async {
                match self.pool.as_ref() {
                    Some(p) => p.failed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = changed => {
                    if let Err(e) = r {
                        if e.needs_registration() {
                            return Err(ConnectorError::NeedsRegistration(e.to_string()));
                        }
                        tracing::warn!(error = %e, "configuration watch failed");
                        if self.wait_or_stop(backoff.next_delay()).await { return Ok(()); }
                    }
                }
                e = failed => {
                    if e.needs_registration() {
                        return Err(ConnectorError::NeedsRegistration(e.to_string()));
                    }
                    return Err(e.into());
                }
                () = tokio::time::sleep(refresh) => {}
                () = self.shutdown.clone() => return Ok(()),
            }
        }
    }

    /// Swaps in the apps of `config` and starts the tunnels (the first time) or
    /// points them at the renewed certificate (after a renewal).
    fn apply(&mut self, config: &postern_proto::control::ConnectorConfig) -> Result<(), ConnectorError> {
        let apps = AppTable::new(
            &config.apps,
            Duration::from_secs(config.timing.backend_timeout_secs.max(1)),
        );
        tracing::info!(
            version = config.config_version,
            group = %config.group.name,
            apps = apps.len(),
            unusable_apps = apps.rejected().len(),
            "configuration loaded"
        );
        self.tables.send_replace(Arc::new(apps));
        let endpoint = TunnelEndpoint::from_client(&self.client);
        match &self.pool {
            Some(p) => p.set_endpoint(endpoint),
            None => {
                self.pool = Some(TunnelPool::start(
                    endpoint,
                    self.table.clone(),
                    self.backends.clone(),
                    self.pool_options,
                )?);
            }
        }
        Ok(())
    }

    /// Completes when the service reports a configuration other than `version`.
    async fn until_changed(&self, version: i64) -> Result<(), UplinkError> {
        loop {
            if self.client.watch_config(version).await? != version {
                return Ok(());
            }
        }
    }
}
