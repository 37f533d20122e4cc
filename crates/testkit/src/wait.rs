//! Waiting for what a test means instead of for a fixed time.
//!
//! A test that sleeps 200 ms "so the server is up" proves nothing on a busy
//! machine and wastes time on an idle one. These helpers wait for the
//! condition itself, checking it again after each short pause and failing
//! with a message at a deadline. The only sleeps left in the tests are named
//! for what they are: [`poll_pause`] between two checks of a condition,
//! [`quiet_for`] where a test proves that something does *not* happen, and
//! deliberate slowness (a trickling backend, a fault held for a while) with a
//! comment saying so. `docs/testing.md` ("Sleeps") counts them.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long the `eventually` helpers wait unless a test says otherwise.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// How often the `eventually` helpers check their condition.
pub const POLL_EVERY: Duration = Duration::from_millis(20);

/// The pause between two checks of a polled condition.
///
/// Not synchronisation: the caller checks the real condition again after it
/// and gives up at a deadline. Use it in hand-written poll loops (one that
/// also samples something, say) where [`eventually`] does not fit.
pub async fn poll_pause(every: Duration) {
    tokio::time::sleep(every).await;
}

/// Waits out a window in which something must *not* happen (a second log
/// line, an event for the wrong receiver, another dial).
///
/// Proving an absence takes a window: this is the deliberate wait, not a
/// guess that something else has finished.
pub async fn quiet_for(window: Duration) {
    tokio::time::sleep(window).await;
}

/// Holds a deliberate condition (a fault, a load phase, a slow peer's pause)
/// for `d`: the duration is what the test is about, not a guess that
/// something has finished.
pub async fn hold_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Waits until `check` returns `Some`, checking every [`POLL_EVERY`], and
/// returns its value; panics naming `what` if it has not within `within`.
pub async fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        poll_pause(POLL_EVERY).await;
    }
}

/// Waits until `done` holds, checking every [`POLL_EVERY`]; panics naming
/// `what` if it does not within `within`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    eventually(what, within, || done().then_some(())).await;
}

/// [`eventually`] with an asynchronous check (an HTTP request, a query),
/// checked every `every`.
pub async fn eventually_async<T, F>(what: &str, within: Duration, every: Duration, mut check: impl FnMut() -> F) -> T
where
    F: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        poll_pause(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_once_the_condition_holds() {
        let mut checks = 0;
        let got = eventually("the third check", Duration::from_secs(1), || {
            checks += 1;
            (checks == 3).then_some(checks)
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "not within 100ms: never")]
    async fn eventually_fails_at_the_deadline() {
        wait_until("never", Duration::from_millis(100), || false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_async_awaits_each_check() {
        let mut n = 0u32;
        let got = eventually_async("n reaches 2", Duration::from_secs(1), POLL_EVERY, || {
            n += 1;
            let now = n;
            async move { (now >= 2).then_some(now) }
        })
        .await;
        assert_eq!(got, 2);
    }
}
