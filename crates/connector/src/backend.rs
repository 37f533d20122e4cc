//! HTTP clients towards the internal apps: pooled HTTP/1.1 over TCP or TLS, one
//! client that verifies backend certificates and one that does not (for apps whose
//! `validate_backend_tls` is off), and the mapping of their failures to
//! [`BackendError`] codes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use postern_proto::tunnel::BackendError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::TunnelError;

/// Body of a request to a backend: the stream's own body, or empty.
pub(crate) type BackendBody = UnsyncBoxBody<Bytes, hyper::Error>;
type BackendClient = Client<HttpsConnector<HttpConnector>, BackendBody>;

/// How the connector talks to backends.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Deadline of the TCP connection to a backend (a miss is
    /// `backend_unreachable`). Default 10 s.
    pub connect_timeout: Duration,
    /// An idle pooled backend connection is closed after this long. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per backend host. Default 128: with more requests
    /// in flight to one backend than this, every answer beyond it closes its
    /// connection and the next request opens a new one (with 32 and 50 in
    /// flight, 160 new connections a second under steady load).
    pub pool_max_idle_per_host: usize,
    /// Trust anchors for backend certificates besides the system's (an internal
    /// CA). Default none.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 128,
            extra_roots: Vec::new(),
        }
    }
}

/// The backend clients, shared by all tunnels (cheap to clone: one pointer,
/// so that every stream's future carries 8 bytes of it, not the clients'
/// several hundred).
#[derive(Clone, Debug)]
pub struct Backends(Arc<Clients>);

/// The two pooled clients behind [`Backends`].
#[derive(Debug)]
struct Clients {
    /// Checks backend certificates (system anchors plus `extra_roots`).
    verified: BackendClient,
    /// Accepts any backend certificate, for apps with `validate_backend_tls` off.
    unverified: BackendClient,
}

impl Backends {
    /// Builds the clients: TLS certificates of backends are checked against the
    /// system's trust anchors plus `extra_roots`, except for apps that turn
    /// validation off.
    pub fn new(options: &BackendOptions) -> Result<Self, TunnelError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "some system trust anchors could not be loaded");
        }
        let (_, unusable) = roots.add_parsable_certificates(native.certs);
        if unusable > 0 {
            tracing::debug!(unusable, "system trust anchors skipped");
        }
        for root in &options.extra_roots {
            roots
                .add(root.clone())
                .map_err(|e| TunnelError::Config(format!("backend trust anchor: {e}")))?;
        }
        let verified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TunnelError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TunnelError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert { provider }))
            .with_no_client_auth();
        Ok(Self(Arc::new(Clients {
            verified: client(verified, options),
            unverified: client(unverified, options),
        })))
    }

    /// The client for an app.
    pub(crate) fn client(&self, validate_tls: bool) -> &BackendClient {
        if validate_tls {
            &self.0.verified
        } else {
            &self.0.unverified
        }
    }
}

/// One pooled client: HTTP/1.1 only, so that `Host` stays the header the backend
/// reads and upgrades work on any backend connection.
fn client(tls: rustls::ClientConfig, options: &BackendOptions) -> BackendClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(options.connect_timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(options.pool_idle_timeout)
        .pool_max_idle_per_host(options.pool_max_idle_per_host)
        .build(https)
}

/// Accepts any backend certificate, for apps whose `validate_backend_tls` is off
/// (an administrator's explicit choice for backends with self-signed or expired
/// certificates). The handshake signatures are still checked with the provider, so
/// the peer must hold the key of the certificate it shows; what is skipped is only
/// the question whether that certificate is trusted for that name.
#[derive(Debug)]
struct AnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a backend request produced no response.
pub(crate) fn classify(e: &hyper_util::client::legacy::Error) -> BackendError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    // Connection refused, DNS failure, connect timeout, or the connection lost
    // before a response: unreachable. Otherwise the backend spoke, but not HTTP.
    let mut unreachable = e.is_connect();
    while let Some(s) = source {
        if s.is::<rustls::Error>() {
            return BackendError::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if wraps_tls_error(io) {
                return BackendError::Tls;
            }
            unreachable = true;
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return BackendError::Protocol;
            }
            unreachable |= h.is_incomplete_message() || h.is_closed() || h.is_canceled();
        }
        source = s.source();
    }
    if unreachable {
        BackendError::Unreachable
    } else {
        BackendError::Protocol
    }
}

/// Whether an I/O error carries a TLS error. `io::Error::source` skips the error it
/// wraps, and the TLS connector wraps the handshake's `io::Error` in another one,
/// so look inside by hand.
fn wraps_tls_error(mut io: &std::io::Error) -> bool {
    for _ in 0..8 {
        let Some(inner) = io.get_ref() else { return false };
        if inner.is::<rustls::Error>() {
            return true;
        }
        match inner.downcast_ref::<std::io::Error>() {
            Some(next) => io = next,
            None => return false,
        }
    }
    false
}
