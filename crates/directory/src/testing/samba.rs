//! A real Samba Active Directory domain controller, one per test run.
//!
//! Samba AD needs root and listens on the fixed ports 389 and 636, and provisioning
//! a domain takes seconds. So each test run (a `cargo nextest` run, named by
//! `NEXTEST_RUN_ID`, whose tests are separate processes; or a single test process)
//! gets its own domain controller in its own network namespace, where 389 and 636
//! are its own: a veth pair joins the namespace to the host with a private /30
//! (`10.250.x.y`), and the tests talk to the controller's end of it. Two runs on one
//! machine never share a controller, a port or an account's lockout count.
//!
//! Within a run the tests share the controller:
//!
//! - the run's control lock (exclusive) serialises starting and stopping: the first
//!   test to find no healthy instance provisions one under it; the others reuse it;
//! - the run's lease lock (shared) is held by every live [`SambaAd`] value;
//! - a small watchdog shell script (the parent of `samba`, in its own process group)
//!   stops samba, deletes the namespace and removes the run's directory when the
//!   run ends (the process that started the run's tests has gone) or once nobody has
//!   held a lease for `POSTERN_SAMBA_IDLE_SECS` (default 60) seconds.
//!
//! Samba's self-generated certificate has no subjectAltName, which rustls (webpki)
//! requires, so the harness gives Samba a certificate from its own test CA for the
//! controller's address, `localhost` and `dc1.example.test`: [`SambaAd::ca_file`]. A
//! real domain controller's certificate from AD CS carries such names.

use std::fs::{self, File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;
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
const GENERATION: &str = "postern-samba-10";
const ADMIN_PASSWORD: &str = "Passw0rd!Adm1n";
const SERVICE_DN: &str = "CN=svc-postern,CN=Users,DC=example,DC=test";
const PACKAGES: &str = "samba samba-ad-dc winbind krb5-user smbclient";
const WATCHDOG: &str = include_str!("samba-watchdog.sh");

/// A lease on the test run's Samba AD domain controller for `EXAMPLE.TEST` (NetBIOS
/// `EXAMPLE`), listening on port 389 (LDAP) and 636 (LDAPS) of its own address in its
/// own network namespace: [`SambaAd::ldap_url`].
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
/// Locked accounts stay locked for 30 minutes, across the run's tests.
pub struct SambaAd {
    root: PathBuf,
    addr: Ipv4Addr,
    _lease: File,
}

impl std::fmt::Debug for SambaAd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaAd")
            .field("root", &self.root)
            .field("addr", &self.addr)
            .finish()
    }
}

impl SambaAd {
    /// Reuses the run's running, healthy instance, or provisions and starts one
    /// (about 11 s) in a network namespace of its own, then holds a lease on it until
    /// dropped.
    pub async fn start() -> Result<SambaAd, HarnessError> {
        if !is_root() {
            return Err(HarnessError::NotRoot("the Samba AD domain controller"));
        }
        require("samba", PACKAGES)?;
        require("samba-tool", PACKAGES)?;
        require("flock", "util-linux")?;
        require("pgrep", "procps")?;
        require("ip", "iproute2")?;
        let run = Run::current();
        let base =
            std::env::var_os("POSTERN_SAMBA_DIR").map_or_else(|| PathBuf::from("/tmp/postern-samba"), PathBuf::from);
        fs::create_dir_all(&base).map_err(HarnessError::io(format!("creating {}", base.display())))?;
        let root = base.join(&run.key);

        let control_path = base.join(format!("{}.control.lock", run.key));
        let control = open_lock(&control_path)?;
        let control = tokio::task::spawn_blocking(move || control.lock().map(|()| control))
            .await
            .map_err(|e| HarnessError::io("locking")(std::io::Error::other(e)))?
            .map_err(HarnessError::io(format!("locking {}", control_path.display())))?;

        let lease_path = base.join(format!("{}.lease.lock", run.key));
        let addr = match healthy(&root).await {
            Some(addr) => addr,
            None => {
                stop_stale(&root);
                let net = Namespace::create(&run)?;
                if let Err(e) = provision(&root, &net) {
                    net.delete();
                    return Err(e);
                }
                launch(&root, &net, &run, &control_path, &lease_path).await?;
                net.dc
            }
        };
        let lease = open_lock(&lease_path)?;
        lease
            .lock_shared()
            .map_err(HarnessError::io(format!("locking {}", lease_path.display())))?;
        drop(control);
        Ok(SambaAd {
            root,
            addr,
            _lease: lease,
        })
    }

