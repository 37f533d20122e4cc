//! The publisher's side: an Ed25519 key (made and kept by `postern release
//! keygen`, on the publisher's machine only) and minisign-format signatures of
//! manifests.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::{Blake2b512, Digest};
use zeroize::Zeroizing;

use crate::ReleaseError;

/// minisign's algorithm tag of a public key and of a plain Ed25519 signature.
pub(crate) const ALG_ED25519: &[u8; 2] = b"Ed";
/// minisign's tag of a signature over the BLAKE2b-512 digest of the file.
const ALG_PREHASHED: &[u8; 2] = b"ED";
/// First line of a secret key file.
const SECRET_KEY_HEADER: &str = "untrusted comment: postern release secret key (keep it offline)";

/// The publisher's signing key: an 8-byte key ID (as minisign has) and the
/// Ed25519 key pair (PKCS#8), wiped from memory when dropped.
pub struct SecretKey {
    key_id: [u8; 8],
    pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey")
            .field("key_id", &hex_id(&self.key_id))
            .finish_non_exhaustive()
    }
}

fn crypto(e: impl std::fmt::Display) -> ReleaseError {
    ReleaseError::Crypto(e.to_string())
}

/// A key ID as minisign prints it (the 8 bytes as a little-endian number, hex).
fn hex_id(id: &[u8; 8]) -> String {
    format!("{:016X}", u64::from_le_bytes(*id))
}

impl SecretKey {
    /// A fresh key with a random key ID.
    pub fn generate() -> Result<Self, ReleaseError> {
        let rng = SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).map_err(crypto)?;
        let mut key_id = [0u8; 8];
        rng.fill(&mut key_id).map_err(crypto)?;
        Ok(Self {
            key_id,
            pkcs8: Zeroizing::new(document.as_ref().to_vec()),
        })
    }

    fn pair(&self) -> Result<Ed25519KeyPair, ReleaseError> {
        Ed25519KeyPair::from_pkcs8(&self.pkcs8).map_err(|e| ReleaseError::BadKey(e.to_string()))
    }

    /// The key ID, as minisign prints it.
    pub fn key_id(&self) -> String {
        hex_id(&self.key_id)
    }

    /// The public half in minisign's `minisign.pub` format.
    pub fn public_key_text(&self) -> Result<String, ReleaseError> {
        let pair = self.pair()?;
        let mut bin = Vec::with_capacity(42);
        bin.extend_from_slice(ALG_ED25519);
        bin.extend_from_slice(&self.key_id);
        bin.extend_from_slice(pair.public_key().as_ref());
        Ok(format!(
            "untrusted comment: minisign public key {}\n{}\n",
            self.key_id(),
            B64.encode(bin)
        ))
    }

    /// The key file's text (the key in clear: the file is 0600).
    fn to_text(&self) -> Zeroizing<String> {
        let mut bin = Zeroizing::new(Vec::with_capacity(10 + self.pkcs8.len()));
        bin.extend_from_slice(ALG_ED25519);
        bin.extend_from_slice(&self.key_id);
        bin.extend_from_slice(&self.pkcs8);
        Zeroizing::new(format!("{SECRET_KEY_HEADER}\n{}\n", B64.encode(&*bin)))
    }

    /// Reads a key file written by [`SecretKey::save`].
    pub fn from_text(text: &str) -> Result<Self, ReleaseError> {
        let bad = |why: &str| ReleaseError::BadKey(format!("not a postern release secret key: {why}"));
        let mut lines = text.lines();
        if lines.next() != Some(SECRET_KEY_HEADER) {
            return Err(bad("wrong first line"));
        }
        let bin = Zeroizing::new(
            B64.decode(lines.next().unwrap_or_default().trim())
                .map_err(|_| bad("not base64"))?,
        );
        if bin.len() < 11 || &bin[..2] != ALG_ED25519 {
            return Err(bad("wrong algorithm"));
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&bin[2..10]);
        let key = Self {
            key_id,
            pkcs8: Zeroizing::new(bin[10..].to_vec()),
        };
        key.pair()?;
        Ok(key)
    }

    /// Writes the key to a new file of mode 0600 (never over an existing one).
    pub fn save(&self, path: &Path) -> Result<(), ReleaseError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| ReleaseError::io(path, e))?;
        file.write_all(self.to_text().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| ReleaseError::io(path, e))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, ReleaseError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| ReleaseError::io(path, e))?);
        Self::from_text(&text)
    }
}

/// Signs `file` (a manifest's bytes) in minisign's prehashed format, with
/// `trusted_comment` (one line) signed as well. The result is the text of a
/// `.minisig` file.
pub fn sign(file: &[u8], key: &SecretKey, trusted_comment: &str) -> Result<String, ReleaseError> {
    if trusted_comment.contains(['\n', '\r']) {
        return Err(ReleaseError::InvalidManifest(
            "the trusted comment must be one line".into(),
        ));
    }
    let pair = key.pair()?;
    let digest = Blake2b512::digest(file);
    let signature = pair.sign(&digest);
    let mut bin1 = Vec::with_capacity(74);
    bin1.extend_from_slice(ALG_PREHASHED);
    bin1.extend_from_slice(&key.key_id);
    bin1.extend_from_slice(signature.as_ref());
    let mut global = Vec::with_capacity(64 + trusted_comment.len());
    global.extend_from_slice(signature.as_ref());
    global.extend_from_slice(trusted_comment.as_bytes());
    let global_signature = pair.sign(&global);
    Ok(format!(
        "untrusted comment: signature from postern release key {}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
        key.key_id(),
        B64.encode(bin1),
        B64.encode(global_signature.as_ref())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release.key");
        let key = SecretKey::generate().unwrap();
        key.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert!(key.save(&path).is_err(), "never overwrites a key");
        let back = SecretKey::load(&path).unwrap();
        assert_eq!(back.public_key_text().unwrap(), key.public_key_text().unwrap());
        assert!(!format!("{key:?}").contains(&B64.encode(&*key.pkcs8)));
        assert!(SecretKey::from_text("untrusted comment: x\nAAAA\n").is_err());
    }
}
