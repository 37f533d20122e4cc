//! The command line's stored sign-in: server, tenant, access and refresh
//! tokens and expiry in `credentials.json`, readable by its owner only (0600)
//! and replaced atomically. [`CredentialFile::admin_client`] refreshes an
//! expired access token transparently.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_admin_wire::{serialize_optional_secret, serialize_secret};
use postern_keyring::SecretString;
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

use crate::admin::AdminClient;
use crate::error::ClientError;
use crate::oauth::{Issuer, PublicClient, TokenSet};

/// Name of the file in the configuration directory.
pub const FILE_NAME: &str = "credentials.json";
/// An access token this close to its expiry is refreshed before use.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// One stored sign-in. `Debug` masks the tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Credentials {
    /// The service's URL.
    pub server: String,
    /// The tenant signed in to.
    pub tenant: String,
    /// The OAuth client that obtained the tokens.
    pub client_id: String,
    /// The access token.
    #[serde(serialize_with = "serialize_secret")]
    pub access_token: SecretString,
    /// The refresh token, if one was granted.
    #[serde(default, serialize_with = "serialize_optional_secret")]
    pub refresh_token: Option<SecretString>,
    /// When the access token expires.
    pub expires_at: UnixTime,
}

impl Credentials {
    /// Credentials for tokens `client_id` just obtained from `issuer` at `now`.
    pub fn new(issuer: &Issuer, client_id: &str, tokens: TokenSet, now: UnixTime) -> Self {
        Self {
            server: issuer.server().to_string(),
            tenant: issuer.tenant().to_owned(),
            client_id: client_id.to_owned(),
            expires_at: now + tokens.lifetime(),
            access_token: tokens.access_token,
            refresh_token: tokens.refresh_token,
        }
    }

    /// The issuer the tokens came from.
    pub fn issuer(&self) -> Result<Issuer, ClientError> {
        Issuer::new(&self.server, &self.tenant)
    }

    /// Whether the access token has expired, or is about to, at `now`.
    pub fn needs_refresh(&self, now: UnixTime) -> bool {
        now + REFRESH_MARGIN >= self.expires_at
    }

    /// Takes refreshed tokens; the refresh token rotates, but an answer
    /// without one keeps the old.
    pub fn refreshed(&mut self, tokens: TokenSet, now: UnixTime) {
        self.expires_at = now + tokens.lifetime();
        self.access_token = tokens.access_token;
        if let Some(rt) = tokens.refresh_token {
            self.refresh_token = Some(rt);
        }
    }
}

/// Where the credentials live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFile {
    path: PathBuf,
}

fn credentials_error(path: &Path, message: impl Into<String>) -> ClientError {
    ClientError::Credentials {
        path: path.display().to_string(),
        message: message.into(),
    }
}