    /// `ldap://ADDR:389`, the controller's plain LDAP port.
    pub fn ldap_url(&self) -> String {
        format!("ldap://{}:389", self.addr)
    }

    /// A back-end configuration for plain [`SambaAd::ldap_url`] (allowed in tests),
    /// searching as `svc-postern`.
    pub fn config(&self) -> LdapConfig {
        LdapConfig {
            allow_plaintext: true,
            bind_dn: Some(SERVICE_DN.into()),
            bind_password: Some(SecretString::from(SAMBA_PASSWORD)),
            netbios_domain: Some("EXAMPLE".into()),
            connect_timeout_ms: Some(1_000),
            operation_timeout_ms: Some(5_000),
            ..LdapConfig::new(Flavor::ActiveDirectory, vec![self.ldap_url()], SAMBA_BASE_DN)
        }
    }

    /// [`SambaAd::config`] over `ldaps://ADDR:636`, trusting the harness CA.
    pub fn ldaps_config(&self) -> LdapConfig {
        LdapConfig {
            urls: vec![format!("ldaps://{}:636", self.addr)],
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

    /// Adds enabled accounts named `names` (sAMAccountName; the UPN is
    /// `NAME@example.test`), each with [`SAMBA_PASSWORD`], skipping any that
    /// exist: one Python process with Samba's bindings, not a `samba-tool` per
    /// account (a second each). For benchmarks that need many accounts.
    pub fn add_users(&self, names: &[String]) -> Result<(), HarnessError> {
        let script = "import sys, ldb\n\
            from samba.samdb import SamDB\n\
            from samba.auth import system_session\n\
            from samba.param import LoadParm\n\
            lp = LoadParm()\n\
            lp.load(sys.argv[1])\n\
            db = SamDB(url=sys.argv[2], session_info=system_session(), lp=lp)\n\
            for name in sys.argv[4:]:\n\
            \x20   try:\n\
            \x20       db.newuser(name, sys.argv[3])\n\
            \x20   except ldb.LdbError as e:\n\
            \x20       if e.args[0] != ldb.ERR_ENTRY_ALREADY_EXISTS:\n\
            \x20           raise\n";
        // Samba's bindings belong to the system Python, whatever `python3` is first in PATH.
        run(
            "adding accounts",
            Command::new("/usr/bin/python3")
                .arg("-c")
                .arg(script)
                .arg(self.root.join("etc").join("smb.conf"))
                .arg(self.root.join("private").join("sam.ldb"))
                .arg(SAMBA_PASSWORD)
                .args(names),
        )
        .map(|_| ())
    }
}

fn open_lock(path: &Path) -> Result<File, HarnessError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(HarnessError::io(format!("opening {}", path.display())))
}

/// The test run this process belongs to, and the process whose end ends it.
struct Run {
    /// `NEXTEST_RUN_ID`, or `pid-N` for a process running tests on its own.
    key: String,
    /// The nextest runner (this process's parent), or this process.
    owner: u32,
}

impl Run {
    fn current() -> Run {
        match std::env::var("NEXTEST_RUN_ID") {
            Ok(id) if !id.is_empty() => Run {
                key: id.chars().filter(char::is_ascii_alphanumeric).take(32).collect(),
                owner: std::os::unix::process::parent_id(),
            },
            _ => Run {
                key: format!("pid-{}", std::process::id()),
                owner: std::process::id(),
            },
        }
    }
}

/// The run's network namespace and the veth pair into it (a /30 of 10.250.0.0/16).
struct Namespace {
    name: String,
    /// The namespace's end: the domain controller's address.
    dc: Ipv4Addr,
}

impl Namespace {
    /// Creates `psmb-HASH` with a veth pair, trying further /30s while an address is
    /// in use on this machine (another run's).
    fn create(of: &Run) -> Result<Namespace, HarnessError> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        of.key.hash(&mut hasher);
        let hash = hasher.finish();
        let tag = format!("{:08x}", hash as u32);
        let name = format!("psmb-{tag}");
        let (host_if, ns_if) = (format!("ps{tag}h"), format!("ps{tag}n"));
        // Left over from a run with the same key: start afresh.
        for args in [["netns", "del", &name], ["link", "del", &host_if]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
        let in_use = run(
            "listing addresses",
            Command::new("ip").args(["-o", "-4", "addr", "show"]),
        )?;
        let mut slot = (hash >> 32) as u32 % 16_384;
        let (host, dc) = loop {
            let base = u32::from(Ipv4Addr::new(10, 250, 0, 0)) + slot * 4;
            let (host, dc) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
            if !in_use.contains(&format!("inet {host}/")) && !in_use.contains(&format!("inet {dc}/")) {
                break (host, dc);
            }
            slot = (slot + 1) % 16_384;
        };
        let ip = |what: &str, args: &[&str]| run(what, Command::new("ip").args(args)).map(|_| ());
        ip("creating the namespace", &["netns", "add", &name])?;
        let net = Namespace { name, dc };
        let made = (|| {
            ip(
                "creating the veth pair",
                &["link", "add", &host_if, "type", "veth", "peer", "name", &ns_if],
            )?;
            ip("moving the veth end", &["link", "set", &ns_if, "netns", &net.name])?;
            ip(
                "addressing the host end",
                &["addr", "add", &format!("{host}/30"), "dev", &host_if],
            )?;
            ip("raising the host end", &["link", "set", &host_if, "up"])?;
            let inside = |what: &str, args: &[&str]| {
                run(
                    what,
                    Command::new("ip").args(["netns", "exec", &net.name, "ip"]).args(args),
                )
                .map(|_| ())
            };
            inside(
                "addressing the namespace end",
                &["addr", "add", &format!("{dc}/30"), "dev", &ns_if],
            )?;
            inside("raising the namespace end", &["link", "set", &ns_if, "up"])?;
            inside("raising the namespace's loopback", &["link", "set", "lo", "up"])
        })();
        match made {
            Ok(()) => Ok(net),
            Err(e) => {
                net.delete();
                Err(e)
            }
        }
    }

