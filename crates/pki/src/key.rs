//! Private keys: a component's own key (generated and kept on the on-prem host), the
//! key IDs derived from public keys, and the zeroizing wrapper around signing keys.

use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256, PublicKeyData, SignatureAlgorithm};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use zeroize::{Zeroize, Zeroizing};

use crate::error::PkiError;
use crate::policy::{KeyAlg, key_alg};

/// Bytes of SHA-256 kept in a key ID.
const KEY_ID_LEN: usize = 16;

/// The ID of a public key: base64url (no padding) of the first 16 bytes of the SHA-256
/// of its DER SubjectPublicKeyInfo, 22 characters. Tags the per-agent password
/// ciphertexts (PTA-5) and is stored beside each component's certificate.
pub fn key_id(spki_der: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, spki_der);
    URL_SAFE_NO_PAD.encode(&hash.as_ref()[..KEY_ID_LEN])
}

/// A component's private key, kept on the on-prem host. The PKCS#8 bytes are zeroed when
/// it is dropped, and `Debug` shows only the algorithm and key ID.
pub struct ComponentKey {
    alg: KeyAlg,
    pkcs8: Zeroizing<Vec<u8>>,
    spki: Vec<u8>,
}

impl fmt::Debug for ComponentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentKey")
            .field("alg", &self.alg)
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl ComponentKey {
    /// The key's algorithm and size.
    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The private key, PKCS#8 DER. Write it only to a file only the component can read.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The private key as a PKCS#8 PEM (`PRIVATE KEY`) document.
    pub fn to_pem(&self) -> Zeroizing<String> {
        crate::pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn public_spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The public key's [`key_id`].
    pub fn key_id(&self) -> String {
        key_id(&self.spki)
    }

    /// Loads a key from PKCS#8 DER: ECDSA P-256, ECDSA P-384 or RSA.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, PkiError> {
        let pair = SecretKeyPair::from_pkcs8(der)?;
        let spki = pair.0.subject_public_key_info();
        let alg = SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|_| PkiError::Internal("public key of a loaded key does not parse".into()))
            .and_then(|(_, parsed)| key_alg(&parsed).map_err(PkiError::BadParameter))?;
        Ok(Self {
            alg,
            pkcs8: Zeroizing::new(der.to_vec()),
            spki,
        })
    }

    /// Loads a key from a PKCS#8 PEM (`PRIVATE KEY`) document.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, PkiError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| PkiError::BadParameter("not a PKCS#8 PEM private key (BEGIN PRIVATE KEY)".into()))?;
        Self::from_pkcs8_der(der.secret_pkcs8_der())
    }

    /// The key ready to sign (a CSR).
    pub(crate) fn signing_pair(&self) -> Result<SecretKeyPair, PkiError> {
        SecretKeyPair::from_pkcs8(&self.pkcs8)
    }
}

/// Generates a new component key with aws-lc-rs. RSA sizes: 2048, 3072, 4096 or 8192
/// (8192 takes many seconds).
pub fn generate_key(alg: KeyAlg) -> Result<ComponentKey, PkiError> {
    let failed = |_| PkiError::Internal(format!("generating a {alg} key failed"));
    let pkcs8 = match alg {
        KeyAlg::EcdsaP256 | KeyAlg::EcdsaP384 => {
            let sign_alg = if alg == KeyAlg::EcdsaP256 {
                &ECDSA_P256_SHA256_ASN1_SIGNING
            } else {
                &ECDSA_P384_SHA384_ASN1_SIGNING
            };
            let doc = EcdsaKeyPair::generate_pkcs8(sign_alg, &SystemRandom::new()).map_err(failed)?;
            Zeroizing::new(doc.as_ref().to_vec())
        }
        KeyAlg::Rsa(bits) => {
            let size = match bits {
                2048 => KeySize::Rsa2048,
                3072 => KeySize::Rsa3072,
                4096 => KeySize::Rsa4096,
                8192 => KeySize::Rsa8192,
                _ => {
                    return Err(PkiError::BadParameter(format!(
                        "cannot generate RSA {bits}: use 2048, 3072, 4096 or 8192"
                    )));
                }
            };
            let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(failed)?;
            let der = pair.as_der().map_err(failed)?;
            Zeroizing::new(der.as_ref().to_vec())
        }
    };
    let key = ComponentKey::from_pkcs8_der(&pkcs8)?;
    if key.alg != alg {
        return Err(PkiError::Internal(format!(
            "generated {} when {alg} was asked",
            key.alg
        )));
    }
    Ok(key)
}

