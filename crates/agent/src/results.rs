//! Results on the two-way queue: while the queue is open as a `POST` whose body
//! the agent keeps writing (HTTP/2), each result is one line of that body
//! ([`QueueResult`]) instead of a request of its own. A result that finds no
//! open queue, or the line full, is posted as before (`worker::report`).
//!
//! When the agent leaves a queue it opened (to refresh its credential, after a
//! renewal, at shutdown) it ends the body and waits a moment for the lines
//! already queued to be sent before it drops the connection's response, so a
//! result on its way is not cut off.
//!
//! The service answers none of the lines, so a queue that breaks (the
//! connection lost, the service restarting, the body not drained in time) may
//! have taken results with it. The agent keeps the lines of the last few
//! seconds and, after such an end, posts them again
//! ([`ResultsChannel::take_unconfirmed`]); the service takes each result once,
//! so one it did read is refused as no longer pending, and one it did not
//! reaches the sign-in waiting for it instead of that sign-in waiting for its
//! attempt to time out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use postern_proto::relay::{QueueResult, ValidationResult};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Result lines that may wait to be sent; beyond that results are posted.
const QUEUED_RESULTS: usize = 256;
/// How long leaving a queue waits for the results already queued to be sent.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Result lines kept after they were queued, to be posted again if the queue
/// breaks; the oldest go first.
const UNCONFIRMED_RESULTS: usize = 512;
/// How long a line is kept to be posted again: what the connection may still
/// hold when it breaks, and within the service's attempt timeout, after which
/// the service has given the request to another agent anyway.
pub(crate) const UNCONFIRMED_FOR: Duration = Duration::from_secs(3);

/// Where results go while a two-way queue is open.
#[derive(Default)]
pub(crate) struct ResultsChannel {
    open: Mutex<Option<mpsc::Sender<Bytes>>>,
    /// Lines queued lately, as (when, request ID, the line).
    unconfirmed: Mutex<VecDeque<(Instant, String, Bytes)>>,
}

/// Resolves when the body of a two-way queue has ended: every line queued was
/// handed to the connection, or the connection dropped the body.
pub(crate) struct Drained(oneshot::Receiver<()>);

impl Drained {
    /// Waits for the end of the body, at most `wait`; whether it ended.
    pub async fn wait(self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.0).await.is_ok()
    }
}

/// The body of a two-way queue being opened, not yet taking results.
pub(crate) struct NewBody {
    sender: mpsc::Sender<Bytes>,
    drained: Drained,
}

/// A body for a two-way queue. Dropping the [`NewBody`] ends it; attaching it
/// ([`ResultsChannel::attach`]) sends results on it.
pub(crate) fn new_body() -> (reqwest::Body, NewBody) {
    let (sender, receiver) = mpsc::channel::<Bytes>(QUEUED_RESULTS);
    let (ended, drained) = oneshot::channel();
    let lines = futures_util::stream::unfold((receiver, Some(ended)), |(mut receiver, mut ended)| async move {
        match receiver.recv().await {
            Some(line) => Some((Ok::<_, Infallible>(line), (receiver, ended))),
            None => {
                if let Some(ended) = ended.take() {
                    let _ = ended.send(());
                }
                None
            }
        }
    });
    let new = NewBody {
        sender,
        drained: Drained(drained),
    };
    (reqwest::Body::wrap_stream(lines), new)
}

impl ResultsChannel {
    /// Results go to `body` from now on (until [`Self::close`]), in place of
    /// any body attached before.
    pub fn attach(&self, body: NewBody) -> Drained {
        if let Ok(mut open) = self.open.lock() {
            *open = Some(body.sender);
        }
        body.drained
    }

