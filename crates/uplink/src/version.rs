//! The version and target a component reports on every control call
//! (`x-postern-version`, `x-postern-target`).
//!
//! The version is this build's, unless `POSTERN_REPORTED_VERSION` names
//! another valid version: for packagers who rebuild a release under their own
//! number, and for the updater's tests, which run this same binary as "the new
//! version". It has no authority: the service cannot verify what code a
//! component runs, and the updater decides on signed manifests and its own
//! record of what it installed.

/// Environment variable overriding the reported version.
pub const VERSION_OVERRIDE_ENV: &str = "POSTERN_REPORTED_VERSION";

/// The version this component reports.
pub fn reported_version() -> String {
    std::env::var(VERSION_OVERRIDE_ENV)
        .ok()
        .filter(|v| postern_release::parse_version("reported version", v).is_ok())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

/// The target triple this component was built for.
pub fn build_target() -> &'static str {
    postern_release::BUILD_TARGET
}
