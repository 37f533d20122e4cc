//! Proxy peering: app requests for a connector group this instance holds no
//! tunnel of go to a peer instance that holds one.
//!
//! Each instance listens for its peers with TLS 1.3, HTTP/2 and a client
//! certificate required; both ends present a certificate the installation's
//! Service CA issued for [`crate::PEER_NAME`] with serverAuth and clientAuth
//! (connectors' and agents' certificates come from other CAs, and the control
//! listener's from the Service CA carries serverAuth only, so nothing else
//! passes). A forwarded request is the tunnel request itself, with the tenant
//! and group in two headers the peer removes; the peer sends it on one of its
//! own tunnels ([`TunnelRegistry::send_local`], never onwards) and streams
//! the answer back with the connector that carried it. Bodies and upgraded
//! connections stream both ways with HTTP/2 flow control, as on a tunnel.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_tunnel::{
    BoxError, BoxFuture, PeerRoute, ResponseBodyError, SendError, TunnelBody, TunnelRegistry, TunnelResponseBody,
};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use zeroize::Zeroizing;

use crate::instances::{InstanceInfo, Table};
use crate::{ClusterError, PEER_NAME};

/// The tenant of a forwarded request.
pub const TENANT_HEADER: &str = "x-postern-peer-tenant";
/// The connector group of a forwarded request.
pub const GROUP_HEADER: &str = "x-postern-peer-group";
/// The connector that answered a forwarded request.
pub const CONNECTOR_HEADER: &str = "x-postern-peer-connector";
/// Why a peer could not send a forwarded request: `no-connector` or `failed`.
pub const ERROR_HEADER: &str = "x-postern-peer-error";

/// Deadline of a connection to a peer (TCP and TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// This instance's peer certificate.
pub struct PeerTls {
    /// The certificate (DER), issued by the Service CA for [`PEER_NAME`].
    pub cert_der: Vec<u8>,
    /// Its private key (PKCS#8 DER).
    pub key_der: Zeroizing<Vec<u8>>,
    /// The Service CA's certificate (DER): the only anchor peers trust.
    pub ca_der: Vec<u8>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

fn tls_error(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Tls(e.to_string())
}

/// Server and client TLS settings of the peer links: TLS 1.3, HTTP/2, the
/// Service CA as the only anchor, a certificate required both ways.
pub(crate) fn tls_configs(
    tls: &PeerTls,
) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), ClusterError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(tls.ca_der.clone())).map_err(tls_error)?;
    let roots = Arc::new(roots);
    let chain = vec![CertificateDer::from(tls.cert_der.clone())];
    let key = || PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_der.to_vec()));
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(tls_error)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key())
        .map_err(tls_error)?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key())
        .map_err(tls_error)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok((Arc::new(server), Arc::new(client)))
}

/// A forwarded response's body, or the peer's own short answer.
type PeerBody = UnsyncBoxBody<Bytes, ResponseBodyError>;

fn refusal(status: StatusCode, why: &'static str) -> Response<PeerBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static(why));
    response
}

fn header(request: &mut Request<Incoming>, name: &str) -> Option<String> {
    let value = request.headers_mut().remove(name)?;
    value.to_str().ok().map(str::to_owned)
}

/// One forwarded request: sent on a tunnel of this instance.
async fn handle(
    registry: Arc<TunnelRegistry>,
    mut request: Request<Incoming>,
) -> Result<Response<PeerBody>, Infallible> {
    let (Some(tenant), Some(group)) = (header(&mut request, TENANT_HEADER), header(&mut request, GROUP_HEADER)) else {
        return Ok(refusal(StatusCode::BAD_REQUEST, "bad-request"));
    };
    let request = request.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    Ok(match registry.send_local(&tenant, &group, request).await {
        Ok(response) => {
            let connector = HeaderValue::from_str(response.body().connector_id()).ok();
            let (mut head, body) = response.into_parts();
            if let Some(c) = connector {
                head.headers.insert(CONNECTOR_HEADER, c);
            }
            Response::from_parts(head, body.boxed_unsync())
        }
        Err(SendError::NoConnector) => refusal(StatusCode::SERVICE_UNAVAILABLE, "no-connector"),
        Err(SendError::Failed(why)) => {
            tracing::info!(tenant = %tenant, group = %group, error = %why, "forwarded request failed on the tunnel");
            refusal(StatusCode::BAD_GATEWAY, "failed")
        }
    })
}

