//! Postern's full path: the real service and a real connector, both in this
//! process on loopback, with published apps in front of the benchmark's
//! backends (preauth `passthrough`, in the connector's group).
//!
//! In-process is the same code as `postern serve` and `postern connector run`
//! (the service through `postern_testkit::TestService`, the connector as
//! `run_connector` wires it: registration, the configuration exchange, then a
//! `TunnelPool`), without a release build of the `postern` binary; the load
//! generator stays external, and every byte still crosses real sockets: user →
//! the service's public listener → the mTLS tunnel the connector dialled →
//! the connector → the backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_connector::{AppTable, BackendOptions, Backends, PoolOptions, PoolStatus, TunnelEndpoint, TunnelPool};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_store::{AppSpec, ExternalScheme, Preauth};
use postern_testkit::TestService;
use postern_time::{SharedClock, SystemClock};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, register};

/// The host of the 1 KiB app (the service's port is appended).
pub const APP_HOST: &str = "bench.acme.test";
/// The host of the SSE app.
pub const SSE_HOST: &str = "sse.acme.test";

/// How long the connector gets to bring a tunnel up.
const TUNNEL_WAIT: Duration = Duration::from_secs(15);

/// The running service and connector; stopped when dropped.
pub struct Postern {
    addr: SocketAddr,
    tunnel: Result<PoolStatus, String>,
    // Declared first: the connector goes before the service.
    pool: Option<TunnelPool>,
    _tables: tokio::sync::watch::Sender<Arc<AppTable>>,
    service: Option<TestService>,
    _state: tempfile::TempDir,
}

impl Postern {
    /// Starts the service, publishes `http://bench.acme.test:{port}/` →
    /// `backend` and `http://sse.acme.test:{port}/` → `sse`, registers a
    /// connector and starts its tunnels. A tunnel that does not come up is not
    /// an error here: the row then reports what the service answers.
    pub async fn start(backend: SocketAddr, sse: SocketAddr) -> anyhow::Result<Self> {
        let service = TestService::builder().system_clock().start().await?;
        let fixture = service.bootstrap().await?;
        let tenant = fixture.tenant.clone();
        let store = service.store();
        let now = service.now();
        let port = service.local_addr_for_tests().port();
        let group = store.default_connector_group(&tenant.id, now).await?;
        for (name, host, internal) in [("Bench", APP_HOST, backend), ("Bench SSE", SSE_HOST, sse)] {
            let spec = AppSpec {
                name: name.into(),
                external_scheme: ExternalScheme::Http,
                external_host: format!("{host}:{port}"),
                path_prefix: "/".into(),
                internal_url: format!("http://{internal}/"),
                preauth: Preauth::Passthrough,
                connector_group_id: group.id.clone(),
                backend_timeout_secs: 30,
                validate_backend_tls: true,
                translate_headers: true,
                translate_links: false,
                identity_headers: Vec::new(),
                limits: postern_store::AppLimits::default(),
            };
            let client_id = format!("bench-app-{}", name.to_lowercase().replace(' ', "-"));
            store
                .create_app(&tenant.id, &spec, &client_id, now)
                .await
                .with_context(|| format!("publishing {}", spec.external_url()))?;
        }

        // The connector, as `postern connector register` + `run` do it.
        let token = service
            .registration_token(&tenant, &fixture.admin, ComponentKind::Connector, "bench-connector")
            .await?;
        let state_dir = tempfile::Builder::new().prefix("postern-bench-connector-").tempdir()?;
        let state = StateDir::new(state_dir.path().join("connector"));
        register(
            &RegisterOptions {
                server_url: service.url(),
                kind: ComponentKind::Connector,
                credential: Credential::AccessToken(SecretString::from(token.as_str())),
                name: "bench-connector".into(),
                version: "bench".into(),
                group: None,
                tenant: None,
                key_alg: KeyAlg::recommended(ComponentKind::Connector),
                server_ca_pem: None,
            },
            &state,
        )
        .await
        .context("registering the connector")?;
        let clock: SharedClock = Arc::new(SystemClock);
        let mut client = ControlClient::load(state, clock)?;
        let config = client
            .connector_config("bench")
            .await
            .context("the connector's configuration")?;
        let table = AppTable::new(
            &config.apps,
            Duration::from_secs(config.timing.backend_timeout_secs.max(1)),
        );
        anyhow::ensure!(
            table.len() == 2,
            "the connector's configuration has {} usable apps, not 2 (rejected: {:?})",
            table.len(),
            table.rejected()
        );
        let (tables, table) = tokio::sync::watch::channel(Arc::new(table));
        let pool = TunnelPool::start(
            TunnelEndpoint::from_client(&client),
            table,
            Backends::new(&BackendOptions::default())?,
            PoolOptions::default(),
        )?;
        let mut status = pool.status();
        let waited = tokio::time::timeout(TUNNEL_WAIT, status.wait_for(|s| s.up >= 1 || s.stopped.is_some()))
            .await
            .map(|r| r.map(|s| s.clone()));
        let tunnel = match waited {
            Ok(Ok(s)) if s.up >= 1 => Ok(s),
            Ok(Ok(s)) => Err(format!("the connector stopped: {:?}", s.stopped)),
            Ok(Err(_)) => Err("the tunnel pool ended".into()),
            Err(_) => Err(format!(
                "no tunnel up within {TUNNEL_WAIT:?}; last error: {}",
                status.borrow().last_error.as_deref().unwrap_or("none")
            )),
        };
        Ok(Self {
            addr: service.local_addr_for_tests(),
            tunnel,
            pool: Some(pool),
            _tables: tables,
            service: Some(service),
            _state: state_dir,
        })
    }

    /// The service's public listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `Host` of the 1 KiB app.
    pub fn app_host(&self) -> String {
        format!("{APP_HOST}:{}", self.addr.port())
    }

    /// `Host` of the SSE app.
    pub fn sse_host(&self) -> String {
        format!("{SSE_HOST}:{}", self.addr.port())
    }

    /// The tunnels' state once started, or why none came up.
    pub fn tunnel(&self) -> &Result<PoolStatus, String> {
        &self.tunnel
    }

    /// Drains the connector, then stops the service.
    pub async fn stop(mut self) {
        if let Some(pool) = self.pool.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), pool.shutdown()).await;
        }
        if let Some(service) = self.service.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), service.stop()).await;
        }
    }
}
