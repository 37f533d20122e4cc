//! The `postern serve` role: configuration, listeners, TLS and graceful shutdown, wiring the STS and admin API.
//!
//! [`RunningService::start`] brings up everything from a [`Config`]: the KEK, the
//! store (migrated), the STS with its signing keys, the admin API, the listener
//! and background maintenance. The binary and the test harness both use it, so
//! tests run the real service in-process.
#![warn(missing_docs)]

mod cluster;
pub mod config;
mod listener;
mod metrics;
mod routes;
mod tasks;
mod tls;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use postern_control::{Control, ControlConfig, ControlTls};
use postern_keyring::Keyring;
use postern_store::{HostRules, Store, StoreOptions};
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
    /// The control plane could not start (CAs, its TLS settings).
    #[error(transparent)]
    Control(#[from] postern_control::ControlError),
    /// The front door of published apps could not start (its cookie keys).
    #[error(transparent)]
    Edge(#[from] postern_edge::EdgeError),
    /// The TLS certificate or key is unusable.
    #[error("TLS: {0}")]
    Tls(String),
    /// Event export to a SIEM could not start (its trust anchors, its spool).
    #[error(transparent)]
    Export(#[from] postern_export::ExportError),
    /// This instance could not join the others (`[cluster]`: NATS, peers).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The metrics listener (`metrics_listen`) could not start.
    #[error(transparent)]
    Metrics(#[from] postern_metrics::MetricsError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
    let what = what.into();
    move |source| ServiceError::Io { what, source }
}

/// A running service.
pub struct RunningService {
    addr: SocketAddr,
    public_url: Url,
    control_addr: SocketAddr,
    control: Arc<Control>,
    edge: Arc<postern_edge::Edge>,
    sts: Arc<Sts>,
    store: Store,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    tasks: JoinHandle<()>,
    setup_code: Option<SetupCode>,
    certificates: Option<Arc<tls::SniResolver>>,
    clock: SharedClock,
    cluster: Option<postern_cluster::Cluster>,
    metrics: Option<postern_metrics::MetricsServer>,
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

/// The rules for app hosts (SEC-12): the configured app domain, and the
/// service's own hosts (public and control) reserved.
fn host_rules(config: &Config, public_url: &Url, control_url: &str) -> Arc<HostRules> {
    let own = [Some(public_url.clone()), Url::parse(control_url).ok()]
        .into_iter()
        .flatten()
        .filter_map(|u| u.host_str().map(str::to_owned));
    Arc::new(HostRules::new(config.apps_domain.clone(), own))
}

/// Claims the hosts of apps published before host claims existed, then logs
/// every app whose tenant may not publish on its host: the front door does not
/// serve those, and `GET /api/v1/apps` shows why.
async fn report_host_violations(store: &Store, rules: &HostRules) -> Result<(), ServiceError> {
    store.claim_hosts_of_existing_apps().await?;
    for v in store.host_violations(rules, None).await? {
        tracing::error!(
            tenant = %v.app.tenant_id,
            app = %v.app.name,
            external_url = %v.app.external_url(),
            reason = %v.refusal,
            "app not served: its organisation may not publish on this host; move it to a host of the organisation"
        );
    }
    Ok(())
}

/// The key-encryption key ring: from the configuration, else the `kek` file in
/// the data directory (created on first start).
fn open_keyring(config: &Config) -> Result<Keyring, ServiceError> {
    Ok(match &config.kek {
        Some(text) => Keyring::from_text(text.expose())?,
        None => Keyring::load_or_create(&config.data_dir.join("kek"))?,
    })
}

/// The store, connected (and migrated) with the configured pool size, its
/// caches on the service clock.
async fn connect_store(config: &Config, clock: &SharedClock) -> Result<Store, ServiceError> {
    let mut store_options = StoreOptions::new(&config.database_url);
    store_options.clock = clock.clone();
    if let Some(n) = config.database_max_connections {
        store_options.max_connections = n;
    }
    Ok(Store::connect(&store_options).await?)
}

/// The Prometheus metrics listener, if `metrics_listen` is set.
async fn start_metrics(
    config: &Config,
    store: &Store,
    control: &Arc<Control>,
    shutdown: watch::Receiver<bool>,
) -> Result<Option<postern_metrics::MetricsServer>, ServiceError> {
    let Some(addr) = config.metrics_listen else {
        return Ok(None);
    };
    let collector = metrics::ServiceCollector::new(store.clone(), control.clone());
    Ok(Some(
        postern_metrics::MetricsServer::start(addr, "service", vec![collector], shutdown).await?,
    ))
}

/// The service's public URL: the configured one, else the listening address
/// (`https` when the listener speaks TLS).
fn public_url(config: &Config, addr: SocketAddr, tls: bool) -> Result<Url, ServiceError> {
    match &config.public_url {
        Some(u) => Ok(u.clone()),
        None => {
            let scheme = if tls { "https" } else { "http" };
            Url::parse(&format!("{scheme}://{addr}")).map_err(|e| ServiceError::Tls(e.to_string()))
        }
    }
}

/// The control plane's configuration and the URL components reach it at (the
/// configured one, else the public host and the control listener's port): its
/// server certificate (issued for the configured names, or the operator's
/// files) and the update policy.
fn control_config(
    config: &Config,
    public_url: &Url,
    control_addr: SocketAddr,
) -> Result<(ControlConfig, String), ServiceError> {
    let control_url = match &config.control.url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => format!(
            "https://{}:{}",
            public_url.host_str().unwrap_or("localhost"),
            control_addr.port()
        ),
    };
    let mut control_config = ControlConfig::new(control_url.clone());
    if !config.control.hostnames.is_empty() {
        control_config.tls = ControlTls::Issued {
            hostnames: config.control.hostnames.clone(),
        };
    }
    if let Some((cert, key, anchors)) = &config.control.tls_files {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(io(format!("reading {}", p.display())));
        postern_keyring::check_private_mode(key).map_err(io(format!("control TLS key {}", key.display())))?;
        control_config.tls = ControlTls::Provided {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
            anchors_pem: match anchors {
                Some(a) => read(a)?,
                None => String::new(),
            },
        };
    }
    if let Some(v) = &config.control.minimum_component_version {
        control_config.updates.minimum_version = postern_control::UpdateSettings::parse_version(v).ok();
    }
    control_config.updates.check_interval = config.control.update_check;
    Ok((control_config, control_url))
}

/// The host (and port, if the URL has one) the front door serves the STS on,
/// normalized as request hosts are.
fn public_host(public_url: &Url) -> String {
    public_url
        .host_str()
        .map(|h| match public_url.port() {
            Some(p) => format!("{h}:{p}"),
            None => h.to_owned(),
        })
        .and_then(|h| postern_edge::normalize_host(&h))
        .unwrap_or_default()
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
        let keyring = Arc::new(open_keyring(&config)?);
        let store = connect_store(&config, &clock).await?;
        let tcp = TcpListener::bind(config.listen)
            .await
            .map_err(io(format!("listening on {}", config.listen)))?;
        let addr = tcp.local_addr().map_err(io("reading the listening address"))?;
        let public_tls = tls::acceptor(&config, addr, &clock)?;
        let public_url = public_url(&config, addr, public_tls.is_some())?;
        let mut sts_config = StsConfig::new(public_url.clone());
        sts_config.risk = config.risk.clone();
        sts_config.passwords = config.passwords;
        sts_config.pending_signins_per_tenant = config.limits.abuse.tenant_pending_signins;
        tune(&mut sts_config);
        let sts = Sts::new(store.clone(), keyring.clone(), clock.clone(), sts_config).await?;

        // The control plane: its own mTLS listener for connectors and agents.
        let control_tcp = TcpListener::bind(config.control.listen)
            .await
            .map_err(io(format!("listening on {} (control)", config.control.listen)))?;
        let control_addr = control_tcp.local_addr().map_err(io("reading the control address"))?;
        let (control_config, control_url) = control_config(&config, &public_url, control_addr)?;
        let installation = public_url.host_str().unwrap_or("postern").to_owned();
        // With other instances (`[cluster]`): NATS, unique ID per start.
        let instance_id = uuid::Uuid::new_v4().simple().to_string();
        let nats = match &config.cluster {
            Some(c) => Some(
                postern_cluster::connect(&c.nats_url, &instance_id)
                    .await
                    .map_err(|e| ServiceError::Cluster(e.to_string()))?,
            ),
            None => None,
        };
        // The relay between the STS and pass-through authentication agents:
        // in this process alone, over NATS JetStream with other instances.
        let relay = cluster::relay(nats.as_ref(), config.cluster.as_ref(), &instance_id).await?;
        sts.attach_relay(relay.clone());
        // Tunnels from connectors (held here; with other instances, requests
        // for groups without a tunnel here go to a peer that has one).
        let tunnels = postern_tunnel::TunnelRegistry::new(postern_tunnel::TunnelOptions::default());
        let control = Control::new(
            sts.clone(),
            relay,
            tunnels,
            &keyring,
            clock.clone(),
            &installation,
            control_config,
        )
        .await?;
        let host_rules = host_rules(&config, &public_url, &control_url);
        report_host_violations(&store, &host_rules).await?;
        let edge = postern_edge::Edge::new(
            sts.clone(),
            keyring.clone(),
            control.tunnels().clone(),
            postern_edge::EdgeOptions {
                host_rules: host_rules.clone(),
                rate_limits: config.limits.abuse.rates,
                app_max_body_bytes: config.limits.abuse.app_max_body_bytes,
                ..postern_edge::EdgeOptions::default()
            },
        )
        .await?;
        let cluster = match (nats, config.cluster.clone()) {
            (Some(nats), Some(settings)) => {
                Some(cluster::join(nats, settings, instance_id, &control, &edge, &store).await?)
            }
            _ => None,
        };
        let admin_api =
            postern_admin_api::AdminState::new(store.clone(), clock.clone(), sts.clone()).with_host_rules(host_rules);
        let app = routes::app(&sts, admin_api, &control, &edge, &config, &public_url);
        let (shutdown, shutdown_rx) = watch::channel(false);
        // Sign-in and audit events to the SIEM, if configured.
        let exporters = postern_export::start(
            &config.export,
            &store,
            &clock,
            &config.data_dir.join("export"),
            &installation,
            &shutdown_rx,
        )
        .await?;
        // Before any component can connect: revocations end live connections at once.
        let revocations = control.enforce_revocations({
            let mut stop = shutdown_rx.clone();
            async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            }
        });
        // Prometheus metrics on their own listener, if configured.
        let metrics = start_metrics(&config, &store, &control, shutdown_rx.clone()).await?;
        let listener = listener::Listener {
            tcp,
            tls: public_tls.as_ref().map(|t| t.acceptor.clone()),
            limits: config.limits.clone(),
            addressing: listener::ClientAddressing::new(config.trusted_proxies.clone()),
            edge: Some(listener::FrontDoor {
                edge: edge.clone(),
                public_host: public_host(&public_url),
            }),
        };
        let server = tokio::spawn(listener.serve(app, shutdown_rx.clone()));
        let control_listener = listener::Listener {
            tcp: control_tcp,
            tls: Some(tokio_rustls::TlsAcceptor::from(control.server_tls())),
            limits: config.limits.clone(),
            addressing: listener::ClientAddressing::new(Vec::new()),
            edge: None,
        };
        let control_server =
            tokio::spawn(control_listener.serve(routes::control_app(&control, &config), shutdown_rx.clone()));
        let tasks = tokio::spawn(tasks::maintenance(
            sts.clone(),
            control.clone(),
            edge.clone(),
            shutdown_rx,
        ));
        let setup_code = sts.ensure_setup_code().await?;
        tracing::info!(%addr, %public_url, %control_addr, %control_url, database = ?store.backend(), "postern service listening");
        Ok(Self {
            addr,
            public_url,
            control_addr,
            control,
            edge,
            sts,
            store,
            shutdown,
            servers: [server, control_server, revocations]
                .into_iter()
                .chain(exporters)
                .collect(),
            tasks,
            setup_code,
            certificates: public_tls.map(|t| t.resolver),
            clock,
            cluster,
            metrics,
        })
    }

    /// The address of the metrics listener, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(postern_metrics::MetricsServer::local_addr)
    }

    /// This instance's membership among several (`None`: it runs alone).
    pub fn cluster(&self) -> Option<&postern_cluster::Cluster> {
        self.cluster.as_ref()
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The public URL (issuer base).
    pub fn public_url(&self) -> &Url {
        &self.public_url
    }

    /// The address the control (mTLS) listener is bound to.
    pub fn control_addr(&self) -> SocketAddr {
        self.control_addr
    }

    /// The control plane.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Reads the public listener's certificates again (after renewing them) and
    /// serves the new set to the next handshakes; open connections keep theirs.
    /// On any problem the current set stays and the error says why. Returns
    /// `false` when the listener has no TLS (plain HTTP behind a load balancer).
    pub fn reload_certificates(&self) -> Result<bool, ServiceError> {
        match &self.certificates {
            Some(resolver) => resolver.reload(self.clock.now()).map(|()| true),
            None => Ok(false),
        }
    }

    /// The front door of published apps.
    pub fn edge(&self) -> &Arc<postern_edge::Edge> {
        &self.edge
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

    /// Stops accepting, tells connectors and agents to go (their long-lived
    /// streams end, so they reconnect at once to the next process or another
    /// instance), lets in-flight requests finish within the grace period (a
    /// cap: it returns as soon as they are done), closes the tunnels once user
    /// requests are done, stops maintenance and closes the database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        // Queue streams and configuration watches end now; tunnels still carry
        // the user requests in flight.
        self.control.go_away();
        let mut servers = self.servers.into_iter();
        // The public listener first: once its requests are done, no user
        // request needs a tunnel any more.
        if let Some(public) = servers.next() {
            let _ = public.await;
        }
        self.control.tunnels().go_away();
        for server in servers {
            let _ = server.await;
        }
        let _ = self.tasks.await;
        if let Some(metrics) = self.metrics {
            metrics.stopped().await;
        }
        drop(self.cluster);
        self.store.close().await;
        tracing::info!("postern service stopped");
    }
}
