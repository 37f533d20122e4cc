//! Connection deadlines at the front door (SEC-9), with short configured limits:
//! sockets that never deliver a request head (thousands of them, or an HTTP/2
//! preface dribbled a byte at a time) are closed at the head deadline while other
//! clients are served; idle keep-alive HTTP/1.1 and HTTP/2 connections are closed
//! after the idle timeout; a long event stream is not cut by either.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use postern_service::config::Limits;
use postern_testkit::TestService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::proxy_harness::{AppOptions, ProxyBench};

/// Time the server may take beyond a deadline before the client sees the close.
const SLACK: Duration = Duration::from_millis(1500);
/// How much earlier than its deadline a close may be seen (clock granularity).
const EARLY: Duration = Duration::from_millis(100);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn limits(header_timeout: Duration, idle_timeout: Duration) -> Limits {
    Limits {
        header_timeout,
        idle_timeout,
        ..Limits::default()
    }
}

async fn service(header_timeout: Duration, idle_timeout: Duration) -> TestService {
    TestService::builder()
        .limits(limits(header_timeout, idle_timeout))
        .start()
        .await
        .unwrap()
}

/// Reads (and discards) until the server closes the connection; returns when
/// that was seen, or `None` if it stayed open for `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

fn assert_closed_at(what: &str, closed: Option<Instant>, from: Instant, deadline: Duration) {
    let closed = closed.unwrap_or_else(|| panic!("{what}: still open {:?} after the deadline", SLACK));
    let after = closed - from;
    assert!(
        after + EARLY >= deadline && after <= deadline + SLACK,
        "{what}: closed after {after:?}, the deadline is {deadline:?}"
    );
}

/// The soft limit on open files of this process, from `/proc/self/limits`.
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// A complete HTTP/1.1 request for `/healthz`, keeping the connection open.
fn healthz_request(addr: SocketAddr) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return head;
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    }
}

/// 2,000 sockets that send nothing are all closed at the head deadline, while a
/// client on fresh connections and one on a kept-alive connection are answered
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_silent_sockets_are_closed_at_the_head_deadline() {
    const SOCKETS: usize = 2000;
    let needed = 2 * SOCKETS as u64 + 500;
    assert!(
        open_files_limit() >= needed,
        "this test holds {SOCKETS} sockets at both ends: raise `ulimit -n` to at least {needed}"
    );
    let deadline = Duration::from_secs(2);
    let svc = service(deadline, Duration::from_secs(60)).await;
    let addr = svc.local_addr_for_tests();

    let mut silent = Vec::with_capacity(SOCKETS);
    for _ in 0..SOCKETS / 100 {
        let batch = (0..100).map(|_| async move { (TcpStream::connect(addr).await.unwrap(), Instant::now()) });
        silent.extend(futures_util::future::join_all(batch).await);
    }
    let watchers: Vec<_> = silent
        .into_iter()
        .map(|(mut stream, opened)| {
            tokio::spawn(async move { (closed_within(&mut stream, deadline + SLACK * 2).await, opened) })
        })
        .collect();

    // Meanwhile others are served, on new connections and on a kept-alive one.
    let url = format!("{}/healthz", svc.url());
    let fresh = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let kept = reqwest::Client::new();
    let until = Instant::now() + deadline + SLACK;
    let mut answered = 0;
    while Instant::now() < until {
        for client in [&fresh, &kept] {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            answered += 1;
        }
        postern_testkit::hold_for(Duration::from_millis(100)).await; // pacing
    }
    assert!(answered > 20, "{answered}");

    let mut early_or_late = Vec::new();
    for watcher in watchers {
        let (closed, opened) = watcher.await.unwrap();
        match closed {
            Some(at) if at - opened + EARLY >= deadline && at - opened <= deadline + SLACK => {}
            other => early_or_late.push(other.map(|at| at - opened)),
        }
    }
    assert!(
        early_or_late.is_empty(),
        "{} of {SOCKETS} silent sockets not closed at the {deadline:?} deadline (None: still open): {:?}",
        early_or_late.len(),
        &early_or_late[..early_or_late.len().min(10)]
    );
    let r = fresh.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200, "served after the flood too");
}

