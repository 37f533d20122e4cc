//! The demo's state directory and `demo.json`, its record of what it made:
//! the organisation, the accounts with their passwords, the ports and the IDs
//! of apps and components. A second run reads the record and reuses all of it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use postern_keyring::SecretString;
use serde::{Deserialize, Serialize, Serializer};

/// The record's format; a record of another version is refused, not guessed at.
const RECORD_VERSION: u32 = 1;
/// Random bytes in a generated password (shown as hex groups).
const PASSWORD_BYTES: usize = 8;
/// Bytes of the administrator's TOTP seed (RFC 4226 recommends 160 bits).
const TOTP_SEED_BYTES: usize = 20;

/// The demo's state directory (mode 0700) and the paths inside it.
#[derive(Clone, Debug)]
pub(crate) struct DemoDir {
    root: PathBuf,
}

impl DemoDir {
    /// Opens `path`, creating it if needed; owner-only either way.
    pub(crate) fn open(path: &Path) -> anyhow::Result<Self> {
        if path.exists() && !path.is_dir() {
            bail!(
                "{} is not a directory: give --dir a directory for the demo's state",
                path.display()
            );
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        make_private_dir(path)?;
        let root = std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
        Ok(Self { root })
    }

    /// Holds the directory for this process: two demos on one directory would
    /// share a database and the components' keys. The lock goes with the
    /// returned file (when the process ends, at the latest).
    pub(crate) fn lock(&self) -> anyhow::Result<std::fs::File> {
        let path = self.root.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another postern demo is running on {}: stop it first, or give this one another --dir",
                self.root.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// Opens `path` only if it holds a demo's record.
    pub(crate) fn existing(path: &Path) -> anyhow::Result<Self> {
        let dir = Self { root: path.to_owned() };
        if !dir.record_path().is_file() {
            bail!(
                "{} holds no demo (no demo.json): start one with `postern demo --dir {}`",
                path.display(),
                path.display()
            );
        }
        Ok(dir)
    }

    /// The directory itself (absolute).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The service's data directory (database, KEK, self-signed certificate).
    pub(crate) fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `demo.json`.
    pub(crate) fn record_path(&self) -> PathBuf {
        self.root.join("demo.json")
    }

    /// The connector's state directory (key, certificate, enrolment).
    pub(crate) fn connector(&self) -> PathBuf {
        self.root.join("connector")
    }

    /// The agent's state directory.
    pub(crate) fn agent(&self) -> PathBuf {
        self.root.join("agent")
    }

    /// The agent's configuration file.
    pub(crate) fn agent_config(&self) -> PathBuf {
        self.root.join("agent.toml")
    }

    /// The local directory of demo users (argon2id hashes).
    pub(crate) fn users_file(&self) -> PathBuf {
        self.root.join("users")
    }

    /// The OpenLDAP server's configuration and data (with `--ldap`).
    pub(crate) fn ldap(&self) -> PathBuf {
        self.root.join("ldap")
    }

    /// The log of everything the demo runs.
    pub(crate) fn log_file(&self) -> PathBuf {
        self.root.join("demo.log")
    }

    /// The service's self-signed certificate (PEM).
    pub(crate) fn certificate(&self) -> PathBuf {
        self.data().join("tls").join("self-signed.crt")
    }

    /// Whether the service's database exists already.
    pub(crate) fn has_database(&self) -> bool {
        self.data().join("postern.db").exists()
    }
}

/// Makes `path` a directory only its owner can enter.
pub(crate) fn make_private_dir(path: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    Ok(())
}

/// Writes `contents` to `path` readable by its owner only (0600), replacing it
/// atomically.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    postern_keyring::replace_private_file(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// A password, written to the record in clear (the file is 0600) and masked
/// everywhere else.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct Password(pub(crate) SecretString);

impl Serialize for Password {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

impl Password {
    /// A fresh random password: four groups of four hex digits (64 bits).
    fn generate() -> anyhow::Result<Self> {
        let bytes = postern_keyring::random_bytes::<PASSWORD_BYTES>()?;
        let hex: Vec<String> = bytes
            .chunks(2)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        Ok(Self(SecretString::new(hex.join("-"))))
    }

    /// The password itself.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose()
    }
}

/// The demo administrator: a cloud account with TOTP.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminRecord {
    /// Sign-in name.
    pub(crate) username: String,
    /// Password.
    pub(crate) password: Password,
    /// TOTP seed in base32, as authenticator apps take it.
    pub(crate) totp_secret: Password,
}

/// A demo user of the on-prem directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserRecord {
    /// Sign-in name (`name@demo.localhost`).
    pub(crate) username: String,
    /// Name shown.
    pub(crate) display_name: String,
    /// Directory groups.
    pub(crate) groups: Vec<String>,
    /// Password (checked by the agent against the directory).
    pub(crate) password: Password,
}

