//! A local file of argon2id hashes, for demos and tests.
//!
//! Format: one account per line, `#` starts a comment line, blank lines are skipped.
//!
//! ```text
//! # username:argon2id PHC hash[:display name[:group,group…]]
//! alice:$argon2id$v=19$m=19456,t=2,p=1$…$…:Alice Liddell:staff,admins
//! bob:$argon2id$v=19$m=19456,t=2,p=1$…$…
//! ```
//!
//! Usernames match without regard to ASCII case and must be unique that way; a display
//! name may not contain `:`. The stable id of an account is a UUIDv5 of its lower-case
//! username (renaming an account gives it a new id). The file must not be readable or
//! writable by "others", nor writable by its group: mode 0600, or 0640 with a group the
//! agent runs as (SEC-11).
//!
//! Checks run off the async runtime, at most [`MAX_CONCURRENT_CHECKS`] at once (each
//! argon2id check takes ~19 MiB and tens of milliseconds). An unknown username is
//! checked against a dummy hash so it takes as long as a known one.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use async_trait::async_trait;
use postern_keyring::SecretString;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::credentials::admissible;
use crate::{AccountInfo, Directory, Outcome};

/// Most password checks the local file runs at once.
pub const MAX_CONCURRENT_CHECKS: usize = 4;

/// Namespace of the UUIDv5 stable ids of local accounts.
const STABLE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_5b0e_4a1d_4d3e_9c55_7a0e_2b1f_d001);

/// What went wrong with the local account file.
#[derive(Debug, thiserror::Error)]
pub enum LocalFileError {
    /// The file could not be read; check the path and the agent's permissions.
    #[error("account file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's mode lets others read it or change it; fix the mode.
    #[error("account file {path}: mode {mode:o} lets other users read or change it; run: chmod 600 {path}")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Some lines are not accounts; every one is listed with its line number.
    #[error("account file {path}: {}", .problems.iter().map(|(n, p)| format!("line {n}: {p}")).collect::<Vec<_>>().join("; "))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// `(line number, problem)`, lines counted from 1.
        problems: Vec<(usize, String)>,
    },
    /// Hashing failed (the system random generator, or the argon2 parameters).
    #[error("hashing failed: {0}")]
    Hash(String),
}

/// One account of the file (its `Debug` leaves the hash out).
#[derive(Clone)]
struct Account {
    username: String,
    hash: String,
    display_name: Option<String>,
    groups: Vec<String>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Checks passwords against a local file of argon2id hashes.
pub struct LocalFileDirectory {
    path: PathBuf,
    accounts: RwLock<Arc<HashMap<String, Account>>>,
    dummy_hash: String,
    checks: Arc<Semaphore>,
}

impl fmt::Debug for LocalFileDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFileDirectory")
            .field("path", &self.path)
            .field("accounts", &self.accounts.read().map(|a| a.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

impl LocalFileDirectory {
    /// Loads the accounts of `path`, checking its mode and every line.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, LocalFileError> {
        let path = path.into();
        let accounts = read_accounts(&path)?;
        let dummy_hash = hash_password(&SecretString::new(Uuid::new_v4().to_string()))?;
        Ok(Self {
            path,
            accounts: RwLock::new(Arc::new(accounts)),
            dummy_hash,
            checks: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        })
    }

    /// Reads the file again; on any error the accounts loaded before stay in force.
    /// Returns how many accounts are loaded now.
    pub fn reload(&self) -> Result<usize, LocalFileError> {
        let accounts = read_accounts(&self.path)?;
        let count = accounts.len();
        if let Ok(mut current) = self.accounts.write() {
            *current = Arc::new(accounts);
        }
        Ok(count)
    }

    /// How many accounts are loaded.
    pub fn len(&self) -> usize {
        self.accounts.read().map(|a| a.len()).unwrap_or(0)
    }

    /// Whether no account is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, username: &str) -> Option<Account> {
        let accounts = self.accounts.read().ok()?.clone();
        accounts.get(&username.to_ascii_lowercase()).cloned()
    }
}

#[async_trait]
impl Directory for LocalFileDirectory {
    async fn validate(&self, username: &str, password: &SecretString) -> Outcome {
        if let Err(refusal) = admissible(username, password) {
            tracing::debug!(username, reason = refusal.reason(), "credentials refused unasked");
            return Outcome::WrongCredentials;
        }
        let account = self.lookup(username);
        let hash = account
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |a| a.hash.clone());
        let Ok(_permit) = self.checks.clone().acquire_owned().await else {
            return Outcome::DirectoryUnreachable("password checks stopped".into());
        };
        let password = password.clone();
        let matched = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.expose().as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let outcome = match account {
            Some(account) if matched => Outcome::Success(AccountInfo {
                stable_id: Uuid::new_v5(&STABLE_ID_NAMESPACE, account.username.to_ascii_lowercase().as_bytes())
                    .hyphenated()
                    .to_string(),
                display_name: account.display_name.clone().unwrap_or_else(|| account.username.clone()),
                upn: account.username,
                mail: None,
                groups: account.groups,
                dn: None,
                password_warning: None,
            }),
            _ => Outcome::WrongCredentials,
        };
        tracing::debug!(username, outcome = outcome.kind(), "local account file answered");
        outcome
    }
}

