//! Which public keys a component may have: key algorithms, the Connectors and Agents
//! policies, and the inspection of a SubjectPublicKeyInfo against them.

use std::fmt;

use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::error::PkiError;
use crate::identity::ComponentKind;

/// The only RSA public exponent accepted. Every mainstream key generator (aws-lc,
/// OpenSSL, Windows CNG, Go) uses 65537; the historic small exponent 3 has a record of
/// signature forgeries against lax verifiers, and large exponents make verification slow
/// at the requester's choosing. Allowing exactly one value removes those edge cases and
/// costs nobody anything.
pub const RSA_EXPONENT: u64 = 65_537;

/// RSA sizes (bits) agents may use: RSA only, 2048 or stronger (PTA-3), capped at 4096
/// because the agent decrypts one ciphertext per sign-in.
const AGENT_RSA_BITS: &[u32] = &[2048, 3072, 4096];

/// RSA sizes (bits) connectors may use: the sizes key generators offer, up to the
/// 8192 bits TLS verifiers (webpki, aws-lc) accept.
const CONNECTOR_RSA_BITS: &[u32] = &[2048, 3072, 4096, 8192];

/// A public key algorithm (and size) a component key may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyAlg {
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// RSA with a modulus of this many bits (public exponent 65537).
    Rsa(u32),
}

impl KeyAlg {
    /// The key type this crate generates for a new component by default: ECDSA P-256 for
    /// connectors (small, fast handshakes); RSA 3072 for agents, which need RSA for the
    /// password encryption (RSA-OAEP) and keep 128-bit strength for ciphertexts that may
    /// be recorded off a queue and attacked later.
    pub fn recommended(kind: ComponentKind) -> Self {
        match kind {
            ComponentKind::Connector => KeyAlg::EcdsaP256,
            ComponentKind::Agent => KeyAlg::Rsa(3072),
        }
    }

    /// Whether this is an RSA key (and so gets keyEncipherment in its key usage).
    pub fn is_rsa(self) -> bool {
        matches!(self, KeyAlg::Rsa(_))
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlg::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyAlg::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyAlg::Rsa(bits) => write!(f, "RSA {bits}"),
        }
    }
}

/// The keys a CA accepts in a certificate signing request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    ecdsa: &'static [KeyAlg],
    rsa_bits: &'static [u32],
}

impl KeyPolicy {
    /// Agents: RSA 2048, 3072 or 4096 only (PTA-3). The STS encrypts each password to
    /// the agent's key with RSA-OAEP, so the certified key must be RSA.
    pub fn agents() -> Self {
        Self {
            ecdsa: &[],
            rsa_bits: AGENT_RSA_BITS,
        }
    }

    /// Connectors: ECDSA P-256 or P-384, or RSA 2048, 3072, 4096 or 8192.
    pub fn connectors() -> Self {
        Self {
            ecdsa: &[KeyAlg::EcdsaP256, KeyAlg::EcdsaP384],
            rsa_bits: CONNECTOR_RSA_BITS,
        }
    }

    /// The policy for a kind of component.
    pub fn for_component(kind: ComponentKind) -> Self {
        match kind {
            ComponentKind::Connector => Self::connectors(),
            ComponentKind::Agent => Self::agents(),
        }
    }

    /// Whether `alg` is allowed.
    pub fn allows(&self, alg: KeyAlg) -> bool {
        match alg {
            KeyAlg::Rsa(bits) => self.rsa_bits.contains(&bits),
            ecdsa => self.ecdsa.contains(&ecdsa),
        }
    }

    /// Inspects a DER SubjectPublicKeyInfo and returns its algorithm if the policy
    /// allows it; [`PkiError::WeakKey`] naming what is allowed otherwise.
    pub fn check_spki(&self, spki_der: &[u8]) -> Result<KeyAlg, PkiError> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|_| PkiError::WeakKey("public key is not a valid SubjectPublicKeyInfo".into()))?;
        if !rest.is_empty() {
            return Err(PkiError::WeakKey("trailing bytes after the public key".into()));
        }
        self.check(&spki)
    }

    /// As [`KeyPolicy::check_spki`], on an already parsed key.
    pub(crate) fn check(&self, spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyAlg, PkiError> {
        let alg = key_alg(spki).map_err(|why| PkiError::WeakKey(format!("{why}; {}", self.describe())))?;
        if self.allows(alg) {
            Ok(alg)
        } else {
            Err(PkiError::WeakKey(format!("{alg} is not allowed; {}", self.describe())))
        }
    }

    /// What the policy allows, in words, for error messages.
    fn describe(&self) -> String {
        let mut allowed: Vec<String> = self.ecdsa.iter().map(KeyAlg::to_string).collect();
        if !self.rsa_bits.is_empty() {
            let sizes: Vec<String> = self.rsa_bits.iter().map(u32::to_string).collect();
            allowed.push(format!("RSA {} bits with exponent {RSA_EXPONENT}", sizes.join("/")));
        }
        format!("use {}", allowed.join(" or "))
    }
}

