//! One receiver's shipper: a loop that claims new events from the store into
//! the spool, then sends the spool oldest first.
//!
//! Claiming reads the events after the receiver's cursor (one batch per log
//! per turn), writes them to the spool, then advances the cursor by
//! compare-and-set; when another instance advanced it first, the batch just
//! written is discarded. A full spool stops the claiming, loudly, and the
//! events wait in the store. Sending retries with jittered exponential
//! backoff; a batch leaves the spool only once the receiver accepted it.

use std::time::Duration;

use postern_store::{ExportStream, Store};
use postern_time::SharedClock;
use postern_uplink::Backoff;
use tokio::sync::watch;

use crate::ExportError;
use crate::event::ExportEvent;
use crate::sink::Sink;
use crate::spool::Spool;

/// A receiver's shipper.
pub(crate) struct Shipper<S: Sink> {
    pub(crate) sink: S,
    pub(crate) store: Store,
    pub(crate) clock: SharedClock,
    pub(crate) spool: Spool,
    pub(crate) max_spool_bytes: u64,
    pub(crate) batch: usize,
    pub(crate) poll_interval: Duration,
    pub(crate) backoff: Backoff,
    /// Whether the spool was full at the last claim.
    pub(crate) spool_full: bool,
    /// Whether the last delivery failed.
    pub(crate) failing: bool,
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

impl<S: Sink> Shipper<S> {
    /// Runs until `shutdown` turns true. A batch being sent when it does stays
    /// in the spool and goes at the next start.
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let claimed = match self.claim().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(receiver = self.sink.name(), error = %e, "claiming events to export failed; trying again");
                    0
                }
            };
            let sent = tokio::select! {
                sent = self.send_spooled() => sent,
                () = stopping(&mut shutdown) => return,
            };
            let wait = self.next_wait(claimed, sent);
            if wait.is_zero() && !*shutdown.borrow() {
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stopping(&mut shutdown) => return,
            }
        }
    }

    /// How long to wait after a turn: not at all while there is more to
    /// claim, the poll interval when caught up, a backoff after a failure.
    fn next_wait(&mut self, claimed: usize, sent: Result<usize, ExportError>) -> Duration {
        let receiver = self.sink.name();
        match sent {
            Ok(_) => {
                if self.failing {
                    tracing::info!(receiver, "export receiver accepts events again");
                    self.failing = false;
                }
                self.backoff.reset();
                if claimed > 0 && !self.spool_full {
                    Duration::ZERO
                } else {
                    self.poll_interval
                }
            }
            Err(e) => {
                let wait = self.backoff.next_delay();
                tracing::warn!(
                    receiver,
                    error = %e,
                    spooled_bytes = self.spool.used(),
                    retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    "export receiver did not accept events; they stay in the spool and are sent again"
                );
                self.failing = true;
                wait
            }
        }
    }

    /// Claims one batch of each log into the spool, until the spool is full.
    /// Returns how many events were claimed.
    async fn claim(&mut self) -> Result<usize, ExportError> {
        let mut claimed = 0;
        let mut full = false;
        for stream in ExportStream::ALL {
            let (events, no_room) = self.claim_stream(stream).await?;
            claimed += events;
            if no_room {
                full = true;
                break;
            }
        }
        self.note_room(full);
        Ok(claimed)
    }

    async fn read_after(&self, stream: ExportStream, after: i64) -> Result<Vec<ExportEvent>, ExportError> {
        let limit = i64::try_from(self.batch).unwrap_or(i64::MAX);
        Ok(match stream {
            ExportStream::Signins => self
                .store
                .signins_after(after, limit)
                .await?
                .into_iter()
                .map(ExportEvent::from)
                .collect(),
            ExportStream::Audit => self
                .store
                .audit_after(after, limit)
                .await?
                .into_iter()
                .map(ExportEvent::from)
                .collect(),
        })
    }

    /// Claims the events of `stream` after the cursor that fit in the spool.
    /// Returns how many were claimed and whether some did not fit.
    async fn claim_stream(&mut self, stream: ExportStream) -> Result<(usize, bool), ExportError> {
        let receiver = self.sink.name();
        let from = self.store.export_cursor(receiver, stream).await?;
        let events = self.read_after(stream, from).await?;
        if events.is_empty() {
            return Ok((0, false));
        }
        let lines = events
            .iter()
            .map(ExportEvent::to_json_line)
            .collect::<Result<Vec<_>, _>>()?;
        let fit = self.spool.room_for(&lines);
        let no_room = fit < lines.len();
        let (Some(last), Some(fitting)) = (fit.checked_sub(1).and_then(|i| events.get(i)), lines.get(..fit)) else {
            return Ok((0, no_room));
        };
        let file = self.spool.append(fitting).await?;
        // If this fails the batch stays: had the cursor moved, dropping it
        // would lose the events; had it not, they are claimed (and sent) twice.
        let moved = self
            .store
            .advance_export_cursor(receiver, stream, from, last.seq(), self.clock.now())
            .await?;
        if !moved {
            tracing::debug!(
                receiver,
                stream = stream.as_str(),
                "another instance claimed these events first"
            );
            self.spool.discard(file).await?;
            return Ok((0, false));
        }
        Ok((fit, no_room))
    }

    /// Says, once each time it changes, that the spool is full or has room
    /// again.
    fn note_room(&mut self, full: bool) {
        let receiver = self.sink.name();
        if full && !self.spool_full {
            tracing::error!(
                receiver,
                spooled_bytes = self.spool.used(),
                spool_max_bytes = self.max_spool_bytes,
                "export spool full: new sign-in and audit events are not taken from the store until the receiver accepts the spooled ones (nothing is dropped)"
            );
        } else if !full && self.spool_full {
            tracing::info!(receiver, "export spool has room again; claiming events");
        }
        self.spool_full = full;
    }

    /// Sends the spool, oldest first, until it is empty or a batch fails.
    async fn send_spooled(&mut self) -> Result<usize, ExportError> {
        let mut sent = 0;
        while let Some(batch) = self.spool.oldest(self.batch).await? {
            self.sink.deliver(&batch.events).await?;
            self.spool.remove(&batch).await?;
            sent += batch.events.len();
            tracing::debug!(
                receiver = self.sink.name(),
                events = batch.events.len(),
                "events exported"
            );
        }
        Ok(sent)
    }
}
