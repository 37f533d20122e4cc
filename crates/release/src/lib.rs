//! Releases of the postern binary: the signed manifest (minisign-compatible Ed25519), signing, verification, the publisher's key and artifact checks.
//!
//! A release is the `postern` binary plus a [`Manifest`] (version, target
//! triple, SHA-256, size, the oldest version it upgrades from, release notes)
//! signed with the publisher's Ed25519 key in minisign's format: the prehashed
//! `ED` variant (Ed25519 over BLAKE2b-512 of the manifest file) with a signed
//! trusted comment, so `minisign -V` checks our signatures and we check
//! minisign's. The signature covers the manifest; the manifest binds the binary
//! by size and SHA-256.
//!
//! - [`SecretKey`] and [`sign`]: what `postern release keygen|sign` use (the key
//!   never leaves the publisher's machine).
//! - [`TrustedKey`] and [`verify`]: what the updater uses, with the key compiled
//!   into the binary ([`trust::PUBLISHER_KEY`]) or a root-owned override file
//!   ([`trust::publisher_key`]).
//! - [`artifact`]: size and SHA-256 of a downloaded file, streamed.
#![warn(missing_docs)]

pub mod artifact;
mod manifest;
mod signing;
pub mod trust;
mod verify;

pub use manifest::{MANIFEST_FORMAT, MAX_RELEASE_SIZE, Manifest, parse_version};
pub use signing::{SecretKey, sign};
pub use verify::{TrustedKey, check_signature_form, verify};

/// The target triple this binary was built for (e.g. `x86_64-unknown-linux-gnu`).
pub const BUILD_TARGET: &str = env!("POSTERN_BUILD_TARGET");

/// Why a release, key or signature was refused. Each variant says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The manifest is malformed or inconsistent: the publisher must fix it.
    #[error("the release manifest is invalid: {0}")]
    InvalidManifest(String),
    /// The signature does not verify with the trusted key (tampered manifest,
    /// another key, or not a signature at all): the release must not be used.
    #[error("the release signature is not valid for the trusted publisher key: {0}")]
    BadSignature(String),
    /// A key file is malformed.
    #[error("the key is unusable: {0}")]
    BadKey(String),
    /// The override key file is not owned by root or is writable by others:
    /// fix its owner and mode (root, 0644 or 0600) or remove it.
    #[error("{path} is not trusted: {why}")]
    UntrustedKeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The downloaded file does not match the manifest (size or SHA-256): it
    /// must not be installed.
    #[error("the downloaded file does not match the release manifest: {0}")]
    ArtifactMismatch(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The cryptographic library failed (a bug or a broken system RNG).
    #[error("crypto: {0}")]
    Crypto(String),
}

impl ReleaseError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ReleaseError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
