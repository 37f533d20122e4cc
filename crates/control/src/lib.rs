//! The control plane for on-prem components: CAs, enrolment, the mTLS endpoint (identity, configuration, renewal) and revocation lists.
//!
//! Two routers:
//! - [`Control::public_router`] joins the service's public listener: the one call a
//!   component makes without a client certificate (`POST /v1/register`, with an
//!   administrator's approval of that registration or a registration token) and
//!   the CRLs (`GET /pki/*.crl`), which may be fetched over plain HTTP (SEC-4).
//! - [`Control::mtls_router`] is served on the control listener, whose TLS layer
//!   requires a client certificate from the Connectors or Agents CA; every request
//!   is then checked against the store ([`identity`]).
#![warn(missing_docs)]

mod agent;
mod authorities;
mod connector;
mod crl;
mod error;
pub mod identity;
mod maintenance;
mod register;
mod relay;
mod revocation;
mod tls;
mod tunnel;
mod updates;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use postern_keyring::Keyring;
use postern_store::Store;
use postern_sts::Sts;
use postern_time::{SharedClock, UnixTime};

pub use authorities::Authorities;
pub use error::ControlError;
pub use identity::{ComponentIdentity, PeerCertificate};
pub use tls::{ControlTls, control_server_config};
pub use updates::UpdateSettings;

/// What the store keeps about a certificate just issued.
pub(crate) fn cert_record(issued: &postern_pki::IssuedCert) -> postern_store::CertRecord {
    postern_store::CertRecord {
        serial: issued.serial.clone(),
        public_key: issued.public_key_spki_der.clone(),
        key_id: issued.key_id.clone(),
        issued_at: issued.not_before,
        not_after: issued.not_after,
    }
}

/// Settings of the control plane.
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// URL components reach the mTLS endpoint at, e.g.
    /// `https://connect.example.com:8443`.
    pub control_url: String,
    /// Trust anchors (PEM) handed to components for the control endpoint's server
    /// certificate; empty when it is publicly trusted.
    pub control_ca_pem: String,
    /// How long a connector's replaced certificate keeps working after renewal,
    /// so connections opened with it can finish.
    pub renewal_grace: Duration,
    /// How long an agent holds its tenant's renewal lease at most.
    pub renewal_lease: Duration,
    /// Connector configuration refresh interval handed to connectors.
    pub connector_refresh: Duration,
    /// Longest wait of a configuration watch before it answers "no change".
    pub watch_timeout: Duration,
    /// The control listener's server certificate.
    pub tls: ControlTls,
    /// Automatic updates: the minimum component version, intervals, the lease.
    pub updates: UpdateSettings,
}

impl ControlConfig {
    /// Defaults for a control endpoint at `control_url`, with a server certificate
    /// issued by the Service CA for the URL's host.
    pub fn new(control_url: impl Into<String>) -> Self {
        let control_url = control_url.into();
        let host = url::Url::parse(&control_url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
            .unwrap_or_else(|| "localhost".into());
        Self {
            control_url,
            control_ca_pem: String::new(),
            renewal_grace: Duration::from_secs(3600),
            renewal_lease: Duration::from_secs(600),
            connector_refresh: Duration::from_secs(300),
            watch_timeout: Duration::from_secs(25),
            tls: ControlTls::Issued { hostnames: vec![host] },
            updates: UpdateSettings::default(),
        }
    }
}

/// The control plane.
pub struct Control {
    store: Store,
    sts: Arc<Sts>,
    clock: SharedClock,
    authorities: Authorities,
    config: ControlConfig,
    crls: crl::CrlCache,
    server_tls: Arc<rustls::ServerConfig>,
    relay: Arc<dyn postern_relay::SignInRelay>,
    tunnels: Arc<postern_tunnel::TunnelRegistry>,
    /// Woken when every live connection must recheck its component at once.
    recheck: tokio::sync::Notify,
    /// Turns true when the service is shutting down: long-lived streams end.
    going_away: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("control_url", &self.config.control_url)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// Builds the control plane, loading (or on first start creating) the CAs.
    pub async fn new(
        sts: Arc<Sts>,
        relay: Arc<dyn postern_relay::SignInRelay>,
        tunnels: Arc<postern_tunnel::TunnelRegistry>,
        keyring: &Keyring,
        clock: SharedClock,
        installation: &str,
        mut config: ControlConfig,
    ) -> Result<Arc<Self>, ControlError> {
        let store = sts.store().clone();
        let authorities = Authorities::load_or_create(&store, keyring, installation, clock.now()).await?;
        let (server_tls, anchors) = control_server_config(&authorities, &config.tls, clock.clone())?;
        if config.control_ca_pem.is_empty() {
            config.control_ca_pem = anchors;
        }
        Ok(Arc::new(Self {
            store,
            sts,
            clock,
            authorities,
            config,
            crls: crl::CrlCache::default(),
            server_tls: Arc::new(server_tls),
            relay,
            tunnels,
            recheck: tokio::sync::Notify::new(),
            going_away: tokio::sync::watch::channel(false).0,
        }))
    }

