//! A real Samba Active Directory domain controller, one per machine.
//!
//! Samba AD needs root and fixed ports (389, 636 on 127.0.0.1), and provisioning a
//! domain takes seconds, so every test on the machine shares one instance:
//!
//! - `CONTROL_LOCK` (exclusive) serialises starting and stopping: the first test to
//!   find no healthy instance provisions one under it; the others wait and reuse it.
//! - `LEASE_LOCK` (shared) is held by every live [`SambaAd`] value.
//! - A small watchdog shell script (the parent of `samba`, in its own process group)
//!   stops samba and removes its directory once nobody has held a lease for
//!   `POSTERN_SAMBA_IDLE_SECS` (default 60) seconds, taking `CONTROL_LOCK` first so no
//!   test starts using it meanwhile. Test processes can come and go (nextest runs each
//!   test in its own process) without provisioning again.
//!
//! Samba's self-generated certificate has no subjectAltName, which rustls (webpki)
//! requires, so the harness gives Samba a certificate from its own test CA for
//! `127.0.0.1`, `localhost` and `dc1.example.test`: [`SambaAd::ca_file`]. A real
//! domain controller's certificate from AD CS carries those names.

use std::fs::{self, File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::HarnessError;
use super::pki::TestPki;
use super::process::{is_root, require, run, tail_file, wait_for_bind};
use crate::{Flavor, LdapConfig, SecretString};

/// Base DN of the test domain `EXAMPLE.TEST`.
pub const SAMBA_BASE_DN: &str = "DC=example,DC=test";
/// The password of every test account (and of the service account).
pub const SAMBA_PASSWORD: &str = "Secr3t!Pass";

/// Bump when the provisioned accounts or settings change, so an older running instance
/// is replaced rather than reused.
const GENERATION: &str = "postern-samba-9";
const ADMIN_PASSWORD: &str = "Passw0rd!Adm1n";
const SERVICE_DN: &str = "CN=svc-postern,CN=Users,DC=example,DC=test";
const CONTROL_LOCK: &str = "/tmp/postern-samba.control.lock";
const LEASE_LOCK: &str = "/tmp/postern-samba.lease.lock";
const PACKAGES: &str = "samba samba-ad-dc winbind krb5-user smbclient";
const WATCHDOG: &str = include_str!("samba-watchdog.sh");

/// A lease on the machine's shared Samba AD domain controller for `EXAMPLE.TEST`
/// (NetBIOS `EXAMPLE`), listening on `ldap://127.0.0.1:389` and `ldaps://127.0.0.1:636`.
///
/// Accounts (all with password [`SAMBA_PASSWORD`]):
///
/// | sAMAccountName | state |
/// |---|---|
/// | `svc-postern` | the service account the back end searches with |
/// | `alice` | fine; display name `Alice Liddell`, mail `alice@example.test`, in group `Staff` |
/// | `wendy` | fine; for wrong-password tests (sign in correctly after, to reset the count) |
/// | `disabled` | disabled (533) |
/// | `acctexpired` | account expired (701) |
/// | `mustchange` | must change password at next logon (773) |
/// | `pwdexpired` | password last set in 2012, past the 42-day maximum age (532) |
/// | `lockme` | fine until a test gives 3 bad passwords (lockout threshold 3) (775) |
///
/// Locked accounts stay locked for 30 minutes, across tests that reuse the instance.
pub struct SambaAd {
    root: PathBuf,
    _lease: File,
}

impl std::fmt::Debug for SambaAd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaAd").field("root", &self.root).finish()
    }
}

impl SambaAd {
    /// Reuses the machine's running, healthy instance, or provisions and starts one
    /// (about 10 s), then holds a lease on it until dropped.
    pub async fn start() -> Result<SambaAd, HarnessError> {
        if !is_root() {
            return Err(HarnessError::NotRoot("the Samba AD domain controller"));
        }
        require("samba", PACKAGES)?;
        require("samba-tool", PACKAGES)?;
        require("flock", "util-linux")?;
        require("pgrep", "procps")?;
        let root =
            std::env::var_os("POSTERN_SAMBA_DIR").map_or_else(|| PathBuf::from("/tmp/postern-samba"), PathBuf::from);

        let control = open_lock(CONTROL_LOCK)?;
        let control = tokio::task::spawn_blocking(move || control.lock().map(|()| control))
            .await
            .map_err(|e| HarnessError::io("locking")(std::io::Error::other(e)))?
            .map_err(HarnessError::io(format!("locking {CONTROL_LOCK}")))?;

        if !healthy(&root).await {
            stop_stale(&root);
            provision(&root)?;
            launch(&root).await?;
        }
        let lease = open_lock(LEASE_LOCK)?;
        lease
            .lock_shared()
            .map_err(HarnessError::io(format!("locking {LEASE_LOCK}")))?;
        drop(control);
        Ok(SambaAd { root, _lease: lease })
    }

