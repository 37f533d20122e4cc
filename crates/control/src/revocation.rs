//! Revocation at once for live connections (BEY-6). Refusing a removed
//! component's next request is not enough: its open tunnels would keep carrying
//! users' requests, identity headers and cookies, and its queue stream would keep
//! receiving sign-ins. The store announces every revocation
//! ([`postern_store::Revocation`]); [`Control::enforce_revocations`] ends what the
//! component holds open here at once: a connector's tunnels (all of them, or
//! those of the group it left) and an agent's queue stream (the requests it
//! holds move on to other agents).
//!
//! With several instances, revocations made through another instance arrive
//! over NATS (`postern-cluster`) and are applied here with [`Control::revoke`]
//! within a second; after a NATS outage [`Control::recheck_all`] has every
//! live connection check the store at once.
//!
//! Three things cover what the announcements cannot: a connection set up while a
//! revocation was being committed checks the store once it is in place; a
//! listener that fell behind the announcements has every live connection
//! recheck at once; and the periodic rechecks of [`crate::tunnel`] and
//! [`crate::relay`] remain beneath the events between instances.

use std::future::Future;
use std::sync::{Arc, Weak};

use postern_store::{ComponentKind, Revocation};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::Control;
use crate::identity::ComponentIdentity;

impl Control {
    /// The relay between the STS and the agents.
    pub fn relay(&self) -> &Arc<dyn postern_relay::SignInRelay> {
        &self.relay
    }

    /// Starts ending the live connections of revoked components as the store
    /// announces revocations, until `shutdown` resolves. Listens from the moment
    /// it is called: call it before the control listener accepts connections.
    pub fn enforce_revocations(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let mut announced = self.store.revocations();
        let control: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut shutdown = std::pin::pin!(shutdown);
            loop {
                let next = tokio::select! {
                    () = &mut shutdown => return,
                    next = announced.recv() => next,
                };
                let Some(control) = control.upgrade() else {
                    return;
                };
                match next {
                    Ok(revocation) => control.revoke(&revocation),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "revocations came faster than they were applied; rechecking every live connection"
                        );
                        control.recheck.notify_waiters();
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }

    /// Ends the live connections `revocation` takes trust from.
    pub fn revoke(&self, revocation: &Revocation) {
        match revocation {
            Revocation::ComponentRemoved {
                tenant_id,
                component_id,
                kind: ComponentKind::Connector,
            } => {
                let tunnels = self.tunnels.close_connector(component_id);
                tracing::info!(tenant = %tenant_id, connector = %component_id, tunnels, "connector removed; its tunnels closed");
            }
            Revocation::ComponentRemoved {
                tenant_id,
                component_id,
                kind: ComponentKind::Agent,
            } => {
                let streams = self.relay.close_agent(tenant_id, component_id);
                tracing::info!(tenant = %tenant_id, agent = %component_id, streams, "agent removed; its queue stream closed");
            }
            Revocation::ConnectorMoved {
                tenant_id,
                component_id,
                from_group,
            } => {
                let tunnels = self
                    .tunnels
                    .close_connector_in_group(tenant_id, from_group, component_id);
                tracing::info!(tenant = %tenant_id, connector = %component_id, group = %from_group, tunnels, "connector moved; its tunnels for the group it left closed");
            }
            Revocation::GroupDeleted { tenant_id, group_id } => {
                let tunnels = self.tunnels.close_group(tenant_id, group_id);
                tracing::info!(tenant = %tenant_id, group = %group_id, tunnels, "connector group deleted; its tunnels closed");
            }
            Revocation::TenantDeleted { tenant_id } => {
                let tunnels = self.tunnels.close_tenant(tenant_id);
                let streams = self.relay.close_tenant(tenant_id);
                tracing::info!(tenant = %tenant_id, tunnels, streams, "tenant deleted; its tunnels and queue streams closed");
            }
        }
    }

    /// Has every live tunnel and queue stream recheck its component against the
    /// store at once (revocations made elsewhere may have been missed).
    pub fn recheck_all(&self) {
        self.recheck.notify_waiters();
    }

    /// Waits until live connections are told to recheck their component at once
    /// (after announcements were missed).
    pub(crate) async fn recheck_requested(&self) {
        self.recheck.notified().await;
    }
}

/// Whether the component that presented `identity`'s certificate is still
/// registered with it and, for a tunnel, still in `group_id`. `None` when the
/// store cannot tell (it is down): connections keep serving meanwhile.
pub(crate) async fn still_trusted(
    control: &Control,
    identity: &ComponentIdentity,
    group_id: Option<&str>,
) -> Option<bool> {
    match control.store.component_by_serial(&identity.serial, control.now()).await {
        Ok(Some((c, _))) => {
            Some(c.id == identity.component_id && group_id.is_none_or(|g| c.group_id.as_deref() == Some(g)))
        }
        Ok(None) => Some(false),
        Err(_) => None,
    }
}