    /// Results are posted from now on; the open body ends once what it holds
    /// has been sent.
    pub fn close(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = None;
        }
    }

    /// Queues the result of `request_id` on the open queue, or gives it back
    /// when no queue is open or its line is full (then the caller posts it).
    #[expect(
        clippy::result_large_err,
        reason = "the result is handed back by move to be posted, once per sign-in"
    )]
    pub fn send(&self, request_id: &str, result: ValidationResult) -> Result<(), ValidationResult> {
        let Ok(open) = self.open.lock() else {
            return Err(result);
        };
        let Some(sender) = open.as_ref() else {
            return Err(result);
        };
        let line = QueueResult {
            request_id: request_id.to_owned(),
            result,
        };
        let Ok(mut bytes) = serde_json::to_vec(&line) else {
            return Err(line.result);
        };
        bytes.push(b'\n');
        let bytes = Bytes::from(bytes);
        sender.try_send(bytes.clone()).map_err(|_| line.result)?;
        if let Ok(mut kept) = self.unconfirmed.lock() {
            let now = Instant::now();
            while kept.len() >= UNCONFIRMED_RESULTS
                || kept
                    .front()
                    .is_some_and(|(at, _, _)| now.duration_since(*at) > UNCONFIRMED_FOR)
            {
                kept.pop_front();
            }
            kept.push_back((now, line.request_id, bytes));
        }
        Ok(())
    }

    /// The results queued in the last [`UNCONFIRMED_FOR`] (at most
    /// [`UNCONFIRMED_RESULTS`]), oldest first, for a queue that broke: to be
    /// posted again. Forgets every line kept.
    pub fn take_unconfirmed(&self) -> Vec<(String, ValidationResult)> {
        let Ok(mut kept) = self.unconfirmed.lock() else {
            return Vec::new();
        };
        let now = Instant::now();
        kept.drain(..)
            .filter(|(at, _, _)| now.duration_since(*at) <= UNCONFIRMED_FOR)
            .filter_map(|(_, request_id, line)| {
                let line: QueueResult = serde_json::from_slice(&line).ok()?;
                Some((request_id, line.result))
            })
            .collect()
    }

    /// Forgets the lines kept: the queue they went on ended cleanly.
    pub fn confirm(&self) {
        if let Ok(mut kept) = self.unconfirmed.lock() {
            kept.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use postern_proto::PROTOCOL_VERSION;
    use postern_proto::relay::ValidationOutcome;

    use super::*;

    fn result() -> ValidationResult {
        ValidationResult {
            protocol: PROTOCOL_VERSION,
            outcome: ValidationOutcome::WrongCredentials,
            account: None,
        }
    }

    #[tokio::test]
    async fn results_become_lines_of_the_open_body_and_closing_ends_it() {
        let channel = ResultsChannel::default();
        assert!(channel.send("r0", result()).is_err(), "no queue open: the caller posts");
        let (body, new) = new_body();
        assert!(
            channel.send("r0", result()).is_err(),
            "not attached yet: the caller posts"
        );
        let drained = channel.attach(new);
        assert!(channel.send("r1", result()).is_ok());
        assert!(channel.send("r2", result()).is_ok());
        channel.close();
        assert_eq!(
            channel.send("r3", result()),
            Err(result()),
            "closed: the caller posts, with the result given back"
        );
        let mut frames = body.into_data_stream();
        let mut text = Vec::new();
        while let Some(chunk) = frames.next().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        let lines: Vec<QueueResult> = String::from_utf8(text)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<_> = lines.iter().map(|l| l.request_id.as_str()).collect();
        assert_eq!(ids, ["r1", "r2"]);
        assert_eq!(lines[0].result, result());
        tokio::time::timeout(Duration::from_secs(1), drained.wait(Duration::from_secs(5)))
            .await
            .expect("the body ended, so draining is over");
    }

    #[tokio::test]
    async fn a_full_line_sends_the_rest_by_post_and_a_new_queue_replaces_the_old() {
        let channel = ResultsChannel::default();
        let (_unread, new) = new_body();
        let _drained = channel.attach(new);
        for n in 0..QUEUED_RESULTS {
            assert!(channel.send(&format!("r{n}"), result()).is_ok());
        }
        assert!(channel.send("one-too-many", result()).is_err());
        let (body, new) = new_body();
        let _drained = channel.attach(new);
        assert!(channel.send("on-the-new-queue", result()).is_ok());
        channel.close();
        let text = body.collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&text).contains("on-the-new-queue"));
    }

    #[tokio::test]
    async fn a_body_never_attached_ends_when_dropped() {
        let (body, new) = new_body();
        drop(new);
        let text = tokio::time::timeout(Duration::from_secs(1), body.collect())
            .await
            .expect("the body ends")
            .unwrap()
            .to_bytes();
        assert!(text.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn draining_waits_no_longer_than_asked() {
        let channel = ResultsChannel::default();
        let (_body_never_read, new) = new_body();
        let drained = channel.attach(new);
        assert!(channel.send("r1", result()).is_ok());
        channel.close();
        let started = tokio::time::Instant::now();
        assert!(!drained.wait(DRAIN_WAIT).await, "never read, so never drained");
        assert_eq!(started.elapsed(), DRAIN_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lines_of_the_last_seconds_are_kept_to_be_posted_again() {
        let channel = ResultsChannel::default();
        let (body, new) = new_body();
        let _drained = channel.attach(new);
        // The connection takes the lines as they come.
        tokio::spawn(async move {
            let mut frames = body.into_data_stream();
            while frames.next().await.is_some() {}
        });
        assert!(channel.send("old", result()).is_ok());
        tokio::time::advance(UNCONFIRMED_FOR + Duration::from_millis(1)).await;
        for n in 0..UNCONFIRMED_RESULTS + 2 {
            assert!(channel.send(&format!("r{n}"), result()).is_ok());
            tokio::task::yield_now().await;
        }
        let again = channel.take_unconfirmed();
        assert_eq!(again.len(), UNCONFIRMED_RESULTS, "at most this many, the newest");
        assert_eq!(again[0].0, "r2", "the oldest went first");
        assert_eq!(again.last().unwrap().0, format!("r{}", UNCONFIRMED_RESULTS + 1));
        assert!(again.iter().all(|(_, r)| *r == result()), "each with its result");
        assert!(channel.take_unconfirmed().is_empty(), "taken once");

        assert!(channel.send("confirmed", result()).is_ok());
        channel.confirm();
        assert!(channel.take_unconfirmed().is_empty(), "a clean end forgets them");
        assert!(channel.send("aged", result()).is_ok());
        tokio::time::advance(UNCONFIRMED_FOR + Duration::from_millis(1)).await;
        assert!(
            channel.take_unconfirmed().is_empty(),
            "past the window the service has moved the request on"
        );
        channel.close();
        assert!(channel.send("posted", result()).is_err());
        assert!(channel.take_unconfirmed().is_empty(), "posted results are not kept");
    }
}
