//! The `[passwords]` table: argon2id's parameters and the pool that runs them,
//! checked against the memory budget with every other problem of the
//! configuration (SEC-9: a flood of sign-ins cannot take the service's memory).

use std::time::Duration;

use postern_sts::HashingSettings;
use postern_sts::password::DEFAULT_MEMORY_BUDGET_MIB;
use serde::{Deserialize, Serialize};

/// Environment keys of the table (`POSTERN_PASSWORDS__…`).
pub(super) const ENV_KEYS: &[&str] = &[
    "passwords.memory_kib",
    "passwords.iterations",
    "passwords.hash_workers",
    "passwords.hash_queue",
    "passwords.hash_queue_wait_ms",
    "passwords.memory_budget_mib",
];

/// Password hashing as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPasswords {
    /// Memory per hash or verification in KiB (default 19456, 19 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_kib: Option<u32>,
    /// Passes over that memory (default 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// Hashes computed at once (default: one per core, as many as fit the budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_workers: Option<usize>,
    /// Hashes waiting for a worker at most (default 16 per worker; 0: none wait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_queue: Option<usize>,
    /// Longest a hash waits for a worker, in milliseconds (default 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_queue_wait_ms: Option<u64>,
    /// Memory all workers may hold at once, in MiB (default 256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget_mib: Option<u32>,
}

/// The hashing settings, or the defaults within the budget; problems go to
/// `problems`.
pub(super) fn validate_passwords(raw: Option<RawPasswords>, problems: &mut Vec<String>) -> HashingSettings {
    let raw = raw.unwrap_or_default();
    let d = HashingSettings::default();
    let budget = raw.memory_budget_mib.unwrap_or(DEFAULT_MEMORY_BUDGET_MIB);
    let memory_kib = raw.memory_kib.unwrap_or(d.memory_kib);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = raw
        .hash_workers
        .unwrap_or_else(|| cores.min(HashingSettings::workers_within(budget, memory_kib)));
    let settings = HashingSettings {
        memory_kib,
        iterations: raw.iterations.unwrap_or(d.iterations),
        workers,
        queue: raw.hash_queue.unwrap_or(16 * workers),
        queue_wait: raw.hash_queue_wait_ms.map_or(d.queue_wait, Duration::from_millis),
        release_after: d.release_after,
    };
    problems.extend(settings.problems(budget).into_iter().map(|p| format!("passwords: {p}")));
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_budget() {
        let mut problems = Vec::new();
        let settings = validate_passwords(None, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(settings.worst_case_bytes() <= 256 * 1024 * 1024);
        assert_eq!(settings.queue, 16 * settings.workers);
    }

    #[test]
    fn a_smaller_budget_means_fewer_default_workers() {
        let mut problems = Vec::new();
        let raw = RawPasswords {
            memory_budget_mib: Some(19),
            ..RawPasswords::default()
        };
        let settings = validate_passwords(Some(raw), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.workers, 1);
    }

    #[test]
    fn every_problem() {
        let mut problems = Vec::new();
        let raw = RawPasswords {
            memory_kib: Some(65536),
            iterations: Some(0),
            hash_workers: Some(8),
            hash_queue: Some(4),
            hash_queue_wait_ms: Some(0),
            memory_budget_mib: Some(256),
        };
        validate_passwords(Some(raw), &mut problems);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("exceed the memory budget of 256 MiB"))
        );
        assert!(problems.iter().all(|p| p.starts_with("passwords: ")));
    }
}
