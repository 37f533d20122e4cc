//! Changes other service instances must hear about at once (BEY-1): the store
//! announces, within this process, every committed change that moves the
//! routing generation, a connector group's configuration or the front-door
//! cookie keys. A cluster bridge carries them to the other instances, which
//! apply them with [`Store::apply_remote_change`] (not announced again, so
//! nothing echoes back).

use tokio::sync::broadcast;

use crate::Store;

/// Changes a listener may fall behind by before it is told it lagged.
const BACKLOG: usize = 1024;

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreChange {
    /// Something caches of tenants, apps, components, users or policies read
    /// (see [`Store::routing_generation`]).
    Routing,
    /// A connector group's configuration version moved (its connectors
    /// refetch their configuration).
    ConnectorConfig,
    /// The front-door cookie keys were rotated (and maybe older ones revoked).
    CookieKeys,
}

/// The sending side, held by every clone of a [`Store`].
pub(crate) fn channel() -> broadcast::Sender<StoreChange> {
    broadcast::channel(BACKLOG).0
}

impl Store {
    /// Every change made through this process from now on.
    pub fn local_changes(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    /// Tells the listeners (if any) about a committed change.
    pub(crate) fn note_change(&self, change: StoreChange) {
        let _ = self.changes.send(change);
    }

    /// Applies a change another instance made: moves the routing generation or
    /// wakes the configuration watchers here. Cookie keys are the front door's
    /// to reread.
    pub fn apply_remote_change(&self, change: StoreChange) {
        match change {
            StoreChange::Routing => {
                self.routing_generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            StoreChange::ConnectorConfig => self.config_changed.notify_waiters(),
            StoreChange::CookieKeys => {}
        }
    }
}
