//! Child processes that never outlive the harness, free loopback ports, and
//! waits that always have a deadline.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a child gets to exit after SIGTERM before it (and its process
/// group) is killed.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// A child process in a process group of its own, stopped when dropped (also on
/// an error or a panic): SIGTERM to the group, then SIGKILL after
/// [`TERM_GRACE`]. Its standard output and error go to a log file.
pub struct Child {
    name: String,
    log: PathBuf,
    child: std::process::Child,
}

impl Child {
    /// Starts `command` as `name`, logging to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // A group of its own: nginx's workers go with their master, and a Ctrl-C
        // at the terminal reaches only the harness, which then stops everyone.
        command.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            child,
        })
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process has exited, with the end of its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of the child's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Waits until `addr` accepts TCP connections, failing at `deadline` or if
    /// the process exits first.
    pub async fn wait_for_port(&mut self, addr: SocketAddr, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            self.check_alive()?;
            let attempt = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr));
            if let Ok(Ok(_)) = attempt.await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not accept connections on {addr} within {within:?}; its log ends with:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn signal_group(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args([signal, "--", &group])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Only a group this harness still owns is signalled: once the child has
        // been reaped its group ID is not ours to reuse.
        if let Ok(None) = self.child.try_wait() {
            self.signal_group("-TERM");
            let deadline = Instant::now() + TERM_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Whatever is left of the group (workers of a master that went first).
            self.signal_group("-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// The path of program `name`: on `PATH`, then in the usual places that a
/// non-root `PATH` lacks (`/usr/sbin` for nginx, `~/.cargo/bin` for rathole).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    if let Some(cargo) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(cargo).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// Flags of the benchmark's own backends (`idle-backend`, `stream-backend`),
/// which [`spawn_own_backend`] starts.
#[derive(clap::Args, Debug)]
pub struct OwnBackendArgs {
    /// Where to listen.
    #[arg(long)]
    pub listen: SocketAddr,
}

/// Starts this benchmark's own hidden `subcommand` (a backend that must not
/// share the harness's process) on a free loopback port, logging into `dir`;
/// returns once it accepts connections.
pub async fn spawn_own_backend(subcommand: &str, dir: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let addr = loopback(free_port()?);
    let mut command = Command::new(std::env::current_exe()?);
    command.args([subcommand, "--listen", &addr.to_string()]);
    let mut child = Child::spawn("backend", command, &dir.join("backend.log"))?;
    child.wait_for_port(addr, Duration::from_secs(10)).await?;
    Ok((child, addr))
}