/// The algorithm and size of a public key, whatever the policy. Errors name what is
/// wrong with keys this crate can never accept (unknown types and curves, compressed
/// points, odd exponents).
pub(crate) fn key_alg(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyAlg, String> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_PKCS1_RSAENCRYPTION {
        // The parameters must be absent or NULL (RFC 3279); anything else is not plain RSA.
        if let Some(params) = &spki.algorithm.parameters
            && params.tag() != x509_parser::asn1_rs::Tag::Null
        {
            return Err("RSA key with unexpected algorithm parameters".into());
        }
        let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err("malformed RSA public key".into());
        };
        let exponent = rsa.try_exponent().map_err(|_| "malformed RSA exponent".to_string())?;
        if exponent != RSA_EXPONENT {
            return Err(format!("RSA public exponent {exponent} is not {RSA_EXPONENT}"));
        }
        Ok(KeyAlg::Rsa(modulus_bits(rsa.modulus)))
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| "EC key without a named curve".to_string())?;
        let (alg, point_len) = if curve == OID_EC_P256 {
            (KeyAlg::EcdsaP256, 65)
        } else if curve == OID_NIST_EC_P384 {
            (KeyAlg::EcdsaP384, 97)
        } else {
            return Err(format!("elliptic curve {} is not supported", curve.to_id_string()));
        };
        let point: &[u8] = &spki.subject_public_key.data;
        if point.len() != point_len || point.first() != Some(&0x04) {
            return Err(format!("{alg} public key is not an uncompressed point"));
        }
        Ok(alg)
    } else {
        Err(format!("key type {} is not supported", oid.to_id_string()))
    }
}

/// Exact bit length of an RSA modulus given as DER INTEGER content octets.
fn modulus_bits(modulus: &[u8]) -> u32 {
    let start = modulus.iter().position(|&b| b != 0).unwrap_or(modulus.len());
    let magnitude = &modulus[start..];
    match magnitude.first() {
        None => 0,
        Some(&top) => {
            let bytes = u32::try_from(magnitude.len()).unwrap_or(u32::MAX);
            bytes
                .saturating_sub(1)
                .saturating_mul(8)
                .saturating_add(8 - top.leading_zeros())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modulus_bits_are_exact() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0]), 0);
        assert_eq!(modulus_bits(&[0x00, 0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        let mut m = vec![0x00, 0xc5];
        m.extend([0u8; 255]);
        assert_eq!(modulus_bits(&m), 2048);
        m[1] = 0x7f;
        assert_eq!(modulus_bits(&m), 2047);
    }

    #[test]
    fn policies_allow_what_the_spec_says() {
        let agents = KeyPolicy::agents();
        for ok in [2048, 3072, 4096] {
            assert!(agents.allows(KeyAlg::Rsa(ok)));
        }
        for bad in [
            KeyAlg::Rsa(1024),
            KeyAlg::Rsa(2047),
            KeyAlg::Rsa(2056),
            KeyAlg::Rsa(8192),
            KeyAlg::EcdsaP256,
            KeyAlg::EcdsaP384,
        ] {
            assert!(!agents.allows(bad), "{bad}");
        }
        let connectors = KeyPolicy::connectors();
        for ok in [
            KeyAlg::EcdsaP256,
            KeyAlg::EcdsaP384,
            KeyAlg::Rsa(2048),
            KeyAlg::Rsa(3072),
            KeyAlg::Rsa(4096),
            KeyAlg::Rsa(8192),
        ] {
            assert!(connectors.allows(ok), "{ok}");
        }
        for bad in [
            KeyAlg::Rsa(1024),
            KeyAlg::Rsa(2560),
            KeyAlg::Rsa(9216),
            KeyAlg::Rsa(16384),
        ] {
            assert!(!connectors.allows(bad), "{bad}");
        }
        assert_eq!(KeyPolicy::for_component(ComponentKind::Agent), agents);
        assert!(agents.allows(KeyAlg::recommended(ComponentKind::Agent)));
        assert!(connectors.allows(KeyAlg::recommended(ComponentKind::Connector)));
    }

    #[test]
    fn garbage_spki_is_refused() {
        for bad in [&b""[..], b"\x30\x00", b"not a key at all"] {
            assert!(matches!(
                KeyPolicy::connectors().check_spki(bad),
                Err(PkiError::WeakKey(_))
            ));
        }
    }

    #[test]
    fn refusal_says_what_is_allowed() {
        let err = KeyPolicy::agents().check(&spki_of(&rcgen_p256_spki())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("ECDSA P-256 is not allowed"), "{msg}");
        assert!(msg.contains("RSA 2048/3072/4096 bits with exponent 65537"), "{msg}");
    }

    fn rcgen_p256_spki() -> Vec<u8> {
        use rcgen::PublicKeyData;
        rcgen::KeyPair::generate().unwrap().subject_public_key_info()
    }

    fn spki_of(der: &[u8]) -> SubjectPublicKeyInfo<'_> {
        SubjectPublicKeyInfo::from_der(der).unwrap().1
    }
}
