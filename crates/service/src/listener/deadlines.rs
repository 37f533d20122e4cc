//! Connection deadlines (SEC-9): what a connection has been doing, and whether it
//! has overstayed.
//!
//! - From accept, a connection has `header_timeout` to deliver the complete head
//!   of its first request: TLS handshake, HTTP/2 preface and SETTINGS included. A
//!   socket that sends nothing, or dribbles, is closed at the deadline.
//! - With no request in flight, a connection is idle; after `idle_timeout` it is
//!   closed (an HTTP/2 connection with GOAWAY). A request is in flight from its
//!   head until its response body is finished or dropped, so a long download, a
//!   server-sent event stream or a slow upload never counts as idle.
//! - An idle HTTP/1.1 connection that starts sending the next request has
//!   `header_timeout` from that first byte to the complete head.
//!
//! The connection's reads, its requests and its supervisor share one
//! [`ConnectionActivity`]; the supervisor asks it for a [`Verdict`] whenever the
//! next deadline comes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body as HttpBody, Bytes, Frame, SizeHint};
use tokio::time::Instant;

use crate::config::Limits;

/// Why a connection is closed before its client closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overstay {
    /// No complete request head within `header_timeout` of accept.
    NoRequestHead,
    /// A later HTTP/1.1 request head not complete within `header_timeout` of
    /// its first byte.
    SlowRequestHead,
    /// No request in flight for `idle_timeout`.
    Idle,
}

impl Overstay {
    /// For logs.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Overstay::NoRequestHead => "no request head within the header timeout; connection closed",
            Overstay::SlowRequestHead => "request head not complete within the header timeout; connection closed",
            Overstay::Idle => "idle for the idle timeout; connection closed",
        }
    }
}

/// What the supervisor should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing yet; ask again at this instant.
    Keep {
        /// The next deadline (or a re-check while requests are in flight).
        recheck_at: Instant,
    },
    /// The connection has overstayed.
    Close(Overstay),
}

/// One connection's activity.
#[derive(Debug)]
pub(crate) struct ConnectionActivity {
    opened: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Set while idle with no byte read since: the next read marks the start of
    /// a request head. Checked on every read without taking the lock.
    awaiting_first_byte: AtomicBool,
    state: Mutex<ActivityState>,
}

#[derive(Debug)]
struct ActivityState {
    /// Request heads received so far.
    heads: u64,
    /// Requests whose response is not finished yet.
    in_flight: usize,
    /// When the connection last became idle.
    idle_since: Instant,
    /// When the first byte of the next request arrived, while idle.
    head_started: Option<Instant>,
    /// Whether the connection speaks HTTP/2 (its reads are not request heads).
    http2: bool,
}

impl ConnectionActivity {
    /// A connection accepted at `opened`.
    pub(crate) fn new(opened: Instant, limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            opened,
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            awaiting_first_byte: AtomicBool::new(false),
            state: Mutex::new(ActivityState {
                heads: 0,
                in_flight: 0,
                idle_since: opened,
                head_started: None,
                http2: false,
            }),
        })
    }

    /// The deadline of the first request head (and of the TLS handshake in it).
    pub(crate) fn first_head_deadline(&self) -> Instant {
        self.opened + self.header_timeout
    }

    fn state(&self) -> MutexGuard<'_, ActivityState> {
        // The state is plain counters: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request head has arrived; the request is in flight until the returned
    /// guard drops (with its response body).
    pub(crate) fn request_started(self: &Arc<Self>, http2: bool) -> RequestInFlight {
        self.awaiting_first_byte.store(false, Ordering::Relaxed);
        let mut state = self.state();
        state.heads += 1;
        state.in_flight += 1;
        state.head_started = None;
        state.http2 |= http2;
        RequestInFlight { activity: self.clone() }
    }

    fn request_finished_at(&self, now: Instant) {
        let mut state = self.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 {
            state.idle_since = now;
            state.head_started = None;
            self.awaiting_first_byte.store(true, Ordering::Relaxed);
        }
    }

    /// Bytes arrived from the client at `now`.
    fn bytes_read_at(&self, now: Instant) {
        // A load first: the common case (not idle) costs no write.
        if self.awaiting_first_byte.load(Ordering::Relaxed) && self.awaiting_first_byte.swap(false, Ordering::Relaxed) {
            let mut state = self.state();
            if state.in_flight == 0 && state.head_started.is_none() {
                state.head_started = Some(now);
            }
        }
    }

    /// Whether a request may be on its way with nothing in flight: no request
    /// head yet on a new connection (its bytes may be unread in the socket), or
    /// the first bytes of the next one read. Closing such a connection at
    /// shutdown would reset the request instead of answering it.
    pub(crate) fn request_arriving(&self) -> bool {
        let state = self.state();
        state.in_flight == 0 && (state.heads == 0 || state.head_started.is_some())
    }

    /// Whether the connection has overstayed at `now`, or when to ask again.
    pub(crate) fn verdict(&self, now: Instant) -> Verdict {
        let state = self.state();
        let (deadline, overstay) = if state.heads == 0 {
            (self.first_head_deadline(), Overstay::NoRequestHead)
        } else if state.in_flight > 0 {
            return Verdict::Keep {
                recheck_at: now + self.idle_timeout,
            };
        } else {
            match state.head_started {
                Some(started) if !state.http2 => (started + self.header_timeout, Overstay::SlowRequestHead),
                _ => (state.idle_since + self.idle_timeout, Overstay::Idle),
            }
        };
        if now >= deadline {
            Verdict::Close(overstay)
        } else {
            Verdict::Keep { recheck_at: deadline }
        }
    }
}

