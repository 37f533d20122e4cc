//! Stopping and starting the component. Production uses systemd (`systemctl
//! stop|start UNIT`, nothing more); [`ProcessSupervisor`] spawns the binary
//! itself, for hosts without a service manager and for tests.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::UpdaterError;

/// Stops and starts the component whose binary is being replaced.
#[async_trait::async_trait]
pub trait Supervisor: Send + Sync {
    /// Stops the component and returns once it has exited.
    async fn stop(&self) -> Result<(), UpdaterError>;
    /// Starts the component (from the binary now in place).
    async fn start(&self) -> Result<(), UpdaterError>;
}

/// A systemd unit: `systemctl stop UNIT` and `systemctl start UNIT`.
#[derive(Clone, Debug)]
pub struct Systemd {
    unit: String,
}

impl Systemd {
    /// The unit, e.g. `postern-connector.service`.
    pub fn new(unit: impl Into<String>) -> Self {
        Self { unit: unit.into() }
    }

    async fn systemctl(&self, verb: &str) -> Result<(), UpdaterError> {
        let out = Command::new("systemctl")
            .arg(verb)
            .arg(&self.unit)
            .output()
            .await
            .map_err(|e| UpdaterError::Supervisor(format!("systemctl {verb} {}: {e}", self.unit)))?;
        if out.status.success() {
            return Ok(());
        }
        Err(UpdaterError::Supervisor(format!(
            "systemctl {verb} {} failed ({}): {}",
            self.unit,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[async_trait::async_trait]
impl Supervisor for Systemd {
    async fn stop(&self) -> Result<(), UpdaterError> {
        self.systemctl("stop").await
    }

    async fn start(&self) -> Result<(), UpdaterError> {
        self.systemctl("start").await
    }
}

/// Runs the component as a child process: `program args…` with extra
/// environment; stop sends SIGTERM and waits (then kills after the grace).
pub struct ProcessSupervisor {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    grace: Duration,
    child: Mutex<Option<Child>>,
}

impl std::fmt::Debug for ProcessSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSupervisor")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

impl ProcessSupervisor {
    /// Runs `program` with `args` (started by [`Supervisor::start`]).
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = impl Into<OsString>>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            grace: Duration::from_secs(30),
            child: Mutex::new(None),
        }
    }

    /// Adds an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// How long a stopped child has after SIGTERM before it is killed.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The running child's process ID, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        self.child.lock().await.as_ref().and_then(Child::id)
    }
}

#[async_trait::async_trait]
impl Supervisor for ProcessSupervisor {
    async fn stop(&self) -> Result<(), UpdaterError> {
        let mut slot = self.child.lock().await;
        let Some(mut child) = slot.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            // SIGTERM lets the component drain; `kill` avoids unsafe code here.
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await;
        }
        match tokio::time::timeout(self.grace, child.wait()).await {
            Ok(r) => r
                .map(|_| ())
                .map_err(|e| UpdaterError::Supervisor(format!("waiting for the child: {e}"))),
            Err(_) => {
                tracing::warn!("the component did not stop within the grace period; killing it");
                child
                    .kill()
                    .await
                    .map_err(|e| UpdaterError::Supervisor(format!("killing the child: {e}")))
            }
        }
    }

    async fn start(&self) -> Result<(), UpdaterError> {
        let mut slot = self.child.lock().await;
        if slot.is_some() {
            return Err(UpdaterError::Supervisor("the component is running already".into()));
        }
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| UpdaterError::Supervisor(format!("starting {}: {e}", self.program.display())))?;
        *slot = Some(child);
        Ok(())
    }
}