    /// A back-end configuration for plain `ldap://127.0.0.1:389` (allowed: loopback),
    /// searching as `svc-postern`.
    pub fn config(&self) -> LdapConfig {
        LdapConfig {
            allow_plaintext: true,
            bind_dn: Some(SERVICE_DN.into()),
            bind_password: Some(SecretString::from(SAMBA_PASSWORD)),
            netbios_domain: Some("EXAMPLE".into()),
            connect_timeout_ms: Some(1_000),
            operation_timeout_ms: Some(5_000),
            ..LdapConfig::new(
                Flavor::ActiveDirectory,
                vec!["ldap://127.0.0.1:389".into()],
                SAMBA_BASE_DN,
            )
        }
    }

    /// [`SambaAd::config`] over `ldaps://127.0.0.1:636`, trusting the harness CA.
    pub fn ldaps_config(&self) -> LdapConfig {
        LdapConfig {
            urls: vec!["ldaps://127.0.0.1:636".into()],
            allow_plaintext: false,
            ca_file: Some(self.ca_file()),
            ..self.config()
        }
    }

    /// The CA that signed the domain controller's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("tls").join("ca.pem")
    }

    /// The domain controller's directory (`etc/smb.conf`, `private/`, logs).
    pub fn dir(&self) -> &Path {
        &self.root
    }
}

fn open_lock(path: &str) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(HarnessError::io(format!("opening {path}")))
}

/// Whether a running instance of this generation answers a service bind.
async fn healthy(root: &Path) -> bool {
    let generation = fs::read_to_string(root.join("ready")).unwrap_or_default();
    if generation.lines().next() != Some(GENERATION) {
        return false;
    }
    wait_for_bind(
        "ldap://127.0.0.1:389",
        SERVICE_DN,
        SAMBA_PASSWORD,
        Duration::from_secs(3),
        || true,
    )
    .await
    .is_ok()
}

/// Stops an instance left from before (its watchdog's whole process group) and removes
/// its directory.
fn stop_stale(root: &Path) {
    let ready = fs::read_to_string(root.join("ready")).unwrap_or_default();
    if let Some(pid) = ready.lines().nth(1).and_then(|p| p.trim().parse::<u32>().ok()) {
        kill_group(pid);
    }
    let _ = fs::remove_dir_all(root);
}

