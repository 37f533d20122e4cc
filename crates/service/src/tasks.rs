//! Background maintenance: signing-key rotation when due, component upkeep
//! (renewal grace periods, expired components), front-door cookie keys (reread
//! every 30 s, rotated when due), and purging expired short-lived records. Runs
//! until shutdown.

use std::sync::Arc;
use std::time::Duration;

use postern_control::Control;
use postern_edge::Edge;
use postern_sts::Sts;
use tokio::sync::watch;

/// How often maintenance runs.
const EVERY: Duration = Duration::from_secs(300);

/// Runs maintenance every [`EVERY`] until `shutdown` turns true.
pub(crate) async fn maintenance(
    sts: Arc<Sts>,
    control: Arc<Control>,
    edge: Arc<Edge>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut keys_tick = tokio::time::interval(postern_edge::COOKIE_KEYS_REFRESH);
    keys_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = keys_tick.tick() => {
                // Cookie keys revoked or made by another instance.
                if let Err(e) = edge.refresh_cookie_keys().await {
                    tracing::warn!(error = %e, "rereading the front-door cookie keys failed");
                }
                continue;
            }
            _ = shutdown.changed() => return,
        }
        if let Err(e) = sts.maintain_signing_keys().await {
            tracing::warn!(error = %e, "signing-key maintenance failed");
        }
        if let Err(e) = control.maintain().await {
            tracing::warn!(error = %e, "component maintenance failed");
        }
        if let Err(e) = edge.maintain().await {
            tracing::warn!(error = %e, "front-door cookie key maintenance failed");
        }
        match sts.store().purge_expired(sts.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "expired records purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired records failed"),
        }
    }
}
