//! A real OpenLDAP server for one test.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ldap3::{LdapConnAsync, Scope};
use tempfile::TempDir;

use super::HarnessError;
use super::pki::TestPki;
use super::process::{free_port, require, run, tail_file, wait_for_bind};
use crate::ldap::attributes::Entry;
use crate::{Flavor, LdapConfig, SecretString};

/// Base DN of the test directory.
pub const SLAPD_BASE_DN: &str = "dc=example,dc=com";
/// The password of every test account.
pub const SLAPD_PASSWORD: &str = "Secret-Pass-1";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "admin-Pass-1";
const PACKAGES: &str = "slapd ldap-utils";

/// An OpenLDAP server (`slapd`) on loopback with the ppolicy overlay, started for one
/// test and stopped (its directory removed) on drop.
///
/// Listens on `ldap://127.0.0.1:PORT/` (StartTLS available) and
/// `ldaps://127.0.0.1:PORT2/`, both on free ports, with a certificate from a fresh test
/// CA ([`Slapd::ca_file`]). The default password policy locks an account after 3 bad
/// passwords and makes a reset password be changed. Accounts under
/// `ou=people,dc=example,dc=com`, all with password [`SLAPD_PASSWORD`]:
///
/// | uid | state |
/// |---|---|
/// | `alice` | fine; cn `Alice Liddell`, mail `alice@example.com`, in groups `staff` and `admins` |
/// | `bob`, `carol` | fine; `bob` in `staff` |
/// | `expired` | password older than its policy's `pwdMaxAge`, no grace logins |
/// | `grace` | password expired, 3 grace logins |
/// | `warned` | password expires within its policy's warning period |
/// | `reset` | `pwdReset: TRUE`: must change the password |
/// | `lockme` | fine until a test gives 3 bad passwords |
///
/// Groups are `groupOfNames` under `ou=groups`; no `memberOf` overlay, so the back end
/// finds them with its member search. `cn=Monitor` is readable by the admin, for
/// [`Slapd::connections`].
pub struct Slapd {
    dir: TempDir,
    child: Option<Child>,
    port: u16,
    tls_port: u16,
    pki: TestPki,
}

impl std::fmt::Debug for Slapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slapd")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .finish()
    }
}

impl Slapd {
    /// Writes the configuration and accounts into a temporary directory, starts slapd on
    /// free ports and waits until it answers a bind.
    pub async fn start() -> Result<Slapd, HarnessError> {
        let slapd = require("slapd", PACKAGES)?;
        let slapadd = require("slapadd", PACKAGES)?;
        let dir = tempfile::Builder::new()
            .prefix("postern-slapd-")
            .tempdir()
            .map_err(HarnessError::io("creating the slapd directory"))?;
        let pki = TestPki::generate(dir.path(), "postern test CA (slapd)", &[])?;
        fs::create_dir(dir.path().join("data")).map_err(HarnessError::io("creating the slapd data directory"))?;
        let conf = dir.path().join("slapd.conf");
        fs::write(&conf, slapd_conf(dir.path(), &pki)).map_err(HarnessError::io("writing slapd.conf"))?;
        let ldif = dir.path().join("base.ldif");
        fs::write(&ldif, base_ldif()).map_err(HarnessError::io("writing base.ldif"))?;
        run(
            "slapadd",
            Command::new(slapadd)
                .arg("-q")
                .arg("-f")
                .arg(&conf)
                .arg("-l")
                .arg(&ldif),
        )?;

        let mut server = Slapd {
            dir,
            child: None,
            port: 0,
            tls_port: 0,
            pki,
        };
        // Another process may take a port between choosing and binding it: try anew.
        let mut last = None;
        for _ in 0..3 {
            server.port = free_port()?;
            server.tls_port = free_port()?;
            match server.launch(&slapd).await {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Startup {
            what: "slapd did not start".into(),
            log: String::new(),
        }))
    }

