//! Which publisher key the updater trusts: the one compiled into the binary,
//! unless the host's administrator put another in a root-owned file (for
//! builds signed by someone else, and for tests). Nothing the service sends
//! can change it.

use std::path::Path;

use crate::{ReleaseError, TrustedKey};

/// The publisher's public key (minisign format), compiled in. Whoever builds
/// and signs releases puts their own key here (`postern release keygen`
/// prints it). The secret half of this one is not in the repository: builds
/// from the repository as it is trust no release unless the host has an
/// override file.
pub const PUBLISHER_KEY: &str = "untrusted comment: minisign public key 3141DD13492AB3C3\n\
                                 RWTDsypJE91BMWk4q52BR846N6iCYE81GiZN4ddf7Z1qsBYwg8UT4Eob";

/// Where an override of the publisher key lives unless the updater is told
/// another path.
pub const OVERRIDE_PATH: &str = "/etc/postern/release-key.pub";

/// Where the trusted key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// [`PUBLISHER_KEY`].
    CompiledIn,
    /// A root-owned override file.
    Override(String),
}

/// The key the updater trusts: the override file at `override_path` when it
/// exists (refused unless it and its directory are owned by root and writable
/// by root only, and the file is 0644 or stricter), else [`PUBLISHER_KEY`].
pub fn publisher_key(override_path: &Path) -> Result<(TrustedKey, KeySource), ReleaseError> {
    match std::fs::symlink_metadata(override_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((TrustedKey::from_text(PUBLISHER_KEY)?, KeySource::CompiledIn))
        }
        Err(e) => Err(ReleaseError::io(override_path, e)),
        Ok(meta) => {
            check_root_owned(override_path, &meta)?;
            let text = std::fs::read_to_string(override_path).map_err(|e| ReleaseError::io(override_path, e))?;
            let key = TrustedKey::from_text(&text)?;
            Ok((key, KeySource::Override(override_path.display().to_string())))
        }
    }
}

#[cfg(unix)]
fn check_root_owned(path: &Path, meta: &std::fs::Metadata) -> Result<(), ReleaseError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| ReleaseError::UntrustedKeyFile {
        path: path.display().to_string(),
        why,
    };
    if !meta.file_type().is_file() {
        return Err(untrusted("not a regular file (symbolic links are refused)".into()));
    }
    if meta.uid() != 0 {
        return Err(untrusted(format!("owned by uid {}, not root", meta.uid())));
    }
    // 0644 or stricter: no write for group or others, no execute, no set-id bits.
    if meta.mode() & 0o7133 != 0 {
        return Err(untrusted(format!(
            "mode {:04o}; it must be 0644 or 0600",
            meta.mode() & 0o7777
        )));
    }
    let dir = path.parent().unwrap_or_else(|| Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let dir_meta = std::fs::metadata(dir).map_err(|e| ReleaseError::io(dir, e))?;
    if dir_meta.uid() != 0 || dir_meta.mode() & 0o022 != 0 {
        return Err(untrusted(format!(
            "its directory {} must be owned by root and writable by root only",
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_root_owned(path: &Path, _meta: &std::fs::Metadata) -> Result<(), ReleaseError> {
    Err(ReleaseError::UntrustedKeyFile {
        path: path.display().to_string(),
        why: "override keys are only supported on Unix".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    #[test]
    fn the_compiled_in_key_parses() {
        assert!(TrustedKey::from_text(PUBLISHER_KEY).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let (_, source) = publisher_key(&dir.path().join("absent.pub")).unwrap();
        assert_eq!(source, KeySource::CompiledIn);
    }

    /// Tests run as root here; elsewhere an override file cannot be root-owned.
    #[cfg(unix)]
    #[test]
    fn an_override_must_be_root_owned_and_not_writable_by_others() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("release-key.pub");
        let key = SecretKey::generate().unwrap();
        std::fs::write(&path, key.public_key_text().unwrap()).unwrap();
        if std::fs::metadata(&path).unwrap().uid() != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            assert!(matches!(
                publisher_key(&path),
                Err(ReleaseError::UntrustedKeyFile { .. })
            ));
            eprintln!("SKIPPED the root-owned half: not running as root");
            return;
        }
        for mode in [0o644, 0o600, 0o444] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let (trusted, source) = publisher_key(&path).unwrap();
            assert_eq!(trusted.text(), key.public_key_text().unwrap().trim());
            assert!(matches!(source, KeySource::Override(_)));
        }
        for mode in [0o664, 0o646, 0o755, 0o4644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = publisher_key(&path).unwrap_err().to_string();
            assert!(err.contains("0644 or 0600"), "{mode:o}: {err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(publisher_key(&path).unwrap_err().to_string().contains("its directory"));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        assert!(publisher_key(&path).unwrap_err().to_string().contains("not root"));
        let link = dir.path().join("link.pub");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(publisher_key(&link).unwrap_err().to_string().contains("symbolic"));
    }
}
