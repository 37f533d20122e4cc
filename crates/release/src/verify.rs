//! The updater's side: a manifest is used only after its signature verifies
//! with the trusted publisher key (minisign's prehashed format; legacy
//! signatures are refused) and its fields check out.

use crate::{Manifest, ReleaseError};

/// A publisher public key the updater trusts.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    key: minisign_verify::PublicKey,
    text: String,
}

impl TrustedKey {
    /// Parses a key in minisign's `minisign.pub` format (a comment line, then
    /// the base64 key) or the bare base64 line.
    pub fn from_text(text: &str) -> Result<Self, ReleaseError> {
        let trimmed = text.trim();
        let key = if trimmed.lines().count() >= 2 {
            minisign_verify::PublicKey::decode(trimmed)
        } else {
            minisign_verify::PublicKey::from_base64(trimmed)
        }
        .map_err(|e| ReleaseError::BadKey(format!("not a minisign public key: {e}")))?;
        Ok(Self {
            key,
            text: trimmed.to_owned(),
        })
    }

    /// The key as it was given.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Checks that `signature` is a minisign signature in the prehashed format
/// (what the service checks at publication; only the updater verifies it).
pub fn check_signature_form(signature: &str) -> Result<(), ReleaseError> {
    minisign_verify::Signature::decode(signature.trim())
        .map(|_| ())
        .map_err(|e| ReleaseError::BadSignature(format!("not a minisign signature: {e}")))
}

/// Verifies `signature` (a `.minisig` file's text) over `manifest` with `key`,
/// then parses and checks the manifest. Nothing in the manifest is looked at
/// before the signature verifies.
pub fn verify(manifest: &[u8], signature: &str, key: &TrustedKey) -> Result<Manifest, ReleaseError> {
    let sig = minisign_verify::Signature::decode(signature.trim())
        .map_err(|e| ReleaseError::BadSignature(format!("unreadable signature: {e}")))?;
    key.key
        .verify(manifest, &sig, false)
        .map_err(|e| ReleaseError::BadSignature(e.to_string()))?;
    Manifest::from_bytes(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MANIFEST_FORMAT, SecretKey, sign};

    fn manifest_bytes() -> Vec<u8> {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: "0.2.0".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            sha256: "0f".repeat(32),
            size: 42,
            min_upgrade_from: "0.1.0".into(),
            notes_url: "https://example.com/n".into(),
        }
        .to_bytes()
        .unwrap()
    }

    #[test]
    fn a_signed_manifest_verifies_and_nothing_else_does() {
        let key = SecretKey::generate().unwrap();
        let trusted = TrustedKey::from_text(&key.public_key_text().unwrap()).unwrap();
        let bytes = manifest_bytes();
        let sig = sign(&bytes, &key, "postern 0.2.0").unwrap();
        assert_eq!(verify(&bytes, &sig, &trusted).unwrap().version, "0.2.0");

        // One byte changed in the manifest.
        let mut tampered = bytes.clone();
        let at = tampered.iter().position(|b| *b == b'2').unwrap();
        tampered[at] = b'9';
        assert!(matches!(
            verify(&tampered, &sig, &trusted),
            Err(ReleaseError::BadSignature(_))
        ));
        // The trusted comment changed.
        let relabelled = sig.replace("postern 0.2.0", "postern 9.9.9");
        assert!(matches!(
            verify(&bytes, &relabelled, &trusted),
            Err(ReleaseError::BadSignature(_))
        ));
        // Another key.
        let other = SecretKey::generate().unwrap();
        let foreign = sign(&bytes, &other, "postern 0.2.0").unwrap();
        assert!(matches!(
            verify(&bytes, &foreign, &trusted),
            Err(ReleaseError::BadSignature(_))
        ));
        // Garbage.
        assert!(matches!(
            verify(&bytes, "nonsense", &trusted),
            Err(ReleaseError::BadSignature(_))
        ));
        // A bare base64 key line works too.
        let line = key.public_key_text().unwrap().lines().nth(1).unwrap().to_owned();
        assert!(verify(&bytes, &sig, &TrustedKey::from_text(&line).unwrap()).is_ok());
    }

    /// The real `minisign` tool (Debian package `minisign`) checks our
    /// signatures, and we check its. Skipped, saying so, where it is not
    /// installed (outside CI).
    #[test]
    fn minisign_cross_check() {
        let Ok(out) = std::process::Command::new("minisign").arg("-v").output() else {
            assert!(std::env::var_os("CI").is_none(), "minisign must be installed in CI");
            eprintln!("SKIPPED minisign_cross_check: minisign is not installed");
            return;
        };
        assert!(String::from_utf8_lossy(&out.stdout).contains("minisign"));
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let bytes = manifest_bytes();
        std::fs::write(path("manifest.json"), &bytes).unwrap();

        // Ours, checked by minisign.
        let key = SecretKey::generate().unwrap();
        std::fs::write(path("ours.pub"), key.public_key_text().unwrap()).unwrap();
        std::fs::write(path("ours.minisig"), sign(&bytes, &key, "postern 0.2.0").unwrap()).unwrap();
        let checked = std::process::Command::new("minisign")
            .args(["-V", "-H", "-p"])
            .arg(path("ours.pub"))
            .arg("-x")
            .arg(path("ours.minisig"))
            .arg("-m")
            .arg(path("manifest.json"))
            .output()
            .unwrap();
        assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
        assert!(String::from_utf8_lossy(&checked.stdout).contains("postern 0.2.0"));

        // minisign's, checked by us.
        let made = std::process::Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(path("theirs.pub"))
            .arg("-s")
            .arg(path("theirs.key"))
            .output()
            .unwrap();
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        let signed = std::process::Command::new("minisign")
            .args(["-S", "-s"])
            .arg(path("theirs.key"))
            .args(["-t", "from minisign", "-x"])
            .arg(path("theirs.minisig"))
            .arg("-m")
            .arg(path("manifest.json"))
            .output()
            .unwrap();
        assert!(signed.status.success(), "{}", String::from_utf8_lossy(&signed.stderr));
        let theirs = TrustedKey::from_text(&std::fs::read_to_string(path("theirs.pub")).unwrap()).unwrap();
        let sig = std::fs::read_to_string(path("theirs.minisig")).unwrap();
        assert_eq!(verify(&bytes, &sig, &theirs).unwrap().version, "0.2.0");
        // And minisign's signature does not pass for our key.
        let ours = TrustedKey::from_text(&key.public_key_text().unwrap()).unwrap();
        assert!(verify(&bytes, &sig, &ours).is_err());
    }
}
