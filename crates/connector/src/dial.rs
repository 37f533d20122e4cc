//! Opening one tunnel: TCP, TLS 1.3 with the connector's certificate, then the
//! HTTP/1.1 upgrade to `postern-tunnel/1`, each step with its own deadline.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE, USER_AGENT};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use postern_netio::ReadAhead;
use postern_proto::tunnel::{TUNNEL_UPGRADE, connector_tunnel_path};
use postern_proto::{ErrorBody, PROTOCOL_VERSION};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::TunnelError;
use crate::error::chain;
use crate::forward::AbortOnDrop;
use crate::pool::TunnelEndpoint;

/// Request header naming the protocol version.
const PROTOCOL_HEADER: &str = "x-postern-protocol";
/// Largest error body read from a refused upgrade.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// Deadlines of the steps of a dial.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DialDeadlines {
    pub(crate) connect: Duration,
    pub(crate) tls: Duration,
    pub(crate) upgrade: Duration,
}

/// Where the tunnel goes, worked out from the control URL.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// Host for TCP (IP literals without brackets).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: String,
    /// Path of the upgrade request.
    path: String,
    server_name: ServerName<'static>,
}

impl Target {
    fn parse(control_url: &str, tenant_id: &str) -> Result<Self, TunnelError> {
        let bad = |why: String| TunnelError::Config(format!("control URL {control_url:?}: {why}"));
        if tenant_id.is_empty()
            || !tenant_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(TunnelError::Config(format!(
                "tenant ID {tenant_id:?} is not a plain identifier"
            )));
        }
        let url = url::Url::parse(control_url).map_err(|e| bad(e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("the tunnel needs https".into()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(bad("no host".into())),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let host_str = url.host_str().unwrap_or(&host);
        let authority = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.to_owned(),
        };
        let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(e.to_string()))?;
        let path = format!(
            "{}{}",
            url.path().trim_end_matches('/'),
            connector_tunnel_path(tenant_id)
        );
        Ok(Self {
            host,
            port,
            authority,
            path,
            server_name,
        })
    }
}

/// Opens one tunnel and returns the upgraded connection.
pub(crate) async fn dial(
    endpoint: &TunnelEndpoint,
    deadlines: DialDeadlines,
) -> Result<TokioIo<Upgraded>, TunnelError> {
    let target = Target::parse(&endpoint.control_url, &endpoint.tenant_id)?;
    let where_ = format!("{}:{}", target.host, target.port);
    let tcp = tokio::time::timeout(
        deadlines.connect,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| TunnelError::Transport(format!("connecting to {where_} timed out")))?
    .map_err(|e| TunnelError::Transport(format!("connecting to {where_}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(endpoint.tls.clone());
    let tls = tokio::time::timeout(
        deadlines.tls,
        tls.connect(target.server_name.clone(), ReadAhead::new(tcp)),
    )
    .await
    .map_err(|_| TunnelError::Transport(format!("TLS handshake with {where_} timed out")))?
    .map_err(|e| TunnelError::Transport(format!("TLS handshake with {where_}: {}", chain(&e))))?;

    let deadline = Instant::now() + deadlines.upgrade;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls))
        .await
        .map_err(|e| TunnelError::Transport(format!("tunnel upgrade: {}", chain(&e))))?;
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %chain(&e), "tunnel upgrade connection ended");
        }
    });
    let driver = AbortOnDrop::new(driver.abort_handle());
    let request = Request::get(target.path.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, TUNNEL_UPGRADE)
        .header(PROTOCOL_HEADER, PROTOCOL_VERSION.to_string())
        .header(USER_AGENT, concat!("postern-connector/", env!("CARGO_PKG_VERSION")))
        .header(
            postern_proto::updates::VERSION_HEADER,
            postern_uplink::reported_version(),
        )
        .header(postern_proto::updates::TARGET_HEADER, postern_uplink::build_target())
        .body(Empty::<Bytes>::new())
        .map_err(|e| TunnelError::Config(format!("tunnel request: {e}")))?;
    let mut response = tokio::time::timeout_at(deadline, sender.send_request(request))
        .await
        .map_err(|_| TunnelError::Transport(format!("{where_} did not answer the tunnel upgrade in time")))?
        .map_err(|e| TunnelError::Transport(format!("tunnel upgrade: {}", chain(&e))))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Err(refusal(response, deadline).await);
    }
    let agreed = response
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_UPGRADE));
    if !agreed {
        return Err(TunnelError::Transport(format!(
            "{where_} switched to another protocol than {TUNNEL_UPGRADE}"
        )));
    }
    let upgraded = tokio::time::timeout_at(deadline, hyper::upgrade::on(&mut response))
        .await
        .map_err(|_| TunnelError::Transport("the tunnel upgrade did not complete in time".into()))?
        .map_err(|e| TunnelError::Transport(format!("tunnel upgrade: {}", chain(&e))))?;
    driver.disarm();
    Ok(TokioIo::new(upgraded))
}

/// The error for an upgrade the service did not accept. Client errors (other than
/// 408 and 429) are refusals the caller must act on; the rest are retried.
async fn refusal(response: Response<Incoming>, deadline: Instant) -> TunnelError {
    let status = response.status();
    let body = tokio::time::timeout_at(deadline, Limited::new(response.into_body(), MAX_ERROR_BODY).collect()).await;
    let parsed = match body {
        Ok(Ok(collected)) => serde_json::from_slice::<ErrorBody>(&collected.to_bytes()).ok(),
        _ => None,
    };
    let (code, message) = match parsed {
        Some(b) => (b.error, b.message),
        None => ("unknown".to_owned(), status.canonical_reason().unwrap_or("").to_owned()),
    };
    let retryable = status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_client_error() && !retryable {
        TunnelError::Refused {
            status: status.as_u16(),
            code,
            message,
        }
    } else {
        TunnelError::Transport(format!(
            "the service answered the tunnel upgrade with HTTP {}: {code}: {message}",
            status.as_u16()
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_from_control_urls() {
        let t = Target::parse("https://connect.example.com", "t-1").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("connect.example.com", 443));
        assert_eq!(t.authority, "connect.example.com");
        assert_eq!(t.path, "/v1/t/t-1/connector/tunnel");

        let t = Target::parse("https://[::1]:8443/base/", "t").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(t.authority, "[::1]:8443");
        assert_eq!(t.path, "/base/v1/t/t/connector/tunnel");

        assert!(matches!(Target::parse("http://x", "t"), Err(TunnelError::Config(_))));
        assert!(matches!(
            Target::parse("https://x", "../x"),
            Err(TunnelError::Config(_))
        ));
        assert!(matches!(Target::parse("nonsense", "t"), Err(TunnelError::Config(_))));
    }
}
