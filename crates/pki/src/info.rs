//! Reading certificates: what a (client) certificate says, and whether one was issued by
//! a given CA and is valid now.

use postern_time::UnixTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use crate::ca::CertificateAuthority;
use crate::error::PkiError;
use crate::identity::ComponentBinding;
use crate::key::key_id;
use crate::serial::to_text;

/// What a certificate says, as the service uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The serial's text form (see [`crate::serial`]).
    pub serial: String,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity.
    pub not_after: UnixTime,
    /// The subject common name: the tenant ID in a component certificate.
    pub subject_cn: Option<String>,
    /// The issuer common name (`Postern Agents CA`, ...).
    pub issuer_cn: Option<String>,
    /// The component URI, parsed; `None` for certificates that are not component
    /// certificates (CA and server certificates).
    pub component: Option<ComponentBinding>,
    /// Whether the certificate is a CA certificate.
    pub is_ca: bool,
    /// The certified public key, DER SubjectPublicKeyInfo.
    pub public_key_spki_der: Vec<u8>,
    /// The public key's [`crate::key_id`].
    pub key_id: String,
}

impl CertInfo {
    /// The tenant of a component certificate (subject CN and URI agree, see
    /// [`cert_info`]); `None` if this is not a component certificate.
    pub fn tenant_id(&self) -> Option<&str> {
        self.component.as_ref().map(|c| c.tenant_id.as_str())
    }
}

/// Reads a certificate given as PEM or DER. Does NOT verify it: use it on certificates a
/// TLS handshake (rooted at the right CA) has already verified, or through
/// [`CertificateAuthority::check_issued`]. Refuses a certificate with more than one
/// Postern component URI, or whose component URI names a tenant other than its subject
/// CN, so that a component certificate always names one tenant.
pub fn cert_info(cert_pem_or_der: &[u8]) -> Result<CertInfo, PkiError> {
    with_parsed(cert_pem_or_der, info_of)
}

/// Decodes a certificate given as PEM or DER and hands the parsed form to `then`.
fn with_parsed<T>(
    cert_pem_or_der: &[u8],
    then: impl FnOnce(&X509Certificate<'_>) -> Result<T, PkiError>,
) -> Result<T, PkiError> {
    let der = crate::pem::cert_der(cert_pem_or_der)
        .ok_or_else(|| PkiError::BadCertificate("PEM input holds no CERTIFICATE".into()))?;
    let (rest, cert) =
        X509Certificate::from_der(&der).map_err(|_| PkiError::BadCertificate("not an X.509 certificate".into()))?;
    if !rest.is_empty() {
        return Err(PkiError::BadCertificate("trailing bytes after the certificate".into()));
    }
    then(&cert)
}

fn info_of(cert: &X509Certificate<'_>) -> Result<CertInfo, PkiError> {
    let bad = |what: &str| PkiError::BadCertificate(what.into());
    let subject_cn = common_name(cert.subject())?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|_| bad("subject alternative names are malformed"))?;
    let mut components = Vec::new();
    for name in sans.iter().flat_map(|san| san.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name
            && let Some(binding) = ComponentBinding::parse_uri(uri)?
        {
            components.push(binding);
        }
    }
    if components.len() > 1 {
        return Err(bad("more than one component URI"));
    }
    let component = components.pop();
    if let Some(c) = &component
        && subject_cn.as_deref() != Some(c.tenant_id.as_str())
    {
        return Err(bad("the subject tenant and the component URI's tenant differ"));
    }
    let spki = cert.public_key().raw.to_vec();
    Ok(CertInfo {
        serial: to_text(cert.raw_serial()),
        not_before: UnixTime::from_secs(cert.validity().not_before.timestamp()),
        not_after: UnixTime::from_secs(cert.validity().not_after.timestamp()),
        subject_cn,
        issuer_cn: common_name(cert.issuer())?,
        component,
        is_ca: cert.is_ca(),
        key_id: key_id(&spki),
        public_key_spki_der: spki,
    })
}

