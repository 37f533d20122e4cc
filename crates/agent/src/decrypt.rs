//! The agent's half of the password encryption (PTA-5): the STS encrypts the password
//! once per registered agent key with RSA-OAEP-SHA256, binding tenant and request into
//! the OAEP label ([`postern_proto::relay::oaep_label`]); each agent picks the
//! ciphertext tagged with its own key ID and decrypts it here.
//!
//! The plaintext only ever lives in a zeroizing buffer and then in the returned
//! [`SecretString`]; no other copy escapes, and no error says anything about it.

use std::fmt;

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_keyring::SecretString;
use postern_pki::ComponentKey;
use postern_proto::relay::{AgentCiphertext, oaep_label};
use zeroize::{Zeroize, Zeroizing};

/// Longest base64 ciphertext accepted (an RSA-8192 ciphertext is 1,368 characters).
const MAX_CIPHERTEXT_B64: usize = 2048;

/// The agent's private key, ready to decrypt the passwords sent to it.
pub struct AgentKey {
    key_id: String,
    key: OaepPrivateDecryptingKey,
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Why a ciphertext could not be read. Says nothing about the plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The ciphertext is not standard padded base64, or absurdly long.
    #[error("the ciphertext is not base64 of a plausible size")]
    Encoding,
    /// RSA-OAEP refused it: another key, another label (tenant or request), or altered
    /// bytes. Never a "wrong password".
    #[error("the ciphertext does not decrypt with this agent's key and this request's label")]
    Oaep,
    /// It decrypted, but the password is not UTF-8.
    #[error("the decrypted password is not UTF-8")]
    NotUtf8,
}

/// The stored key is not one the agent can decrypt with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the agent's key cannot decrypt passwords: {0}")]
pub struct UnusableKey(String);

impl AgentKey {
    /// The decrypting half of the agent's component key (RSA only).
    pub fn from_component_key(key: &ComponentKey) -> Result<Self, UnusableKey> {
        if !key.alg().is_rsa() {
            return Err(UnusableKey(format!(
                "it is a {} key; agents need RSA (register the agent again)",
                key.alg()
            )));
        }
        let private = PrivateDecryptingKey::from_pkcs8(key.pkcs8_der()).map_err(|e| UnusableKey(e.to_string()))?;
        let key_oaep = OaepPrivateDecryptingKey::new(private).map_err(|_| UnusableKey("not an RSA key".into()))?;
        Ok(Self {
            key_id: key.key_id(),
            key: key_oaep,
        })
    }

