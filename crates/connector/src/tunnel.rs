//! The HTTP/2 server that runs on an upgraded tunnel connection, on `h2`
//! directly: the service is the client and opens one stream per user request,
//! each served in a task of its own ([`stream`]).
//!
//! (hyper's HTTP/2 server did the same with a layer of its own between: its
//! connection and stream state machines, a body type of its own wrapping
//! `h2`'s, and the executor's boxing per stream. The connection loop here
//! accepts streams, pings the service and drains; nothing else.)

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use postern_netio::{BatchedWrites, ReadObserver, ReadsObserved};
use postern_proto::tunnel::{
    DEFAULT_CONNECTION_WINDOW, DEFAULT_MAX_FRAME_SIZE, DEFAULT_STREAM_WINDOW, MAX_FRAME_SIZE, MIN_FRAME_SIZE,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use crate::TunnelError;
use crate::apps::AppTable;
use crate::backend::Backends;
use crate::error::chain;

mod stream;

/// Largest HTTP/2 window the protocol allows.
const MAX_WINDOW: u32 = (1 << 31) - 1;
/// Smallest window accepted in the options (the protocol's default).
const MIN_WINDOW: u32 = 65_535;
/// Most local stream errors (resets sent for malformed frames of the service)
/// before the connection is ended (as hyper's server had it).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// HTTP/2 settings and deadlines of one tunnel connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelOptions {
    /// Ping the service at this interval. Default 20 s.
    pub keep_alive_interval: Duration,
    /// A ping unanswered this long ends the tunnel (it is redialled). A tunnel
    /// with no traffic at all from the service for interval + timeout + 1 s is
    /// ended too, whatever state HTTP/2 is in. Default 10 s.
    pub keep_alive_timeout: Duration,
    /// Streams (user requests) the service may have open at once on one tunnel.
    /// An open WebSocket holds one for its whole life, idle or not. Default
    /// 8192 (16,384 with the connector's two tunnels).
    pub max_concurrent_streams: u32,
    /// Flow-control window per stream, in bytes: how much of a request body may be
    /// in flight towards a backend that has not read it yet. Default 4 MiB, as
    /// the service's for responses: a 1 GiB upload on loopback waited for
    /// window updates with less (0.85× the rate with 1 MiB, 0.73× with 256 KiB).
    pub stream_window: u32,
    /// Flow-control window of the whole connection, in bytes: what a tunnel
    /// holds at most of request bodies the backends have not taken. Default
    /// 8 MiB, as the service's.
    pub connection_window: u32,
    /// Largest HTTP/2 frame the service may send (a request body's bytes come
    /// in frames of up to this size), between 16 KiB and 16 MiB. Default 256
    /// KiB, as the service's for responses (the service's frames follow the
    /// chunks it reads from the user, so uploads measured the same as with
    /// 64 KiB), while a frame of another stream waits behind one at most about
    /// a quarter of a millisecond at 1 GB/s.
    pub max_frame_size: u32,
    /// Largest request head the service may send, in bytes. Default 64 KiB.
    pub max_header_list_size: u32,
    /// Response bytes buffered per stream before the backend is read no further.
    /// Default 256 KiB.
    pub max_send_buf_size: usize,
    /// After a drain starts (GOAWAY sent), requests in flight get this long to
    /// finish before the connection is closed. Default 30 s.
    pub drain_grace: Duration,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        Self {
            keep_alive_interval: Duration::from_secs(20),
            keep_alive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 8192,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: 64 * 1024,
            max_send_buf_size: 256 * 1024,
            drain_grace: Duration::from_secs(30),
        }
    }
}

impl TunnelOptions {
    /// Checks every value and reports all problems at once.
    pub fn validate(&self) -> Result<(), TunnelError> {
        let mut problems = Vec::new();
        if self.keep_alive_interval.is_zero() || self.keep_alive_timeout.is_zero() {
            problems.push("keep-alive interval and timeout must be above zero".to_owned());
        }
        if self.max_concurrent_streams == 0 {
            problems.push("max_concurrent_streams must be at least 1".to_owned());
        }
        for (name, w) in [
            ("stream_window", self.stream_window),
            ("connection_window", self.connection_window),
        ] {
            if !(MIN_WINDOW..=MAX_WINDOW).contains(&w) {
                problems.push(format!("{name} must be between {MIN_WINDOW} and {MAX_WINDOW}"));
            }
        }
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&self.max_frame_size) {
            problems.push(format!(
                "max_frame_size must be between {MIN_FRAME_SIZE} and {MAX_FRAME_SIZE}"
            ));
        }
        if self.max_header_list_size < 1024 || self.max_send_buf_size < 1024 {
            problems.push("max_header_list_size and max_send_buf_size must be at least 1 KiB".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TunnelError::Config(problems.join("; ")))
        }
    }

    /// Longest silence from the service before the tunnel counts as dead.
    fn silence_limit(&self) -> Duration {
        self.keep_alive_interval + self.keep_alive_timeout + Duration::from_secs(1)
    }
}

