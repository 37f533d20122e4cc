//! Revocation events (BEY-6): the store announces, within this process, every
//! change that takes trust away from an on-prem component's live connections,
//! so the control plane can end them at once instead of at their next recheck
//! against the store. Each event is sent after its change has been committed.
//!
//! Other service instances hear them through `postern-cluster`, which
//! publishes them over NATS and hands the others' to the control plane; they
//! also find a change when they recheck their live connections against the
//! store.

use postern_proto::ComponentKind;
use tokio::sync::broadcast;

use crate::Store;

/// Events a listener may fall behind by before it is told it lagged (and must
/// then recheck everything it holds).
const BACKLOG: usize = 1024;

/// What stopped being trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// A component was deleted (by an administrator, or because its
    /// certificate expired) and its certificates revoked.
    ComponentRemoved {
        /// Its tenant.
        tenant_id: String,
        /// The component.
        component_id: String,
        /// Connector or agent.
        kind: ComponentKind,
    },
    /// A connector moved to another group: it no longer serves the apps of the
    /// group it left.
    ConnectorMoved {
        /// Its tenant.
        tenant_id: String,
        /// The connector.
        component_id: String,
        /// The group it left.
        from_group: String,
    },
    /// A connector group was deleted.
    GroupDeleted {
        /// Its tenant.
        tenant_id: String,
        /// The group.
        group_id: String,
    },
    /// A tenant was deleted with everything it owned.
    TenantDeleted {
        /// The tenant.
        tenant_id: String,
    },
}

/// The sending side, held by every clone of a [`Store`].
pub(crate) fn channel() -> broadcast::Sender<Revocation> {
    broadcast::channel(BACKLOG).0
}

impl Store {
    /// Every revocation made through this process from now on. Subscribe before
    /// accepting the connections to police, and treat a lag as "recheck all".
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.revocations.subscribe()
    }

    /// Tells the listeners (if any) about a committed revocation.
    pub(crate) fn announce(&self, revocation: Revocation) {
        tracing::debug!(?revocation, "revocation announced");
        let _ = self.revocations.send(revocation);
    }
}