/// Waits until nothing listens on 127.0.0.1:389 (a stopping samba lets go in a moment).
fn wait_port_free() -> Result<(), HarnessError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind("127.0.0.1:389") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(HarnessError::Startup {
                    what: format!(
                        "127.0.0.1:389 is in use ({e}): stop the system's slapd or samba \
                         (crates/directory/scripts/install-test-deps.sh disables them)"
                    ),
                    log: String::new(),
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Provisions the domain and creates the test accounts, all before samba starts.
fn provision(root: &Path) -> Result<(), HarnessError> {
    wait_port_free()?;
    fs::create_dir_all(root).map_err(HarnessError::io(format!("creating {}", root.display())))?;
    let r = root.display();
    run(
        "samba-tool domain provision",
        Command::new("samba-tool").args([
            "domain",
            "provision",
            &format!("--targetdir={r}"),
            "--realm=EXAMPLE.TEST",
            "--domain=EXAMPLE",
            "--server-role=dc",
            "--dns-backend=NONE",
            &format!("--adminpass={ADMIN_PASSWORD}"),
            "--host-name=dc1",
            "--host-ip=127.0.0.1",
            "--option=interfaces=lo",
            "--option=bind interfaces only=yes",
            &format!("--option=log file={r}/log.%m"),
        ]),
    )?;

    let tls = root.join("tls");
    fs::create_dir_all(&tls).map_err(HarnessError::io("creating the tls directory"))?;
    let pki = TestPki::generate(&tls, "postern test CA (Samba AD)", &["dc1.example.test"])?;
    let conf = root.join("etc").join("smb.conf");
    let text = fs::read_to_string(&conf).map_err(HarnessError::io("reading smb.conf"))?;
    // `--option` does not persist these: write them under [global].
    let run_dir = root.join("run");
    fs::create_dir_all(&run_dir).map_err(HarnessError::io("creating the pid directory"))?;
    // Its own pid directory: the system's /run/samba belongs to the packaged service.
    let extra = format!(
        "[global]\n\tldap server require strong auth = no\n\tserver services = ldap\n\
         \tpid directory = {}\n\ttls enabled = yes\n\ttls keyfile = {}\n\ttls certfile = {}\n\ttls cafile = {}\n",
        run_dir.display(),
        pki.key_file.display(),
        pki.cert_file.display(),
        pki.ca_file.display()
    );
    // Only the LDAP server: no Kerberos, SMB or RPC ports are needed.
    let text: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("server services"))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(&conf, text.replacen("[global]\n", &extra, 1)).map_err(HarnessError::io("writing smb.conf"))?;

    let s = format!("--configfile={}", conf.display());
    let tool = |what: &str, args: &[&str]| {
        run(
            &format!("samba-tool {what}"),
            Command::new("samba-tool").args(args).arg(&s),
        )
        .map(|_| ())
    };
    let pw = SAMBA_PASSWORD;
    tool("create svc-postern", &["user", "create", "svc-postern", pw])?;
    tool(
        "create alice",
        &[
            "user",
            "create",
            "alice",
            pw,
            "--given-name=Alice",
            "--surname=Liddell",
            "--mail-address=alice@example.test",
        ],
    )?;
    tool("group add Staff", &["group", "add", "Staff"])?;
    tool("group addmembers Staff", &["group", "addmembers", "Staff", "alice"])?;
    for user in ["wendy", "disabled", "acctexpired", "pwdexpired", "lockme"] {
        tool(&format!("create {user}"), &["user", "create", user, pw])?;
    }
    tool(
        "create mustchange",
        &["user", "create", "mustchange", pw, "--must-change-at-next-login"],
    )?;
    tool("disable", &["user", "disable", "disabled"])?;
    tool("setexpiry", &["user", "setexpiry", "acctexpired", "--days=0"])?;
    tool(
        "passwordsettings",
        &["domain", "passwordsettings", "set", "--account-lockout-threshold=3"],
    )?;
    age_password(root, "CN=pwdexpired,CN=Users,DC=example,DC=test")
}

/// Sets `pwdLastSet` of `dn` to 2012, which no LDAP client may do: written straight into
/// the domain partition with Samba's Python ldb bindings, all modules off.
fn age_password(root: &Path, dn: &str) -> Result<(), HarnessError> {
    let partition = root.join("private").join("sam.ldb.d").join("DC=EXAMPLE,DC=TEST.ldb");
    let script = "import ldb, sys\n\
        db = ldb.Ldb(sys.argv[1], options=['modules:'])\n\
        m = ldb.Message()\n\
        m.dn = ldb.Dn(db, sys.argv[2])\n\
        m['pwdLastSet'] = ldb.MessageElement('130000000000000000', ldb.FLAG_MOD_REPLACE, 'pwdLastSet')\n\
        db.modify(m)\n";
    // Samba's bindings belong to the system Python, whatever `python3` is first in PATH.
    run(
        "ageing the pwdexpired password",
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .arg(&partition)
            .arg(dn),
    )
    .map(|_| ())
}

/// Starts the watchdog (which starts samba) and waits for a service bind.
async fn launch(root: &Path) -> Result<(), HarnessError> {
    let script = root.join("watchdog.sh");
    fs::write(&script, WATCHDOG).map_err(HarnessError::io("writing watchdog.sh"))?;
    let log = root.join("watchdog.log");
    let out = File::create(&log).map_err(HarnessError::io("creating watchdog.log"))?;
    let err = out.try_clone().map_err(HarnessError::io("creating watchdog.log"))?;
    let idle = std::env::var("POSTERN_SAMBA_IDLE_SECS").unwrap_or_else(|_| "60".into());
    let mut watchdog: Child = Command::new("sh")
        .arg(&script)
        .arg(root)
        .arg(CONTROL_LOCK)
        .arg(LEASE_LOCK)
        .arg(idle)
        // Its own process group: it outlives this test process and is stopped as a
        // group (samba runs with --no-process-group inside it).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(HarnessError::io("starting the samba watchdog"))?;
    let ready = wait_for_bind(
        "ldap://127.0.0.1:389",
        SERVICE_DN,
        SAMBA_PASSWORD,
        Duration::from_secs(60),
        || matches!(watchdog.try_wait(), Ok(None)),
    )
    .await;
    if let Err(why) = ready {
        let log = format!("{}\n{}", tail_file(&log), tail_file(&root.join("samba.out")));
        kill_group(watchdog.id());
        let _ = watchdog.wait();
        return Err(HarnessError::Startup {
            what: format!("samba on 127.0.0.1:389: {why}"),
            log,
        });
    }
    fs::write(root.join("ready"), format!("{GENERATION}\n{}\n", watchdog.id()))
        .map_err(HarnessError::io("writing the ready file"))
}

/// Sends SIGTERM to the process group the watchdog `pid` leads (samba included) and
/// waits up to 15 s for the watchdog to finish stopping (it removes its directory).
fn kill_group(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg("--")
        .arg(format!("-{pid}"))
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `pid` is a live (not zombie) process.
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            // The state follows the parenthesised command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        })
        .unwrap_or(false)
}
