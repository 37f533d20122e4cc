//! The on-prem directory the demo's agent checks passwords against, and the
//! agent's configuration file naming it: a local file of argon2id hashes by
//! default, or with `--ldap` an OpenLDAP server the demo runs itself.

use std::fmt::Write as _;

use anyhow::Context;
use postern_keyring::SecretString;

use super::record::{DemoDir, DemoRecord, UserRecord, write_private};
use super::slapd::{self, DemoSlapd};

/// The directory in use, for the summary; an OpenLDAP server runs until this
/// is dropped.
pub(crate) struct DemoDirectory {
    /// One line saying what it is.
    pub(crate) description: String,
    /// The OpenLDAP server, with `--ldap`.
    pub(crate) slapd: Option<DemoSlapd>,
}

/// Writes the directory (or starts it) and the agent's configuration for it.
/// With `ldap`, records the server's port in `record`.
pub(crate) async fn prepare(dir: &DemoDir, record: &mut DemoRecord, ldap: bool) -> anyhow::Result<DemoDirectory> {
    if ldap {
        let server = slapd::start(&dir.ldap(), record).await?;
        record.ports.ldap = Some(server.port());
        write_private(&dir.agent_config(), ldap_agent_config(&server.url()).as_bytes())?;
        Ok(DemoDirectory {
            description: format!(
                "OpenLDAP at {} (base {}, users matched by mail), started by the demo",
                server.url(),
                slapd::BASE_DN
            ),
            slapd: Some(server),
        })
    } else {
        write_private(&dir.users_file(), users_file(&record.users)?.as_bytes())?;
        let path = dir.users_file();
        write_private(
            &dir.agent_config(),
            local_agent_config(&path.display().to_string()).as_bytes(),
        )?;
        Ok(DemoDirectory {
            description: format!("a local file of argon2id hashes, {}", path.display()),
            slapd: None,
        })
    }
}

/// The lines of the local account file: `username:hash:display name:groups`.
fn users_file(users: &[UserRecord]) -> anyhow::Result<String> {
    let mut out = String::from("# Written by `postern demo`: the demo's directory users (argon2id hashes).\n");
    for user in users {
        let hash = postern_directory::hash_password(&SecretString::from(user.password.expose()))
            .with_context(|| format!("hashing the password of {}", user.username))?;
        let _ = writeln!(
            out,
            "{}:{hash}:{}:{}",
            user.username,
            user.display_name,
            user.groups.join(",")
        );
    }
    Ok(out)
}

/// A TOML basic string (a JSON string is one).
fn toml_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn local_agent_config(users_file: &str) -> String {
    format!(
        "# Written by `postern demo`: the agent checks passwords against a local file.\n\
         [directory]\nkind = \"local_file\"\npath = {}\n",
        toml_string(users_file)
    )
}

fn ldap_agent_config(url: &str) -> String {
    format!(
        "# Written by `postern demo`: the agent checks passwords against the demo's OpenLDAP.\n\
         [directory]\n\
         kind = \"ldap\"\n\
         flavor = \"open_ldap\"\n\
         urls = [{url}]\n\
         # Plain LDAP, on loopback only; a real directory needs ldaps:// or starttls = true.\n\
         allow_plaintext = true\n\
         base_dn = {base}\n\
         # Users sign in as name@{domain}, which is their mail attribute. The default\n\
         # OpenLDAP filter, (&(objectClass=inetOrgPerson)(uid={{username}})), would compare\n\
         # uid (alice) with the whole sign-in name and find no one.\n\
         user_filter = {filter}\n\
         \n\
         [directory.attributes]\n\
         # The name reported back to the service: mail, the name users sign in with.\n\
         upn = \"mail\"\n",
        url = toml_string(url),
        base = toml_string(slapd::BASE_DN),
        domain = super::record::DOMAIN,
        filter = toml_string(slapd::USER_FILTER),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` as an agent configuration (0600) and loads it as the agent does.
    fn load(dir: &std::path::Path, text: &str) -> Result<postern_agent::LoadedConfig, postern_agent::ConfigError> {
        let path = dir.join("agent.toml");
        let _ = std::fs::remove_file(&path);
        write_private(&path, text.as_bytes()).unwrap();
        postern_agent::AgentConfig::load(&path)
    }

    #[tokio::test]
    async fn the_agent_loads_both_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let record = DemoRecord::generate().unwrap();
        let users = dir.path().join("users \"quoted\"");
        write_private(&users, users_file(&record.users).unwrap().as_bytes()).unwrap();
        load(dir.path(), &local_agent_config(&users.display().to_string())).unwrap();
        load(dir.path(), &ldap_agent_config("ldap://127.0.0.1:1")).unwrap();
    }

    #[tokio::test]
    async fn the_users_file_checks_each_password() {
        use postern_directory::{Directory, LocalFileDirectory, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let record = DemoRecord::generate().unwrap();
        let path = dir.path().join("users");
        write_private(&path, users_file(&record.users).unwrap().as_bytes()).unwrap();
        let directory = LocalFileDirectory::load(&path).unwrap();
        let alice = &record.users[0];
        let ok = directory
            .validate(&alice.username, &SecretString::from(alice.password.expose()))
            .await;
        match ok {
            Outcome::Success(info) => assert_eq!(info.groups, alice.groups),
            other => panic!("{other:?}"),
        }
        let wrong = directory
            .validate(&alice.username, &SecretString::from("wrong-Pass-1"))
            .await;
        assert!(matches!(wrong, Outcome::WrongCredentials), "{wrong:?}");
    }
}
