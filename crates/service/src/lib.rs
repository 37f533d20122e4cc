//! The `postern serve` role: configuration, listeners, TLS and graceful shutdown, wiring the STS and admin API.
//!
//! [`RunningService::start`] brings up everything from a [`Config`]: the KEK, the
//! store (migrated), the STS with its signing keys, the admin API, the listener
//! and background maintenance. The binary and the test harness both use it, so
//! tests run the real service in-process.
#![warn(missing_docs)]

pub mod config;
mod listener;
mod routes;
mod tasks;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use postern_keyring::Keyring;
use postern_store::{Store, StoreOptions};
use postern_sts::{SetupCode, Sts, StsConfig};
use postern_time::SharedClock;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

pub use config::{Config, ConfigError, LogFormat, RawConfig};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or socket operation failed (data dir, listening address).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key-encryption key is missing, unreadable or malformed.
    #[error(transparent)]
    Keyring(#[from] postern_keyring::KeyringError),
    /// The database is unreachable or its schema could not be migrated.
    #[error(transparent)]
    Store(#[from] postern_store::StoreError),
    /// The STS could not start (e.g. signing keys).
    #[error(transparent)]
    Sts(#[from] postern_sts::StsError),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// A running service.
pub struct RunningService {
    addr: SocketAddr,
    public_url: Url,
    sts: Arc<Sts>,
    store: Store,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    tasks: JoinHandle<()>,
    setup_code: Option<SetupCode>,
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Creates the data dir if needed, readable by the service's user only.
fn prepare_data_dir(dir: &Path) -> Result<(), ServiceError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating data dir {}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("securing data dir {}", dir.display())))?;
    }
    Ok(())
}

impl RunningService {
    /// Starts the service: KEK, store, STS, routes, listener, maintenance.
    pub async fn start(config: Config, clock: SharedClock) -> Result<Self, ServiceError> {
        Self::start_with(config, clock, |_| {}).await
    }

    /// Like [`RunningService::start`], with a chance to adjust the STS's lifetimes
    /// and knobs (tests shorten polling intervals this way).
    pub async fn start_with(
        config: Config,
        clock: SharedClock,
        tune: impl FnOnce(&mut StsConfig),
    ) -> Result<Self, ServiceError> {
        prepare_data_dir(&config.data_dir)?;
        let keyring = Arc::new(match &config.kek {
            Some(text) => Keyring::from_text(text.expose())?,
            None => Keyring::load_or_create(&config.data_dir.join("kek"))?,
        });
        let store = Store::connect(&StoreOptions::new(&config.database_url)).await?;
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("listening on {}", config.listen)))?;
        let addr = tcp.local_addr().map_err(io("reading the listening address"))?;
        let tls = match &config.tls {
            Some(files) => Some(tls::acceptor(files)?),
            None => None,
        };
        let public_url = match &config.public_url {
            Some(u) => u.clone(),
            None => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                Url::parse(&format!("{scheme}://{addr}")).map_err(|e| ServiceError::Tls(e.to_string()))?
            }
        };
        let mut sts_config = StsConfig::new(public_url.clone());
        tune(&mut sts_config);
        let sts = Sts::new(store.clone(), keyring, clock, sts_config).await?;
        let app = routes::app(&sts, &config, &public_url);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let listener = listener::Listener {
            tcp,
            tls,
            limits: config.limits.clone(),
            addressing: listener::ClientAddressing::new(config.trusted_proxies.clone()),
        };
        let server = tokio::spawn(listener.serve(app, shutdown_rx.clone()));
        let tasks = tokio::spawn(tasks::maintenance(sts.clone(), shutdown_rx));
        let setup_code = sts.ensure_setup_code().await?;
        tracing::info!(%addr, %public_url, database = ?store.backend(), "postern service listening");
        Ok(Self {
            addr,
            public_url,
            sts,
            store,
            shutdown,
            server,
            tasks,
            setup_code,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The public URL (issuer base).
    pub fn public_url(&self) -> &Url {
        &self.public_url
    }

    /// The STS.
    pub fn sts(&self) -> &Arc<Sts> {
        &self.sts
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The first-run setup code made at start, if no tenant existed (given out once).
    pub fn take_setup_code(&mut self) -> Option<SetupCode> {
        self.setup_code.take()
    }

    /// Stops accepting, lets in-flight requests finish within the grace period,
    /// stops maintenance and closes the database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.tasks.await;
        self.store.close().await;
        tracing::info!("postern service stopped");
    }
}
