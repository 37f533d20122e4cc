//! Key-encryption key, sealing of secrets at rest and random secret generation.
//!
//! Secrets the service must be able to read back (STS signing keys, TOTP seeds, CA
//! keys) are stored *sealed*: AES-256-GCM under a key-encryption key (KEK) that lives
//! outside the database: a file of mode 0600 in the data dir (embedded default) or
//! the `POSTERN_KEK` environment variable (scale-out). Each sealed value is bound to
//! a context string (e.g. the row it belongs to) as associated data, so a sealed
//! value copied into another row does not open.
//!
//! Secrets the service only needs to recognise (refresh tokens, authorization codes,
//! session IDs) are never stored at all, only their SHA-256 [`digest()`].
#![warn(missing_docs)]

mod secret;

use std::fs;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

pub use secret::SecretString;

/// Version byte of the sealed format.
const SEALED_V1: u8 = 1;
const KEY_LEN: usize = 32;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

/// What went wrong with keys or sealed data.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The KEK file or variable is malformed; the operator must fix the configuration.
    #[error("key-encryption key is malformed: {0}")]
    Malformed(String),
    /// The KEK file could not be read or written; check the data dir's permissions.
    #[error("key-encryption key file {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A sealed value was made with a key that is not in the ring (the KEK was
    /// replaced without keeping the old key); restore the old key.
    #[error("sealed with unknown key {0}")]
    UnknownKey(u32),
    /// A sealed value failed authentication: it was tampered with, belongs to another
    /// context, or is not a sealed value at all.
    #[error("sealed value does not open in this context")]
    Unsealable,
    /// The system random generator failed; nothing can be done safely.
    #[error("system random generator failed")]
    Random,
}

/// One key of the ring.
struct KekEntry {
    id: u32,
    key: LessSafeKey,
}

/// The key-encryption key ring: the first key seals, every key opens.
pub struct Keyring {
    keys: Vec<KekEntry>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u32> = self.keys.iter().map(|k| k.id).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    /// Parses a ring from its text form: one `ID:BASE64` entry per line (or separated
    /// by commas), each a 32-byte key. The first entry is the one that seals.
    pub fn from_text(text: &str) -> Result<Self, KeyringError> {
        let mut keys = Vec::new();
        for entry in text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let (id, b64) = entry
                .split_once(':')
                .ok_or_else(|| KeyringError::Malformed("expected ID:BASE64".into()))?;
            let id: u32 = id
                .parse()
                .map_err(|_| KeyringError::Malformed(format!("key id {id:?} is not a number")))?;
            let bytes = Zeroizing::new(
                STANDARD
                    .decode(b64)
                    .map_err(|_| KeyringError::Malformed(format!("key {id} is not base64")))?,
            );
            if bytes.len() != KEY_LEN {
                return Err(KeyringError::Malformed(format!(
                    "key {id} must be {KEY_LEN} bytes, found {}",
                    bytes.len()
                )));
            }
            if keys.iter().any(|k: &KekEntry| k.id == id) {
                return Err(KeyringError::Malformed(format!("key id {id} appears twice")));
            }
            let unbound = UnboundKey::new(&AES_256_GCM, &bytes)
                .map_err(|_| KeyringError::Malformed(format!("key {id} rejected")))?;
            keys.push(KekEntry {
                id,
                key: LessSafeKey::new(unbound),
            });
        }
        if keys.is_empty() {
            return Err(KeyringError::Malformed("no keys".into()));
        }
        Ok(Self { keys })
    }

    /// Reads the ring from `path`, creating it with one fresh key (mode 0600) if the
    /// file does not exist. Refuses a file that others may read.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyringError> {
        let io = |source| KeyringError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            let text = Zeroizing::new(format!("1:{}\n", STANDARD.encode(random_bytes::<KEY_LEN>()?)));
            write_private_file(path, text.as_bytes()).map_err(io)?;
        }
        check_private_mode(path).map_err(io)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
        Self::from_text(&text)
    }

    /// Encodes a fresh key as a ring entry with `id`, for operators rotating the KEK.
    pub fn generate_entry(id: u32) -> Result<SecretString, KeyringError> {
        let key = Zeroizing::new(random_bytes::<KEY_LEN>()?);
        Ok(SecretString::new(format!("{id}:{}", STANDARD.encode(key.as_slice()))))
    }

    /// Seals `plaintext` bound to `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let current = self.keys.first().ok_or(KeyringError::UnknownKey(0))?;
        let nonce_bytes = random_bytes::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.push(SEALED_V1);
        out.extend_from_slice(&current.id.to_be_bytes());
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .map_err(|_| KeyringError::Unsealable)?;
        out.extend_from_slice(&body);
        body.fill(0);
        Ok(out)
    }

    /// Opens a value sealed by [`Keyring::seal`] with the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        if sealed.len() < HEADER_LEN || sealed[0] != SEALED_V1 {
            return Err(KeyringError::Unsealable);
        }
        let id = u32::from_be_bytes([sealed[1], sealed[2], sealed[3], sealed[4]]);
        let entry = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(KeyringError::UnknownKey(id))?;
        let nonce = Nonce::try_assume_unique_for_key(&sealed[5..HEADER_LEN]).map_err(|_| KeyringError::Unsealable)?;
        let mut body = Zeroizing::new(sealed[HEADER_LEN..].to_vec());
        let len = entry
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut body)
            .map_err(|_| KeyringError::Unsealable)?
            .len();
        body.truncate(len);
        Ok(body)
    }

    /// Whether `sealed` was sealed with a key other than the current one (and so
    /// should be re-sealed after a KEK rotation).
    pub fn needs_reseal(&self, sealed: &[u8]) -> bool {
        match (sealed.get(1..5), self.keys.first()) {
            (Some(id), Some(current)) => id != current.id.to_be_bytes(),
            _ => true,
        }
    }
}