/// Ports the last run used; the next run takes them again if they are free.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortRecord {
    /// The service's HTTPS listener (sign-in pages and published apps).
    pub(crate) public: Option<u16>,
    /// The control endpoint (mTLS, for the connector and the agent).
    pub(crate) control: Option<u16>,
    /// The sample app behind the pre-authenticated app.
    pub(crate) wiki_backend: Option<u16>,
    /// The sample app behind the passthrough app.
    pub(crate) public_backend: Option<u16>,
    /// The OpenLDAP server (with `--ldap`).
    pub(crate) ldap: Option<u16>,
}

/// IDs of what the demo made in the service.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatedRecord {
    /// The organisation.
    pub(crate) tenant_id: Option<String>,
    /// The pre-authenticated app.
    pub(crate) wiki_app_id: Option<String>,
    /// The passthrough app.
    pub(crate) public_app_id: Option<String>,
    /// The connector.
    pub(crate) connector_id: Option<String>,
    /// The agent.
    pub(crate) agent_id: Option<String>,
}

/// `demo.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DemoRecord {
    /// Format version.
    pub(crate) version: u32,
    /// The organisation's short name.
    pub(crate) tenant: String,
    /// Its verified domain; users and apps live under it.
    pub(crate) domain: String,
    /// The administrator.
    pub(crate) admin: AdminRecord,
    /// The directory's users.
    pub(crate) users: Vec<UserRecord>,
    /// Ports of the last run.
    #[serde(default)]
    pub(crate) ports: PortRecord,
    /// What was made.
    #[serde(default)]
    pub(crate) created: CreatedRecord,
}

/// The demo's organisation.
pub(crate) const TENANT: &str = "demo";
/// Its domain: every `*.localhost` name resolves to loopback in browsers.
pub(crate) const DOMAIN: &str = "demo.localhost";

/// The directory's users: name, display name, groups.
const USERS: [(&str, &str, &[&str]); 3] = [
    ("alice", "Alice Liddell", &["staff", "engineering"]),
    ("bob", "Bob Builder", &["staff"]),
    ("carol", "Carol Contractor", &["contractors"]),
];

impl DemoRecord {
    /// A record with fresh passwords and a fresh TOTP seed.
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let seed = postern_keyring::random_bytes::<TOTP_SEED_BYTES>()?;
        let users = USERS
            .iter()
            .map(|(name, display, groups)| {
                Ok(UserRecord {
                    username: format!("{name}@{DOMAIN}"),
                    display_name: (*display).to_owned(),
                    groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                    password: Password::generate()?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            version: RECORD_VERSION,
            tenant: TENANT.to_owned(),
            domain: DOMAIN.to_owned(),
            admin: AdminRecord {
                username: format!("admin@{DOMAIN}"),
                password: Password::generate()?,
                totp_secret: Password(SecretString::new(totp_rs::Secret::from(seed.to_vec()).to_base32())),
            },
            users,
            ports: PortRecord::default(),
            created: CreatedRecord::default(),
        })
    }

    /// Reads the record in `dir`, if there is one.
    pub(crate) fn load(dir: &DemoDir) -> anyhow::Result<Option<Self>> {
        let path = dir.record_path();
        if !path.exists() {
            return Ok(None);
        }
        postern_keyring::check_private_mode(&path).with_context(|| format!("{}", path.display()))?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let record: Self = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a demo record; remove {} to start a new demo",
                path.display(),
                dir.root().display()
            )
        })?;
        if record.version != RECORD_VERSION {
            bail!(
                "{} is of version {}, this postern writes version {RECORD_VERSION}; remove {} to start a new demo",
                path.display(),
                record.version,
                dir.root().display()
            );
        }
        Ok(Some(record))
    }

    /// Writes the record to `dir` (0600).
    pub(crate) fn save(&self, dir: &DemoDir) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        write_private(&dir.record_path(), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_a_round_trip_and_hides_passwords_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let demo = DemoDir::open(&dir.path().join("state")).unwrap();
        let record = DemoRecord::generate().unwrap();
        record.save(&demo).unwrap();
        let again = DemoRecord::load(&demo).unwrap().unwrap();
        assert_eq!(again.admin.password.expose(), record.admin.password.expose());
        assert_eq!(again.users.len(), 3);
        let debug = format!("{record:?}");
        assert!(!debug.contains(record.users[0].password.expose()), "{debug}");
        let password = record.admin.password.expose();
        assert_eq!(password.len(), 19, "{password}");
        assert!(!password.contains("admin"));
    }
}
