//! Issuing leaf certificates: component client certificates from a checked CSR, and the
//! service's own server certificate. The service builds every field (STACK.md pitfall 3).
//!
//! Client certificate profile (Connectors and Agents CAs):
//!
//! - subject `CN={tenant_id}, O=Postern`: the subject is the tenant (PTA-3);
//! - URI subject alternative name `urn:postern:{connector|agent}:{tenant_id}:{component_id}`;
//! - basicConstraints CA:false (critical); keyUsage digitalSignature, plus
//!   keyEncipherment for RSA keys (critical); extendedKeyUsage clientAuth only;
//! - subject and authority key identifiers;
//! - a random positive 16-byte serial (see [`crate::serial`]);
//! - valid from `now` less [`CLOCK_SKEW_ALLOWANCE`] to `now + validity`, cut short to the
//!   CA's own expiry if that comes first (the returned [`IssuedCert::not_after`] says
//!   which, and [`crate::renewal_due`] renews such a certificate in time).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use postern_time::UnixTime;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::DnsName;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;
use zeroize::Zeroizing;

use crate::ca::{CaKind, CertificateAuthority};
use crate::csr::{ORGANIZATION, check_csr};
use crate::error::{PkiError, internal};
use crate::identity::{ComponentBinding, ComponentKind, MAX_ID_LEN, check_id};
use crate::key::{SecretKeyPair, key_id};
use crate::policy::KeyPolicy;
use crate::serial::{random_serial, to_text};
use crate::validity::{CLOCK_SKEW_ALLOWANCE, check_leaf_validity, to_asn1};

/// Most names one server certificate may carry.
const MAX_SERVER_NAMES: usize = 100;

/// What the service wants certified for a component, decided from the enrolment token or
/// the renewing component's current certificate, never from the CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertRequest {
    /// The tenant proven at enrolment; becomes the subject CN.
    pub tenant_id: String,
    /// The component's ID in the store.
    pub component_id: String,
    /// Connector or agent; must match the CA's kind.
    pub component: ComponentKind,
    /// Lifetime from now ([`crate::CONNECTOR_CERT_VALIDITY`], [`crate::AGENT_CERT_VALIDITY`]).
    pub validity: Duration,
    /// Keys accepted. The key must also satisfy the component kind's own policy
    /// ([`KeyPolicy::for_component`]): a caller can narrow the policy, never widen it.
    pub policy: KeyPolicy,
}

impl ClientCertRequest {
    /// A request with the recommended validity and the kind's policy.
    pub fn new(component: ComponentKind, tenant_id: impl Into<String>, component_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            component_id: component_id.into(),
            component,
            validity: match component {
                ComponentKind::Connector => crate::CONNECTOR_CERT_VALIDITY,
                ComponentKind::Agent => crate::AGENT_CERT_VALIDITY,
            },
            policy: KeyPolicy::for_component(component),
        }
    }
}

