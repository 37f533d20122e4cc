//! A component's state directory on the on-prem host: its private key, its
//! certificate and what it learned at registration. Every file is written
//! atomically and readable by its owner only (0600), in a directory of mode 0700;
//! the component's runtime and the updater share it.

use std::fs;
use std::path::{Path, PathBuf};

use postern_proto::ComponentKind;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::UplinkError;

const KEY_FILE: &str = "key.pem";
const CERT_FILE: &str = "cert.pem";
const STATE_FILE: &str = "state.json";

/// What a component keeps besides its key and certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrolment {
    /// Connector or agent.
    pub kind: ComponentKind,
    /// The service's public URL (where registration happened).
    pub server_url: String,
    /// Tenant short name.
    pub tenant: String,
    /// Tenant ID (the certificate's subject).
    pub tenant_id: String,
    /// The component's ID.
    pub component_id: String,
    /// URL of the mTLS control endpoint.
    pub control_url: String,
    /// Trust anchors for the control endpoint (PEM); empty for publicly trusted.
    pub control_ca_pem: String,
    /// Connector group (connectors).
    #[serde(default)]
    pub group: Option<String>,
}

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// The state directory at `path` (not created until something is saved).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ensure_dir(&self) -> Result<(), UplinkError> {
        fs::create_dir_all(&self.path).map_err(|e| UplinkError::state(&self.path, e))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
                .map_err(|e| UplinkError::state(&self.path, e))?;
        }
        Ok(())
    }

    /// Writes `contents` to `name` atomically (a private temporary file renamed
    /// over the old one), mode 0600.
    fn write_private(&self, name: &str, contents: &[u8]) -> Result<(), UplinkError> {
        self.ensure_dir()?;
        let target = self.path.join(name);
        postern_keyring::replace_private_file(&target, contents).map_err(|e| UplinkError::state(&target, e))
    }

    fn read_private(&self, name: &str) -> Result<Zeroizing<String>, UplinkError> {
        let path = self.path.join(name);
        if !path.exists() {
            return Err(UplinkError::NotRegistered(self.path.display().to_string()));
        }
        postern_keyring::check_private_mode(&path).map_err(|e| UplinkError::state(&path, e))?;
        Ok(Zeroizing::new(
            fs::read_to_string(&path).map_err(|e| UplinkError::state(&path, e))?,
        ))
    }

    /// Whether a registration is stored here.
    pub fn is_registered(&self) -> bool {
        self.path.join(STATE_FILE).exists() && self.path.join(CERT_FILE).exists() && self.path.join(KEY_FILE).exists()
    }

    /// Saves a complete registration: key, certificate and enrolment facts. The
    /// key is written first and the state file last, so a crash in between leaves
    /// no state that points at a missing key.
    pub fn save(&self, key_pem: &str, cert_pem: &str, enrolment: &Enrolment) -> Result<(), UplinkError> {
        self.write_private(KEY_FILE, key_pem.as_bytes())?;
        self.write_private(CERT_FILE, cert_pem.as_bytes())?;
        let json = serde_json::to_vec_pretty(enrolment).map_err(|e| UplinkError::Internal(e.to_string()))?;
        self.write_private(STATE_FILE, &json)
    }

    /// Replaces key and certificate after a renewal. The certificate goes first:
    /// until the key follows, the old key no longer matches it, so the order is
    /// key-then-cert in one rename each; a crash between them is detected at load
    /// (key and certificate do not match) and reported.
    pub fn save_credentials(&self, key_pem: &str, cert_pem: &str) -> Result<(), UplinkError> {
        self.write_private(KEY_FILE, key_pem.as_bytes())?;
        self.write_private(CERT_FILE, cert_pem.as_bytes())
    }

    /// Loads the stored registration.
    pub fn load(&self) -> Result<(Zeroizing<String>, String, Enrolment), UplinkError> {
        let key = self.read_private(KEY_FILE)?;
        let cert = self.read_private(CERT_FILE)?;
        let state = self.read_private(STATE_FILE)?;
        let enrolment: Enrolment = serde_json::from_str(&state)
            .map_err(|e| UplinkError::Corrupt(format!("{}: {e}", self.path.join(STATE_FILE).display())))?;
        Ok((key, cert.to_string(), enrolment))
    }

    /// Deletes the registration (after the service removed the component).
    pub fn forget(&self) -> Result<(), UplinkError> {
        for name in [STATE_FILE, CERT_FILE, KEY_FILE] {
            let path = self.path.join(name);
            if path.exists() {
                fs::remove_file(&path).map_err(|e| UplinkError::state(&path, e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrolment() -> Enrolment {
        Enrolment {
            kind: ComponentKind::Agent,
            server_url: "https://login.example.com".into(),
            tenant: "acme".into(),
            tenant_id: "t-1".into(),
            component_id: "c-1".into(),
            control_url: "https://connect.example.com:8443".into(),
            control_ca_pem: String::new(),
            group: None,
        }
    }

    #[test]
    fn saves_privately_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("agent"));
        assert!(!state.is_registered());
        assert!(matches!(state.load(), Err(UplinkError::NotRegistered(_))));
        state.save("KEY", "CERT", &enrolment()).unwrap();
        assert!(state.is_registered());
        let (key, cert, e) = state.load().unwrap();
        assert_eq!((key.as_str(), cert.as_str()), ("KEY", "CERT"));
        assert_eq!(e, enrolment());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [KEY_FILE, CERT_FILE, STATE_FILE] {
                let mode = fs::metadata(state.path().join(f)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{f}");
            }
            let dir_mode = fs::metadata(state.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(dir_mode, 0o700);
            // A key file others can read is refused.
            fs::set_permissions(state.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
            assert!(state.load().is_err());
        }
        state.save_credentials("KEY2", "CERT2").unwrap();
        state.forget().unwrap();
        assert!(!state.is_registered());
    }
}