/// The argon2id hash (PHC string) of `password` with a random salt, for a line of the
/// account file (and a future `postern agent add-user`).
pub fn hash_password(password: &SecretString) -> Result<String, LocalFileError> {
    let salt = postern_keyring::random_bytes::<16>().map_err(|e| LocalFileError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password_with_salt(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| LocalFileError::Hash(e.to_string()))
}

fn read_accounts(path: &Path) -> Result<HashMap<String, Account>, LocalFileError> {
    let io = |source| LocalFileError::Io {
        path: path.to_owned(),
        source,
    };
    check_mode(path)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse_accounts(&text).map_err(|problems| LocalFileError::Malformed {
        path: path.to_owned(),
        problems,
    })
}

/// Refuses a file others may read or change, or its group may change.
fn check_mode(path: &Path) -> Result<(), LocalFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = std::fs::metadata(path).map_err(|source| LocalFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o027 != 0 {
            return Err(LocalFileError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    Ok(())
}

fn parse_accounts(text: &str) -> Result<HashMap<String, Account>, Vec<(usize, String)>> {
    let mut accounts = HashMap::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(account) => {
                let name = account.username.clone();
                if let std::collections::hash_map::Entry::Vacant(slot) = accounts.entry(name.to_ascii_lowercase()) {
                    slot.insert(account);
                } else {
                    problems.push((number, format!("account {name:?} appears twice")));
                }
            }
            Err(problem) => problems.push((number, problem)),
        }
    }
    if problems.is_empty() {
        Ok(accounts)
    } else {
        Err(problems)
    }
}

fn parse_line(line: &str) -> Result<Account, String> {
    let mut fields = line.splitn(4, ':');
    let username = fields.next().unwrap_or_default().trim();
    let hash = fields.next().map(str::trim).unwrap_or_default();
    let display_name = fields.next().map(str::trim).filter(|d| !d.is_empty());
    let groups = fields
        .next()
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if username.is_empty() {
        return Err("no username before the first ':'".into());
    }
    if username.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("username {username:?} contains a space or control character"));
    }
    if hash.is_empty() {
        return Err(format!(
            "account {username:?} has no hash (expected username:$argon2id$…)"
        ));
    }
    match PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str() == "argon2id" => {}
        Ok(parsed) => {
            return Err(format!(
                "account {username:?}: hash uses {}, not argon2id",
                parsed.algorithm.as_str()
            ));
        }
        Err(e) => return Err(format!("account {username:?}: not a PHC hash string ({e})")),
    }
    Ok(Account {
        username: username.to_owned(),
        hash: hash.to_owned(),
        display_name: display_name.map(str::to_owned),
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A fixed hash of "correct horse" so the parser tests need no hashing.
    fn hash() -> String {
        hash_password(&SecretString::from("correct horse")).unwrap()
    }

    #[test]
    fn lines_parse() {
        let h = hash();
        let text = format!("# comment\n\nalice:{h}:Alice Liddell:staff, admins\nBob:{h}\n");
        let accounts = parse_accounts(&text).unwrap();
        assert_eq!(accounts.len(), 2);
        let alice = &accounts["alice"];
        assert_eq!(alice.display_name.as_deref(), Some("Alice Liddell"));
        assert_eq!(alice.groups, vec!["staff", "admins"]);
        assert_eq!(accounts["bob"].username, "Bob");
    }

    #[test]
    fn malformed_lines_are_numbered() {
        let h = hash();
        let text = format!(
            "alice:{h}\n# fine\n:{h}\nbob\ncarol:$2b$10$notargon\ndave:$pbkdf2-sha256$i=1000$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\nALICE:{h}\ner in:{h}\n"
        );
        let problems = parse_accounts(&text).unwrap_err();
        let lines: Vec<usize> = problems.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7, 8], "{problems:?}");
        assert!(problems[1].1.contains("no hash"));
        assert!(problems[3].1.contains("not argon2id"), "{problems:?}");
        assert!(problems[4].1.contains("twice"));
    }

    #[test]
    fn stable_ids_are_deterministic() {
        let a = Uuid::new_v5(&STABLE_ID_NAMESPACE, b"alice");
        assert_eq!(a, Uuid::new_v5(&STABLE_ID_NAMESPACE, b"alice"));
        assert_ne!(a, Uuid::new_v5(&STABLE_ID_NAMESPACE, b"bob"));
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn errors_never_show_hashes_or_passwords() {
        let err = LocalFileError::Malformed {
            path: "/x".into(),
            problems: vec![(3, "account \"bob\" has no hash".into())],
        };
        assert_eq!(err.to_string(), "account file /x: line 3: account \"bob\" has no hash");
    }
}