    async fn launch(&mut self, slapd: &Path) -> Result<(), HarnessError> {
        let log = self.dir.path().join("slapd.log");
        let log_file = fs::File::create(&log).map_err(HarnessError::io("creating slapd.log"))?;
        let log_err = log_file.try_clone().map_err(HarnessError::io("creating slapd.log"))?;
        let listen = format!("{} {}", self.url(), self.ldaps_url());
        // `-d 0` keeps slapd in the foreground, so it stays our child and dies with us.
        let child = Command::new(slapd)
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(listen)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(HarnessError::io("starting slapd"))?;
        self.child = Some(child);
        let url = self.url();
        let child = &mut self.child;
        let ready = wait_for_bind(&url, ADMIN_DN, ADMIN_PASSWORD, Duration::from_secs(10), || {
            child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        })
        .await;
        match ready {
            Ok(()) => Ok(()),
            Err(why) => {
                self.stop();
                Err(HarnessError::Startup {
                    what: format!("slapd on {}: {why}", self.url()),
                    log: tail_file(&log),
                })
            }
        }
    }

    /// `ldap://127.0.0.1:PORT` (plain, StartTLS available).
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT2`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The test CA's certificate (PEM), which signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.pki.ca_file
    }

    /// The server's temporary directory (configuration, data, `slapd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A back-end configuration for plain `ldap://` (allowed: loopback) with anonymous
    /// searches and short timeouts.
    pub fn config(&self) -> LdapConfig {
        LdapConfig {
            allow_plaintext: true,
            connect_timeout_ms: Some(1_000),
            operation_timeout_ms: Some(3_000),
            ..LdapConfig::new(Flavor::OpenLdap, vec![self.url()], SLAPD_BASE_DN)
        }
    }

    /// [`Slapd::config`] over `ldaps://`, trusting the test CA.
    pub fn ldaps_config(&self) -> LdapConfig {
        LdapConfig {
            urls: vec![self.ldaps_url()],
            allow_plaintext: false,
            ca_file: Some(self.pki.ca_file.clone()),
            ..self.config()
        }
    }

    /// [`Slapd::config`] upgraded with StartTLS, trusting the test CA.
    pub fn starttls_config(&self) -> LdapConfig {
        LdapConfig {
            starttls: true,
            allow_plaintext: false,
            ca_file: Some(self.pki.ca_file.clone()),
            ..self.config()
        }
    }

    /// The admin's DN and password, for tests that inspect or change the directory.
    pub fn admin(&self) -> (&'static str, SecretString) {
        (ADMIN_DN, SecretString::from(ADMIN_PASSWORD))
    }

    /// How many client connections slapd has open now (from `cn=Monitor`), not counting
    /// the one this call opens to ask.
    pub async fn connections(&self) -> Result<u64, String> {
        Ok(self
            .monitor_counter("cn=Current,cn=Connections,cn=Monitor")
            .await?
            .saturating_sub(1))
    }

    /// How many client connections slapd has accepted since it started, counting the
    /// one this call opens to ask.
    pub async fn connections_accepted(&self) -> Result<u64, String> {
        self.monitor_counter("cn=Total,cn=Connections,cn=Monitor").await
    }

    async fn monitor_counter(&self, dn: &str) -> Result<u64, String> {
        let (conn, mut ldap) = LdapConnAsync::new(&self.url()).await.map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.drive().await;
        });
        ldap.simple_bind(ADMIN_DN, ADMIN_PASSWORD)
            .await
            .and_then(|r| r.success())
            .map_err(|e| e.to_string())?;
        let (entries, _) = ldap
            .search(dn, Scope::Base, "(objectClass=*)", vec!["monitorCounter"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| e.to_string())?;
        let _ = ldap.unbind().await;
        entries
            .into_iter()
            .find_map(Entry::decode)
            .and_then(|entry| entry.text("monitorCounter"))
            .ok_or_else(|| format!("no monitorCounter in {dn}"))?
            .parse()
            .map_err(|_| "monitorCounter is not a number".to_owned())
    }

    /// Stops slapd (the data stays); [`Slapd::restart`] starts it again on the same
    /// ports.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts slapd again on the same ports with the same data.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop();
        let slapd = require("slapd", PACKAGES)?;
        self.launch(&slapd).await
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn slapd_conf(dir: &Path, pki: &TestPki) -> String {
    let d = dir.display();
    format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb.so
moduleload ppolicy.so
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}

