//! Self-signed server certificates: what the service serves when no certificate
//! is configured (`tls.self_signed`, and `postern demo`), until an operator
//! gives it one a browser trusts.

use std::net::IpAddr;

use postern_time::UnixTime;
use zeroize::Zeroizing;

use crate::error::PkiError;
use crate::serial::random_serial;
use crate::validity::to_asn1;

/// A name a server certificate is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerName {
    /// A host name, or `*.` and a domain.
    Dns(String),
    /// An IP address.
    Ip(IpAddr),
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Dns(name) => f.write_str(name),
            ServerName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A generated key and its self-signed certificate, both PEM.
pub struct SelfSignedServer {
    /// The private key (PKCS#8), wiped from memory when dropped.
    pub key_pem: Zeroizing<String>,
    /// The certificate.
    pub cert_pem: String,
}

impl std::fmt::Debug for SelfSignedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSignedServer")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A fresh P-256 key and a self-signed server certificate for `names` (the
/// first host name is also the subject's CN), valid from `not_before` to
/// `not_after`, with a random serial and only the server-authentication usage.
pub fn self_signed_server(
    names: &[ServerName],
    not_before: UnixTime,
    not_after: UnixTime,
) -> Result<SelfSignedServer, PkiError> {
    if names.is_empty() {
        return Err(PkiError::BadParameter("a server certificate needs a name".into()));
    }
    let failed = |e: rcgen::Error| PkiError::Internal(format!("generating a self-signed certificate: {e}"));
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::default();
    let mut common_name = None;
    for name in names {
        params.subject_alt_names.push(match name {
            ServerName::Dns(d) => {
                common_name.get_or_insert_with(|| d.clone());
                rcgen::SanType::DnsName(
                    d.clone()
                        .try_into()
                        .map_err(|_| PkiError::BadParameter(format!("{d:?} is not a host name")))?,
                )
            }
            ServerName::Ip(ip) => rcgen::SanType::IpAddress(*ip),
        });
    }
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        common_name.unwrap_or_else(|| "localhost".into()),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Postern (self-signed)");
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    params.not_before = to_asn1(not_before)?;
    params.not_after = to_asn1(not_after)?;
    let cert = params.self_signed(&key).map_err(failed)?;
    Ok(SelfSignedServer {
        key_pem: Zeroizing::new(key.serialize_pem()),
        cert_pem: cert.pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_validity_and_usage() {
        let now = UnixTime::from_secs(1_800_000_000);
        let names = [
            ServerName::Dns("login.example.com".into()),
            ServerName::Dns("*.example.com".into()),
            ServerName::Ip("127.0.0.1".parse().unwrap()),
        ];
        let made = self_signed_server(&names, now, now + std::time::Duration::from_secs(86_400)).unwrap();
        use rustls_pki_types::pem::PemObject as _;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(made.cert_pem.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), now.secs());
        assert_eq!(cert.validity().not_after.timestamp(), now.secs() + 86_400);
        let cn = cert.subject().iter_common_name().next().unwrap().as_str().unwrap();
        assert_eq!(cn, "login.example.com");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 3);
        assert!(!cert.is_ca());
        assert!(cert.raw_serial()[0] & 0x80 == 0, "a positive serial");
        assert!(made.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{made:?}").contains("PRIVATE KEY"), "Debug hides the key");
    }

    #[test]
    fn no_name_or_a_bad_name_is_refused() {
        let now = UnixTime::from_secs(1_800_000_000);
        assert!(matches!(
            self_signed_server(&[], now, now),
            Err(PkiError::BadParameter(_))
        ));
        assert!(matches!(
            self_signed_server(&[ServerName::Dns("bücher.example".into())], now, now),
            Err(PkiError::BadParameter(_))
        ));
    }
}