impl CredentialFile {
    /// `credentials.json` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE_NAME),
        }
    }

    /// The usual place: `$POSTERN_CONFIG_DIR`, else `$XDG_CONFIG_HOME/postern`,
    /// else `~/.config/postern`. `env` reads an environment variable (empty
    /// and relative values are ignored, as the XDG specification says).
    pub fn default_location(env: impl Fn(&str) -> Option<OsString>) -> Result<Self, ClientError> {
        let absolute = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
        let dir = absolute("POSTERN_CONFIG_DIR")
            .or_else(|| absolute("XDG_CONFIG_HOME").map(|d| d.join("postern")))
            .or_else(|| absolute("HOME").map(|h| h.join(".config").join("postern")))
            .ok_or_else(|| {
                ClientError::NotSignedIn(
                    "no configuration directory: set POSTERN_CONFIG_DIR, XDG_CONFIG_HOME or HOME".into(),
                )
            })?;
        Ok(Self::in_dir(&dir))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored credentials, `None` when there are none. Refuses a file that
    /// others can read.
    pub fn load(&self) -> Result<Option<Credentials>, ClientError> {
        let text = match std::fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(credentials_error(&self.path, e.to_string())),
        };
        postern_keyring::check_private_mode(&self.path).map_err(|e| credentials_error(&self.path, e.to_string()))?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| credentials_error(&self.path, format!("unreadable ({e}); run `postern admin login`")))
    }

    /// Stores `credentials`, replacing any before: written to a new 0600 file
    /// beside it, then renamed over it, so a reader never sees half a file.
    pub fn save(&self, credentials: &Credentials) -> Result<(), ClientError> {
        let dir = self
            .path
            .parent()
            .ok_or_else(|| credentials_error(&self.path, "has no directory"))?;
        create_private_dir(dir).map_err(|e| credentials_error(dir, e.to_string()))?;
        let text = serde_json::to_vec_pretty(credentials).map_err(|e| credentials_error(&self.path, e.to_string()))?;
        let temp = dir.join(format!(".{FILE_NAME}.{}.tmp", uuid::Uuid::new_v4().simple()));
        let written =
            postern_keyring::write_private_file(&temp, &text).and_then(|()| std::fs::rename(&temp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(credentials_error(&self.path, e.to_string()));
        }
        Ok(())
    }

    /// Deletes the stored credentials; false if there were none.
    pub fn remove(&self) -> Result<bool, ClientError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(credentials_error(&self.path, e.to_string())),
        }
    }

    /// An admin-API client with the stored access token, refreshed (and the
    /// file updated) first when it has expired at `now`.
    pub async fn admin_client(&self, now: UnixTime, timeout: Duration) -> Result<AdminClient, ClientError> {
        let mut credentials = self.load()?.ok_or_else(|| ClientError::NotSignedIn(String::new()))?;
        if credentials.needs_refresh(now) {
            let refresh_token = credentials
                .refresh_token
                .clone()
                .ok_or_else(|| ClientError::NotSignedIn("the session has expired".into()))?;
            let client = PublicClient::new(credentials.issuer()?, &credentials.client_id, timeout)?;
            let tokens = match client.refresh(&refresh_token).await {
                Ok(tokens) => tokens,
                Err(e) if e.oauth_error() == Some("invalid_grant") => {
                    return Err(ClientError::NotSignedIn("the session has expired or was ended".into()));
                }
                Err(e) => return Err(e),
            };
            credentials.refreshed(tokens, now);
            self.save(&credentials)?;
        }
        AdminClient::new(&credentials.server, credentials.access_token, timeout)
    }
}

/// Creates `dir` (and parents) with mode 0700 where it does not exist yet.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(expires_at: i64) -> Credentials {
        Credentials {
            server: "https://postern.example/".into(),
            tenant: "acme".into(),
            client_id: "postern-cli".into(),
            access_token: "access-secret".into(),
            refresh_token: Some("refresh-secret".into()),
            expires_at: UnixTime::from_secs(expires_at),
        }
    }

    #[test]
    fn locations() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| OsString::from(v))
        };
        let at = |pairs| {
            CredentialFile::default_location(env(pairs))
                .unwrap()
                .path()
                .to_path_buf()
        };
        assert_eq!(
            at(&[("POSTERN_CONFIG_DIR", "/etc/p"), ("HOME", "/home/u")]),
            Path::new("/etc/p/credentials.json")
        );
        assert_eq!(
            at(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/home/u")]),
            Path::new("/x/postern/credentials.json")
        );
        assert_eq!(
            at(&[
                ("XDG_CONFIG_HOME", ""),
                ("POSTERN_CONFIG_DIR", "rel"),
                ("HOME", "/home/u")
            ]),
            Path::new("/home/u/.config/postern/credentials.json")
        );
        assert!(CredentialFile::default_location(env(&[])).is_err());
    }

    #[test]
    fn saved_privately_replaced_atomically_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = CredentialFile::in_dir(&dir.path().join("nested"));
        assert!(file.load().unwrap().is_none());
        file.save(&sample(100)).unwrap();
        file.save(&sample(200)).unwrap();
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded.expires_at, UnixTime::from_secs(200));
        assert_eq!(loaded.access_token.expose(), "access-secret");
        assert!(!format!("{loaded:?}").contains("secret\""), "{loaded:?}");
        // Nothing but the file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [OsString::from(FILE_NAME)]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(file.path()), 0o600);
            assert_eq!(mode(&dir.path().join("nested")), 0o700);
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(file.load(), Err(ClientError::Credentials { .. })));
        }
        assert!(file.remove().unwrap());
        assert!(!file.remove().unwrap());
    }

    #[test]
    fn refresh_is_due_a_minute_before_expiry() {
        let c = sample(1000);
        assert!(!c.needs_refresh(UnixTime::from_secs(900)));
        assert!(c.needs_refresh(UnixTime::from_secs(940)));
        assert!(c.needs_refresh(UnixTime::from_secs(2000)));
    }
}
