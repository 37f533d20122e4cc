//! The demo's OpenLDAP directory (`postern demo --ldap`): a `slapd` started as
//! the demo's child on a loopback port, its configuration and database in the
//! state directory's `ldap/`. The database is loaded once, on the first run,
//! with the demo users (`uid`, `cn`, `mail` = the sign-in name, passwords
//! salted and hashed as `{SSHA}`, which slapd checks itself) and their groups
//! (`groupOfNames`); later runs start the same database again.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use tokio::process::{Child, Command};

use super::record::{DemoRecord, UserRecord, make_private_dir};

/// Where the demo's directory tree starts.
pub(crate) const BASE_DN: &str = "dc=demo,dc=localhost";
/// Users are found by `mail`, which holds the name they sign in with.
pub(crate) const USER_FILTER: &str = "(&(objectClass=inetOrgPerson)(mail={username}))";
/// How long slapd gets to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian installs slapd, often outside a non-root user's `PATH`.
const SBIN: &str = "/usr/sbin";

/// A running slapd; stopped when dropped.
pub(crate) struct DemoSlapd {
    child: Child,
    port: u16,
}

impl DemoSlapd {
    /// Its port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `ldap://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Stops it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `program` from `PATH` or `/usr/sbin`.
fn find(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from(SBIN)])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("--ldap needs OpenLDAP's {program}: install it (Debian: apt-get install slapd) or leave out --ldap")
        })
}

/// Starts slapd with the demo's users in `dir`, on the port of the last run
/// if it is free.
pub(crate) async fn start(dir: &Path, record: &DemoRecord) -> anyhow::Result<DemoSlapd> {
    let slapd = find("slapd")?;
    let slapadd = find("slapadd")?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    make_private_dir(dir)?;
    make_private_dir(&data)?;
    let conf = dir.join("slapd.conf");
    std::fs::write(&conf, config(dir)).with_context(|| format!("writing {}", conf.display()))?;
    if !data.join("data.mdb").exists() {
        load(&slapadd, &conf, dir, &record.users).await?;
    }
    let port = super::ports::choose("OpenLDAP", None, record.ports.ldap, None)?.port;
    let log = dir.join("slapd.log");
    let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    // `-d 0` keeps slapd in the foreground: it stays the demo's child.
    let child = Command::new(&slapd)
        .arg("-d")
        .arg("0")
        .arg("-f")
        .arg(&conf)
        .arg("-h")
        .arg(format!("ldap://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", slapd.display()))?;
    let mut server = DemoSlapd { child, port };
    wait_until_listening(&mut server, &log).await?;
    Ok(server)
}

async fn wait_until_listening(server: &mut DemoSlapd, log: &Path) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = server.child.try_wait()? {
            bail!(
                "slapd stopped ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("slapd did not listen on port {} within {START_TIMEOUT:?}", server.port);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Loads the users and groups into a new database.
async fn load(slapadd: &Path, conf: &Path, dir: &Path, users: &[UserRecord]) -> anyhow::Result<()> {
    let ldif = dir.join("demo.ldif");
    std::fs::write(&ldif, entries(users)?).with_context(|| format!("writing {}", ldif.display()))?;
    let out = Command::new(slapadd)
        .arg("-q")
        .arg("-f")
        .arg(conf)
        .arg("-l")
        .arg(&ldif)
        .output()
        .await
        .with_context(|| format!("running {}", slapadd.display()))?;
    // The file holds password hashes: it is not kept.
    let _ = std::fs::remove_file(&ldif);
    if !out.status.success() {
        bail!(
            "slapadd failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// slapd's configuration: the standard schemas, one database, anonymous
/// searches (the agent binds as nobody to search, then as the user).
fn config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb.so\n\
         pidfile {d}/slapd.pid\n\
         argsfile {d}/slapd.args\n\
         \n\
         database mdb\n\
         maxsize 104857600\n\
         suffix \"{BASE_DN}\"\n\
         directory {d}/data\n\
         index objectClass,uid,mail,member eq\n\
         access to attrs=userPassword by self write by anonymous auth by * none\n\
         access to * by * read\n"
    )
}

/// `{SSHA}`: salted SHA-1, the scheme slapd verifies without modules.
fn ssha(password: &str) -> anyhow::Result<String> {
    let salt = postern_keyring::random_bytes::<8>()?;
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(password.as_bytes());
    ctx.update(&salt);
    let mut bytes = ctx.finish().as_ref().to_vec();
    bytes.extend_from_slice(&salt);
    Ok(format!("{{SSHA}}{}", STANDARD.encode(bytes)))
}

/// The LDIF of the tree, the users and their groups.
fn entries(users: &[UserRecord]) -> anyhow::Result<String> {
    let b = BASE_DN;
    let mut out = format!(
        "dn: {b}\nobjectClass: dcObject\nobjectClass: organization\no: Postern demo\ndc: demo\n\n\
         dn: ou=people,{b}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{b}\nobjectClass: organizationalUnit\nou: groups\n\n"
    );
    let mut groups: Vec<&str> = Vec::new();
    for user in users {
        let uid = uid(user);
        let surname = user.display_name.rsplit(' ').next().unwrap_or(uid);
        let _ = write!(
            out,
            "dn: uid={uid},ou=people,{b}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {}\nsn: {surname}\n\
             mail: {}\nuserPassword: {}\n\n",
            user.display_name,
            user.username,
            ssha(user.password.expose())?
        );
        for group in &user.groups {
            if !groups.contains(&group.as_str()) {
                groups.push(group);
            }
        }
    }
    for group in groups {
        let _ = write!(
            out,
            "dn: cn={group},ou=groups,{b}\nobjectClass: groupOfNames\ncn: {group}\n"
        );
        for member in users.iter().filter(|u| u.groups.iter().any(|g| g == group)) {
            let _ = writeln!(out, "member: uid={},ou=people,{b}", uid(member));
        }
        out.push('\n');
    }
    Ok(out)
}

/// The local part of a user's sign-in name.
fn uid(user: &UserRecord) -> &str {
    user.username.split('@').next().unwrap_or(&user.username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_hold_every_user_and_group_and_no_clear_password() {
        let record = DemoRecord::generate().unwrap();
        let ldif = entries(&record.users).unwrap();
        for user in &record.users {
            assert!(ldif.contains(&format!("mail: {}\n", user.username)), "{ldif}");
            assert!(!ldif.contains(user.password.expose()));
        }
        assert_eq!(
            ldif.matches("objectClass: groupOfNames").count(),
            3,
            "staff, engineering, contractors"
        );
        assert!(ldif.contains("dn: cn=staff,ou=groups,dc=demo,dc=localhost\nobjectClass: groupOfNames\ncn: staff\nmember: uid=alice,ou=people,dc=demo,dc=localhost\nmember: uid=bob,ou=people,dc=demo,dc=localhost\n"));
    }

    #[test]
    fn ssha_is_salted_sha1() {
        let a = ssha("secret").unwrap();
        let b = ssha("secret").unwrap();
        assert!(a.starts_with("{SSHA}") && a != b, "a fresh salt each time");
        let bytes = STANDARD.decode(&a["{SSHA}".len()..]).unwrap();
        assert_eq!(bytes.len(), 20 + 8);
    }
}