/// An rcgen signing key whose PKCS#8 copy is zeroed on drop (rcgen keeps one and does
/// not clear it by itself; aws-lc clears its own copy when freed).
pub(crate) struct SecretKeyPair(pub(crate) rcgen::KeyPair);

impl Drop for SecretKeyPair {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SecretKeyPair {
    /// Generates an ECDSA P-256 key, the type of every CA and server key this crate makes.
    pub(crate) fn generate_p256() -> Result<Self, PkiError> {
        rcgen::KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(Self)
            .map_err(|_| PkiError::Internal("generating an ECDSA P-256 key failed".into()))
    }

    /// Loads a PKCS#8 key of any type this crate uses, trying each in turn.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, PkiError> {
        const CANDIDATES: [&SignatureAlgorithm; 3] =
            [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384, &PKCS_RSA_SHA256];
        let der = PrivatePkcs8KeyDer::from(der);
        CANDIDATES
            .iter()
            .find_map(|alg| rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, alg).ok())
            .map(Self)
            .ok_or_else(|| PkiError::BadParameter("not a PKCS#8 ECDSA P-256, ECDSA P-384 or RSA private key".into()))
    }

    /// The private key, PKCS#8 DER, in a buffer zeroed on drop.
    pub(crate) fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.serialized_der().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_der_and_pem() {
        for alg in [KeyAlg::EcdsaP256, KeyAlg::EcdsaP384, KeyAlg::Rsa(2048)] {
            let key = generate_key(alg).unwrap();
            assert_eq!(key.alg(), alg);
            let again = ComponentKey::from_pkcs8_der(key.pkcs8_der()).unwrap();
            assert_eq!(again.public_spki_der(), key.public_spki_der());
            let pem = key.to_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            assert!(pem.lines().all(|l| l.len() <= 64));
            let from_pem = ComponentKey::from_pkcs8_pem(&pem).unwrap();
            assert_eq!(from_pem.pkcs8_der(), key.pkcs8_der());
            assert_eq!(from_pem.key_id(), key.key_id());
        }
    }

    #[test]
    fn key_ids_are_stable_and_distinct() {
        let a = generate_key(KeyAlg::EcdsaP256).unwrap();
        let b = generate_key(KeyAlg::EcdsaP256).unwrap();
        assert_eq!(a.key_id(), key_id(a.public_spki_der()));
        assert_eq!(a.key_id().len(), 22);
        assert!(!a.key_id().contains(['+', '/', '=']));
        assert_ne!(a.key_id(), b.key_id());
    }

    #[test]
    fn debug_shows_no_key_material() {
        let key = generate_key(KeyAlg::EcdsaP256).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains("EcdsaP256"));
        assert!(debug.contains(&key.key_id()));
        let pem = key.to_pem();
        let b64_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!debug.contains(&b64_body[..16]));
        assert!(!debug.contains(&format!("{:?}", &key.pkcs8_der()[..8])));
    }

    #[test]
    fn unusable_keys_and_sizes_are_refused() {
        assert!(matches!(
            generate_key(KeyAlg::Rsa(1024)),
            Err(PkiError::BadParameter(_))
        ));
        assert!(matches!(
            generate_key(KeyAlg::Rsa(2056)),
            Err(PkiError::BadParameter(_))
        ));
        assert!(matches!(
            ComponentKey::from_pkcs8_der(b"garbage"),
            Err(PkiError::BadParameter(_))
        ));
        assert!(matches!(
            ComponentKey::from_pkcs8_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(PkiError::BadParameter(_))
        ));
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        assert!(matches!(
            ComponentKey::from_pkcs8_der(ed.serialized_der()),
            Err(PkiError::BadParameter(_))
        ));
    }
}
