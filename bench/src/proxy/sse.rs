//! A tiny server-sent-events backend: every request gets `text/event-stream`
//! with one event at once and then one every 100 ms, until the client goes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Time between events.
const EVERY: Duration = Duration::from_millis(100);

/// The event stream of one response: the first event at once (not through
/// the timer, whose millisecond granularity would delay it), then one per tick.
struct Events {
    ticks: tokio::time::Interval,
    sent: u64,
}

impl Events {
    fn new() -> Self {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { ticks, sent: 0 }
    }
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent > 0 {
            ready!(self.ticks.poll_tick(cx));
        }
        let n = self.sent;
        self.sent += 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
            "id: {n}\ndata: tick {n}\n\n"
        ))))))
    }
}

/// The running backend; stops (with every open stream) when dropped.
pub struct SseBackend {
    addr: SocketAddr,
    _tasks: JoinSet<()>,
}

impl SseBackend {
    /// Starts the backend on an ephemeral port of 127.0.0.1.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(async move {
                    let service = service_fn(|_request: Request<hyper::body::Incoming>| async {
                        Response::builder()
                            .header("content-type", "text/event-stream")
                            .header("cache-control", "no-cache")
                            .body(Events::new())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, _tasks: tasks })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
