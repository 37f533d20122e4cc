//! The release manifest: what a signature vouches for.

use serde::{Deserialize, Serialize};

use crate::ReleaseError;

/// The manifest format this code reads and writes.
pub const MANIFEST_FORMAT: &str = "postern-release/1";
/// The largest binary a release may carry (512 MiB).
pub const MAX_RELEASE_SIZE: u64 = 512 * 1024 * 1024;
/// The largest manifest accepted (bytes).
const MAX_MANIFEST_BYTES: usize = 16 * 1024;

/// A release's manifest. The signature covers its exact bytes; the manifest
/// binds the binary by size and SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// The release's version (semantic versioning, e.g. `0.2.0`).
    pub version: String,
    /// The target triple the binary runs on, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// SHA-256 of the binary, lowercase hex.
    pub sha256: String,
    /// Size of the binary in bytes.
    pub size: u64,
    /// The oldest installed version this release may replace.
    pub min_upgrade_from: String,
    /// Where the release notes are (http or https URL).
    pub notes_url: String,
}

/// Parses a version, saying which one was wrong.
pub fn parse_version(what: &str, v: &str) -> Result<semver::Version, ReleaseError> {
    semver::Version::parse(v).map_err(|e| ReleaseError::InvalidManifest(format!("{what} {v:?} is not a version: {e}")))
}

impl Manifest {
    /// Parses manifest bytes and checks every field ([`Manifest::validate`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ReleaseError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ReleaseError::InvalidManifest(format!(
                "{} bytes, more than {MAX_MANIFEST_BYTES}",
                bytes.len()
            )));
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ReleaseError::InvalidManifest(e.to_string()))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The bytes to sign and publish (pretty JSON and a newline).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ReleaseError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| ReleaseError::InvalidManifest(e.to_string()))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// The release's version.
    pub fn version(&self) -> Result<semver::Version, ReleaseError> {
        parse_version("version", &self.version)
    }

    /// The oldest version it upgrades from.
    pub fn min_upgrade_from(&self) -> Result<semver::Version, ReleaseError> {
        parse_version("min_upgrade_from", &self.min_upgrade_from)
    }

    /// Checks every field and reports every problem at once.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        let mut problems = Vec::new();
        if self.format != MANIFEST_FORMAT {
            problems.push(format!("format is {:?}, expected {MANIFEST_FORMAT:?}", self.format));
        }
        let version = self.version().map_err(|e| problems.push(e.to_string())).ok();
        let min = self.min_upgrade_from().map_err(|e| problems.push(e.to_string())).ok();
        if let (Some(v), Some(m)) = (&version, &min)
            && m > v
        {
            problems.push(format!("min_upgrade_from {m} is newer than the version {v}"));
        }
        let target_ok = !self.target.is_empty()
            && self.target.len() <= 64
            && self
                .target
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !target_ok {
            problems.push(format!("target {:?} is not a target triple", self.target));
        }
        let hex_ok = self.sha256.len() == 64 && self.sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
        if !hex_ok {
            problems.push("sha256 must be 64 lowercase hex digits".into());
        }
        if self.size == 0 || self.size > MAX_RELEASE_SIZE {
            problems.push(format!("size must be 1 to {MAX_RELEASE_SIZE} bytes"));
        }
        let url_ok = (self.notes_url.starts_with("https://") || self.notes_url.starts_with("http://"))
            && self.notes_url.len() <= 2048
            && !self.notes_url.chars().any(char::is_control);
        if !url_ok {
            problems.push("notes_url must be an http(s) URL".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ReleaseError::InvalidManifest(problems.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            version: "0.2.0".into(),
            target: "x86_64-unknown-linux-gnu".into(),
            sha256: "ab".repeat(32),
            size: 10,
            min_upgrade_from: "0.1.0".into(),
            notes_url: "https://example.com/notes/0.2.0".into(),
        }
    }

    #[test]
    fn round_trips_and_reports_every_problem() {
        let m = manifest();
        assert_eq!(Manifest::from_bytes(&m.to_bytes().unwrap()).unwrap(), m);
        let bad = Manifest {
            format: "other".into(),
            version: "two".into(),
            target: "x86 64".into(),
            sha256: "AB".repeat(32),
            size: 0,
            min_upgrade_from: "0.1.0".into(),
            notes_url: "ftp://x".into(),
        };
        let err = bad.validate().unwrap_err().to_string();
        for needle in ["format", "\"two\"", "target", "sha256", "size", "notes_url"] {
            assert!(err.contains(needle), "{needle} missing in {err}");
        }
        let newer_min = Manifest {
            min_upgrade_from: "0.3.0".into(),
            ..manifest()
        };
        assert!(newer_min.validate().unwrap_err().to_string().contains("newer than"));
        assert!(Manifest::from_bytes(br#"{"format":"postern-release/1","extra":1}"#).is_err());
    }
}