/// The single common name of a name, if any.
fn common_name(name: &X509Name<'_>) -> Result<Option<String>, PkiError> {
    let mut cns = name.iter_common_name();
    let first = cns.next();
    if cns.next().is_some() {
        return Err(PkiError::BadCertificate("more than one common name".into()));
    }
    first
        .map(|cn| {
            cn.as_str()
                .map(str::to_owned)
                .map_err(|_| PkiError::BadCertificate("common name is not a string".into()))
        })
        .transpose()
}

impl CertificateAuthority {
    /// Reads a certificate (PEM or DER) after checking that this CA issued it (issuer
    /// name and signature) and that it is valid at `now`. For renewal requests (PTA-7,
    /// CON-4) and anything else that holds a certificate outside a TLS handshake.
    /// [`PkiError::CertificateExpired`] tells an expired certificate from a foreign one.
    pub fn check_issued(&self, cert_pem_or_der: &[u8], now: UnixTime) -> Result<CertInfo, PkiError> {
        let not_ours = || PkiError::BadCertificate(format!("not issued by the {} CA", self.kind().as_str()));
        let (_, ca_cert) = X509Certificate::from_der(self.cert_der())
            .map_err(|_| PkiError::BadCaMaterial("CA certificate does not parse".into()))?;
        let info = with_parsed(cert_pem_or_der, |cert| {
            if cert.issuer().as_raw() != ca_cert.subject().as_raw() {
                return Err(not_ours());
            }
            cert.verify_signature(Some(ca_cert.public_key()))
                .map_err(|_| not_ours())?;
            info_of(cert)
        })?;
        if now < info.not_before || now >= info.not_after {
            return Err(PkiError::CertificateExpired {
                not_before: info.not_before.secs(),
                not_after: info.not_after.secs(),
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ca::CaKind;
    use crate::csr::make_csr;
    use crate::identity::ComponentKind;
    use crate::issue::ClientCertRequest;
    use crate::key::generate_key;
    use crate::policy::KeyAlg;
    use crate::validity::CA_VALIDITY;

    const NOW: UnixTime = UnixTime::from_secs(1_700_000_000);

    fn issue(ca: &CertificateAuthority, kind: ComponentKind, alg: KeyAlg) -> (crate::IssuedCert, crate::ComponentKey) {
        let key = generate_key(alg).unwrap();
        let req = ClientCertRequest::new(kind, "tenant-a", "comp-1");
        (
            ca.issue_client(make_csr(&key).unwrap().as_bytes(), &req, NOW).unwrap(),
            key,
        )
    }

    #[test]
    fn reads_back_what_was_issued() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        let (issued, key) = issue(&ca, ComponentKind::Connector, KeyAlg::EcdsaP384);
        for input in [issued.cert_pem.as_bytes(), &issued.cert_der[..]] {
            let info = cert_info(input).unwrap();
            assert_eq!(info.serial, issued.serial);
            assert_eq!(info.not_before, issued.not_before);
            assert_eq!(info.not_after, issued.not_after);
            assert_eq!(info.subject_cn.as_deref(), Some("tenant-a"));
            assert_eq!(info.tenant_id(), Some("tenant-a"));
            assert_eq!(info.issuer_cn.as_deref(), Some("Postern Connectors CA"));
            assert_eq!(
                info.component,
                Some(ComponentBinding {
                    kind: ComponentKind::Connector,
                    tenant_id: "tenant-a".into(),
                    component_id: "comp-1".into(),
                })
            );
            assert!(!info.is_ca);
            assert_eq!(info.key_id, key.key_id());
            assert_eq!(info.key_id, issued.key_id);
            assert_eq!(info.public_key_spki_der, key.public_spki_der());
        }
        let ca_info = cert_info(ca.cert_pem().as_bytes()).unwrap();
        assert!(ca_info.is_ca && ca_info.component.is_none() && ca_info.tenant_id().is_none());
    }

    #[test]
    fn key_id_is_stable_across_renewals_with_the_same_key_only() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let key = generate_key(KeyAlg::Rsa(2048)).unwrap();
        let req = ClientCertRequest::new(ComponentKind::Agent, "t", "a");
        let csr = make_csr(&key).unwrap();
        let first = ca.issue_client(csr.as_bytes(), &req, NOW).unwrap();
        let second = ca
            .issue_client(csr.as_bytes(), &req, NOW + Duration::from_secs(60))
            .unwrap();
        let (other, _) = issue(&ca, ComponentKind::Agent, KeyAlg::Rsa(2048));
        let ids: Vec<String> = [&first, &second, &other]
            .iter()
            .map(|c| cert_info(&c.cert_der).unwrap().key_id)
            .collect();
        assert_eq!(ids[0], ids[1]);
        assert_ne!(ids[0], ids[2]);
    }

    #[test]
    fn check_issued_tells_ours_from_foreign_and_expired() {
        let (connectors, _) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        let (agents, _) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let (issued, _) = issue(&connectors, ComponentKind::Connector, KeyAlg::EcdsaP256);
        let info = connectors.check_issued(issued.cert_pem.as_bytes(), NOW).unwrap();
        assert_eq!(info.serial, issued.serial);
        assert!(matches!(
            agents.check_issued(&issued.cert_der, NOW),
            Err(PkiError::BadCertificate(_))
        ));
        assert!(matches!(
            connectors.check_issued(&issued.cert_der, issued.not_after),
            Err(PkiError::CertificateExpired { .. })
        ));
        // Another Connectors CA (same subject name, other key): the signature fails.
        let (impostor, _) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        assert!(matches!(
            impostor.check_issued(&issued.cert_der, NOW),
            Err(PkiError::BadCertificate(_))
        ));
    }

    #[test]
    fn component_certificates_name_exactly_one_tenant() {
        use rcgen::{CertificateParams, DnType, KeyPair, SanType};
        let self_signed = |cn: &str, uris: &[&str]| {
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
            params
                .self_signed(&KeyPair::generate().unwrap())
                .unwrap()
                .der()
                .to_vec()
        };
        let good = self_signed("t1", &["urn:postern:agent:t1:a1", "https://example.com/"]);
        assert_eq!(cert_info(&good).unwrap().tenant_id(), Some("t1"));
        for bad in [
            self_signed("t2", &["urn:postern:agent:t1:a1"]),
            self_signed("t1", &["urn:postern:agent:t1:a1", "urn:postern:agent:t1:a2"]),
            self_signed("t1", &["urn:postern:agent:t1"]),
        ] {
            assert!(matches!(cert_info(&bad), Err(PkiError::BadCertificate(_))));
        }
    }

    #[test]
    fn mutated_certificates_never_panic_and_never_pass_the_ca_check() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let (issued, _) = issue(&ca, ComponentKind::Agent, KeyAlg::Rsa(2048));
        let (_, parsed) = X509Certificate::from_der(&issued.cert_der).unwrap();
        let tbs = parsed.tbs_certificate.as_ref();
        let tbs_start = issued.cert_der.windows(tbs.len()).position(|w| w == tbs).unwrap();
        for i in 0..issued.cert_der.len() {
            let mut mutated = issued.cert_der.clone();
            mutated[i] ^= 0x01;
            let _ = cert_info(&mutated);
            if (tbs_start..tbs_start + tbs.len()).contains(&i) {
                assert!(
                    ca.check_issued(&mutated, NOW).is_err(),
                    "change at signed byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        for input in [
            &b""[..],
            b"garbage",
            b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
        ] {
            assert!(matches!(cert_info(input), Err(PkiError::BadCertificate(_))));
        }
    }
}
