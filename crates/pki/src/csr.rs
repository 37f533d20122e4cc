//! Certificate signing requests: making one on the component's host, and checking one
//! on the service before a CA certifies its key.
//!
//! A CSR proves possession of a key and carries nothing else the service uses. Every
//! field of the certificate (subject, names, usages, validity) is decided by the service
//! (STACK.md pitfall 3). To make a mismatch visible rather than silently ignored, a CSR
//! that asks for anything is refused:
//!
//! - its subject must be empty (what [`make_csr`] produces) or exactly the subject the
//!   service would set, `CN={tenant_id}, O=Postern` in any order, for tools that cannot
//!   make an empty subject;
//! - it must carry no attributes at all: no extension request (CA flag, names, key
//!   usages), no challenge password;
//! - its signature must verify, with SHA-256 or stronger (RSA PKCS#1 v1.5, RSA-PSS or
//!   ECDSA);
//! - its key must pass the CA's [`KeyPolicy`].

use rcgen::{CertificateParams, DistinguishedName};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::oid_registry::{
    OID_PKCS1_RSASSAPSS, OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_X509_COMMON_NAME, OID_X509_ORGANIZATION_NAME,
};
use x509_parser::prelude::FromDer;

use crate::error::PkiError;
use crate::key::ComponentKey;
use crate::policy::{KeyAlg, KeyPolicy};

/// The organisation name in every certificate subject this crate writes.
pub(crate) const ORGANIZATION: &str = "Postern";

/// Largest CSR accepted, PEM or DER. An RSA-8192 CSR in PEM is under 4 KiB.
pub const MAX_CSR_LEN: usize = 16 * 1024;

/// Makes a certificate signing request for `key`, PEM encoded, with an empty subject
/// and no attributes: the service decides everything else.
pub fn make_csr(key: &ComponentKey) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let pair = key.signing_pair()?;
    params
        .serialize_request(&pair.0)
        .and_then(|csr| csr.pem())
        .map_err(|e| PkiError::Internal(format!("making the CSR failed: {e}")))
}

/// A CSR that passed every check: the key to certify.
#[derive(Debug)]
pub(crate) struct CheckedCsr {
    /// The requester's public key, DER SubjectPublicKeyInfo exactly as in the CSR.
    pub(crate) spki_der: Vec<u8>,
    /// Its algorithm, allowed by the policy.
    pub(crate) alg: KeyAlg,
}

/// Decodes `input` (PEM or DER) and runs every check in the module documentation.
pub(crate) fn check_csr(input: &[u8], tenant_id: &str, policy: &KeyPolicy) -> Result<CheckedCsr, PkiError> {
    if input.len() > MAX_CSR_LEN {
        return Err(PkiError::BadCsr(format!("larger than {MAX_CSR_LEN} bytes")));
    }
    let pem_der;
    let der: &[u8] = if input.trim_ascii_start().starts_with(b"-----BEGIN") {
        pem_der = CertificateSigningRequestDer::from_pem_slice(input)
            .map_err(|_| PkiError::BadCsr("PEM input holds no CERTIFICATE REQUEST".into()))?;
        pem_der.as_ref()
    } else {
        input
    };
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|_| PkiError::BadCsr("not a PKCS#10 request".into()))?;
    if !rest.is_empty() {
        return Err(PkiError::BadCsr("trailing bytes after the request".into()));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(PkiError::BadCsr(format!("version {} (only v1 exists)", info.version.0)));
    }

    // The key first: never feed an unwanted key type to the signature verifier.
    let alg = policy.check(&info.subject_pki)?;

    let sig_oid = &csr.signature_algorithm.algorithm;
    let strong = [
        OID_PKCS1_SHA256WITHRSA,
        OID_PKCS1_SHA384WITHRSA,
        OID_PKCS1_SHA512WITHRSA,
        OID_PKCS1_RSASSAPSS,
        OID_SIG_ECDSA_WITH_SHA256,
        OID_SIG_ECDSA_WITH_SHA384,
    ];
    if !strong.contains(sig_oid) {
        return Err(PkiError::BadCsr(format!(
            "signature algorithm {} is not accepted; sign with SHA-256 or stronger",
            sig_oid.to_id_string()
        )));
    }
    csr.verify_signature()
        .map_err(|_| PkiError::BadCsr("signature does not verify with the request's own key".into()))?;

    if !info.attributes().is_empty() {
        let asked: Vec<String> = info
            .attributes()
            .iter()
            .flat_map(|a| match a.parsed_attribute() {
                ParsedCriAttribute::ExtensionRequest(r) => r
                    .extensions
                    .iter()
                    .map(|e| format!("extension {}", e.oid.to_id_string()))
                    .collect(),
                _ => vec![format!("attribute {}", a.oid.to_id_string())],
            })
            .collect();
        let asked = if asked.is_empty() {
            "an empty extension request".to_string()
        } else {
            asked.join(", ")
        };
        return Err(PkiError::BadCsr(format!(
            "it asks for {asked}; the service sets every extension itself, send a request without attributes"
        )));
    }

    check_subject(&csr, tenant_id)?;

    Ok(CheckedCsr {
        spki_der: info.subject_pki.raw.to_vec(),
        alg,
    })
}