/// Serves the service's HTTP/2 streams on `io` (an upgraded tunnel connection),
/// forwarding each to its app from the current table in `apps` (read per stream,
/// so a new configuration applies to the next request). Returns when the
/// connection ends: `Ok` when it closed cleanly or was drained, an error when it
/// broke or went silent.
///
/// When `drain` completes the server sends GOAWAY (no new streams), lets streams
/// in flight finish for up to [`TunnelOptions::drain_grace`], then closes.
pub async fn serve_tunnel<IO, D>(
    io: IO,
    apps: watch::Receiver<Arc<AppTable>>,
    backends: Backends,
    options: &TunnelOptions,
    drain: D,
) -> Result<(), TunnelError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Future<Output = ()>,
{
    options.validate()?;
    let activity = Arc::new(Activity::new());
    // Answers finished in one turn of the scheduler leave in one write.
    let io = BatchedWrites::new(ReadsObserved::new(io, activity.clone()));
    let handshake = h2::server::Builder::new()
        .initial_window_size(options.stream_window)
        .initial_connection_window_size(options.connection_window)
        .max_frame_size(options.max_frame_size)
        .max_header_list_size(options.max_header_list_size)
        .max_concurrent_streams(options.max_concurrent_streams)
        .max_send_buffer_size(options.max_send_buf_size)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io);
    let silence = options.silence_limit();
    let mut connection = match tokio::time::timeout(silence, handshake).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => return Err(TunnelError::Transport(chain(&e))),
        Err(_) => {
            return Err(TunnelError::Transport(format!(
                "no HTTP/2 preface from the service within {silence:?}"
            )));
        }
    };
    let keep_alive = keep_alive(connection.ping_pong(), options);
    tokio::pin!(keep_alive);
    tokio::pin!(drain);

    let mut check = tokio::time::interval((silence / 4).max(Duration::from_millis(50)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => spawn_stream(request, respond, &apps, &backends),
                Some(Err(e)) => return Err(TunnelError::Transport(chain(&e))),
                None => return Ok(()),
            },
            () = &mut drain => break,
            e = &mut keep_alive => return Err(e),
            _ = check.tick() => {
                if activity.silent_for() > silence {
                    return Err(TunnelError::Transport(format!(
                        "nothing from the service for {silence:?}: the tunnel is dead"
                    )));
                }
            }
        }
    }
    connection.graceful_shutdown();
    // Streams opened before the GOAWAY are still served; the connection ends
    // once every stream is done.
    let finish = async {
        while let Some(accepted) = connection.accept().await {
            let (request, respond) = accepted.map_err(|e| TunnelError::Transport(chain(&e)))?;
            spawn_stream(request, respond, &apps, &backends);
        }
        Ok(())
    };
    match tokio::time::timeout(options.drain_grace, finish).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(grace = ?options.drain_grace, "drain grace period over; closing the tunnel with requests in flight");
            Ok(())
        }
    }
}

/// Pings the service every keep-alive interval; resolves with the error that
/// ends the tunnel when a ping goes unanswered for the keep-alive timeout.
async fn keep_alive(ping_pong: Option<h2::PingPong>, options: &TunnelOptions) -> TunnelError {
    let Some(mut ping_pong) = ping_pong else {
        return std::future::pending().await;
    };
    let (interval, timeout) = (options.keep_alive_interval, options.keep_alive_timeout);
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, ping_pong.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            // The connection itself reports its error.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => {
                return TunnelError::Transport(format!(
                    "keep-alive ping not answered within {timeout:?}: the tunnel is dead"
                ));
            }
        }
    }
}

/// Serves one stream in a task of its own, with the app table current now.
fn spawn_stream(
    request: http::Request<h2::RecvStream>,
    respond: h2::server::SendResponse<Bytes>,
    apps: &watch::Receiver<Arc<AppTable>>,
    backends: &Backends,
) {
    let table = apps.borrow().clone();
    tokio::spawn(stream::serve(request, respond, table, backends.clone()));
}

/// When bytes last came from the service.
struct Activity {
    start: Instant,
    last_read_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The tunnel connection notes each read (`postern_netio::ReadsObserved`).
impl ReadObserver for Activity {
    fn bytes_read(&self) {
        self.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_report_every_problem() {
        assert_eq!(TunnelOptions::default().validate(), Ok(()));
        let bad = TunnelOptions {
            keep_alive_interval: Duration::ZERO,
            max_concurrent_streams: 0,
            stream_window: 10,
            max_frame_size: 1 << 24,
            ..TunnelOptions::default()
        };
        let Err(TunnelError::Config(text)) = bad.validate() else {
            unreachable!("bad options were accepted")
        };
        assert_eq!(text.matches(';').count(), 3, "{text}");
        assert!(
            text.contains("max_frame_size must be between 16384 and 16777215"),
            "{text}"
        );
    }
}
