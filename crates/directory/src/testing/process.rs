//! Running the directories' own programs: finding them, running setup commands,
//! choosing free ports, and waiting for a server to answer a bind.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ldap3::{LdapConnAsync, LdapConnSettings};

use super::HarnessError;

/// The path of `program` (searched in `PATH` and the sbin directories), or which
/// packages to install.
pub(crate) fn require(program: &'static str, packages: &'static str) -> Result<PathBuf, HarnessError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/bin"].into_iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(HarnessError::Missing { program, packages })
}

/// Whether this process runs as root (read from `/proc`, no libc needed).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Runs a setup command to completion; a failure carries the tail of its output.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<String, HarnessError> {
    let output = command.output().map_err(HarnessError::io(format!("starting {what}")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(HarnessError::Command {
            what: what.to_owned(),
            status: output.status.to_string(),
            output: tail(&text),
        })
    }
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(HarnessError::io("choosing a free port"))?;
    let port = listener
        .local_addr()
        .map_err(HarnessError::io("choosing a free port"))?
        .port();
    Ok(port)
}

/// The last lines of a log, for error messages.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// The last lines of a log file ("" when it cannot be read).
pub(crate) fn tail_file(path: &Path) -> String {
    std::fs::read_to_string(path).map(|t| tail(&t)).unwrap_or_default()
}

/// Tries a simple bind to `url` until it succeeds or `within` passes. `alive` is asked
/// between tries and stops the wait early when the server has exited.
pub(crate) async fn wait_for_bind(
    url: &str,
    dn: &str,
    password: &str,
    within: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let last = match try_bind(url, dn, password).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if !alive() {
            return Err(format!("the server exited ({last})"));
        }
        if Instant::now() >= deadline {
            return Err(format!("no successful bind within {within:?} ({last})"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn try_bind(url: &str, dn: &str, password: &str) -> Result<(), String> {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(1));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    let result = tokio::time::timeout(Duration::from_secs(2), ldap.simple_bind(dn, password))
        .await
        .map_err(|_| "bind timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = ldap.unbind().await;
    if result.rc == 0 {
        Ok(())
    } else {
        Err(format!("bind answered {result}"))
    }
}
