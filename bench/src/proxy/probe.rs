//! A minimal HTTP/1.1 client over a plain TCP socket: one checked request
//! before each load (is the row serving what it should?) and the SSE
//! first-event timing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Responses larger than this are not read whole by a probe.
const MAX_RESPONSE: usize = 1 << 20;

/// What one probe got back.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The status code.
    pub status: u16,
    /// The body's length (after the headers; chunked bodies as sent).
    pub body_len: usize,
    /// The `x-postern-error` header or the body's first line, for messages.
    pub detail: String,
}

impl Probe {
    /// Whether this is a 200 with a body of `len` bytes.
    pub fn is_ok_with(&self, len: usize) -> bool {
        self.status == 200 && self.body_len == len
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}, {} body bytes", self.status, self.body_len)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// Where a row's requests go: the listener, the `Host` they name, and the
/// session cookie they carry, if the app wants one.
#[derive(Clone, Debug)]
pub struct Target {
    /// The listener.
    pub addr: SocketAddr,
    /// `Host` of every request.
    pub host: String,
    /// `Cookie` of every request (a signed-in session), if any.
    pub cookie: Option<String>,
}

impl Target {
    /// Requests to `addr` naming `host`, without cookies.
    pub fn new(addr: SocketAddr, host: impl Into<String>) -> Self {
        Self {
            addr,
            host: host.into(),
            cookie: None,
        }
    }
}

fn request(host: &str, cookie: Option<&str>, close: bool) -> String {
    let connection = if close { "close" } else { "keep-alive" };
    let cookie = cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default();
    format!("GET / HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n{cookie}Connection: {connection}\r\n\r\n")
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `GET /` to `target` with `Connection: close`, read to the end.
pub async fn get(target: &Target, within: Duration) -> anyhow::Result<Probe> {
    tokio::time::timeout(within, get_inner(target))
        .await
        .with_context(|| format!("no complete answer from {} within {within:?}", target.addr))?
}

async fn get_inner(target: &Target) -> anyhow::Result<Probe> {
    let mut stream = TcpStream::connect(target.addr).await?;
    stream
        .write_all(request(&target.host, target.cookie.as_deref(), true).as_bytes())
        .await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > MAX_RESPONSE {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = header_end(&buf).context("the connection closed before the response headers ended")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let body = &buf[end..];
    let error_header = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-postern-error")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let detail = if !error_header.is_empty() {
        format!("x-postern-error: {error_header}")
    } else if status != 200 {
        String::from_utf8_lossy(body)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .chars()
            .take(120)
            .collect()
    } else {
        String::new()
    };
    Ok(Probe {
        status,
        body_len: body.len(),
        detail,
    })
}

/// Retries [`get`] until it returns a 200 with a `len`-byte body, failing at
/// the deadline with the last answer.
pub async fn wait_ok(target: &Target, len: usize, within: Duration) -> anyhow::Result<Probe> {
    let deadline = Instant::now() + within;
    let (addr, host) = (target.addr, &target.host);
    loop {
        let last = get(target, Duration::from_secs(5)).await;
        match &last {
            Ok(p) if p.is_ok_with(len) => return last,
            _ if Instant::now() >= deadline => {
                return match last {
                    Ok(p) => bail!("{addr} (Host {host}) answered {p}, not 200 with {len} bytes"),
                    Err(e) => Err(e.context(format!("{addr} (Host {host}) gave no good answer within {within:?}"))),
                };
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Opens a connection, sends `GET /`, and returns the time from the request's
/// last byte written to the first byte of the first event (`data:`) read.
pub async fn first_event(addr: SocketAddr, host: &str, within: Duration) -> anyhow::Result<Duration> {
    tokio::time::timeout(within, first_event_inner(addr, host))
        .await
        .with_context(|| format!("no event from {addr} within {within:?}"))?
}

async fn first_event_inner(addr: SocketAddr, host: &str) -> anyhow::Result<Duration> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    stream.write_all(request(host, None, false).as_bytes()).await?;
    let sent = Instant::now();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!(
                "the connection closed before the first event: {:?}",
                String::from_utf8_lossy(&buf).chars().take(200).collect::<String>()
            );
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = header_end(&buf) {
            if !buf.starts_with(b"HTTP/1.1 200") && !buf.starts_with(b"HTTP/1.0 200") {
                let head = String::from_utf8_lossy(&buf[..end]);
                bail!("not a 200: {}", head.lines().next().unwrap_or_default());
            }
            if buf[end..].windows(5).any(|w| w == b"data:") {
                return Ok(sent.elapsed());
            }
        }
        if buf.len() > MAX_RESPONSE {
            bail!("no event in the first {MAX_RESPONSE} bytes");
        }
    }
}
