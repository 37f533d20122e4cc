//! The `[cluster]` table: several `postern serve` instances behind one load
//! balancer (BEY-1). Absent, the instance runs alone (embedded relay, no
//! peers). Present, it needs PostgreSQL and the KEK from configuration (the
//! same on every instance), and NATS with JetStream.

use std::net::SocketAddr;

use postern_cluster::ClusterSettings;
use serde::{Deserialize, Serialize};

/// Environment keys of the table (after `POSTERN_`, lowercased, `__` as `.`).
pub(crate) const ENV_KEYS: &[&str] = &[
    "cluster.nats_url",
    "cluster.prefix",
    "cluster.peer_listen",
    "cluster.peer_advertise",
];

/// Default prefix of NATS subjects and streams.
const DEFAULT_PREFIX: &str = "postern";
/// Default address of the peer listener.
const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:8444";

/// `[cluster]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `nats://host:port` of the NATS server (JetStream enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats_url: Option<String>,
    /// Prefix of this installation's NATS subjects and streams (default
    /// `postern`); letters, digits, `-` and `_`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Where this instance listens for the others (mutual TLS; default
    /// `127.0.0.1:8444`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_listen: Option<String>,
    /// `host:port` the other instances reach that listener at (default: the
    /// listening address, which then must not be a wildcard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_advertise: Option<String>,
}

fn plain_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The cluster settings from `raw` (`None`: this instance runs alone);
/// problems go to `problems`.
pub(crate) fn validate_cluster(
    raw: Option<RawCluster>,
    database_url: &str,
    kek_configured: bool,
    problems: &mut Vec<String>,
) -> Option<ClusterSettings> {
    let raw = raw?;
    let Some(nats_url) = raw.nats_url else {
        problems.push("cluster.nats_url is required (or remove the [cluster] table)".into());
        return None;
    };
    if !(nats_url.starts_with("nats://") || nats_url.starts_with("tls://")) {
        problems.push("cluster.nats_url must start with nats:// or tls://".into());
    }
    if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
        problems.push("[cluster] needs database_url = \"postgres://…\": the instances share one database".into());
    }
    if !kek_configured {
        problems.push("[cluster] needs the KEK from configuration (POSTERN_KEK), the same on every instance".into());
    }
    let prefix = raw.prefix.unwrap_or_else(|| DEFAULT_PREFIX.into());
    if !plain_token(&prefix) {
        problems.push("cluster.prefix may hold only letters, digits, - and _ (at most 64)".into());
    }
    let listen = raw.peer_listen.as_deref().unwrap_or(DEFAULT_PEER_LISTEN);
    let peer_listen = match listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.push(format!(
                "cluster.peer_listen {listen:?} is not an address like 0.0.0.0:8444"
            ));
            SocketAddr::from(([127, 0, 0, 1], 8444))
        }
    };
    if raw.peer_advertise.is_none() && peer_listen.ip().is_unspecified() {
        problems.push("cluster.peer_advertise is required when cluster.peer_listen is a wildcard address".into());
    }
    if let Some(a) = &raw.peer_advertise
        && (a.contains('/') || a.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()))
    {
        problems.push(format!("cluster.peer_advertise {a:?} must be host:port"));
    }
    Some(ClusterSettings {
        nats_url,
        prefix,
        peer_listen,
        peer_advertise: raw.peer_advertise,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cluster_problem_is_reported() {
        let mut problems = Vec::new();
        let raw = RawCluster {
            nats_url: Some("http://nats:4222".into()),
            prefix: Some("has.dots".into()),
            peer_listen: Some("0.0.0.0:8444".into()),
            peer_advertise: None,
        };
        validate_cluster(Some(raw), "sqlite:///data/postern.db", false, &mut problems);
        let all = problems.join("\n");
        for needle in [
            "nats_url",
            "postgres://",
            "POSTERN_KEK",
            "cluster.prefix",
            "peer_advertise",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
        assert_eq!(problems.len(), 5, "{all}");
    }

    #[test]
    fn a_complete_table_passes_and_none_means_alone() {
        let mut problems = Vec::new();
        assert!(validate_cluster(None, "sqlite://x", false, &mut problems).is_none());
        let raw = RawCluster {
            nats_url: Some("nats://127.0.0.1:4222".into()),
            peer_listen: Some("0.0.0.0:8444".into()),
            peer_advertise: Some("10.0.0.5:8444".into()),
            ..RawCluster::default()
        };
        let settings = validate_cluster(Some(raw), "postgres://db/postern", true, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.prefix, "postern");
    }
}