    /// Deletes the namespace (its veth end, and so the pair, goes with it).
    fn delete(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The address of the run's instance of this generation, if it answers a service bind.
async fn healthy(root: &Path) -> Option<Ipv4Addr> {
    let ready = fs::read_to_string(root.join("ready")).unwrap_or_default();
    let mut lines = ready.lines();
    if lines.next() != Some(GENERATION) {
        return None;
    }
    let addr: Ipv4Addr = lines.nth(1)?.trim().parse().ok()?;
    wait_for_bind(
        &format!("ldap://{addr}:389"),
        SERVICE_DN,
        SAMBA_PASSWORD,
        Duration::from_secs(3),
        || true,
    )
    .await
    .ok()
    .map(|_| addr)
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

/// Provisions the domain and creates the test accounts, all before samba starts.
fn provision(root: &Path, net: &Namespace) -> Result<(), HarnessError> {
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
            &format!("--host-ip={}", net.dc),
            &format!("--option=interfaces={}/30", net.dc),
            "--option=bind interfaces only=yes",
            &format!("--option=log file={r}/log.%m"),
        ]),
    )?;

    let tls = root.join("tls");
    fs::create_dir_all(&tls).map_err(HarnessError::io("creating the tls directory"))?;
    let pki = TestPki::generate(
        &tls,
        "postern test CA (Samba AD)",
        &["dc1.example.test", &net.dc.to_string()],
    )?;
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

/// Starts the watchdog (which starts samba in the namespace) and waits for a service
/// bind.
async fn launch(root: &Path, net: &Namespace, of: &Run, control: &Path, lease: &Path) -> Result<(), HarnessError> {
    let script = root.join("watchdog.sh");
    fs::write(&script, WATCHDOG).map_err(HarnessError::io("writing watchdog.sh"))?;
    let log = root.join("watchdog.log");
    let out = File::create(&log).map_err(HarnessError::io("creating watchdog.log"))?;
    let err = out.try_clone().map_err(HarnessError::io("creating watchdog.log"))?;
    let idle = std::env::var("POSTERN_SAMBA_IDLE_SECS").unwrap_or_else(|_| "60".into());
    let mut watchdog: Child = Command::new("sh")
        .arg(&script)
        .arg(root)
        .arg(control)
        .arg(lease)
        .arg(idle)
        .arg(&net.name)
        .arg(of.owner.to_string())
        // Its own process group: it outlives this test process and is stopped as a
        // group (samba runs with --no-process-group inside it).
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| {
            net.delete();
            HarnessError::io("starting the samba watchdog")(e)
        })?;
    let ready = wait_for_bind(
        &format!("ldap://{}:389", net.dc),
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
            what: format!("samba on {}:389 (namespace {}): {why}", net.dc, net.name),
            log,
        });
    }
    fs::write(
        root.join("ready"),
        format!("{GENERATION}\n{}\n{}\n", watchdog.id(), net.dc),
    )
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
        std::thread::sleep(Duration::from_millis(100)); // poll pause, bounded above
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