/// A certificate just issued, with what the store keeps about it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The serial's text form: lowercase hex, 32 characters (see [`crate::serial`]).
    pub serial: String,
    /// Start of validity as written in the certificate (`now` less the skew allowance).
    pub not_before: UnixTime,
    /// End of validity as written in the certificate.
    pub not_after: UnixTime,
    /// The certified public key, DER SubjectPublicKeyInfo (the agent's RSA-OAEP key).
    pub public_key_spki_der: Vec<u8>,
    /// The public key's [`crate::key_id`].
    pub key_id: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("serial", &self.serial)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Certifies the key in `csr` (PEM or DER) as a client certificate for the component
    /// in `req`, with the profile in this module's documentation. The CSR is checked
    /// first (see [`crate::csr`]): its signature, its key against `req.policy` and the
    /// component kind's policy, and that it asks for nothing. The Connectors CA certifies
    /// only connectors and the Agents CA only agents ([`PkiError::WrongCa`] otherwise).
    pub fn issue_client(&self, csr: &[u8], req: &ClientCertRequest, now: UnixTime) -> Result<IssuedCert, PkiError> {
        if self.kind() != CaKind::for_component(req.component) {
            return Err(PkiError::WrongCa {
                ca: self.kind(),
                component: req.component,
            });
        }
        check_id(&req.tenant_id)?;
        check_id(&req.component_id)?;
        check_leaf_validity(req.validity)?;
        self.check_valid_at(now)?;

        let checked = check_csr(csr, &req.tenant_id, &req.policy)?;
        KeyPolicy::for_component(req.component).check_spki(&checked.spki_der)?;

        let binding = ComponentBinding {
            kind: req.component,
            tenant_id: req.tenant_id.clone(),
            component_id: req.component_id.clone(),
        };
        let uri = binding
            .to_uri()
            .try_into()
            .map_err(|_| PkiError::BadParameter("component URI is not ASCII".into()))?;
        let mut key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if checked.alg.is_rsa() {
            key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        let leaf = Leaf {
            subject_cn: &req.tenant_id,
            names: vec![SanType::URI(uri)],
            key_usages,
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            validity: req.validity,
        };
        let public_key = SubjectPublicKeyInfo::from_der(&checked.spki_der)
            .map_err(|e| PkiError::WeakKey(format!("public key cannot be certified: {e}")))?;
        let issued = self.sign_leaf(&leaf, &public_key, now)?;
        if issued.public_key_spki_der != checked.spki_der {
            return Err(PkiError::Internal(
                "issued certificate does not carry the requested key".into(),
            ));
        }
        Ok(issued)
    }

    /// Issues the service's own TLS server certificate for `hostnames` (DNS names and/or
    /// IP literals; no wildcards) with a new ECDSA P-256 key, returned as PKCS#8 DER.
    /// Subject `CN={first name}, O=Postern`, the names as subject alternative names,
    /// extendedKeyUsage serverAuth only, otherwise the client profile. Service CA only.
    pub fn issue_server(
        &self,
        hostnames: &[String],
        now: UnixTime,
        validity: Duration,
    ) -> Result<(IssuedCert, Zeroizing<Vec<u8>>), PkiError> {
        if self.kind() != CaKind::Service {
            return Err(PkiError::BadParameter(format!(
                "the {} CA does not issue server certificates; use the Service CA",
                self.kind().as_str()
            )));
        }
        check_leaf_validity(validity)?;
        self.check_valid_at(now)?;
        let names = server_names(hostnames)?;
        let first = hostnames.first().map(|h| h.to_ascii_lowercase()).unwrap_or_default();
        let key = SecretKeyPair::generate_p256()?;
        let leaf = Leaf {
            subject_cn: if first.len() <= MAX_ID_LEN {
                &first
            } else {
                "Postern service"
            },
            names,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            validity,
        };
        let issued = self.sign_leaf(&leaf, &key.0, now)?;
        Ok((issued, key.pkcs8()))
    }

    /// Issues a service instance's certificate for talking to its peers
    /// (proxy peering between instances): DNS name `hostname`, a new ECDSA
    /// P-256 key (PKCS#8 DER), extendedKeyUsage serverAuth *and* clientAuth, so
    /// each instance both serves and presents it. Service CA only; the control
    /// listener's server certificates never carry clientAuth, so only these
    /// pass a peer's client check.
    pub fn issue_peer(
        &self,
        hostname: &str,
        now: UnixTime,
        validity: Duration,
    ) -> Result<(IssuedCert, Zeroizing<Vec<u8>>), PkiError> {
        if self.kind() != CaKind::Service {
            return Err(PkiError::BadParameter(format!(
                "the {} CA does not issue peer certificates; use the Service CA",
                self.kind().as_str()
            )));
        }
        check_leaf_validity(validity)?;
        self.check_valid_at(now)?;
        let names = server_names(&[hostname.to_owned()])?;
        let key = SecretKeyPair::generate_p256()?;
        let leaf = Leaf {
            subject_cn: "Postern instance",
            names,
            key_usages: vec![KeyUsagePurpose::DigitalSignature],
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            validity,
        };
        let issued = self.sign_leaf(&leaf, &key.0, now)?;
        Ok((issued, key.pkcs8()))
    }

    /// Builds, signs and reads back one leaf certificate.
    fn sign_leaf(
        &self,
        leaf: &Leaf<'_>,
        public_key: &impl PublicKeyData,
        now: UnixTime,
    ) -> Result<IssuedCert, PkiError> {
        let not_before = now - CLOCK_SKEW_ALLOWANCE;
        let not_after = (now + leaf.validity).min(self.not_after());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, leaf.subject_cn);
        params.distinguished_name.push(DnType::OrganizationName, ORGANIZATION);
        params.subject_alt_names = leaf.names.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = leaf.key_usages.clone();
        params.extended_key_usages = leaf.eku.clone();
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = to_asn1(not_before)?;
        params.not_after = to_asn1(not_after)?;
        params.use_authority_key_identifier_extension = true;
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params
            .signed_by(public_key, &self.issuer()?)
            .map_err(internal("signing the certificate"))?;
        issued_from_der(cert.der().as_ref())
    }
}

