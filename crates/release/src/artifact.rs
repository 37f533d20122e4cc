//! A downloaded binary checked against its manifest: streamed SHA-256 and size.

use std::io::Read;
use std::path::Path;

use crate::{Manifest, ReleaseError};

/// SHA-256 fed chunk by chunk, counting bytes.
pub struct Sha256Stream {
    context: aws_lc_rs::digest::Context,
    bytes: u64,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self {
            context: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            bytes: 0,
        }
    }
}

impl std::fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sha256Stream").field("bytes", &self.bytes).finish()
    }
}

impl Sha256Stream {
    /// Adds bytes.
    pub fn update(&mut self, chunk: &[u8]) {
        self.context.update(chunk);
        self.bytes += chunk.len() as u64;
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The digest (lowercase hex) and the number of bytes.
    pub fn finish(self) -> (String, u64) {
        let digest = self.context.finish();
        let hex = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        (hex, self.bytes)
    }
}

/// Checks that `size` and `sha256` (lowercase hex) are the manifest's.
pub fn check_digest(manifest: &Manifest, sha256: &str, size: u64) -> Result<(), ReleaseError> {
    if size != manifest.size {
        return Err(ReleaseError::ArtifactMismatch(format!(
            "{size} bytes, the manifest says {}",
            manifest.size
        )));
    }
    if sha256 != manifest.sha256 {
        return Err(ReleaseError::ArtifactMismatch(format!(
            "SHA-256 {sha256}, the manifest says {}",
            manifest.sha256
        )));
    }
    Ok(())
}

/// The SHA-256 (hex) and size of a file, read in 64 KiB pieces.
pub fn digest_file(path: &Path) -> Result<(String, u64), ReleaseError> {
    let mut file = std::fs::File::open(path).map_err(|e| ReleaseError::io(path, e))?;
    let mut stream = Sha256Stream::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| ReleaseError::io(path, e))?;
        if n == 0 {
            return Ok(stream.finish());
        }
        stream.update(&buf[..n]);
    }
}

/// Checks a file on disk against its manifest (size first, then SHA-256).
pub fn check_file(path: &Path, manifest: &Manifest) -> Result<(), ReleaseError> {
    let size = std::fs::metadata(path).map_err(|e| ReleaseError::io(path, e))?.len();
    if size != manifest.size {
        return Err(ReleaseError::ArtifactMismatch(format!(
            "{size} bytes, the manifest says {}",
            manifest.size
        )));
    }
    let (sha256, size) = digest_file(path)?;
    check_digest(manifest, &sha256, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_match_the_known_answer_and_mismatches_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let (sha, size) = digest_file(&path).unwrap();
        assert_eq!(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(size, 3);
        let manifest = Manifest {
            format: crate::MANIFEST_FORMAT.into(),
            version: "1.0.0".into(),
            target: "t".into(),
            sha256: sha.clone(),
            size: 3,
            min_upgrade_from: "0.0.0".into(),
            notes_url: "https://x".into(),
        };
        check_file(&path, &manifest).unwrap();
        std::fs::write(&path, b"abd").unwrap();
        assert!(
            check_file(&path, &manifest)
                .unwrap_err()
                .to_string()
                .contains("SHA-256")
        );
        std::fs::write(&path, b"ab").unwrap();
        assert!(
            check_file(&path, &manifest)
                .unwrap_err()
                .to_string()
                .contains("2 bytes")
        );
    }
}
