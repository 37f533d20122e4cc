//! PEM armour: encoding DER documents, and accepting certificates as PEM or DER.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use zeroize::Zeroizing;

/// `der` as a PEM document with `label` (`CERTIFICATE`, `PRIVATE KEY`, `X509 CRL`), lines
/// of 64 characters. Zeroized on drop, so it also serves private keys.
pub(crate) fn encode(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40));
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let mut rest: &str = &b64;
    while !rest.is_empty() {
        // Base64 is ASCII: any byte index is a character boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// The DER bytes of a certificate given as PEM (the first `CERTIFICATE` block) or DER.
/// `None` if PEM armour is present but holds no certificate.
pub(crate) fn cert_der(input: &[u8]) -> Option<Vec<u8>> {
    if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateDer::from_pem_slice(input).ok().map(|c| c.as_ref().to_vec())
    } else {
        Some(input.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_64_character_lines_and_decodes_back() {
        let der: Vec<u8> = (0..=255u8).collect();
        let pem = encode("CERTIFICATE", &der);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(cert_der(pem.as_bytes()).unwrap(), der);
        assert_eq!(cert_der(&der).unwrap(), der);
        assert_eq!(
            cert_der(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            None
        );
    }
}
