//! The binary on disk: a new one is staged beside the installed one (same
//! directory, so the swap is one atomic `rename`), the installed one is kept
//! as `.previous` for a rollback, and at every moment the binary's path names
//! a complete binary.

use std::fs;
use std::path::{Path, PathBuf};

use crate::UpdaterError;

/// The installed binary and its staging and rollback files beside it.
#[derive(Clone, Debug)]
pub struct Installation {
    binary: PathBuf,
}

fn beside(binary: &Path, suffix: &str) -> PathBuf {
    let mut name = binary.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    binary.with_file_name(name)
}

impl Installation {
    /// The binary at `binary` (e.g. `/usr/local/bin/postern`).
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self { binary: binary.into() }
    }

    /// The installed binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Where a download is staged: `<binary>.new`.
    pub fn staged(&self) -> PathBuf {
        beside(&self.binary, ".new")
    }

    /// Where the replaced binary is kept: `<binary>.previous`.
    pub fn previous(&self) -> PathBuf {
        beside(&self.binary, ".previous")
    }

    /// Removes a staged file (after a refusal, or one left by a crash).
    pub fn discard_staged(&self) -> Result<(), UpdaterError> {
        let staged = self.staged();
        match fs::remove_file(&staged) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UpdaterError::io(&staged, e)),
            _ => Ok(()),
        }
    }

    /// Puts the staged binary in place: it gets the installed binary's mode,
    /// the installed binary is kept as `.previous` (a hard link, so the
    /// binary's path never stops naming a complete file), and the staged file
    /// is renamed over the binary in one step.
    pub fn swap(&self) -> Result<(), UpdaterError> {
        let staged = self.staged();
        let previous = self.previous();
        let mode = fs::metadata(&self.binary)
            .map_err(|e| UpdaterError::io(&self.binary, e))?
            .permissions();
        fs::set_permissions(&staged, mode).map_err(|e| UpdaterError::io(&staged, e))?;
        match fs::remove_file(&previous) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(UpdaterError::io(&previous, e)),
            _ => {}
        }
        if fs::hard_link(&self.binary, &previous).is_err() {
            fs::copy(&self.binary, &previous).map_err(|e| UpdaterError::io(&previous, e))?;
        }
        fs::rename(&staged, &self.binary).map_err(|e| UpdaterError::io(&self.binary, e))?;
        self.sync_dir()
    }

    /// Puts the previous binary back, in one `rename`.
    pub fn roll_back(&self) -> Result<(), UpdaterError> {
        let previous = self.previous();
        fs::rename(&previous, &self.binary).map_err(|e| UpdaterError::io(&previous, e))?;
        self.sync_dir()
    }

    /// Makes the renames durable.
    fn sync_dir(&self) -> Result<(), UpdaterError> {
        let dir = self.binary.parent().unwrap_or_else(|| Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| UpdaterError::io(dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_keeps_the_previous_binary_and_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let install = Installation::new(dir.path().join("postern"));
        fs::write(install.binary(), b"old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(install.binary(), fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::write(install.staged(), b"new").unwrap();
        install.swap().unwrap();
        assert_eq!(fs::read(install.binary()).unwrap(), b"new");
        assert_eq!(fs::read(install.previous()).unwrap(), b"old");
        assert!(!install.staged().exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(install.binary()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o755);
        }
        install.roll_back().unwrap();
        assert_eq!(fs::read(install.binary()).unwrap(), b"old");
        assert!(!install.previous().exists());
        install.discard_staged().unwrap();
    }
}
