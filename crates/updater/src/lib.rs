//! The privileged updater of connectors and agents: asks the service for newer releases, verifies them (signature, size, SHA-256, no downgrade), swaps the binary atomically through a supervisor and rolls back when the new version does not call in.
//!
//! `postern updater run` runs as root (SEC-11: only the updater is
//! privileged), beside the unprivileged component whose state directory it
//! reads for the certificate. It never decrypts or relays passwords and never
//! carries user traffic: it only talks to the service's update endpoints.
//!
//! One round ([`Updater::run_once`]):
//! 1. ask the service whether a newer release applies (the offer comes with
//!    the lease of the connector group, or of the tenant's agents);
//! 2. verify the manifest's signature with the trusted publisher key, then
//!    target, version (newer than installed: no downgrade) and the oldest
//!    version it upgrades from;
//! 3. stream the binary to a file beside the installed one ([`install`]),
//!    counting bytes and hashing as it comes; refuse a short, long or
//!    mismatching download;
//! 4. stop the component ([`Supervisor`]), swap the files atomically
//!    (`rename`), start it, report `installed`;
//! 5. wait until the service has seen the new version call in; otherwise,
//!    at the deadline, stop, put the previous binary back, start it, and
//!    report `rolled_back`.
//!
//! Anything refused before step 4 replaces nothing and is reported, and the
//! service does not offer that release to this component again.
#![warn(missing_docs)]

mod download;
pub mod install;
mod record;
mod round;
pub mod supervisor;

pub use install::Installation;
pub use record::InstalledRecord;
pub use round::{Outcome, Updater, UpdaterOptions};
pub use supervisor::{ProcessSupervisor, Supervisor, Systemd};

/// Why the updater could not do its job. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum UpdaterError {
    /// The service could not be reached, or refused; retry at the next round
    /// (or register the component again, if the message says so).
    #[error(transparent)]
    Uplink(#[from] postern_uplink::UplinkError),
    /// A key or manifest could not be used.
    #[error(transparent)]
    Release(#[from] postern_release::ReleaseError),
    /// A file could not be read or written: check the binary's directory and
    /// the updater's work directory (the updater must run as root).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The component could not be stopped or started: check the service
    /// manager (`systemctl status UNIT`).
    #[error("supervisor: {0}")]
    Supervisor(String),
}

impl UpdaterError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        UpdaterError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
