//! The on-prem side of the control plane: registration, the state directory, and mTLS calls to the service, shared by connector, agent and updater.
#![warn(missing_docs)]

pub mod state;

/// What went wrong on the component's side.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// No registration is stored; run `register` first.
    #[error("not registered (no state in {0}); run `postern connector register` or `postern agent register`")]
    NotRegistered(String),
    /// A state file could not be read or written; check the state directory's
    /// owner and permissions.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Stored state is unreadable.
    #[error("state is corrupt: {0}")]
    Corrupt(String),
    /// A bug or impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl UplinkError {
    pub(crate) fn state(path: &std::path::Path, source: std::io::Error) -> Self {
        UplinkError::State {
            path: path.display().to_string(),
            source,
        }
    }
}
