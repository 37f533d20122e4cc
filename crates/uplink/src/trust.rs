//! Trust anchors for the service's TLS certificates: PEM the operator gives
//! (`--server-ca`), the control endpoint's anchors learned at registration, and
//! the system's store. A certificate that cannot be used is an error naming
//! where it came from and which certificate it is; it is never skipped, so a
//! broken file fails at once instead of as an "unknown issuer" later.

use std::path::Path;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::UplinkError;

/// Environment variable naming a PEM file that replaces the system store.
const CERT_FILE_ENV: &str = "SSL_CERT_FILE";
/// Environment variable naming directories that replace the system store.
const CERT_DIR_ENV: &str = "SSL_CERT_DIR";

/// The certificates of the PEM text `pem` from `source` (a file name, or what
/// it is), each checked as a trust anchor. Fails naming `source` and the
/// certificate's position (1 for the first) when one is unreadable or unusable,
/// and when there is none at all.
pub fn pem_anchors(source: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
    let bad = |detail: String| UplinkError::TrustAnchors(format!("{source}: {detail}"));
    let mut certs = Vec::new();
    for (n, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let position = n + 1;
        let cert = item.map_err(|e| bad(format!("certificate #{position} is not readable PEM: {e}")))?;
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|e| bad(format!("certificate #{position} cannot be a trust anchor: {e}")))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The certificates of the PEM file at `path`; see [`pem_anchors`].
pub fn file_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, UplinkError> {
    let pem = std::fs::read(path).map_err(|e| UplinkError::TrustAnchors(format!("{}: {e}", path.display())))?;
    pem_anchors(&path.display().to_string(), &pem)
}

/// The system's trust anchors (or those `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// name). A file that cannot be read or a certificate that cannot be used is
/// an error naming the store, and the file and certificate where known.
pub(crate) fn system_roots() -> Result<RootCertStore, UplinkError> {
    let mut roots = RootCertStore::empty();
    let dir = std::env::var_os(CERT_DIR_ENV);
    if let Some(file) = std::env::var_os(CERT_FILE_ENV).filter(|_| dir.is_none()) {
        let source = format!("{CERT_FILE_ENV} {}", Path::new(&file).display());
        let pem = std::fs::read(&file).map_err(|e| UplinkError::TrustAnchors(format!("{source}: {e}")))?;
        for cert in pem_anchors(&source, &pem)? {
            roots
                .add(cert)
                .map_err(|e| UplinkError::TrustAnchors(format!("{source}: {e}")))?;
        }
        return Ok(roots);
    }
    let store = match dir {
        Some(d) => format!("{CERT_DIR_ENV} {}", d.to_string_lossy()),
        None => "the system trust store".to_owned(),
    };
    let native = rustls_native_certs::load_native_certs();
    if let Some(e) = native.errors.first() {
        return Err(UplinkError::TrustAnchors(format!("{store}: {e}")));
    }
    let total = native.certs.len();
    for (n, cert) in native.certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            UplinkError::TrustAnchors(format!(
                "{store}: certificate {} of {total} cannot be a trust anchor: {e}",
                n + 1
            ))
        })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PEM armour around bytes that are no certificate ("not a certificate").
    const BROKEN_PEM: &str = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";

    fn good_ca_pem() -> String {
        let (ca, _) = postern_pki::CertificateAuthority::generate(
            postern_pki::CaKind::Connectors,
            "trust test",
            postern_time::UnixTime::from_secs(1_700_000_000),
            std::time::Duration::from_secs(86_400),
        )
        .unwrap();
        ca.cert_pem().to_owned()
    }

    #[test]
    fn a_broken_certificate_is_named_by_file_and_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corp-ca.pem");
        let good = good_ca_pem();
        std::fs::write(&path, format!("{good}{BROKEN_PEM}")).unwrap();
        let err = file_anchors(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("certificate #2 cannot be a trust anchor"), "{err}");

        std::fs::write(&path, "no PEM here\n").unwrap();
        let err = file_anchors(&path).unwrap_err().to_string();
        assert!(err.contains("corp-ca.pem: holds no PEM certificate"), "{err}");

        std::fs::write(&path, &good).unwrap();
        assert_eq!(file_anchors(&path).unwrap().len(), 1);
        let missing = file_anchors(&dir.path().join("missing.pem")).unwrap_err();
        assert!(missing.to_string().contains("missing.pem"), "{missing}");
    }
}