database mdb
maxsize 104857600
suffix "{SLAPD_BASE_DN}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {d}/data
index objectClass,uid,member eq
overlay ppolicy
ppolicy_default "cn=default,ou=policies,{SLAPD_BASE_DN}"
ppolicy_use_lockout
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read

database monitor
access to dn.subtree="cn=Monitor" by dn.exact="{ADMIN_DN}" read by * none
"#,
        ca = pki.ca_file.display(),
        cert = pki.cert_file.display(),
        key = pki.key_file.display(),
    )
}

fn base_ldif() -> String {
    let b = SLAPD_BASE_DN;
    let mut out = format!(
        "dn: {b}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: ou=people,{b}\nobjectClass: organizationalUnit\nou: people\n\n\
         dn: ou=groups,{b}\nobjectClass: organizationalUnit\nou: groups\n\n\
         dn: ou=policies,{b}\nobjectClass: organizationalUnit\nou: policies\n\n"
    );
    let policies: [(&str, &str); 4] = [
        ("default", ""),
        ("expiring", "pwdMaxAge: 3600\npwdGraceAuthNLimit: 0\n"),
        ("grace", "pwdMaxAge: 3600\npwdGraceAuthNLimit: 3\n"),
        // Expires in decades, warned about all along.
        ("warning", "pwdMaxAge: 1576800000\npwdExpireWarning: 1576800000\n"),
    ];
    for (name, extra) in policies {
        let _ = write!(
            out,
            "dn: cn={name},ou=policies,{b}\nobjectClass: device\nobjectClass: pwdPolicy\ncn: {name}\n\
             pwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 3\npwdLockoutDuration: 300\n\
             pwdMustChange: TRUE\n{extra}\n"
        );
    }
    let users: [(&str, &str, &str); 9] = [
        ("alice", "Alice Liddell", ""),
        ("bob", "Bob", ""),
        ("carol", "Carol", ""),
        (
            "expired",
            "Expired Password",
            "pwdPolicySubentry: cn=expiring,ou=policies,dc=example,dc=com\npwdChangedTime: 20000101000000Z\n",
        ),
        (
            "grace",
            "Grace Logins",
            "pwdPolicySubentry: cn=grace,ou=policies,dc=example,dc=com\npwdChangedTime: 20000101000000Z\n",
        ),
        (
            "warned",
            "Warned",
            "pwdPolicySubentry: cn=warning,ou=policies,dc=example,dc=com\npwdChangedTime: 20200101000000Z\n",
        ),
        ("reset", "Reset By Admin", "pwdReset: TRUE\n"),
        ("lockme", "Lock Me", ""),
        ("dave", "Dave", ""),
    ];
    for (uid, cn, extra) in users {
        let _ = write!(
            out,
            "dn: uid={uid},ou=people,{b}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {uid}\n\
             mail: {uid}@example.com\nuserPassword: {SLAPD_PASSWORD}\n{extra}\n"
        );
    }
    for (group, members) in [("staff", &["alice", "bob"][..]), ("admins", &["alice"][..])] {
        let _ = write!(
            out,
            "dn: cn={group},ou=groups,{b}\nobjectClass: groupOfNames\ncn: {group}\n"
        );
        for m in members {
            let _ = writeln!(out, "member: uid={m},ou=people,{b}");
        }
        out.push('\n');
    }
    out
}
