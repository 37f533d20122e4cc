//! Automatic updates (PTA-8): what components and their updater say to the
//! service over the mTLS control endpoint.
//!
//! Components report their software version (and target) on every control
//! call in [`VERSION_HEADER`] and [`TARGET_HEADER`]; the service records it,
//! marks an update done when the new version calls in, and refuses components
//! older than its minimum with [`OUTDATED`] naming the release to install. The
//! updater sends no version header (its calls are not the component's health)
//! and is never refused for being old, so an outdated component can still be
//! updated.

use serde::{Deserialize, Serialize};

/// Header with the calling component's software version (e.g. `0.2.0`).
pub const VERSION_HEADER: &str = "x-postern-version";
/// Header with the target triple the component was built for.
pub const TARGET_HEADER: &str = "x-postern-target";
/// Error code of a refusal because the component is older than the service's
/// minimum (HTTP 426).
pub const OUTDATED: &str = "component_outdated";

/// Path of the updater's "is there a newer release for me?".
pub fn update_check_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/updates/check")
}

/// Path of a release's binary (streamed, with `Content-Length`).
pub fn update_download_path(tenant_id: &str, release_id: &str) -> String {
    format!("/v1/t/{tenant_id}/updates/releases/{release_id}/binary")
}

/// Path of the updater's report of how an update went.
pub fn update_report_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/updates/report")
}

/// Path of the update's state as the service sees it (whether the new version
/// has called in).
pub fn update_status_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/updates/status")
}

/// Whether a control path is one of the updater's.
pub fn is_updater_path(path: &str) -> bool {
    path.strip_prefix("/v1/t/")
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(_, rest)| rest.starts_with("updates/"))
}

/// `POST …/updates/check` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateCheckRequest {
    /// The updater's protocol version.
    pub protocol: u32,
    /// The version of the component binary installed now.
    pub installed_version: String,
    /// The target triple of this host's binary.
    pub target: String,
}

/// `POST …/updates/check` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateCheck {
    /// A release to install now, with this component holding the lease of its
    /// connector group (or of its tenant's agents) until it reports.
    pub update: Option<OfferedRelease>,
    /// Why (or why not): for the log.
    pub reason: String,
    /// Ask again after this many seconds (the updater adds jitter).
    pub check_again_secs: u64,
}

/// A release offered to an updater. The updater trusts nothing here until the
/// signature verifies with its own publisher key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedRelease {
    /// The release's ID (for the download and the report).
    pub release_id: String,
    /// The version the service says it is (the signed manifest decides).
    pub version: String,
    /// The manifest's exact bytes (UTF-8 JSON).
    pub manifest: String,
    /// The minisign signature of the manifest.
    pub signature: String,
    /// The binary's size in bytes.
    pub size: u64,
}

/// How an update ended, as the updater saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateOutcome {
    /// The new binary is in place and started; the service marks the update
    /// done when the new version calls in.
    Installed,
    /// The new version did not report healthy in time; the previous binary is
    /// back.
    RolledBack,
    /// The release was refused before anything was replaced (signature, size,
    /// SHA-256, downgrade, target, or a download cut short).
    Refused,
    /// Installing failed; the detail says how far it got.
    Failed,
}

impl UpdateOutcome {
    /// The wire and display form.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOutcome::Installed => "installed",
            UpdateOutcome::RolledBack => "rolled_back",
            UpdateOutcome::Refused => "refused",
            UpdateOutcome::Failed => "failed",
        }
    }
}

/// `POST …/updates/report` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateReport {
    /// The updater's protocol version.
    pub protocol: u32,
    /// The release concerned.
    pub release_id: String,
    /// What happened.
    pub outcome: UpdateOutcome,
    /// Details for the administrator (no secrets).
    pub detail: String,
}

/// `GET …/updates/status` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// The version the component last reported.
    pub reported_version: String,
    /// The state of its latest update (`offered`, `installing`, `succeeded`,
    /// `rolled_back`, `refused`, `failed`, `expired`), if any.
    pub state: Option<String>,
    /// The version that update installs.
    pub to_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updater_paths_are_recognised() {
        assert!(is_updater_path(&update_check_path("t1")));
        assert!(is_updater_path(&update_download_path("t1", "r1")));
        assert!(!is_updater_path("/v1/t/t1/connector/config"));
        assert!(!is_updater_path("/v1/whoami"));
        assert!(!is_updater_path("/v1/t/t1/connector/updates/x"));
    }
}