/// Keeps a request in flight until dropped.
#[derive(Debug)]
pub(crate) struct RequestInFlight {
    activity: Arc<ConnectionActivity>,
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.activity.request_finished_at(Instant::now());
    }
}

/// A response body that keeps its request in flight until it is finished or
/// dropped.
pub(crate) struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: RequestInFlight,
}

impl TrackedBody {
    /// Wraps `inner`.
    pub(crate) fn new(inner: axum::body::Body, in_flight: RequestInFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client stream tells the connection's activity when bytes arrive
/// (`postern_netio::ReadsObserved`).
impl postern_netio::ReadObserver for ConnectionActivity {
    fn bytes_read(&self) {
        self.bytes_read_at(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            ..Limits::default()
        }
    }

    /// Starts a request and finishes it at `at` (the guard's own drop would
    /// take the wall clock).
    fn request(activity: &Arc<ConnectionActivity>, http2: bool, at: Instant) {
        std::mem::forget(activity.request_started(http2));
        activity.request_finished_at(at);
    }

    #[test]
    fn a_request_is_arriving_until_its_head_and_again_with_the_next_bytes() {
        let opened = Instant::now();
        let activity = ConnectionActivity::new(opened, &limits());
        assert!(
            activity.request_arriving(),
            "a new connection may hold an unread request"
        );
        let in_flight = activity.request_started(false);
        assert!(!activity.request_arriving(), "in flight: the request is being answered");
        std::mem::forget(in_flight);
        activity.request_finished_at(opened + Duration::from_secs(1));
        assert!(!activity.request_arriving(), "idle with nothing read: may be closed");
        activity.bytes_read_at(opened + Duration::from_secs(2));
        assert!(activity.request_arriving(), "the next request's first bytes were read");
    }

    #[test]
    fn first_head_then_idle_then_next_head() {
        let opened = Instant::now();
        let activity = ConnectionActivity::new(opened, &limits());
        let s = Duration::from_secs;
        activity.bytes_read_at(opened + s(1));
        assert_eq!(
            activity.verdict(opened + s(9)),
            Verdict::Keep {
                recheck_at: opened + s(10)
            }
        );
        assert_eq!(
            activity.verdict(opened + s(10)),
            Verdict::Close(Overstay::NoRequestHead),
            "bytes without a complete head do not help"
        );

        let in_flight = activity.request_started(false);
        assert!(
            matches!(activity.verdict(opened + s(500)), Verdict::Keep { .. }),
            "a request in flight is never idle"
        );
        std::mem::forget(in_flight);
        let idle_since = opened + s(3);
        activity.request_finished_at(idle_since);
        assert_eq!(
            activity.verdict(idle_since + s(30)),
            Verdict::Keep {
                recheck_at: idle_since + s(60)
            },
            "idle: the head deadline no longer applies"
        );
        assert_eq!(activity.verdict(idle_since + s(60)), Verdict::Close(Overstay::Idle));

        // The next request's first byte starts its head deadline.
        activity.bytes_read_at(idle_since + s(5));
        activity.bytes_read_at(idle_since + s(9));
        assert_eq!(
            activity.verdict(idle_since + s(14)),
            Verdict::Keep {
                recheck_at: idle_since + s(15)
            }
        );
        assert_eq!(
            activity.verdict(idle_since + s(15)),
            Verdict::Close(Overstay::SlowRequestHead)
        );

        // Its head completes: idle again after its response, from then.
        request(&activity, false, idle_since + s(16));
        assert_eq!(
            activity.verdict(idle_since + s(20)),
            Verdict::Keep {
                recheck_at: idle_since + s(76)
            }
        );
    }

    #[test]
    fn http2_reads_are_not_request_heads() {
        let opened = Instant::now();
        let activity = ConnectionActivity::new(opened, &limits());
        request(&activity, true, opened);
        activity.bytes_read_at(opened + Duration::from_secs(1));
        assert_eq!(
            activity.verdict(opened + Duration::from_secs(59)),
            Verdict::Keep {
                recheck_at: opened + Duration::from_secs(60)
            },
            "a PING is not the start of a request head"
        );
    }
}
