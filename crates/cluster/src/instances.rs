//! Instances announce themselves on `{prefix}.instances` every second and at
//! once when the tunnels they hold change: ID, peer address, start time and the
//! connector groups they hold tunnels of. Each keeps the others in a table and
//! forgets one not heard from for [`STALE_AFTER`]; a newcomer hears from every
//! other instance at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use postern_tunnel::TunnelRegistry;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::ClusterError;
use crate::events::Names;

/// How often an instance announces itself.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(1);
/// An instance not heard from for this long is gone.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// One instance as it announces itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Unique per start of `postern serve`.
    pub id: String,
    /// `host:port` of its peer listener.
    pub peer_addr: String,
    /// When it started (Unix seconds).
    pub started_at: i64,
    /// `(tenant, group, tunnels)` of the connector groups it holds tunnels of.
    pub groups: Vec<(String, String, usize)>,
}

/// This instance and the others heard from.
pub(crate) struct Table {
    me: Mutex<InstanceInfo>,
    others: Mutex<HashMap<String, (InstanceInfo, Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Table {
    pub(crate) fn new(me: InstanceInfo) -> Self {
        Self {
            me: Mutex::new(me),
            others: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn me(&self) -> InstanceInfo {
        lock(&self.me).clone()
    }

    /// Every live instance, this one first.
    pub(crate) fn live(&self) -> Vec<InstanceInfo> {
        let mut all = vec![self.me()];
        let mut others: Vec<InstanceInfo> = lock(&self.others)
            .values()
            .filter(|(_, seen)| seen.elapsed() < STALE_AFTER)
            .map(|(info, _)| info.clone())
            .collect();
        others.sort_by(|a, b| a.id.cmp(&b.id));
        all.extend(others);
        all
    }

    /// Live peers holding a tunnel of the group, fewest... first by ID (the
    /// caller spreads the load).
    pub(crate) fn holders(&self, tenant_id: &str, group_id: &str) -> Vec<InstanceInfo> {
        self.live()
            .into_iter()
            .skip(1)
            .filter(|i| {
                i.groups
                    .iter()
                    .any(|(t, g, n)| t == tenant_id && g == group_id && *n > 0)
            })
            .collect()
    }

    /// Records an announcement; true when the instance is new (or was gone).
    fn heard(&self, info: InstanceInfo) -> bool {
        if info.id == lock(&self.me).id {
            return false;
        }
        let id = info.id.clone();
        lock(&self.others)
            .insert(id, (info, Instant::now()))
            .is_none_or(|(_, seen)| seen.elapsed() >= STALE_AFTER)
    }

    fn forget_stale(&self) {
        lock(&self.others).retain(|_, (_, seen)| seen.elapsed() < STALE_AFTER * 10);
    }
}

/// Starts announcing this instance and listening to the others.
pub(crate) async fn start(
    client: async_nats::Client,
    names: Names,
    table: Arc<Table>,
    tunnels: Arc<TunnelRegistry>,
) -> Result<Vec<AbortHandle>, ClusterError> {
    let sub = client
        .subscribe(names.instances())
        .await
        .map_err(|e| ClusterError::Nats {
            url: "(connected)".into(),
            reason: e.to_string(),
        })?;
    let listen = tokio::spawn(listen(Arc::downgrade(&table), client.clone(), names.clone(), sub));
    let announce = tokio::spawn(announce(Arc::downgrade(&table), client, names, tunnels));
    Ok(vec![listen.abort_handle(), announce.abort_handle()])
}

async fn publish(client: &async_nats::Client, names: &Names, info: &InstanceInfo) {
    if let Ok(payload) = serde_json::to_vec(info) {
        let _ = client.publish(names.instances(), payload.into()).await;
    }
}

async fn listen(table: Weak<Table>, client: async_nats::Client, names: Names, mut sub: async_nats::Subscriber) {
    while let Some(message) = sub.next().await {
        let Some(table) = table.upgrade() else { return };
        let Ok(info) = serde_json::from_slice::<InstanceInfo>(&message.payload) else {
            continue;
        };
        let id = info.id.clone();
        if table.heard(info) {
            tracing::info!(instance = %id, "another instance joined");
            publish(&client, &names, &table.me()).await;
        }
    }
}

async fn announce(table: Weak<Table>, client: async_nats::Client, names: Names, tunnels: Arc<TunnelRegistry>) {
    let mut changed = tunnels.changes();
    let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            moved = changed.changed() => if moved.is_err() { return },
        }
        let Some(table) = table.upgrade() else { return };
        let groups = tunnels
            .held_groups()
            .into_iter()
            .map(|g| (g.tenant_id, g.group_id, g.tunnels))
            .collect();
        let me = {
            let mut me = lock(&table.me);
            me.groups = groups;
            me.clone()
        };
        table.forget_stale();
        publish(&client, &names, &me).await;
    }
}