/// The fields of one leaf certificate that differ between client and server.
struct Leaf<'a> {
    subject_cn: &'a str,
    names: Vec<SanType>,
    key_usages: Vec<KeyUsagePurpose>,
    eku: Vec<ExtendedKeyUsagePurpose>,
    validity: Duration,
}

/// Reads back what the store keeps from a certificate this crate just signed.
fn issued_from_der(der: &[u8]) -> Result<IssuedCert, PkiError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| PkiError::Internal("a certificate just issued does not parse".into()))?;
    let spki = cert.public_key().raw.to_vec();
    Ok(IssuedCert {
        cert_pem: crate::pem::encode("CERTIFICATE", der).to_string(),
        cert_der: der.to_vec(),
        serial: to_text(cert.raw_serial()),
        not_before: UnixTime::from_secs(cert.validity().not_before.timestamp()),
        not_after: UnixTime::from_secs(cert.validity().not_after.timestamp()),
        key_id: key_id(&spki),
        public_key_spki_der: spki,
    })
}

/// Checks and converts server names: IP literals become IP address names, everything
/// else must be a valid DNS name (lower-cased; wildcards refused). Duplicates dropped.
fn server_names(hostnames: &[String]) -> Result<Vec<SanType>, PkiError> {
    if hostnames.is_empty() || hostnames.len() > MAX_SERVER_NAMES {
        return Err(PkiError::BadParameter(format!(
            "a server certificate needs 1 to {MAX_SERVER_NAMES} host names"
        )));
    }
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    for host in hostnames {
        let name = if let Ok(ip) = host.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else {
            let lower = host.to_ascii_lowercase();
            if lower.contains('*') || lower.ends_with('.') || DnsName::try_from(lower.as_str()).is_err() {
                return Err(PkiError::BadParameter(format!(
                    "{host:?} is neither an IP address nor a DNS name (wildcards are not issued)"
                )));
            }
            SanType::DnsName(
                lower
                    .clone()
                    .try_into()
                    .map_err(|_| PkiError::BadParameter(format!("{host:?} is not ASCII")))?,
            )
        };
        if seen.insert(format!("{name:?}")) {
            names.push(name);
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::parse_x509_certificate;

    use super::*;
    use crate::csr::make_csr;
    use crate::key::generate_key;
    use crate::policy::KeyAlg;
    use crate::validity::{AGENT_CERT_VALIDITY, CA_VALIDITY, CONNECTOR_CERT_VALIDITY};

    const CA_NOW: UnixTime = UnixTime::from_secs(1_500_000_000);
    const NOW: UnixTime = UnixTime::from_secs(1_600_000_000);
    const TENANT: &str = "6f1c1f9e-3b0a-4d59-8b8e-3b7a1d2c4e5f";

    fn ca(kind: CaKind) -> CertificateAuthority {
        CertificateAuthority::generate(kind, "test", CA_NOW, CA_VALIDITY)
            .unwrap()
            .0
    }

    fn csr(alg: KeyAlg) -> String {
        make_csr(&generate_key(alg).unwrap()).unwrap()
    }

    #[test]
    fn agent_certificate_has_exactly_the_profile() {
        let ca = ca(CaKind::Agents);
        let key = generate_key(KeyAlg::Rsa(2048)).unwrap();
        let req = ClientCertRequest::new(ComponentKind::Agent, TENANT, "agent-7");
        let issued = ca.issue_client(make_csr(&key).unwrap().as_bytes(), &req, NOW).unwrap();
        assert_eq!(issued.public_key_spki_der, key.public_spki_der());
        assert_eq!(issued.key_id, key.key_id());
        assert_eq!(issued.not_before, NOW - CLOCK_SKEW_ALLOWANCE);
        assert_eq!(issued.not_after, NOW + AGENT_CERT_VALIDITY);

        let (rest, cert) = parse_x509_certificate(&issued.cert_der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(cert.version().0, 2, "v3");
        assert_eq!(cert.subject().to_string(), format!("CN={TENANT}, O=Postern"));
        assert_eq!(
            cert.issuer().as_raw(),
            parse_x509_certificate(ca.cert_der()).unwrap().1.subject().as_raw()
        );
        assert_eq!(
            cert.validity().not_before.timestamp(),
            (NOW - CLOCK_SKEW_ALLOWANCE).secs()
        );
        assert_eq!(
            cert.validity().not_after.timestamp(),
            (NOW + AGENT_CERT_VALIDITY).secs()
        );
        // Serial: 16 content bytes, positive, and the text form we report.
        assert_eq!(cert.raw_serial().len(), 16);
        assert!(cert.raw_serial()[0] & 0x80 == 0 && cert.raw_serial()[0] != 0);
        assert_eq!(issued.serial, to_text(cert.raw_serial()));
        assert_eq!(issued.serial.len(), 32);

        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && !bc.value.ca && bc.value.path_len_constraint.is_none());
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.digital_signature() && ku.value.key_encipherment());
        assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign() && !ku.value.data_encipherment());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth);
        assert!(!eku.server_auth && !eku.any && !eku.code_signing && !eku.email_protection);
        assert!(!eku.time_stamping && !eku.ocsp_signing && eku.other.is_empty());
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            san.general_names,
            vec![GeneralName::URI(&format!("urn:postern:agent:{TENANT}:agent-7"))]
        );
        let mut seen: Vec<String> = cert.extensions().iter().map(|e| e.oid.to_id_string()).collect();
        seen.sort();
        // AKI, SAN, KU, EKU, SKI, BC and nothing else.
        assert_eq!(
            seen,
            [
                "2.5.29.14",
                "2.5.29.15",
                "2.5.29.17",
                "2.5.29.19",
                "2.5.29.35",
                "2.5.29.37"
            ]
        );
        cert.verify_signature(Some(parse_x509_certificate(ca.cert_der()).unwrap().1.public_key()))
            .unwrap();
    }

    #[test]
    fn ecdsa_connector_gets_no_key_encipherment() {
        let ca = ca(CaKind::Connectors);
        let req = ClientCertRequest::new(ComponentKind::Connector, TENANT, "c1");
        let issued = ca.issue_client(csr(KeyAlg::EcdsaP256).as_bytes(), &req, NOW).unwrap();
        let (_, cert) = parse_x509_certificate(&issued.cert_der).unwrap();
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment());
        assert_eq!(issued.not_after, NOW + CONNECTOR_CERT_VALIDITY);
    }

    #[test]
    fn serials_differ_between_certificates() {
        let ca = ca(CaKind::Connectors);
        let req = ClientCertRequest::new(ComponentKind::Connector, TENANT, "c1");
        let csr = csr(KeyAlg::EcdsaP256);
        let a = ca.issue_client(csr.as_bytes(), &req, NOW).unwrap();
        let b = ca.issue_client(csr.as_bytes(), &req, NOW).unwrap();
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.key_id, b.key_id);
    }

    #[test]
    fn ca_and_component_kinds_must_match() {
        let csr = csr(KeyAlg::Rsa(2048));
        for (ca_kind, component) in [
            (CaKind::Agents, ComponentKind::Connector),
            (CaKind::Connectors, ComponentKind::Agent),
            (CaKind::Service, ComponentKind::Agent),
            (CaKind::Service, ComponentKind::Connector),
        ] {
            let req = ClientCertRequest::new(component, TENANT, "x");
            let err = ca(ca_kind).issue_client(csr.as_bytes(), &req, NOW).unwrap_err();
            assert!(matches!(err, PkiError::WrongCa { ca, component: c } if ca == ca_kind && c == component));
        }
    }

    #[test]
    fn a_widened_policy_does_not_let_ecdsa_agents_through() {
        let mut req = ClientCertRequest::new(ComponentKind::Agent, TENANT, "a1");
        req.policy = KeyPolicy::connectors();
        let err = ca(CaKind::Agents)
            .issue_client(csr(KeyAlg::EcdsaP256).as_bytes(), &req, NOW)
            .unwrap_err();
        assert!(matches!(err, PkiError::WeakKey(_)), "{err}");
    }

    #[test]
    fn bad_requests_are_refused() {
        let ca = ca(CaKind::Connectors);
        let csr = csr(KeyAlg::EcdsaP256);
        let base = ClientCertRequest::new(ComponentKind::Connector, TENANT, "c1");
        let cases = [
            ClientCertRequest {
                tenant_id: "a:b".into(),
                ..base.clone()
            },
            ClientCertRequest {
                component_id: String::new(),
                ..base.clone()
            },
            ClientCertRequest {
                validity: Duration::ZERO,
                ..base.clone()
            },
            ClientCertRequest {
                validity: Duration::from_secs(10 * 365 * 86_400),
                ..base.clone()
            },
        ];
        for req in cases {
            assert!(matches!(
                ca.issue_client(csr.as_bytes(), &req, NOW),
                Err(PkiError::BadParameter(_))
            ));
        }
    }

    #[test]
    fn expired_or_future_ca_does_not_issue() {
        let ca = ca(CaKind::Connectors);
        let req = ClientCertRequest::new(ComponentKind::Connector, TENANT, "c1");
        let csr = csr(KeyAlg::EcdsaP256);
        for now in [CA_NOW - Duration::from_secs(3600), CA_NOW + CA_VALIDITY] {
            assert!(matches!(
                ca.issue_client(csr.as_bytes(), &req, now),
                Err(PkiError::CaNotValid(_))
            ));
        }
    }

    #[test]
    fn validity_is_cut_short_at_the_ca_expiry() {
        let ca = ca(CaKind::Connectors);
        let req = ClientCertRequest::new(ComponentKind::Connector, TENANT, "c1");
        let late = CA_NOW + CA_VALIDITY - Duration::from_secs(10 * 86_400);
        let issued = ca.issue_client(csr(KeyAlg::EcdsaP256).as_bytes(), &req, late).unwrap();
        assert_eq!(issued.not_after, ca.not_after());
        assert!(crate::renewal_due(
            ComponentKind::Connector,
            issued.not_before,
            issued.not_after,
            late
        ));
    }

    #[test]
    fn server_certificate_profile() {
        let ca = ca(CaKind::Service);
        let names = [
            "Postern.Example.com".to_string(),
            "10.0.0.1".into(),
            "::1".into(),
            "postern.example.com".into(),
        ];
        let (issued, key) = ca.issue_server(&names, NOW, Duration::from_secs(86_400)).unwrap();
        let (_, cert) = parse_x509_certificate(&issued.cert_der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=postern.example.com, O=Postern");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        let san = &cert.subject_alternative_name().unwrap().unwrap().value.general_names;
        assert_eq!(
            san,
            &vec![
                GeneralName::DNSName("postern.example.com"),
                GeneralName::IPAddress(&[10, 0, 0, 1]),
                GeneralName::IPAddress(&std::net::Ipv6Addr::LOCALHOST.octets()),
            ]
        );
        let server_key = crate::ComponentKey::from_pkcs8_der(&key).unwrap();
        assert_eq!(server_key.public_spki_der(), issued.public_key_spki_der);
    }

    #[test]
    fn server_certificates_only_from_the_service_ca_and_for_valid_names() {
        let names = vec!["postern.example.com".to_string()];
        for kind in [CaKind::Connectors, CaKind::Agents] {
            assert!(matches!(
                ca(kind).issue_server(&names, NOW, AGENT_CERT_VALIDITY),
                Err(PkiError::BadParameter(_))
            ));
        }
        let service = ca(CaKind::Service);
        for bad in [
            vec![],
            vec!["*.example.com".to_string()],
            vec!["bad name".into()],
            vec!["".into()],
        ] {
            assert!(
                matches!(
                    service.issue_server(&bad, NOW, AGENT_CERT_VALIDITY),
                    Err(PkiError::BadParameter(_))
                ),
                "{bad:?}"
            );
        }
    }
}
