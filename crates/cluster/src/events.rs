//! Events between instances on `{prefix}.events`: every revocation the store
//! announces here (BEY-6) and every change other instances' caches and
//! watchers must see (routing: apps published, assignments, users, policies;
//! a connector group's configuration; cookie keys). Each instance publishes
//! its own store's announcements and applies the others' through an
//! [`EventSink`]; an event never echoes back (the store does not announce what
//! it applies from elsewhere).
//!
//! Delivery is NATS core (at most once, within milliseconds). When the
//! connection to NATS was lost, events may have been missed: on reconnect the
//! sink is told to [`EventSink::resync`] (recheck every live connection, move
//! the routing generation, reread cookie keys and configuration), and the
//! periodic rechecks that exist for a single instance still run beneath.

use std::sync::Arc;

use futures_util::StreamExt;
use postern_proto::ComponentKind;
use postern_store::{Revocation, Store, StoreChange};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::AbortHandle;

use crate::{ClusterError, NatsState};

/// Applies other instances' events to this one.
pub trait EventSink: Send + Sync {
    /// End what the revoked component holds open here.
    fn revocation(&self, revocation: &Revocation);
    /// Another instance changed something cached or watched here.
    fn store_change(&self, change: StoreChange);
    /// Events may have been missed (NATS was unreachable): recheck everything.
    fn resync(&self);
}

/// Subject names of one installation.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    pub(crate) fn events(&self) -> String {
        format!("{}.events", self.prefix)
    }
    pub(crate) fn instances(&self) -> String {
        format!("{}.instances", self.prefix)
    }
}

/// A revocation as it travels between instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireRevocation {
    ComponentRemoved {
        tenant_id: String,
        component_id: String,
        component: ComponentKind,
    },
    ConnectorMoved {
        tenant_id: String,
        component_id: String,
        from_group: String,
    },
    GroupDeleted {
        tenant_id: String,
        group_id: String,
    },
    TenantDeleted {
        tenant_id: String,
    },
}

impl From<&Revocation> for WireRevocation {
    fn from(r: &Revocation) -> Self {
        match r.clone() {
            Revocation::ComponentRemoved {
                tenant_id,
                component_id,
                kind,
            } => Self::ComponentRemoved {
                tenant_id,
                component_id,
                component: kind,
            },
            Revocation::ConnectorMoved {
                tenant_id,
                component_id,
                from_group,
            } => Self::ConnectorMoved {
                tenant_id,
                component_id,
                from_group,
            },
            Revocation::GroupDeleted { tenant_id, group_id } => Self::GroupDeleted { tenant_id, group_id },
            Revocation::TenantDeleted { tenant_id } => Self::TenantDeleted { tenant_id },
        }
    }
}

impl From<WireRevocation> for Revocation {
    fn from(w: WireRevocation) -> Self {
        match w {
            WireRevocation::ComponentRemoved {
                tenant_id,
                component_id,
                component,
            } => Self::ComponentRemoved {
                tenant_id,
                component_id,
                kind: component,
            },
            WireRevocation::ConnectorMoved {
                tenant_id,
                component_id,
                from_group,
            } => Self::ConnectorMoved {
                tenant_id,
                component_id,
                from_group,
            },
            WireRevocation::GroupDeleted { tenant_id, group_id } => Self::GroupDeleted { tenant_id, group_id },
            WireRevocation::TenantDeleted { tenant_id } => Self::TenantDeleted { tenant_id },
        }
    }
}

/// What travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event {
    Revocation {
        revocation: WireRevocation,
    },
    Change {
        change: StoreChange,
    },
    /// The sender missed some of its own announcements: recheck everything.
    Resync,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    event: Event,
}

/// Starts the bridge: this store's announcements out, the others' in.
pub(crate) async fn start(
    client: async_nats::Client,
    names: Names,
    me: String,
    store: Store,
    sink: Arc<dyn EventSink>,
    state: NatsState,
) -> Result<Vec<AbortHandle>, ClusterError> {
    let sub = client.subscribe(names.events()).await.map_err(|e| ClusterError::Nats {
        url: "(connected)".into(),
        reason: e.to_string(),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(1024);
    let tasks = vec![
        tokio::spawn(apply(sub, me.clone(), sink.clone())).abort_handle(),
        tokio::spawn(publish(client, names, me, rx)).abort_handle(),
        tokio::spawn(revocations_out(store.revocations(), tx.clone())).abort_handle(),
        tokio::spawn(changes_out(store.local_changes(), tx)).abort_handle(),
        tokio::spawn(resync_on_reconnect(state, sink)).abort_handle(),
    ];
    Ok(tasks)
}

async fn publish(client: async_nats::Client, names: Names, me: String, mut rx: tokio::sync::mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let envelope = Envelope {
            from: me.clone(),
            event,
        };
        if let Ok(payload) = serde_json::to_vec(&envelope)
            && let Err(e) = client.publish(names.events(), payload.into()).await
        {
            tracing::warn!(error = %e, "an event could not be sent to the other instances");
        }
    }
}

async fn revocations_out(
    mut announced: tokio::sync::broadcast::Receiver<Revocation>,
    tx: tokio::sync::mpsc::Sender<Event>,
) {
    loop {
        let event = match announced.recv().await {
            Ok(r) => Event::Revocation {
                revocation: WireRevocation::from(&r),
            },
            Err(RecvError::Lagged(_)) => Event::Resync,
            Err(RecvError::Closed) => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

async fn changes_out(mut changes: tokio::sync::broadcast::Receiver<StoreChange>, tx: tokio::sync::mpsc::Sender<Event>) {
    loop {
        let event = match changes.recv().await {
            Ok(change) => Event::Change { change },
            Err(RecvError::Lagged(_)) => Event::Resync,
            Err(RecvError::Closed) => return,
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

async fn apply(mut sub: async_nats::Subscriber, me: String, sink: Arc<dyn EventSink>) {
    while let Some(message) = sub.next().await {
        let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload) else {
            tracing::warn!("an unreadable event from another instance was ignored");
            continue;
        };
        if envelope.from == me {
            continue;
        }
        match envelope.event {
            Event::Revocation { revocation } => {
                let revocation = Revocation::from(revocation);
                tracing::debug!(from = %envelope.from, ?revocation, "revocation from another instance");
                sink.revocation(&revocation);
            }
            Event::Change { change } => sink.store_change(change),
            Event::Resync => sink.resync(),
        }
    }
}

async fn resync_on_reconnect(mut state: NatsState, sink: Arc<dyn EventSink>) {
    let mut was_up = *state.borrow_and_update();
    while state.changed().await.is_ok() {
        let up = *state.borrow_and_update();
        if up && !was_up {
            tracing::info!("NATS is back; rechecking what other instances may have changed meanwhile");
            sink.resync();
        }
        was_up = up;
    }
}
