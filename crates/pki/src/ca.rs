//! The three certificate authorities of an installation: creating one, reloading it from
//! its stored certificate and (unsealed) key, and the issuer handle used to sign.
//!
//! Every CA key is ECDSA P-256 with ecdsa-with-SHA256 signatures: every TLS stack the
//! components and operators use (rustls/webpki, OpenSSL, Windows, Go) verifies it, it
//! signs and verifies quickly, and its 128-bit strength matches the strongest leaf keys
//! it certifies (RSA 3072, P-256); P-384 would cost speed for no gain while leaves are
//! weaker. [`CertificateAuthority::from_parts`] also accepts a P-384 CA key.

use std::fmt;
use std::time::Duration;

use postern_time::UnixTime;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::csr::ORGANIZATION;
use crate::error::{PkiError, internal};
use crate::identity::ComponentKind;
use crate::key::SecretKeyPair;
use crate::serial::random_serial;
use crate::validity::{CLOCK_SKEW_ALLOWANCE, to_asn1};

/// Longest installation name accepted (it becomes the CA's organisational unit, whose
/// upper bound in RFC 5280 is 64 characters).
pub const MAX_INSTALLATION_LEN: usize = 64;

/// Which of an installation's three CAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CaKind {
    /// Signs connector client certificates.
    Connectors,
    /// Signs pass-through-authentication agent client certificates and nothing else
    /// (PTA-3).
    Agents,
    /// Signs the service's own control-plane TLS server certificate, when the operator
    /// configures none.
    Service,
}

impl CaKind {
    /// Every kind, for iterating at start-up.
    pub const ALL: [CaKind; 3] = [CaKind::Connectors, CaKind::Agents, CaKind::Service];

    /// The stored form: `connectors`, `agents` or `service`.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Connectors => "connectors",
            CaKind::Agents => "agents",
            CaKind::Service => "service",
        }
    }

    /// Parses [`CaKind::as_str`]'s form.
    pub fn parse(s: &str) -> Option<Self> {
        CaKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The CA that certifies a kind of component.
    pub fn for_component(kind: ComponentKind) -> Self {
        match kind {
            ComponentKind::Connector => CaKind::Connectors,
            ComponentKind::Agent => CaKind::Agents,
        }
    }

    /// The CA certificate's common name: `Postern Connectors CA` and so on.
    pub fn common_name(self) -> String {
        format!("Postern {self} CA")
    }
}

impl fmt::Display for CaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CaKind::Connectors => "Connectors",
            CaKind::Agents => "Agents",
            CaKind::Service => "Service",
        })
    }
}

/// A freshly generated CA's secrets and certificate, for the caller to seal (with the
/// KEK) and store. `Debug` shows no key bytes; the key is zeroed on drop.
pub struct CaKeyMaterial {
    key_pkcs8_der: Zeroizing<Vec<u8>>,
    cert_pem: String,
}

impl fmt::Debug for CaKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaKeyMaterial")
            .field("key_pkcs8_der", &"[secret]")
            .field("cert_pem", &self.cert_pem)
            .finish()
    }
}

impl CaKeyMaterial {
    /// The CA's private key, PKCS#8 DER. Seal it before storing it.
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key_pkcs8_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
}

