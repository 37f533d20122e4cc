//! What the updater installed last, in its own (root-owned) work directory:
//! the version it compares offers with, so a relabelled old release is a
//! downgrade whatever the service says.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::UpdaterError;

const RECORD_FILE: &str = "installed.json";

/// The version installed by the updater.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstalledRecord {
    /// Version of the binary in place.
    pub version: String,
    /// Its SHA-256.
    pub sha256: String,
}

impl InstalledRecord {
    fn path(work_dir: &Path) -> PathBuf {
        work_dir.join(RECORD_FILE)
    }

    /// The record in `work_dir`, if one was written.
    pub fn load(work_dir: &Path) -> Result<Option<Self>, UpdaterError> {
        let path = Self::path(work_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| UpdaterError::io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(UpdaterError::io(&path, e)),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, work_dir: &Path) -> Result<(), UpdaterError> {
        std::fs::create_dir_all(work_dir).map_err(|e| UpdaterError::io(work_dir, e))?;
        let path = Self::path(work_dir);
        let tmp = work_dir.join(format!(".{RECORD_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| UpdaterError::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(|e| UpdaterError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| UpdaterError::io(&path, e))
    }
}