/// `N` bytes from the system's secure random generator.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyringError> {
    let mut buf = [0u8; N];
    SystemRandom::new().fill(&mut buf).map_err(|_| KeyringError::Random)?;
    Ok(buf)
}

/// A fresh unguessable token of 32 random bytes, base64url without padding: for
/// refresh tokens, authorization codes, session IDs and CSRF tokens.
pub fn random_token() -> Result<SecretString, KeyringError> {
    Ok(SecretString::new(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?)))
}

/// SHA-256 of a bearer secret: what the store keeps instead of the secret.
pub fn digest(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// Compares two byte strings in time independent of where they differ (the
/// length may show). The comparison is aws-lc's `CRYPTO_memcmp`, written so the
/// optimiser cannot turn it into an early exit, unlike a comparison in Rust.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Writes `contents` to a new file readable only by its owner (mode 0600 on Unix).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Replaces `path` with `contents` atomically (a new 0600 file beside it,
/// synced, then renamed over it): readers see the old file or the new one,
/// never a part of either, and never a moment when others may read it.
pub fn replace_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // A leftover of an earlier crash.
    let _ = fs::remove_file(&tmp);
    write_private_file(&tmp, contents)?;
    fs::rename(&tmp, path)
}

/// Fails if `path` is readable or writable by anyone but its owner.
pub fn check_private_mode(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "mode {:o} lets others read it; run: chmod 600 {}",
                    mode & 0o777,
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_text(Keyring::generate_entry(7).unwrap().expose()).unwrap()
    }

    #[test]
    fn seal_round_trips_in_its_context_only() {
        let ring = ring();
        let sealed = ring.seal("totp:user-1", b"seed").unwrap();
        assert_eq!(ring.open("totp:user-1", &sealed).unwrap().as_slice(), b"seed");
        assert!(matches!(
            ring.open("totp:user-2", &sealed),
            Err(KeyringError::Unsealable)
        ));
        assert!(!sealed.windows(4).any(|w| w == b"seed"));
    }

    #[test]
    fn tampering_is_detected() {
        let ring = ring();
        let mut sealed = ring.seal("ctx", b"secret value").unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(ring.open("ctx", &sealed), Err(KeyringError::Unsealable)));
        assert!(matches!(ring.open("ctx", b"short"), Err(KeyringError::Unsealable)));
    }

    #[test]
    fn rotated_ring_opens_old_values_and_flags_them() {
        let old_entry = Keyring::generate_entry(1).unwrap();
        let old = Keyring::from_text(old_entry.expose()).unwrap();
        let sealed = old.seal("ctx", b"v").unwrap();
        let new_entry = Keyring::generate_entry(2).unwrap();
        let rotated = Keyring::from_text(&format!("{}\n{}", new_entry.expose(), old_entry.expose())).unwrap();
        assert_eq!(rotated.open("ctx", &sealed).unwrap().as_slice(), b"v");
        assert!(rotated.needs_reseal(&sealed));
        assert!(!rotated.needs_reseal(&rotated.seal("ctx", b"v").unwrap()));
        let other = ring();
        assert!(matches!(other.open("ctx", &sealed), Err(KeyringError::UnknownKey(1))));
    }

    #[test]
    fn malformed_rings_are_refused() {
        for text in ["", "x:AAAA", "1:not base64!", "1:AAAA", "1:", "no colon"] {
            assert!(Keyring::from_text(text).is_err(), "{text:?} accepted");
        }
        let e = Keyring::generate_entry(1).unwrap();
        assert!(Keyring::from_text(&format!("{0}\n{0}", e.expose())).is_err());
    }

    #[test]
    fn a_replaced_file_is_private_whole_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(&path, b"old, readable by all").unwrap();
        // A leftover of a crash in the middle of an earlier replacement.
        fs::write(dir.path().join("key.pem.tmp"), b"half").unwrap();
        replace_private_file(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("key.pem")]);
        assert!(replace_private_file(&dir.path().join("missing-dir/key.pem"), b"x").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let a = Keyring::load_or_create(&path).unwrap();
        let sealed = a.seal("c", b"x").unwrap();
        let b = Keyring::load_or_create(&path).unwrap();
        assert_eq!(b.open("c", &sealed).unwrap().as_slice(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(Keyring::load_or_create(&path).is_err());
        }
    }

    #[test]
    fn tokens_are_unique_and_digests_fixed() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 43);
        assert_eq!(digest("abc").len(), 32);
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"ac"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(&[0u8; 64], &[[0u8; 63].as_slice(), &[1]].concat()));
    }
}
