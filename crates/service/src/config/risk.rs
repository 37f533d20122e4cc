//! The `[risk]` table: where sign-in risk signals come from (SEC-10) and their
//! thresholds, checked with every other problem of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use postern_sts::RiskConfig;
use serde::{Deserialize, Serialize};

/// Environment keys of the table (`POSTERN_RISK__…`).
pub(super) const ENV_KEYS: &[&str] = &[
    "risk.anonymizers_file",
    "risk.geoip_database",
    "risk.window_secs",
    "risk.spray_accounts",
    "risk.brute_force_networks",
    "risk.max_travel_kmh",
];

/// Risk signals as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRisk {
    /// A file of anonymising networks (one address or CIDR a line, or Tor's
    /// exit list), reread when it changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anonymizers_file: Option<PathBuf>,
    /// A GeoIP City database in MaxMind's format, for impossible travel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geoip_database: Option<PathBuf>,
    /// Seconds back that failures count for spraying and brute force (default 600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
    /// Accounts failing from one network that make it password spraying (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spray_accounts: Option<usize>,
    /// Networks one account fails from that make it brute force (default 5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brute_force_networks: Option<usize>,
    /// Speed (km/h) beyond which travel between two sign-ins is impossible (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_travel_kmh: Option<f64>,
}

/// The risk settings, or the defaults; problems go to `problems`.
pub(super) fn validate_risk(raw: Option<RawRisk>, problems: &mut Vec<String>) -> RiskConfig {
    let raw = raw.unwrap_or_default();
    let d = RiskConfig::default();
    for (what, path) in [
        ("risk.anonymizers_file", &raw.anonymizers_file),
        ("risk.geoip_database", &raw.geoip_database),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            problems.push(format!("{what} {} is not a readable file", path.display()));
        }
    }
    if let Some(path) = &raw.geoip_database
        && path.is_file()
        && let Err(e) = postern_sts::check_geoip_database(path)
    {
        problems.push(format!("risk.geoip_database {}: {e}", path.display()));
    }
    let config = RiskConfig {
        anonymizers_file: raw.anonymizers_file,
        geoip_database: raw.geoip_database,
        window: raw.window_secs.map_or(d.window, Duration::from_secs),
        spray_accounts: raw.spray_accounts.unwrap_or(d.spray_accounts),
        brute_force_networks: raw.brute_force_networks.unwrap_or(d.brute_force_networks),
        max_travel_kmh: raw.max_travel_kmh.unwrap_or(d.max_travel_kmh),
    };
    if config.window.is_zero() {
        problems.push("risk.window_secs must be at least 1".into());
    }
    if config.spray_accounts < 2 {
        problems.push("risk.spray_accounts must be at least 2".into());
    }
    if config.brute_force_networks < 2 {
        problems.push("risk.brute_force_networks must be at least 2".into());
    }
    if !(config.max_travel_kmh.is_finite() && config.max_travel_kmh > 0.0) {
        problems.push("risk.max_travel_kmh must be a positive number".into());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_every_problem() {
        let mut problems = Vec::new();
        let config = validate_risk(None, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.spray_accounts, 10);
        let raw = RawRisk {
            anonymizers_file: Some("/nonexistent/tor.txt".into()),
            geoip_database: Some("/nonexistent/city.mmdb".into()),
            window_secs: Some(0),
            spray_accounts: Some(1),
            brute_force_networks: Some(0),
            max_travel_kmh: Some(-1.0),
        };
        validate_risk(Some(raw), &mut problems);
        assert_eq!(problems.len(), 6, "{problems:#?}");
    }
}
