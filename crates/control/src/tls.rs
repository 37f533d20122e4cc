//! TLS of the control listener: TLS 1.3 only, a client certificate from the
//! Connectors or Agents CA required, validity judged by the service clock (so the
//! same clock decides certificate age in TLS and in the renewal rules), and a
//! server certificate either provided by the operator or issued by the Service CA.

use std::sync::Arc;

use postern_pki::{CaKind, SERVICE_CERT_VALIDITY};
use postern_time::{RustlsTime, SharedClock};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::Authorities;
use crate::error::ControlError;

/// Where the control listener's server certificate comes from.
#[derive(Clone, Debug)]
pub enum ControlTls {
    /// Issued at start by the Service CA for these host names (DNS names or IP
    /// literals). Components get the Service CA as their trust anchor at
    /// registration.
    Issued {
        /// Names the certificate carries.
        hostnames: Vec<String>,
    },
    /// Provided by the operator (e.g. from a public CA).
    Provided {
        /// PEM certificate chain.
        cert_pem: String,
        /// PEM private key.
        key_pem: String,
        /// Trust anchors to hand to components (empty if publicly trusted).
        anchors_pem: String,
    },
}

fn tls_error(e: impl std::fmt::Display) -> ControlError {
    ControlError::Internal(format!("control TLS: {e}"))
}

/// The control listener's rustls configuration, and the PEM trust anchors to give
/// components for it.
pub fn control_server_config(
    authorities: &Authorities,
    tls: &ControlTls,
    clock: SharedClock,
) -> Result<(rustls::ServerConfig, String), ControlError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = RootCertStore::empty();
    for kind in [CaKind::Connectors, CaKind::Agents] {
        roots
            .add(CertificateDer::from(authorities.get(kind).cert_der().to_vec()))
            .map_err(tls_error)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(tls_error)?;
    let (chain, key, anchors): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String) = match tls {
        ControlTls::Issued { hostnames } => {
            let service = authorities.get(CaKind::Service);
            let (issued, key) = service.issue_server(hostnames, clock.now(), SERVICE_CERT_VALIDITY)?;
            (
                vec![CertificateDer::from(issued.cert_der)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
                service.cert_pem().to_owned(),
            )
        }
        ControlTls::Provided {
            cert_pem,
            key_pem,
            anchors_pem,
        } => {
            let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(tls_error)?;
            let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(tls_error)?;
            (chain, key, anchors_pem.clone())
        }
    };
    let mut config = rustls::ServerConfig::builder_with_details(provider, Arc::new(RustlsTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, anchors))
}