/// One CA, loaded and able to sign. Holds the private key: keep one per process, built
/// at start-up from the store. `Debug` shows the kind and validity, never the key.
pub struct CertificateAuthority {
    kind: CaKind,
    cert_pem: String,
    cert_der: Vec<u8>,
    key: SecretKeyPair,
    key_id: Vec<u8>,
    not_before: UnixTime,
    not_after: UnixTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("kind", &self.kind)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a CA of `kind` for `installation` (a name shown in the subject, such as the
    /// service's public host name): a new ECDSA P-256 key and a self-signed certificate
    /// `CN=Postern {kind} CA, O=Postern, OU={installation}`, CA:true with path length 0
    /// (it signs leaves only), key usage keyCertSign and cRLSign, a random positive
    /// 16-byte serial, valid from `now` (less [`CLOCK_SKEW_ALLOWANCE`]) to
    /// `now + validity` ([`crate::CA_VALIDITY`] is the recommended value).
    pub fn generate(
        kind: CaKind,
        installation: &str,
        now: UnixTime,
        validity: Duration,
    ) -> Result<(CertificateAuthority, CaKeyMaterial), PkiError> {
        if installation.trim().is_empty()
            || installation.chars().count() > MAX_INSTALLATION_LEN
            || installation.chars().any(char::is_control)
        {
            return Err(PkiError::BadParameter(format!(
                "installation name {installation:?} must be 1 to {MAX_INSTALLATION_LEN} printable characters"
            )));
        }
        if validity <= CLOCK_SKEW_ALLOWANCE {
            return Err(PkiError::BadParameter(format!(
                "CA validity of {}s is too short",
                validity.as_secs()
            )));
        }
        let key = SecretKeyPair::generate_p256()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, kind.common_name());
        params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, installation);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = to_asn1(now - CLOCK_SKEW_ALLOWANCE)?;
        params.not_after = to_asn1(now + validity)?;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .self_signed(&key.0)
            .map_err(internal("self-signing the CA certificate"))?;
        let cert_pem = cert.pem();
        let key_pkcs8 = key.pkcs8();
        let ca = Self::load(kind, cert.der().as_ref(), key)?;
        Ok((
            ca,
            CaKeyMaterial {
                key_pkcs8_der: key_pkcs8,
                cert_pem,
            },
        ))
    }

    /// Reloads a CA from its stored certificate (PEM) and unsealed private key (PKCS#8
    /// DER). Checks that the certificate is a self-signed CA certificate for `kind` (so
    /// the Agents CA cannot be loaded in the Connectors CA's place) and that the key is
    /// the certificate's. Does not check validity: issuing does, with its `now`.
    pub fn from_parts(kind: CaKind, cert_pem: &str, key_pkcs8_der: &[u8]) -> Result<Self, PkiError> {
        if !cert_pem.trim_start().starts_with("-----BEGIN") {
            return Err(PkiError::BadCaMaterial("the CA certificate is not PEM".into()));
        }
        let der = crate::pem::cert_der(cert_pem.as_bytes())
            .ok_or_else(|| PkiError::BadCaMaterial("no CERTIFICATE in the CA certificate PEM".into()))?;
        let key = SecretKeyPair::from_pkcs8(key_pkcs8_der)
            .map_err(|_| PkiError::BadCaMaterial("the CA key is not a PKCS#8 key".into()))?;
        Self::load(kind, &der, key)
    }

    /// Builds the CA from a certificate's DER and its key, checking they fit `kind`.
    fn load(kind: CaKind, cert_der: &[u8], key: SecretKeyPair) -> Result<Self, PkiError> {
        let bad = |what: &str| PkiError::BadCaMaterial(format!("{} CA: {what}", kind.as_str()));
        let (rest, cert) = X509Certificate::from_der(cert_der).map_err(|_| bad("certificate does not parse"))?;
        if !rest.is_empty() {
            return Err(bad("trailing bytes after the certificate"));
        }
        let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok());
        if cn != Some(kind.common_name().as_str()) {
            return Err(bad(&format!("certificate is for {cn:?}, not {:?}", kind.common_name())));
        }
        if !cert.is_ca() || cert.subject().as_raw() != cert.issuer().as_raw() {
            return Err(bad("certificate is not a self-signed CA certificate"));
        }
        cert.verify_signature(None)
            .map_err(|_| bad("certificate's self-signature does not verify"))?;
        if key.0.subject_public_key_info() != cert.public_key().raw {
            return Err(bad("the key does not belong to the certificate"));
        }
        let key_id = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .ok_or_else(|| bad("certificate has no subject key identifier"))?;
        let validity = cert.validity();
        let (not_before, not_after) = (
            UnixTime::from_secs(validity.not_before.timestamp()),
            UnixTime::from_secs(validity.not_after.timestamp()),
        );
        Ok(Self {
            kind,
            cert_pem: crate::pem::encode("CERTIFICATE", cert_der).to_string(),
            cert_der: cert_der.to_vec(),
            key,
            key_id,
            not_before,
            not_after,
        })
    }

    /// Which CA this is.
    pub fn kind(&self) -> CaKind {
        self.kind
    }

    /// The CA certificate, PEM: the trust anchor to give components (Service CA) or the
    /// service's mTLS listener (Connectors, Agents CA).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> UnixTime {
        self.not_before
    }

    /// End of the CA certificate's validity: rotate the CA well before it.
    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    /// The CA's subject key identifier (also the authority key identifier of everything
    /// it signs).
    pub(crate) fn key_identifier(&self) -> &[u8] {
        &self.key_id
    }

    /// Fails unless the CA is valid at `now`.
    pub(crate) fn check_valid_at(&self, now: UnixTime) -> Result<(), PkiError> {
        if now < self.not_before || now >= self.not_after {
            return Err(PkiError::CaNotValid(format!(
                "the {} CA is valid {}..{}, now is {now}",
                self.kind.as_str(),
                self.not_before,
                self.not_after
            )));
        }
        Ok(())
    }

    /// The signing handle rcgen needs, borrowing the key.
    pub(crate) fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&CertificateDer::from(self.cert_der.as_slice()), &self.key.0)
            .map_err(|e| PkiError::BadCaMaterial(format!("{} CA certificate: {e}", self.kind.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::parse_x509_certificate;

    use super::*;
    use crate::validity::CA_VALIDITY;

    const NOW: UnixTime = UnixTime::from_secs(1_600_000_000);

    #[test]
    fn generated_ca_has_the_documented_profile() {
        let (ca, material) =
            CertificateAuthority::generate(CaKind::Agents, "postern.example", NOW, CA_VALIDITY).unwrap();
        assert_eq!(ca.kind(), CaKind::Agents);
        assert_eq!(ca.cert_pem(), material.cert_pem());
        let (_, cert) = parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "CN=Postern Agents CA, O=Postern, OU=postern.example"
        );
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
        assert!(!ku.value.digital_signature() && !ku.value.key_encipherment());
        assert_eq!(cert.raw_serial().len(), 16);
        assert_eq!(cert.validity().not_before.timestamp(), NOW.secs() - 300);
        assert_eq!(cert.validity().not_after.timestamp(), (NOW + CA_VALIDITY).secs());
        assert_eq!(ca.not_after(), NOW + CA_VALIDITY);
        assert_eq!(
            cert.public_key().algorithm.algorithm.to_id_string(),
            "1.2.840.10045.2.1"
        );
        assert_eq!(cert.signature_algorithm.algorithm.to_id_string(), "1.2.840.10045.4.3.2");
        cert.verify_signature(None).unwrap();
    }

    #[test]
    fn reloads_from_its_parts() {
        let (ca, material) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        let again = CertificateAuthority::from_parts(CaKind::Connectors, material.cert_pem(), material.key_pkcs8_der())
            .unwrap();
        assert_eq!(again.cert_der(), ca.cert_der());
        assert_eq!(again.key_identifier(), ca.key_identifier());
        assert_eq!(again.not_before(), ca.not_before());
    }

    #[test]
    fn refuses_mismatched_parts() {
        let (_, connectors) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        let (_, agents) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let load = |kind, cert: &str, key: &[u8]| CertificateAuthority::from_parts(kind, cert, key).unwrap_err();
        // The Agents CA loaded as the Connectors CA.
        let err = load(CaKind::Connectors, agents.cert_pem(), agents.key_pkcs8_der());
        assert!(
            matches!(&err, PkiError::BadCaMaterial(m) if m.contains("Postern Agents CA")),
            "{err}"
        );
        // The right certificate with another CA's key.
        let err = load(CaKind::Connectors, connectors.cert_pem(), agents.key_pkcs8_der());
        assert!(
            matches!(&err, PkiError::BadCaMaterial(m) if m.contains("does not belong")),
            "{err}"
        );
        assert!(matches!(
            load(CaKind::Connectors, "garbage", connectors.key_pkcs8_der()),
            PkiError::BadCaMaterial(_)
        ));
        assert!(matches!(
            load(CaKind::Connectors, connectors.cert_pem(), b"garbage"),
            PkiError::BadCaMaterial(_)
        ));
    }

    #[test]
    fn debug_shows_no_key() {
        let (ca, material) = CertificateAuthority::generate(CaKind::Service, "i", NOW, CA_VALIDITY).unwrap();
        let key_hex: String = material.key_pkcs8_der()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        for debug in [format!("{ca:?}"), format!("{material:?}")] {
            assert!(!debug.contains(&format!("{:?}", &material.key_pkcs8_der()[..12])));
            assert!(!debug.contains(&key_hex));
        }
        assert!(format!("{material:?}").contains("[secret]"));
    }

    #[test]
    fn bad_generation_parameters_are_refused() {
        for (installation, validity) in [
            ("", CA_VALIDITY),
            ("a\nb", CA_VALIDITY),
            (&"x".repeat(65)[..], CA_VALIDITY),
            ("ok", Duration::from_secs(60)),
        ] {
            assert!(matches!(
                CertificateAuthority::generate(CaKind::Service, installation, NOW, validity),
                Err(PkiError::BadParameter(_))
            ));
        }
    }

    #[test]
    fn validity_is_checked_against_now() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Service, "i", NOW, CA_VALIDITY).unwrap();
        assert!(ca.check_valid_at(NOW).is_ok());
        assert!(matches!(
            ca.check_valid_at(NOW + CA_VALIDITY),
            Err(PkiError::CaNotValid(_))
        ));
        assert!(matches!(
            ca.check_valid_at(NOW - Duration::from_secs(3600)),
            Err(PkiError::CaNotValid(_))
        ));
    }

    #[test]
    fn kinds_have_stable_names() {
        for kind in CaKind::ALL {
            assert_eq!(CaKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(CaKind::Connectors.common_name(), "Postern Connectors CA");
        assert_eq!(CaKind::for_component(ComponentKind::Agent), CaKind::Agents);
    }
}
