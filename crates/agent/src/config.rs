//! The agent's configuration file (`/etc/postern/agent.toml`): which directory to check
//! passwords against, and how many checks to run at once.
//!
//! ```toml
//! # Optional: most validations at once (1..=1024). The service's own number
//! # applies when it is lower.
//! max_in_flight = 32
//!
//! [directory]
//! kind = "ldap"                       # or "local_file"
//! # The LDAP back end's settings, inline (postern_directory::LdapConfig):
//! flavor = "active_directory"         # or "open_ldap"
//! urls = ["ldaps://dc1.example.test", "ldaps://dc2.example.test"]
//! ca_file = "/etc/postern/ad-ca.pem"
//! bind_dn = "CN=svc-postern,CN=Users,DC=example,DC=test"
//! # bind_password = "…"              # better: POSTERN_AGENT_BIND_PASSWORD
//! base_dn = "DC=example,DC=test"
//! ```
//!
//! or, for demos and tests, a file of argon2id hashes
//! ([`postern_directory::LocalFileDirectory`]):
//!
//! ```toml
//! [directory]
//! kind = "local_file"
//! path = "/etc/postern/accounts"
//! ```
//!
//! Unknown keys are refused. The LDAP service account's password may come from the
//! environment variable [`BIND_PASSWORD_ENV`] instead of the file (it wins over the
//! file). The file must not be writable by its group or others (whoever can change it
//! can point the agent at their own "directory" and collect passwords), and when it
//! holds a password, not readable by others either: mode 0600, or 0640 with a group
//! the agent runs as. Every problem is reported at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use postern_directory::{Directory, LdapConfig, LdapDirectory, LocalFileDirectory, SecretString};
use serde::Deserialize;

/// Environment variable holding the LDAP service account's password.
pub const BIND_PASSWORD_ENV: &str = "POSTERN_AGENT_BIND_PASSWORD";

/// Highest `max_in_flight` accepted.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1024;

/// The configuration file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Most validations at once; the lower of this and the service's number applies.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// The directory back end.
    pub directory: DirectoryConfig,
}

/// `[directory]`: which back end, and its settings.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DirectoryConfig {
    /// Active Directory or OpenLDAP.
    Ldap(Box<LdapConfig>),
    /// A local file of argon2id hashes.
    LocalFile(LocalFileConfig),
}

/// `[directory] kind = "local_file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFileConfig {
    /// The account file.
    pub path: PathBuf,
}

/// What the agent runs with, after validation.
pub struct LoadedConfig {
    /// The directory, ready to validate.
    pub directory: Arc<dyn Directory>,
    /// The configured cap on validations at once, if any.
    pub max_in_flight: Option<usize>,
}

impl fmt::Debug for LoadedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedConfig")
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

/// The configuration cannot be used; one line per problem, each saying what to change.
/// Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent configuration {}: ", self.path.display())?;
        f.write_str(&self.problems.join("; "))
    }
}

impl AgentConfig {
    /// Reads, checks and builds the configuration in `path`, with the password from
    /// the process environment when [`BIND_PASSWORD_ENV`] is set.
    pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// [`Self::load`] with the environment given by `env`.
    pub fn load_with_env(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<LoadedConfig, ConfigError> {
        let error = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(vec![format!("cannot read it: {e}")]))?;
        let config: AgentConfig = toml::from_str(&text).map_err(|e| error(vec![parse_problem(&e)]))?;
        let mut problems = Vec::new();
        check_mode(path, config.holds_password(), &mut problems);
        let built = config.build(env, &mut problems);
        match built {
            Some(loaded) if problems.is_empty() => Ok(loaded),
            _ => Err(error(problems)),
        }
    }

    /// Whether the file itself holds a password.
    fn holds_password(&self) -> bool {
        matches!(&self.directory, DirectoryConfig::Ldap(l) if l.bind_password.is_some())
    }

    /// Checks everything and builds the directory; problems go to `problems`.
    fn build(self, env: impl Fn(&str) -> Option<String>, problems: &mut Vec<String>) -> Option<LoadedConfig> {
        if let Some(n) = self.max_in_flight
            && !(1..=MAX_IN_FLIGHT_LIMIT).contains(&n)
        {
            problems.push(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT_LIMIT}, not {n}"
            ));
        }
        let directory: Option<Arc<dyn Directory>> = match self.directory {
            DirectoryConfig::Ldap(mut ldap) => {
                if let Some(password) = env(BIND_PASSWORD_ENV).filter(|p| !p.is_empty()) {
                    ldap.bind_password = Some(SecretString::new(password));
                }
                match LdapDirectory::new(&ldap) {
                    Ok(d) => Some(Arc::new(d)),
                    Err(e) => {
                        problems.extend(e.problems.into_iter().map(|p| format!("[directory] {p}")));
                        None
                    }
                }
            }
            DirectoryConfig::LocalFile(local) => match LocalFileDirectory::load(&local.path) {
                Ok(d) => Some(Arc::new(d)),
                Err(e) => {
                    problems.push(format!("[directory] {e}"));
                    None
                }
            },
        };
        directory.map(|directory| LoadedConfig {
            directory,
            max_in_flight: self.max_in_flight,
        })
    }
}

