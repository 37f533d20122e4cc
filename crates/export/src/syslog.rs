//! The syslog receiver: RFC 5424 messages, framed by octet counting (RFC 6587
//! §3.4.1), over TCP or TLS (RFC 5425). The MSG part is the event's JSON.
//!
//! Syslog over TCP has no acknowledgement, and a write that succeeded may still
//! be lost when the receiver goes away. So each batch goes over a connection of
//! its own: the frames, then our half of the connection closed (with TLS,
//! `close_notify`), then we wait for the receiver to close its half. A
//! receiver closes only once it has read everything up to our end of stream,
//! so that close is the receipt; without it the batch is sent again.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::DeliveryError;
use crate::event::ExportEvent;
use crate::sink::Sink;

/// Default port of syslog over TCP.
const TCP_PORT: u16 = 514;
/// Default port of syslog over TLS (RFC 5425).
const TLS_PORT: u16 = 6514;
/// Time to connect (and finish the TLS handshake).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to send a batch and get the receiver's close.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// `APP-NAME` of the messages.
const APP_NAME: &str = "postern";

/// Where a syslog receiver listens: `tcp://host[:port]` or `tls://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogTarget {
    host: String,
    port: u16,
    tls: bool,
}

impl SyslogTarget {
    /// Parses `tcp://host[:port]` (default port 514) or `tls://host[:port]`
    /// (default 6514).
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let tls = match url.scheme() {
            "tcp" => false,
            "tls" => true,
            other => return Err(format!("scheme {other:?} must be tcp or tls")),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty() {
            return Err(format!(
                "{text:?} must be tcp://host:port or tls://host:port, nothing more"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(format!("{text:?} names no host")),
        };
        let port = url.port().unwrap_or(if tls { TLS_PORT } else { TCP_PORT });
        Ok(Self { host, port, tls })
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for SyslogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "tcp" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `HOSTNAME` as RFC 5424 allows it: printable US-ASCII without spaces, at
/// most 255 characters; `-` when nothing is left.
fn header_hostname(name: &str) -> String {
    let clean: String = name.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    if clean.is_empty() { "-".to_owned() } else { clean }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME postern - MSGID - JSON`.
pub fn message(hostname: &str, event: &ExportEvent) -> Result<String, serde_json::Error> {
    Ok(format!(
        "<{}>1 {} {} {APP_NAME} - {} - {}",
        event.syslog_priority(),
        event.time(),
        header_hostname(hostname),
        event.kind(),
        event.to_json_line()?
    ))
}

/// A message framed by octet counting: `LEN SP MSG`.
pub fn frame(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// Sends events to a syslog receiver.
#[derive(Clone)]
pub struct SyslogSink {
    target: SyslogTarget,
    hostname: String,
    tls: Option<TlsConnector>,
}

impl fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyslogSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl SyslogSink {
    /// A sink for `target`; messages name `hostname`. `tls` is used when the
    /// target is `tls://`.
    pub fn new(target: SyslogTarget, hostname: String, tls: Arc<rustls::ClientConfig>) -> Self {
        let tls = target.tls.then(|| TlsConnector::from(tls));
        Self { target, hostname, tls }
    }

    fn timeout(&self, secs: Duration) -> DeliveryError {
        DeliveryError::Timeout {
            target: self.target.to_string(),
            secs: secs.as_secs(),
        }
    }

    async fn connect_and_send(&self, bytes: &[u8]) -> Result<(), DeliveryError> {
        let target = self.target.to_string();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.target.host.as_str(), self.target.port)),
        )
        .await
        .map_err(|_| self.timeout(CONNECT_TIMEOUT))?
        .map_err(|source| DeliveryError::Connect {
            target: target.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.exchange(tcp, bytes).await;
        };
        let name = ServerName::try_from(self.target.host.clone()).map_err(|e| DeliveryError::Tls {
            target: target.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, tcp))
            .await
            .map_err(|_| self.timeout(CONNECT_TIMEOUT))?
            .map_err(|source| DeliveryError::Tls { target, source })?;
        self.exchange(stream, bytes).await
    }

    /// Writes `bytes`, closes our half and waits for the receiver to close
    /// its half: the receipt.
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        bytes: &[u8],
    ) -> Result<(), DeliveryError> {
        let failed = |source| DeliveryError::Send {
            target: self.target.to_string(),
            source,
        };
        let exchange = async {
            stream.write_all(bytes).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 512];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        tokio::time::timeout(EXCHANGE_TIMEOUT, exchange)
            .await
            .map_err(|_| self.timeout(EXCHANGE_TIMEOUT))?
            .map_err(failed)
    }
}

impl Sink for SyslogSink {
    fn name(&self) -> &'static str {
        "syslog"
    }

    async fn deliver(&self, events: &[ExportEvent]) -> Result<(), DeliveryError> {
        let mut bytes = String::new();
        for event in events {
            let msg = message(&self.hostname, event).map_err(|e| DeliveryError::Send {
                target: self.target.to_string(),
                source: std::io::Error::other(e),
            })?;
            bytes.push_str(&frame(&msg));
        }
        self.connect_and_send(bytes.as_bytes()).await
    }
}

#[cfg(test)]
mod tests {
    use postern_store::SigninOutcome;

    use super::*;
    use crate::event::tests::signin;

    #[test]
    fn targets_parse() {
        let t = SyslogTarget::parse("tcp://siem.example.com:1514").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("siem.example.com", 1514, false));
        assert_eq!(SyslogTarget::parse("tls://siem.example.com").unwrap().port, 6514);
        assert_eq!(SyslogTarget::parse("tcp://10.0.0.1").unwrap().port, 514);
        let v6 = SyslogTarget::parse("tls://[::1]:6514").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "tls://[::1]:6514");
        for bad in [
            "udp://x:514",
            "tcp://",
            "tcp://x:514/path",
            "siem.example.com:514",
            "tcp://u@x:1",
        ] {
            assert!(SyslogTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_are_rfc_5424_with_json_and_octet_counted() {
        let msg = message("login.example.com", &signin(7, SigninOutcome::Success)).unwrap();
        let (head, json) = msg.split_once(" - ").unwrap();
        assert_eq!(head, "<86>1 2023-11-14T22:13:20Z login.example.com postern");
        assert!(json.starts_with("signin - {"), "{json}");
        let body: serde_json::Value = serde_json::from_str(json.strip_prefix("signin - ").unwrap()).unwrap();
        assert_eq!(body["seq"], 7);
        let framed = frame(&msg);
        let (len, rest) = framed.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        assert_eq!(rest, msg);
        let odd = message("a host\n", &signin(1, SigninOutcome::Success)).unwrap();
        assert!(odd.contains(" ahost postern "), "{odd}");
        assert!(
            message("", &signin(1, SigninOutcome::Success))
                .unwrap()
                .contains("Z - postern")
        );
    }
}