    /// Tells the components this service is going away (it is shutting down):
    /// agents' queue streams end (an agent reconnects at once, to the next
    /// process or another instance) and configuration watches answer at once.
    /// Tunnels are closed separately, once user requests are done
    /// ([`postern_tunnel::TunnelRegistry::go_away`]).
    pub fn go_away(&self) {
        self.going_away.send_replace(true);
    }

    /// Completes once [`Control::go_away`] was called.
    pub(crate) async fn going_away(&self) {
        let mut going = self.going_away.subscribe();
        let _ = going.wait_for(|g| *g).await;
    }

    /// TLS settings of the control listener (client certificates required).
    pub fn server_tls(&self) -> Arc<rustls::ServerConfig> {
        self.server_tls.clone()
    }

    /// The current time from the service clock.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The CAs.
    pub fn authorities(&self) -> &Authorities {
        &self.authorities
    }

    /// The live tunnels of connectors.
    pub fn tunnels(&self) -> &Arc<postern_tunnel::TunnelRegistry> {
        &self.tunnels
    }

    /// The configuration.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// Routes for the public listener: enrolment and CRLs.
    pub fn public_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(postern_proto::REGISTER_PATH, post(register::register))
            .route("/pki/{file}", get(crl::crl))
            .with_state(self.clone())
    }

    /// Routes for the mTLS control listener; every request passes the identity
    /// check first.
    pub fn mtls_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(postern_proto::control::WHOAMI_PATH, get(connector::whoami))
            .route("/v1/t/{tenant}/connector/config", post(connector::config))
            .route("/v1/t/{tenant}/connector/config/watch", get(connector::watch))
            .route("/v1/t/{tenant}/connector/tunnel", get(tunnel::tunnel))
            .route("/v1/t/{tenant}/agent/renewal", post(agent::renewal_check))
            .route("/v1/t/{tenant}/agent/renew", post(agent::renew))
            .route("/v1/t/{tenant}/agent/bootstrap", post(relay::bootstrap))
            .route("/v1/t/{tenant}/agent/queue", get(relay::queue))
            .route("/v1/t/{tenant}/agent/results/{request_id}", post(relay::result))
            .route("/v1/t/{tenant}/updates/check", post(updates::check))
            .route(
                "/v1/t/{tenant}/updates/releases/{release_id}/binary",
                get(updates::download),
            )
            .route("/v1/t/{tenant}/updates/report", post(updates::report))
            .route("/v1/t/{tenant}/updates/status", get(updates::status))
            .layer(from_fn_with_state(self.clone(), identity::identify))
            .with_state(self.clone())
    }

    /// The two-way agent queue, served on the control listener beside
    /// [`Control::mtls_router`] with the same identity check but without its
    /// limit on a request body's total size: this body lasts as long as the
    /// queue and is read one bounded line at a time.
    pub fn duplex_queue_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/t/{tenant}/agent/queue/duplex", post(relay::duplex_queue))
            .layer(from_fn_with_state(self.clone(), identity::identify))
            .with_state(self.clone())
    }

    /// Periodic upkeep: ends renewal grace periods and removes components whose
    /// certificate has expired (PTA-7). Returns how many components were removed.
    pub async fn maintain(&self) -> Result<u64, ControlError> {
        maintenance::run(self).await
    }
}
