//! Wiring of several instances (`[cluster]`): the NATS relay for pass-through
//! sign-ins, this instance's peer certificate, and how the other instances'
//! events are applied here.

use std::sync::Arc;

use postern_cluster::{Cluster, ClusterSettings, EventSink, Membership, PEER_NAME, PeerTls};
use postern_control::Control;
use postern_pki::{CaKind, SERVICE_CERT_VALIDITY};
use postern_relay::SignInRelay;
use postern_relay::nats::{NatsRelay, NatsRelayOptions};
use postern_store::{Revocation, Store, StoreChange};

use crate::ServiceError;

/// The relay for this instance: the embedded one alone, over NATS with others.
pub(crate) async fn relay(
    nats: Option<&(async_nats::Client, postern_cluster::NatsState)>,
    settings: Option<&ClusterSettings>,
    instance_id: &str,
) -> Result<Arc<dyn SignInRelay>, ServiceError> {
    let limits = postern_relay::RelayLimits::default();
    Ok(match (nats, settings) {
        (Some((client, _)), Some(settings)) => NatsRelay::start(
            client.clone(),
            NatsRelayOptions {
                prefix: settings.prefix.clone(),
                instance_id: instance_id.to_owned(),
                limits,
            },
        )
        .await
        .map_err(|e| ServiceError::Cluster(e.to_string()))?,
        _ => postern_relay::Relay::new(limits),
    })
}

/// Applies the other instances' events here.
struct ServiceEvents {
    control: Arc<Control>,
    edge: Arc<postern_edge::Edge>,
    store: Store,
}

impl ServiceEvents {
    fn reread_cookie_keys(&self) {
        let edge = self.edge.clone();
        tokio::spawn(async move {
            if let Err(e) = edge.refresh_cookie_keys().await {
                tracing::warn!(error = %e, "rereading the front-door cookie keys failed");
            }
        });
    }
}

impl EventSink for ServiceEvents {
    fn revocation(&self, revocation: &Revocation) {
        self.control.revoke(revocation);
    }

    fn store_change(&self, change: StoreChange) {
        self.store.apply_remote_change(change);
        if change == StoreChange::CookieKeys {
            self.reread_cookie_keys();
        }
    }

    fn resync(&self) {
        self.control.recheck_all();
        self.store.apply_remote_change(StoreChange::Routing);
        self.store.apply_remote_change(StoreChange::ConnectorConfig);
        self.reread_cookie_keys();
    }
}

/// Joins the other instances: a peer certificate from the Service CA, the
/// announcements, the event bridge and the peer listener.
pub(crate) async fn join(
    nats: (async_nats::Client, postern_cluster::NatsState),
    settings: ClusterSettings,
    instance_id: String,
    control: &Arc<Control>,
    edge: &Arc<postern_edge::Edge>,
    store: &Store,
) -> Result<Cluster, ServiceError> {
    let now = control.now();
    let service_ca = control.authorities().get(CaKind::Service);
    let (issued, key) = service_ca
        .issue_peer(PEER_NAME, now, SERVICE_CERT_VALIDITY)
        .map_err(|e| ServiceError::Cluster(format!("peer certificate: {e}")))?;
    let tls = PeerTls {
        cert_der: issued.cert_der,
        key_der: key,
        ca_der: service_ca.cert_der().to_vec(),
    };
    let membership = Membership {
        nats,
        settings,
        instance_id,
        started_at: now.secs(),
        store: store.clone(),
        tunnels: control.tunnels().clone(),
        tls,
        sink: Arc::new(ServiceEvents {
            control: control.clone(),
            edge: edge.clone(),
            store: store.clone(),
        }),
    };
    Cluster::start(membership)
        .await
        .map_err(|e| ServiceError::Cluster(e.to_string()))
}