/// Serves the peers until aborted.
pub(crate) async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, registry: Arc<TunnelRegistry>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "peer refused (TLS)");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |request| handle(registry.clone(), request));
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(1024)
                .initial_stream_window_size(1024 * 1024)
                .initial_connection_window_size(8 * 1024 * 1024)
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "peer connection ended");
            }
        });
    }
}

/// Routes requests to the peers holding tunnels, one HTTP/2 connection per
/// peer, made on first use and again when it breaks.
pub(crate) struct PeerForwarder {
    table: Arc<Table>,
    tls: Arc<rustls::ClientConfig>,
    connections: Mutex<HashMap<String, (String, SendRequest<TunnelBody>)>>,
    next: AtomicUsize,
}

impl PeerForwarder {
    pub(crate) fn new(table: Arc<Table>, tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            table,
            tls,
            connections: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
        }
    }

    fn cached(&self, peer: &InstanceInfo) -> Option<SendRequest<TunnelBody>> {
        let connections = self.connections.lock().ok()?;
        let (addr, sender) = connections.get(&peer.id)?;
        (addr == &peer.peer_addr && !sender.is_closed()).then(|| sender.clone())
    }

    /// A ready connection to `peer`.
    async fn connection(&self, peer: &InstanceInfo) -> Result<SendRequest<TunnelBody>, String> {
        if let Some(sender) = self.cached(peer) {
            return Ok(sender);
        }
        let connect = async {
            let tcp = TcpStream::connect(peer.peer_addr.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(PEER_NAME).map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .initial_stream_window_size(1024 * 1024)
                .initial_connection_window_size(8 * 1024 * 1024)
                .keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true);
            let (sender, connection) = builder.handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
            let id = peer.id.clone();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(peer = %id, error = %e, "peer connection ended");
                }
            });
            Ok::<_, String>(sender)
        };
        let sender = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| format!("connecting to {} timed out", peer.peer_addr))??;
        if let Ok(mut connections) = self.connections.lock() {
            connections.insert(peer.id.clone(), (peer.peer_addr.clone(), sender.clone()));
        }
        Ok(sender)
    }

    async fn forward_to_holders(
        &self,
        tenant_id: &str,
        group_id: &str,
        mut request: Request<TunnelBody>,
    ) -> Result<Response<TunnelResponseBody>, SendError> {
        let mut holders = self.table.holders(tenant_id, group_id);
        if holders.is_empty() {
            return Err(SendError::NoConnector);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % holders.len();
        holders.rotate_left(start);
        let (tenant, group) = match (HeaderValue::from_str(tenant_id), HeaderValue::from_str(group_id)) {
            (Ok(t), Ok(g)) => (t, g),
            _ => return Err(SendError::NoConnector),
        };
        request.headers_mut().insert(TENANT_HEADER, tenant);
        request.headers_mut().insert(GROUP_HEADER, group);
        for peer in holders {
            let mut sender = match self.connection(&peer).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(peer = %peer.id, addr = %peer.peer_addr, error = %e, "peer unreachable; trying another");
                    continue;
                }
            };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return answer(response),
                Err(mut e) => match e.take_message() {
                    Some(back) => request = back,
                    None => return Err(SendError::Failed(format!("peer {}: {}", peer.id, e.into_error()))),
                },
            }
        }
        Err(SendError::NoConnector)
    }
}

/// The peer's answer as the front door sees a tunnel's.
fn answer(response: Response<Incoming>) -> Result<Response<TunnelResponseBody>, SendError> {
    let (mut head, body) = response.into_parts();
    match head.headers.get(ERROR_HEADER).and_then(|v| v.to_str().ok()) {
        Some("no-connector") => return Err(SendError::NoConnector),
        Some(other) => {
            return Err(SendError::Failed(format!(
                "the peer instance could not send it ({other})"
            )));
        }
        None => {}
    }
    let connector = head
        .headers
        .remove(CONNECTOR_HEADER)
        .and_then(|v| v.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    Ok(Response::from_parts(
        head,
        TunnelResponseBody::forwarded(body, connector),
    ))
}

impl PeerRoute for PeerForwarder {
    fn forward(
        &self,
        tenant_id: &str,
        group_id: &str,
        request: Request<TunnelBody>,
    ) -> BoxFuture<'_, Result<Response<TunnelResponseBody>, SendError>> {
        let (tenant_id, group_id) = (tenant_id.to_owned(), group_id.to_owned());
        Box::pin(async move { self.forward_to_holders(&tenant_id, &group_id, request).await })
    }
}
