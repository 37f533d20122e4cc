//! Test harness: real directories started by the tests themselves.
//!
//! - [`Slapd`]: an OpenLDAP server with the ppolicy overlay, its own temporary
//!   directory, free loopback ports for `ldap://` (with StartTLS) and `ldaps://`, a
//!   fresh CA from rcgen, and users for every outcome. One per test; about 0.1 s to
//!   start; stopped and removed on drop.
//! - [`SambaAd`]: a Samba Active Directory domain controller for `EXAMPLE.TEST`. It
//!   needs root and the fixed ports 389/636, so each test run gets its own in a
//!   network namespace of its own (a veth pair with a private /30), shared by the
//!   run's test processes and stopped by a watchdog when the run ends
//!   ([`SambaAd`] explains).
//!
//! Neither skips quietly: when `slapd` or `samba` is missing, starting fails with
//! [`HarnessError::Missing`] naming the Debian packages;
//! `crates/directory/scripts/install-test-deps.sh` installs them.

mod pki;
mod process;
mod samba;
mod slapd;

pub use pki::TestPki;
pub use samba::{SAMBA_BASE_DN, SAMBA_PASSWORD, SambaAd};
pub use slapd::{SLAPD_BASE_DN, SLAPD_PASSWORD, Slapd};

/// Why a test directory could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program is not installed; install the packages named.
    #[error(
        "{program} is not installed: apt-get install {packages} \
         (or run crates/directory/scripts/install-test-deps.sh as root)"
    )]
    Missing {
        /// The program looked for.
        program: &'static str,
        /// Debian packages that provide it.
        packages: &'static str,
    },
    /// The directory needs root (Samba AD binds ports below 1024).
    #[error("{0} needs root")]
    NotRoot(&'static str),
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A setup command failed; its output is included.
    #[error("{what} failed ({status}): {output}")]
    Command {
        /// The command.
        what: String,
        /// Its exit status.
        status: String,
        /// The tail of its output.
        output: String,
    },
    /// The directory did not come up in time, or stopped; the tail of its log is
    /// included.
    #[error("{what}: {log}")]
    Startup {
        /// What went wrong.
        what: String,
        /// The tail of the server's log.
        log: String,
    },
    /// Generating test certificates failed.
    #[error("test certificates: {0}")]
    Certificates(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
        let what = what.into();
        move |source| HarnessError::Io { what, source }
    }
}