/// A TOML error without the excerpt of the file it quotes (which may show a password).
fn parse_problem(e: &toml::de::Error) -> String {
    let place = e
        .span()
        .map(|span| format!(" (at byte {})", span.start))
        .unwrap_or_default();
    format!("not valid: {}{place}", e.message())
}

/// Refuses a file others may change, or read when it holds a password.
fn check_mode(path: &Path, holds_password: bool, problems: &mut Vec<String>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) => {
                problems.push(format!("cannot read its mode: {e}"));
                return;
            }
        };
        if mode & 0o022 != 0 {
            problems.push(format!(
                "mode {mode:o} lets other users change it (and send passwords elsewhere); run: chmod go-w {}",
                path.display()
            ));
        }
        if holds_password && mode & 0o004 != 0 {
            problems.push(format!(
                "it holds bind_password but mode {mode:o} lets every user read it; run: chmod 600 {} \
                 (or 640 with the agent's group), or set {BIND_PASSWORD_ENV} instead",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, holds_password, problems);
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use postern_directory::hash_password;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const LDAP: &str = r#"
max_in_flight = 8
[directory]
kind = "ldap"
flavor = "open_ldap"
urls = ["ldaps://ldap.example.com"]
bind_dn = "cn=reader,dc=example,dc=com"
base_dn = "dc=example,dc=com"
"#;

    #[test]
    fn local_file_loads() {
        let dir = tempfile::tempdir().unwrap();
        let hash = hash_password(&SecretString::from("pw")).unwrap();
        let accounts = write(dir.path(), "accounts", &format!("alice:{hash}\n"), 0o600);
        let text = format!(
            "[directory]\nkind = \"local_file\"\npath = {:?}\n",
            accounts.display().to_string()
        );
        let path = write(dir.path(), "agent.toml", &text, 0o644);
        let loaded = AgentConfig::load_with_env(&path, no_env).unwrap();
        assert_eq!(loaded.max_in_flight, None);
    }

    #[test]
    fn ldap_password_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "agent.toml", LDAP, 0o644);
        // bind_dn without a password: refused by the LDAP back end.
        let err = AgentConfig::load_with_env(&path, no_env).unwrap_err();
        assert!(err.to_string().contains("bind_password"), "{err}");
        let loaded = AgentConfig::load_with_env(&path, |name| {
            (name == BIND_PASSWORD_ENV).then(|| "reader-Secret-1".to_owned())
        })
        .unwrap();
        assert_eq!(loaded.max_in_flight, Some(8));
        assert!(!format!("{loaded:?}").contains("reader-Secret-1"));
    }

    #[test]
    fn a_password_in_a_readable_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{LDAP}bind_password = \"reader-Secret-1\"\n");
        let path = write(dir.path(), "agent.toml", &text, 0o644);
        let err = AgentConfig::load_with_env(&path, no_env).unwrap_err();
        assert!(err.to_string().contains("every user read it"), "{err}");
        assert!(!format!("{err} {err:?}").contains("reader-Secret-1"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        AgentConfig::load_with_env(&path, no_env).unwrap();
        // Writable by the group: refused with or without a password.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        assert!(
            AgentConfig::load_with_env(&path, no_env)
                .unwrap_err()
                .to_string()
                .contains("change it")
        );
    }

    #[test]
    fn every_problem_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
max_in_flight = 0
[directory]
kind = "ldap"
flavor = "active_directory"
urls = ["ldap://dc1.example.test"]
bind_password = "svc-Secret-9"
base_dn = ""
"#;
        let path = write(dir.path(), "agent.toml", text, 0o666);
        let err = AgentConfig::load_with_env(&path, no_env).unwrap_err();
        let all = err.to_string();
        for needle in [
            "max_in_flight",
            "change it",
            "every user read",
            "in clear",
            "base_dn",
            "bind_dn",
        ] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
        assert!(!all.contains("svc-Secret-9"));
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused_without_quoting_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            (
                "[directory]\nkind = \"local_file\"\npath = \"/x\"\nextra = 1\n",
                "unknown field",
            ),
            (
                "colour = 1\n[directory]\nkind = \"local_file\"\npath = \"/x\"\n",
                "unknown field",
            ),
            ("[directory]\nkind = \"pam\"\n", "unknown variant"),
            (
                "[directory]\nkind = \"ldap\"\nflavor = \"open_ldap\"\nurls = []\nbase_dn = \"x\"\nbind_pw = \"Leaky-1\"\n",
                "unknown field",
            ),
            ("bind_password = \"Leaky-1\n", "not valid"),
        ] {
            let path = write(dir.path(), "agent.toml", text, 0o600);
            let err = AgentConfig::load_with_env(&path, no_env).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains("Leaky-1"), "{err}");
        }
        let missing = AgentConfig::load_with_env(&dir.path().join("none.toml"), no_env).unwrap_err();
        assert!(missing.to_string().contains("cannot read"));
    }

    #[test]
    fn local_file_problems_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = write(dir.path(), "accounts", "alice\n", 0o644);
        let text = format!(
            "max_in_flight = 5000\n[directory]\nkind = \"local_file\"\npath = {:?}\n",
            accounts.display().to_string()
        );
        let path = write(dir.path(), "agent.toml", &text, 0o600);
        let err = AgentConfig::load_with_env(&path, no_env).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }
}
