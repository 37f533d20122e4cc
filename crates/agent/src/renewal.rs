//! Trust renewal (PTA-7) beside the queue: ask the service on its schedule whether to
//! renew; when told to, renew with a fresh key of the same kind and tell the run loop,
//! which then decrypts with the new key and reconnects with the new certificate (the
//! service encrypts to the new key from then on and no longer accepts the old one).

use std::sync::Arc;
use std::time::Duration;

use postern_pki::KeyAlg;
use postern_time::SharedClock;
use postern_uplink::{Backoff, ControlClient, StateDir};
use tokio::sync::{Mutex, watch};

use crate::AgentError;

/// Longest wait between two renewal checks.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// Renewal, running until it meets an error that retrying cannot fix, which it returns.
/// Each completed renewal bumps `renewed`. `state_lock` is held while key and
/// certificate are rewritten, so the run loop never reads a half-written pair.
pub(crate) async fn maintain(
    state: StateDir,
    clock: SharedClock,
    state_lock: Arc<Mutex<()>>,
    renewed: watch::Sender<u64>,
    key_alg: KeyAlg,
    mut backoff: Backoff,
) -> AgentError {
    let mut client = loop {
        let loaded = {
            let _guard = state_lock.lock().await;
            ControlClient::load(state.clone(), clock.clone())
        };
        match loaded {
            Ok(c) => break c,
            Err(e) if e.needs_registration() => return AgentError::NeedsRegistration(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, ?wait, "cannot load the registration for renewal checks; retrying");
                tokio::time::sleep(wait).await;
            }
        }
    };
    loop {
        let wait = match client.agent_renewal_check().await {
            Ok(check) if check.renew => {
                tracing::info!(reason = %check.reason, "the service asks this agent to renew its certificate");
                let renewal = {
                    let _guard = state_lock.lock().await;
                    client.agent_renew(key_alg).await
                };
                match renewal {
                    Ok(_) => {
                        backoff.reset();
                        renewed.send_modify(|n| *n += 1);
                        MAX_CHECK_INTERVAL
                    }
                    Err(e) if e.needs_registration() => return AgentError::NeedsRegistration(e),
                    Err(e) => {
                        let wait = backoff.next_delay();
                        tracing::warn!(error = %e, ?wait, "certificate renewal failed; retrying");
                        wait
                    }
                }
            }
            Ok(check) => {
                backoff.reset();
                Duration::from_secs(check.check_again_secs.max(1)).min(MAX_CHECK_INTERVAL)
            }
            Err(e) if e.needs_registration() => return AgentError::NeedsRegistration(e),
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, ?wait, "renewal check failed; retrying");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