/// An HTTP/2 client that sends its preface a byte at a time, or the preface and
/// SETTINGS but never a request, is cut at the head deadline; a real HTTP/2
/// client is served.
#[tokio::test]
async fn a_slow_http2_preface_is_cut_at_the_head_deadline() {
    let deadline = Duration::from_secs(2);
    let svc = service(deadline, Duration::from_secs(60)).await;
    let addr = svc.local_addr_for_tests();

    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{}/healthz", svc.url())).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));

    let opened = Instant::now();
    let dribbling = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = dribbling.into_split();
    let dribble = tokio::spawn(async move {
        for byte in PREFACE {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            postern_testkit::hold_for(Duration::from_millis(400)).await; // a trickling client, on purpose
        }
    });
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(deadline + SLACK, async {
        loop {
            match read.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok();
    dribble.abort();
    assert_closed_at("preface a byte every 400 ms", closed, opened, deadline);

    let opened = Instant::now();
    let mut settled = TcpStream::connect(addr).await.unwrap();
    settled.write_all(PREFACE).await.unwrap();
    settled.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let closed = closed_within(&mut settled, deadline + SLACK).await;
    assert_closed_at("preface and SETTINGS, no request", closed, opened, deadline);
}

/// An idle keep-alive HTTP/1.1 connection outlives the head deadline and is
/// closed after the idle timeout, counted from its last response; a request head
/// started while idle must be complete within the head deadline.
#[tokio::test]
async fn idle_http1_keep_alive_is_closed_after_the_idle_timeout() {
    let (head, idle) = (Duration::from_secs(1), Duration::from_secs(3));
    let svc = service(head, idle).await;
    let addr = svc.local_addr_for_tests();

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(healthz_request(addr).as_bytes()).await.unwrap();
    assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
    // Outwaits the service's idle deadline, the timer under test.
    postern_testkit::hold_for(head + Duration::from_millis(800)).await;
    conn.write_all(healthz_request(addr).as_bytes()).await.unwrap();
    assert!(
        read_response(&mut conn).await.starts_with("HTTP/1.1 200"),
        "still open, idle past the head deadline"
    );
    let idle_from = Instant::now();
    let closed = closed_within(&mut conn, idle + SLACK).await;
    assert_closed_at("idle keep-alive connection", closed, idle_from, idle);

    // A second request whose head never completes: the head deadline, from its
    // first byte.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(healthz_request(addr).as_bytes()).await.unwrap();
    read_response(&mut slow).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: ").await.unwrap();
    let started = Instant::now();
    let closed = closed_within(&mut slow, head + SLACK).await;
    assert_closed_at("request head never completed", closed, started, head);
}

/// Reads HTTP/2 frames as `(type, flags, stream, payload)`; `None` at the end.
async fn read_frame(stream: &mut TcpStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut header = [0u8; 9];
    stream.read_exact(&mut header).await.ok()?;
    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let stream_id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some((header[3], header[4], stream_id, payload))
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HTTP/2 connection with no stream open is closed with GOAWAY after the
/// idle timeout.
#[tokio::test]
async fn idle_http2_connection_is_closed_with_goaway() {
    const SETTINGS: u8 = 4;
    const HEADERS: u8 = 1;
    const GOAWAY: u8 = 7;
    let (head, idle) = (Duration::from_secs(1), Duration::from_secs(3));
    let svc = service(head, idle).await;
    let addr = svc.local_addr_for_tests();

    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(PREFACE).await.unwrap();
    conn.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // GET /healthz in HPACK: :method GET, :scheme http (indexed), :path and
    // :authority as literals without indexing.
    let authority = addr.to_string();
    let mut block = vec![0x82, 0x86, 0x04, 8];
    block.extend_from_slice(b"/healthz");
    block.extend_from_slice(&[0x01, u8::try_from(authority.len()).unwrap()]);
    block.extend_from_slice(authority.as_bytes());
    conn.write_all(&frame(HEADERS, 0x5, 1, &block)).await.unwrap();

    let mut answered = None;
    let mut goaway = None;
    loop {
        let Some((kind, flags, stream, _)) = tokio::time::timeout(idle + SLACK, read_frame(&mut conn))
            .await
            .expect("the idle connection stayed open")
        else {
            break;
        };
        if kind == SETTINGS && flags & 1 == 0 {
            conn.write_all(&frame(SETTINGS, 1, 0, &[])).await.unwrap();
        }
        if stream == 1 && flags & 1 == 1 {
            answered = Some(Instant::now());
        }
        if kind == GOAWAY {
            goaway = Some(Instant::now());
        }
    }
    let answered = answered.expect("the request was answered");
    assert_closed_at("idle HTTP/2 connection", goaway, answered, idle);
}

/// A server-sent event stream longer than both deadlines, quiet on the client's
/// side all along, is not cut: a request in flight is never idle.
#[tokio::test]
async fn a_long_event_stream_is_not_cut() {
    const EVENTS: usize = 8;
    let limits = limits(Duration::from_secs(1), Duration::from_secs(2));
    let bench = ProxyBench::start_with(TestService::builder().limits(limits)).await;
    bench.publish("feed", "feed.acme.test", AppOptions::default()).await;
    let _c = bench.start_connector("gw-1", None).await;
    let client = bench.client(&["feed.acme.test"]);
    let started = Instant::now();
    let mut r = client
        .get(bench.url("feed.acme.test", &format!("/sse?n={EVENTS}&every=500")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let events = String::from_utf8(body).unwrap().matches("id: ").count();
    assert_eq!(events, EVENTS, "every event arrived");
    assert!(
        started.elapsed() >= Duration::from_millis(3000),
        "the stream lasted past both deadlines: {:?}",
        started.elapsed()
    );
}

/// At shutdown the listener stops accepting, closes an idle keep-alive
/// connection at once, and lets a stream in flight finish within the grace
/// period. (The connector's own requests to the control listener keep the drain
/// going until the grace period ends, as they did before the deadlines.)
#[tokio::test]
async fn shutdown_closes_idle_connections_and_lets_streams_finish() {
    const EVENTS: usize = 6;
    let grace = Duration::from_secs(4);
    let limits = Limits {
        shutdown_grace: grace,
        ..Limits::default()
    };
    let bench = ProxyBench::start_with(TestService::builder().limits(limits)).await;
    bench.publish("feed", "feed.acme.test", AppOptions::default()).await;
    let _c = bench.start_connector("gw-1", None).await;
    let client = bench.client(&["feed.acme.test"]);
    let addr = bench.svc.local_addr_for_tests();
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(healthz_request(addr).as_bytes()).await.unwrap();
    read_response(&mut idle).await;
    let mut stream = client
        .get(bench.url("feed.acme.test", &format!("/sse?n={EVENTS}&every=300")))
        .send()
        .await
        .unwrap();
    let mut body = stream.chunk().await.unwrap().unwrap().to_vec();

    let stopping = tokio::spawn(bench.svc.stop());
    assert!(
        closed_within(&mut idle, Duration::from_secs(1)).await.is_some(),
        "the idle connection is closed at once"
    );
    let refused_by = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < refused_by, "still accepting during shutdown");
        postern_testkit::poll_pause(Duration::from_millis(20)).await;
    }
    while let Some(chunk) = stream.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let events = String::from_utf8(body).unwrap().matches("id: ").count();
    assert_eq!(events, EVENTS, "the stream in flight finished");
    tokio::time::timeout(grace + SLACK, stopping)
        .await
        .expect("stopped within the grace period")
        .unwrap();
}
