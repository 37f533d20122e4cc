//! Several service instances behind one load balancer (BEY-1): the NATS connection, instances announcing themselves, events between instances, and app requests forwarded to the instance that holds a tunnel.
//!
//! - [`connect`]: one NATS client per instance, reconnecting by itself; its
//!   state is watched so a reconnect makes this instance catch up on what it
//!   may have missed ([`EventSink::resync`]).
//! - [`instances`]: every instance announces itself each second (ID, peer
//!   address, start time, the connector groups it holds tunnels of); peers keep
//!   the table and forget an instance not heard from for three seconds.
//! - [`events`]: revocations (BEY-6), connector configuration changes,
//!   cookie-key rotations and routing changes (app publication, assignments,
//!   users, policies) made on one instance reach every other within a second.
//! - [`peers`]: a request that lands on an instance without a tunnel of the
//!   app's connector group goes, over HTTP/2 with mutual TLS, to a peer that has
//!   one (proxy peering, as Teleport's proxies do), which sends it on its tunnel.
//!
//! The pass-through sign-in queue across instances is `postern-relay`'s
//! `NatsRelay`, on the same NATS client.
#![warn(missing_docs)]

pub mod events;
pub mod instances;
pub mod peers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use postern_store::Store;
use postern_tunnel::TunnelRegistry;
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use events::EventSink;
pub use instances::InstanceInfo;
pub use peers::PeerTls;

/// The name every instance's peer certificate carries and every peer checks.
pub const PEER_NAME: &str = "instance.postern.invalid";

/// How the instances find each other.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `nats://host:port` of the NATS server (JetStream enabled).
    pub nats_url: String,
    /// Prefix of every NATS subject and stream of this installation.
    pub prefix: String,
    /// Where this instance listens for its peers (mutual TLS).
    pub peer_listen: SocketAddr,
    /// `host:port` the peers dial; default: the listening address (which then
    /// must not be a wildcard).
    pub peer_advertise: Option<String>,
}

/// Why the instance could not join the others.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached or refused a subscription.
    #[error("NATS at {url}: {reason}")]
    Nats {
        /// The server.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The peer listener could not start.
    #[error("peer listener on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The peer certificate or key is unusable.
    #[error("peer TLS: {0}")]
    Tls(String),
}

/// Whether this instance is connected to NATS now.
pub type NatsState = watch::Receiver<bool>;

/// Connects to NATS as instance `instance_id`, reconnecting for ever (at most
/// a second between attempts). Fails when the first connection cannot be made
/// within five seconds.
pub async fn connect(url: &str, instance_id: &str) -> Result<(async_nats::Client, NatsState), ClusterError> {
    let (state_tx, state) = watch::channel(false);
    let state_tx = Arc::new(state_tx);
    let events = state_tx.clone();
    let client = async_nats::ConnectOptions::new()
        .name(format!("postern-{instance_id}"))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1000)))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        events.send_replace(true);
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!("lost the connection to NATS; reconnecting");
                        events.send_replace(false);
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            }
        })
        .connect(url)
        .await
        .map_err(|e| ClusterError::Nats {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    state_tx.send_replace(true);
    Ok((client, state))
}

/// This instance's membership: its announcements, the event bridge and the
/// peer listener. Dropping it stops them.
pub struct Cluster {
    instances: Arc<instances::Table>,
    peer_addr: SocketAddr,
    tasks: Vec<AbortHandle>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.instances.me())
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What [`Cluster::start`] needs.
pub struct Membership {
    /// The NATS client and its state, from [`connect`].
    pub nats: (async_nats::Client, NatsState),
    /// Where to listen and what to announce.
    pub settings: ClusterSettings,
    /// This instance's ID.
    pub instance_id: String,
    /// Start time (Unix seconds), announced.
    pub started_at: i64,
    /// The store whose announcements go to the others.
    pub store: Store,
    /// This instance's tunnels (served to peers, announced).
    pub tunnels: Arc<TunnelRegistry>,
    /// The peer certificate.
    pub tls: PeerTls,
    /// What applies the others' events here.
    pub sink: Arc<dyn EventSink>,
}

impl Cluster {
    /// Joins the others: binds the peer listener, starts announcing this
    /// instance, bridges events both ways, and routes requests for groups
    /// without a tunnel here to the peers that have one.
    pub async fn start(m: Membership) -> Result<Self, ClusterError> {
        let (client, state) = m.nats;
        let listener = tokio::net::TcpListener::bind(m.settings.peer_listen)
            .await
            .map_err(|e| ClusterError::Listen {
                addr: m.settings.peer_listen,
                reason: e.to_string(),
            })?;
        let peer_addr = listener.local_addr().map_err(|e| ClusterError::Listen {
            addr: m.settings.peer_listen,
            reason: e.to_string(),
        })?;
        let advertise = m
            .settings
            .peer_advertise
            .clone()
            .unwrap_or_else(|| peer_addr.to_string());
        let names = events::Names::new(&m.settings.prefix);
        let table = Arc::new(instances::Table::new(InstanceInfo {
            id: m.instance_id.clone(),
            peer_addr: advertise,
            started_at: m.started_at,
            groups: Vec::new(),
        }));
        let (server_tls, client_tls) = peers::tls_configs(&m.tls)?;
        let route = Arc::new(peers::PeerForwarder::new(table.clone(), client_tls));
        m.tunnels.set_peers(route);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(peers::serve(listener, server_tls, m.tunnels.clone())).abort_handle());
        tasks.extend(instances::start(client.clone(), names.clone(), table.clone(), m.tunnels.clone()).await?);
        tasks.extend(events::start(client, names, m.instance_id.clone(), m.store, m.sink, state).await?);
        tracing::info!(instance = %m.instance_id, %peer_addr, "joined the other instances");
        Ok(Self {
            instances: table,
            peer_addr,
            tasks,
        })
    }

    /// This instance's ID.
    pub fn instance_id(&self) -> String {
        self.instances.me().id
    }

    /// Where the peer listener is bound.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The instances heard from in the last few seconds, this one included.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        self.instances.live()
    }
}