/// The subject must be empty, or exactly `CN={tenant_id}, O=Postern`.
fn check_subject(csr: &X509CertificationRequest<'_>, tenant_id: &str) -> Result<(), PkiError> {
    let subject = &csr.certification_request_info.subject;
    let attrs: Vec<_> = subject.iter_attributes().collect();
    if attrs.is_empty() {
        return Ok(());
    }
    let value_is = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>, want: &str| attr.as_str().ok() == Some(want);
    let cn_ok = attrs
        .iter()
        .filter(|a| *a.attr_type() == OID_X509_COMMON_NAME)
        .map(|a| value_is(a, tenant_id))
        .eq([true]);
    let o_ok = attrs
        .iter()
        .filter(|a| *a.attr_type() == OID_X509_ORGANIZATION_NAME)
        .map(|a| value_is(a, ORGANIZATION))
        .eq([true]);
    if attrs.len() == 2 && cn_ok && o_ok {
        return Ok(());
    }
    Err(PkiError::BadCsr(format!(
        "subject {:?} is not allowed; leave it empty (the service sets CN=<tenant>, O={ORGANIZATION})",
        subject.to_string()
    )))
}

#[cfg(test)]
mod tests {
    use rcgen::{
        Attribute, BasicConstraints, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
        PKCS_ECDSA_P521_SHA512, PKCS_ED25519,
    };

    use super::*;
    use crate::key::generate_key;

    const TENANT: &str = "tenant-1";

    fn csr_with(params: CertificateParams, key: &KeyPair) -> String {
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn empty_params() -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p
    }

    fn refused(csr: &[u8], policy: &KeyPolicy) -> PkiError {
        check_csr(csr, TENANT, policy).unwrap_err()
    }

    #[test]
    fn own_csrs_pass_in_pem_and_der() {
        let key = generate_key(KeyAlg::EcdsaP256).unwrap();
        let pem = make_csr(&key).unwrap();
        let checked = check_csr(pem.as_bytes(), TENANT, &KeyPolicy::connectors()).unwrap();
        assert_eq!(checked.alg, KeyAlg::EcdsaP256);
        assert_eq!(checked.spki_der, key.public_spki_der());
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let checked = check_csr(der.as_ref(), TENANT, &KeyPolicy::connectors()).unwrap();
        assert_eq!(checked.spki_der, key.public_spki_der());
    }

    #[test]
    fn openssl_made_csr_passes() {
        let csr = include_bytes!("../testdata/rsa2048_openssl.csr");
        assert_eq!(
            check_csr(csr, TENANT, &KeyPolicy::agents()).unwrap().alg,
            KeyAlg::Rsa(2048)
        );
        assert_eq!(
            check_csr(csr, TENANT, &KeyPolicy::connectors()).unwrap().alg,
            KeyAlg::Rsa(2048)
        );
    }