    /// The key's ID ([`postern_pki::key_id`]), as the STS tags the ciphertext for it.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The ciphertext encrypted for this key, if the STS sent one.
    pub fn pick<'a>(&self, ciphertexts: &'a [AgentCiphertext]) -> Option<&'a AgentCiphertext> {
        ciphertexts.iter().find(|c| c.key_id == self.key_id)
    }

    /// Decrypts the password of request `request_id` of tenant `tenant_id`.
    pub fn decrypt(
        &self,
        tenant_id: &str,
        request_id: &str,
        ciphertext_b64: &str,
    ) -> Result<SecretString, DecryptError> {
        let mut scratch = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        self.decrypt_with(tenant_id, request_id, ciphertext_b64, &mut scratch)
    }

    /// [`Self::decrypt`] into a caller's scratch buffer, which is zeroed before this
    /// returns, whatever happens.
    fn decrypt_with(
        &self,
        tenant_id: &str,
        request_id: &str,
        ciphertext_b64: &str,
        scratch: &mut [u8],
    ) -> Result<SecretString, DecryptError> {
        let mut read = || {
            if ciphertext_b64.len() > MAX_CIPHERTEXT_B64 {
                return Err(DecryptError::Encoding);
            }
            let ciphertext = STANDARD.decode(ciphertext_b64).map_err(|_| DecryptError::Encoding)?;
            let label = oaep_label(tenant_id, request_id);
            let plaintext = self
                .key
                .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, scratch, Some(&label))
                .map_err(|_| DecryptError::Oaep)?;
            let text = std::str::from_utf8(plaintext).map_err(|_| DecryptError::NotUtf8)?;
            // One allocation of exactly the right size, owned (and zeroed on drop) by
            // the SecretString.
            Ok(SecretString::new(String::from(text)))
        };
        let result = read();
        scratch.zeroize();
        result
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::rsa::{OaepPublicEncryptingKey, PublicEncryptingKey};
    use postern_pki::{KeyAlg, generate_key};

    use super::*;

    /// What the STS does: RSA-OAEP-SHA256 to the key in `spki_der` with the request's
    /// label, base64.
    pub(crate) fn encrypt(spki_der: &[u8], tenant_id: &str, request_id: &str, password: &str) -> String {
        let public = OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(spki_der).unwrap()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        let label = oaep_label(tenant_id, request_id);
        let ct = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, password.as_bytes(), &mut out, Some(&label))
            .unwrap();
        STANDARD.encode(ct)
    }

    fn key() -> (ComponentKey, AgentKey) {
        let key = generate_key(KeyAlg::Rsa(2048)).unwrap();
        let agent = AgentKey::from_component_key(&key).unwrap();
        (key, agent)
    }

    #[test]
    fn round_trip_with_the_right_label() {
        let (key, agent) = key();
        assert_eq!(agent.key_id(), key.key_id());
        let ct = encrypt(key.public_spki_der(), "t1", "r1", "pässwörd 42");
        let password = agent.decrypt("t1", "r1", &ct).unwrap();
        assert_eq!(password.expose(), "pässwörd 42");
        assert_eq!(format!("{password:?}"), "\"********\"");
    }

    #[test]
    fn another_label_or_key_or_altered_bytes_fail() {
        let (key, agent) = key();
        let ct = encrypt(key.public_spki_der(), "t1", "r1", "hunter2");
        // Replayed into another request, or another tenant.
        assert_eq!(agent.decrypt("t1", "r2", &ct).unwrap_err(), DecryptError::Oaep);
        assert_eq!(agent.decrypt("t2", "r1", &ct).unwrap_err(), DecryptError::Oaep);
        // Another agent's key.
        let (_, other) = self::key();
        assert_eq!(other.decrypt("t1", "r1", &ct).unwrap_err(), DecryptError::Oaep);
        // One bit flipped.
        let mut bytes = STANDARD.decode(&ct).unwrap();
        bytes[10] ^= 1;
        assert_eq!(
            agent.decrypt("t1", "r1", &STANDARD.encode(&bytes)).unwrap_err(),
            DecryptError::Oaep
        );
        // Truncated, not base64, too long.
        assert_eq!(
            agent.decrypt("t1", "r1", &STANDARD.encode(&bytes[..100])).unwrap_err(),
            DecryptError::Oaep
        );
        assert_eq!(
            agent.decrypt("t1", "r1", "not base64!").unwrap_err(),
            DecryptError::Encoding
        );
        assert_eq!(
            agent
                .decrypt("t1", "r1", &"A".repeat(MAX_CIPHERTEXT_B64 + 4))
                .unwrap_err(),
            DecryptError::Encoding
        );
        // No error names the password.
        for e in [DecryptError::Encoding, DecryptError::Oaep, DecryptError::NotUtf8] {
            assert!(!format!("{e} {e:?}").contains("hunter2"));
        }
    }

    #[test]
    fn non_utf8_is_refused() {
        let (key, agent) = key();
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(key.public_spki_der()).unwrap()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        let label = oaep_label("t", "r");
        let ct = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[0xff, 0xfe, b'a'], &mut out, Some(&label))
            .unwrap();
        assert_eq!(
            agent.decrypt("t", "r", &STANDARD.encode(ct)).unwrap_err(),
            DecryptError::NotUtf8
        );
    }

    #[test]
    fn the_scratch_buffer_is_zeroed_on_success_and_failure() {
        let (key, agent) = key();
        let ct = encrypt(key.public_spki_der(), "t", "r", "correct horse battery");
        let mut scratch = vec![0xAAu8; agent.key.min_output_size()];
        let password = agent.decrypt_with("t", "r", &ct, &mut scratch).unwrap();
        assert_eq!(password.expose(), "correct horse battery");
        assert!(scratch.iter().all(|b| *b == 0), "plaintext left in the scratch buffer");

        // A plaintext that is not UTF-8 was written to the buffer, then refused.
        let public =
            OaepPublicEncryptingKey::new(PublicEncryptingKey::from_der(key.public_spki_der()).unwrap()).unwrap();
        let mut out = vec![0u8; public.ciphertext_size()];
        let label = oaep_label("t", "r");
        let bad = public
            .encrypt(&OAEP_SHA256_MGF1SHA256, &[0xff; 20], &mut out, Some(&label))
            .unwrap();
        let mut scratch = vec![0u8; agent.key.min_output_size()];
        assert!(
            agent
                .decrypt_with("t", "r", &STANDARD.encode(bad), &mut scratch)
                .is_err()
        );
        assert!(scratch.iter().all(|b| *b == 0));
    }

    #[test]
    fn picks_its_own_ciphertext_and_refuses_ecdsa_keys() {
        let (_, agent) = key();
        let list = vec![
            AgentCiphertext {
                key_id: "someone-else".into(),
                ciphertext: "x".into(),
            },
            AgentCiphertext {
                key_id: agent.key_id().into(),
                ciphertext: "mine".into(),
            },
        ];
        assert_eq!(agent.pick(&list).unwrap().ciphertext, "mine");
        assert!(agent.pick(&list[..1]).is_none());
        let ec = generate_key(KeyAlg::EcdsaP256).unwrap();
        assert!(
            AgentKey::from_component_key(&ec)
                .unwrap_err()
                .to_string()
                .contains("RSA")
        );
        assert!(!format!("{agent:?}").contains("key:"));
    }
}
