//! TLS towards receivers: the system's trust anchors plus the operator's own
//! (`export.ca_file`), certificate validity judged by the service's clock.

use std::path::Path;
use std::sync::Arc;

use postern_time::{RustlsTime, SharedClock};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::ExportError;

/// A client configuration trusting the system's anchors and those in
/// `ca_file` (PEM). Fails when `ca_file` holds no usable certificate, or when
/// no anchor at all is left.
pub(crate) fn client_config(ca_file: Option<&Path>, clock: SharedClock) -> Result<rustls::ClientConfig, ExportError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system trust anchor could not be read");
    }
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let bad = |why: String| ExportError::Config(format!("export.ca_file {}: {why}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(ExportError::Config(
            "no trust anchors for the receivers: the system has none and export.ca_file is not set".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_details(provider, Arc::new(RustlsTime(clock)))
            .with_safe_default_protocol_versions()
            .map_err(|e| ExportError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}