    #[test]
    fn flipped_signature_byte_is_refused() {
        for alg in [KeyAlg::EcdsaP256, KeyAlg::Rsa(2048)] {
            let key = generate_key(alg).unwrap();
            let pem = make_csr(&key).unwrap();
            let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
            // The signature BIT STRING ends the request: its last byte is signature.
            let last = der.len() - 1;
            der[last] ^= 0x01;
            let err = refused(&der, &KeyPolicy::connectors());
            assert!(
                matches!(&err, PkiError::BadCsr(m) if m.contains("signature does not verify")),
                "{err}"
            );
        }
    }

    #[test]
    fn requested_extensions_are_refused() {
        let key = KeyPair::generate().unwrap();
        let mut ca = empty_params();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut sans = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        sans.distinguished_name = DistinguishedName::new();
        let mut usages = empty_params();
        usages.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let mut ekus = empty_params();
        ekus.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut not_ca = empty_params();
        not_ca.is_ca = IsCa::ExplicitNoCa;
        for (name, params, oid) in [
            ("CA:true", ca, "2.5.29.19"),
            ("SAN", sans, "2.5.29.17"),
            ("key usage", usages, "2.5.29.15"),
            ("EKU", ekus, "2.5.29.37"),
            ("CA:false", not_ca, "2.5.29.19"),
        ] {
            let err = refused(csr_with(params, &key).as_bytes(), &KeyPolicy::connectors());
            assert!(
                matches!(&err, PkiError::BadCsr(m) if m.contains(&format!("extension {oid}"))),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn other_attributes_are_refused() {
        let key = KeyPair::generate().unwrap();
        // challengePassword, a PrintableString "secret".
        let attr = Attribute {
            oid: &[1, 2, 840, 113549, 1, 9, 7],
            values: vec![0x31, 0x08, 0x13, 0x06, b's', b'e', b'c', b'r', b'e', b't'],
        };
        let csr = empty_params()
            .serialize_request_with_attributes(&key, vec![attr])
            .unwrap();
        let err = refused(csr.pem().unwrap().as_bytes(), &KeyPolicy::connectors());
        assert!(
            matches!(&err, PkiError::BadCsr(m) if m.contains("attribute 1.2.840.113549.1.9.7")),
            "{err}"
        );
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn subject_must_be_empty_or_exactly_ours() {
        let key = KeyPair::generate().unwrap();
        let with_dn = |entries: &[(DnType, &str)]| {
            let mut p = empty_params();
            for (ty, v) in entries {
                p.distinguished_name.push(ty.clone(), *v);
            }
            csr_with(p, &key)
        };
        let policy = KeyPolicy::connectors();
        let ours = with_dn(&[(DnType::OrganizationName, "Postern"), (DnType::CommonName, TENANT)]);
        assert!(check_csr(ours.as_bytes(), TENANT, &policy).is_ok());
        for bad in [
            with_dn(&[(DnType::CommonName, TENANT)]),
            with_dn(&[
                (DnType::CommonName, "other-tenant"),
                (DnType::OrganizationName, "Postern"),
            ]),
            with_dn(&[(DnType::CommonName, TENANT), (DnType::OrganizationName, "Evil")]),
            with_dn(&[
                (DnType::CommonName, TENANT),
                (DnType::OrganizationName, "Postern"),
                (DnType::OrganizationalUnitName, "x"),
            ]),
            with_dn(&[(DnType::CommonName, TENANT), (DnType::CommonName, "Postern")]),
        ] {
            let err = check_csr(bad.as_bytes(), TENANT, &policy).unwrap_err();
            assert!(matches!(&err, PkiError::BadCsr(m) if m.contains("subject")), "{err}");
        }
    }

    #[test]
    fn keys_outside_the_policy_are_refused() {
        let ecdsa = make_csr(&generate_key(KeyAlg::EcdsaP256).unwrap()).unwrap();
        let p384 = make_csr(&generate_key(KeyAlg::EcdsaP384).unwrap()).unwrap();
        let ed25519 = csr_with(empty_params(), &KeyPair::generate_for(&PKCS_ED25519).unwrap());
        let p521 = csr_with(empty_params(), &KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap());
        let rsa1024 = include_str!("../testdata/rsa1024.csr");
        let rsa2056 = include_str!("../testdata/rsa2056.csr");
        let rsa_e3 = include_str!("../testdata/rsa2048_e3.csr");
        let k1 = include_str!("../testdata/secp256k1.csr");
        let agents = KeyPolicy::agents();
        let connectors = KeyPolicy::connectors();
        let cases: [(&str, &KeyPolicy, &str); 11] = [
            (&ecdsa, &agents, "ECDSA P-256 is not allowed"),
            (&p384, &agents, "ECDSA P-384 is not allowed"),
            (rsa1024, &agents, "RSA 1024 is not allowed"),
            (rsa1024, &connectors, "RSA 1024 is not allowed"),
            (rsa2056, &connectors, "RSA 2056 is not allowed"),
            (rsa_e3, &agents, "exponent 3 is not 65537"),
            (&ed25519, &connectors, "key type 1.3.101.112 is not supported"),
            (&ed25519, &agents, "key type 1.3.101.112 is not supported"),
            (&p521, &connectors, "elliptic curve 1.3.132.0.35 is not supported"),
            (k1, &connectors, "elliptic curve 1.3.132.0.10 is not supported"),
            (k1, &agents, "elliptic curve 1.3.132.0.10 is not supported"),
        ];
        for (csr, policy, why) in cases {
            let err = refused(csr.as_bytes(), policy);
            assert!(matches!(&err, PkiError::WeakKey(m) if m.contains(why)), "{why}: {err}");
        }
        assert!(check_csr(p384.as_bytes(), TENANT, &connectors).is_ok());
    }

    #[test]
    fn sha1_signature_is_refused() {
        let err = refused(include_bytes!("../testdata/rsa2048_sha1.csr"), &KeyPolicy::agents());
        assert!(
            matches!(&err, PkiError::BadCsr(m) if m.contains("1.2.840.113549.1.1.5")),
            "{err}"
        );
    }

    #[test]
    fn no_single_byte_change_alters_what_is_certified() {
        // A cheap stand-in for a fuzzer. The decoder must not panic on any mutation, and
        // must refuse every change to the signed part (subject, key, attributes). The
        // parser tolerates a few changes to the unsigned envelope (for example the class
        // bits of the outer tags); those leave the signed part, and so the key the
        // service certifies, exactly as they were.
        for alg in [KeyAlg::EcdsaP256, KeyAlg::Rsa(2048)] {
            let key = generate_key(alg).unwrap();
            let pem = make_csr(&key).unwrap();
            let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
            let (_, parsed) = X509CertificationRequest::from_der(&der).unwrap();
            let tbs = parsed.certification_request_info.raw;
            let tbs_start = der.windows(tbs.len()).position(|w| w == tbs).unwrap();
            let signed = tbs_start..tbs_start + tbs.len();
            for i in 0..der.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut mutated = der.clone();
                    mutated[i] ^= flip;
                    if let Ok(checked) = check_csr(&mutated, TENANT, &KeyPolicy::connectors()) {
                        assert!(!signed.contains(&i), "{alg}: change at signed byte {i} accepted");
                        assert_eq!(checked.spki_der, key.public_spki_der());
                    }
                }
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        let policy = KeyPolicy::connectors();
        let big = vec![b'A'; MAX_CSR_LEN + 1];
        let cert_pem = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let inputs: [&[u8]; 6] = [
            b"",
            b"garbage",
            b"\x30\x03\x02\x01\x00",
            b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n",
            cert_pem.as_bytes(),
            &big,
        ];
        for input in inputs {
            assert!(matches!(refused(input, &policy), PkiError::BadCsr(_)));
        }
        let pem = make_csr(&generate_key(KeyAlg::EcdsaP256).unwrap()).unwrap();
        let mut der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
        der.push(0);
        assert!(matches!(refused(&der, &policy), PkiError::BadCsr(m) if m.contains("trailing")));
    }
}
