//! Property tests of `postern serve`'s configuration file (issue 14 item 2).
//!
//! - Round trip: any [`RawConfig`] (secrets aside: `kek` and
//!   `export.webhook_token` are never written back, by design) written as TOML
//!   and read back through [`RawConfig::load`] is the same value.
//! - A key no table knows is refused, named, wherever it is.
//! - A number too large or negative for its key is refused at parse, naming the key.
//! - The numeric limits `validate` checks: a file is accepted exactly when
//!   every one is in range, and each one out of range is named in a problem.

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use toml::{Table, Value};

use super::{RawCertificate, RawCluster, RawConfig, RawControl, RawExport, RawLimits, RawPasswords, RawRisk, RawTls};

/// Any text TOML can hold.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9=,.:/ _-]{0,30}",
        1 => any::<String>(),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn opt_path() -> impl Strategy<Value = Option<PathBuf>> {
    proptest::option::of(text().prop_map(PathBuf::from))
}

/// TOML integers are signed 64-bit.
fn opt_u64() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(prop_oneof![0u64..100_000, 0..=i64::MAX as u64])
}

fn opt_usize() -> impl Strategy<Value = Option<usize>> {
    opt_u64().prop_map(|v| v.map(|n| usize::try_from(n).unwrap()))
}

fn opt_u32() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(any::<u32>())
}

fn tls() -> BoxedStrategy<RawTls> {
    let certificate = (opt_path(), opt_path()).prop_map(|(cert, key)| RawCertificate { cert, key });
    (
        opt_path(),
        opt_path(),
        proptest::option::of(proptest::collection::vec(certificate, 0..3)),
        opt_path(),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(cert, key, certificates, certificates_dir, self_signed)| RawTls {
            cert,
            key,
            certificates,
            certificates_dir,
            self_signed,
        })
        .boxed()
}

fn limits() -> BoxedStrategy<RawLimits> {
    (
        (opt_usize(), opt_usize(), opt_u64(), opt_u64(), opt_u64(), opt_u64()),
        (opt_u32(), opt_u32(), opt_u32(), opt_u32(), opt_u32(), opt_u32()),
        (opt_usize(), opt_u64(), opt_usize()),
    )
        .prop_map(|(a, b, c)| RawLimits {
            max_connections: a.0,
            max_body_bytes: a.1,
            header_timeout_secs: a.2,
            idle_timeout_secs: a.3,
            request_timeout_secs: a.4,
            shutdown_grace_secs: a.5,
            client_requests_per_sec: b.0,
            client_burst: b.1,
            app_requests_per_sec: b.2,
            app_burst: b.3,
            tenant_requests_per_sec: b.4,
            tenant_burst: b.5,
            connections_per_client: c.0,
            app_max_body_bytes: c.1,
            tenant_pending_signins: c.2,
        })
        .boxed()
}

fn control() -> BoxedStrategy<RawControl> {
    (
        opt_text(),
        opt_text(),
        proptest::option::of(proptest::collection::vec(text(), 0..3)),
        opt_path(),
        opt_path(),
        opt_path(),
        opt_text(),
        opt_u64(),
    )
        .prop_map(
            |(listen, url, hostnames, tls_cert, tls_key, tls_anchors, minimum_component_version, update_check_secs)| {
                RawControl {
                    listen,
                    url,
                    hostnames,
                    tls_cert,
                    tls_key,
                    tls_anchors,
                    minimum_component_version,
                    update_check_secs,
                }
            },
        )
        .boxed()
}

fn export() -> BoxedStrategy<RawExport> {
    (opt_text(), opt_text(), opt_path(), opt_text(), opt_u64(), opt_usize())
        .prop_map(
            |(syslog_url, webhook_url, ca_file, hostname, spool_max_bytes, batch)| RawExport {
                syslog_url,
                webhook_url,
                // Never written back (a secret).
                webhook_token: None,
                ca_file,
                hostname,
                spool_max_bytes,
                batch,
            },
        )
        .boxed()
}

fn risk() -> BoxedStrategy<RawRisk> {
    let finite =
        proptest::option::of(proptest::num::f64::NORMAL | proptest::num::f64::ZERO | proptest::num::f64::SUBNORMAL);
    (opt_path(), opt_path(), opt_u64(), opt_usize(), opt_usize(), finite)
        .prop_map(
            |(anonymizers_file, geoip_database, window_secs, spray_accounts, brute_force_networks, max_travel_kmh)| {
                RawRisk {
                    anonymizers_file,
                    geoip_database,
                    window_secs,
                    spray_accounts,
                    brute_force_networks,
                    max_travel_kmh,
                }
            },
        )
        .boxed()
}

fn passwords() -> BoxedStrategy<RawPasswords> {
    (opt_u32(), opt_u32(), opt_usize(), opt_usize(), opt_u64(), opt_u32())
        .prop_map(
            |(memory_kib, iterations, hash_workers, hash_queue, hash_queue_wait_ms, memory_budget_mib)| RawPasswords {
                memory_kib,
                iterations,
                hash_workers,
                hash_queue,
                hash_queue_wait_ms,
                memory_budget_mib,
            },
        )
        .boxed()
}

fn cluster() -> BoxedStrategy<RawCluster> {
    (opt_text(), opt_text(), opt_text(), opt_text())
        .prop_map(|(nats_url, prefix, peer_listen, peer_advertise)| RawCluster {
            nats_url,
            prefix,
            peer_listen,
            peer_advertise,
        })
        .boxed()
}

fn raw_config() -> BoxedStrategy<RawConfig> {
    (
        (
            opt_path(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_u32(),
        ),
        (
            opt_text(),
            proptest::option::of(proptest::collection::vec(text(), 0..3)),
        ),
        (
            proptest::option::of(tls()),
            proptest::option::of(limits()),
            proptest::option::of(control()),
            proptest::option::of(export()),
            proptest::option::of(risk()),
            proptest::option::of(passwords()),
            proptest::option::of(cluster()),
        ),
    )
        .prop_map(|(a, b, c)| RawConfig {
            data_dir: a.0,
            public_url: a.1,
            listen: a.2,
            metrics_listen: a.3,
            apps_domain: a.4,
            database_url: a.5,
            database_max_connections: a.6,
            // Never written back (a secret).
            kek: None,
            log_format: b.0,
            trusted_proxies: b.1,
            tls: c.0,
            limits: c.1,
            control: c.2,
            export: c.3,
            risk: c.4,
            passwords: c.5,
            cluster: c.6,
        })
        .boxed()
}

/// Reads `text` as `postern serve` reads its file: the problems, or the value.
fn load(text: &str) -> Result<RawConfig, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("postern.toml");
    std::fs::write(&path, text).unwrap();
    RawConfig::load(Some(&path), &RawConfig::default()).map_err(|e| e.0)
}

/// The tables of the file (the root is "").
const TABLES: &[&str] = &["", "tls", "limits", "control", "export", "risk", "passwords", "cluster"];

/// `raw` as a TOML table, with `table` present (empty if `raw` has none).
fn table_with(raw: &RawConfig, table: &str) -> Table {
    let mut file = Table::try_from(raw).unwrap();
    if !table.is_empty() {
        file.entry(table).or_insert_with(|| Value::Table(Table::new()));
    }
    file
}

fn table_mut<'a>(file: &'a mut Table, table: &str) -> &'a mut Table {
    if table.is_empty() {
        return file;
    }
    match file.get_mut(table) {
        Some(Value::Table(t)) => t,
        _ => unreachable!("table_with added it"),
    }
}

/// A key no table of the file has (none has a digit).
fn unknown_key() -> impl Strategy<Value = String> {
    ("[a-z][a-z_]{0,10}", 0u8..10).prop_map(|(stem, digit)| format!("{stem}{digit}"))
}

/// Numbers `validate` checks the range of, without reading any file:
/// the key as problems name it, and its valid range.
struct RangeKey {
    key: &'static str,
    valid: std::ops::RangeInclusive<u64>,
    /// The largest value its type holds.
    type_max: u64,
    set: fn(&mut RawConfig, u64),
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap()
}

const I64_MAX: u64 = i64::MAX as u64;
const U32_MAX: u64 = u32::MAX as u64;

const RANGE_KEYS: &[RangeKey] = &[
    RangeKey {
        key: "database_max_connections",
        valid: 1..=U32_MAX,
        type_max: U32_MAX,
        set: |r, v| r.database_max_connections = Some(to_u32(v)),
    },
    RangeKey {
        key: "limits.max_connections",
        valid: 1..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.limits.get_or_insert_default().max_connections = Some(to_usize(v)),
    },
    RangeKey {
        key: "limits.max_body_bytes",
        valid: 1024..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.limits.get_or_insert_default().max_body_bytes = Some(to_usize(v)),
    },
    RangeKey {
        key: "limits.header_timeout_secs",
        valid: 1..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.limits.get_or_insert_default().header_timeout_secs = Some(v),
    },
    RangeKey {
        key: "limits.idle_timeout_secs",
        valid: 1..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.limits.get_or_insert_default().idle_timeout_secs = Some(v),
    },
    RangeKey {
        key: "limits.request_timeout_secs",
        valid: 1..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.limits.get_or_insert_default().request_timeout_secs = Some(v),
    },
    RangeKey {
        key: "limits.client_requests_per_sec",
        valid: 0..=1_000_000,
        type_max: U32_MAX,
        set: |r, v| r.limits.get_or_insert_default().client_requests_per_sec = Some(to_u32(v)),
    },
    RangeKey {
        key: "limits.app_requests_per_sec",
        valid: 0..=1_000_000,
        type_max: U32_MAX,
        set: |r, v| r.limits.get_or_insert_default().app_requests_per_sec = Some(to_u32(v)),
    },
    RangeKey {
        key: "limits.tenant_requests_per_sec",
        valid: 0..=1_000_000,
        type_max: U32_MAX,
        set: |r, v| r.limits.get_or_insert_default().tenant_requests_per_sec = Some(to_u32(v)),
    },
    RangeKey {
        key: "control.update_check_secs",
        valid: 60..=604_800,
        type_max: I64_MAX,
        set: |r, v| r.control.get_or_insert_default().update_check_secs = Some(v),
    },
    RangeKey {
        key: "risk.window_secs",
        valid: 1..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.risk.get_or_insert_default().window_secs = Some(v),
    },
    RangeKey {
        key: "risk.spray_accounts",
        valid: 2..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.risk.get_or_insert_default().spray_accounts = Some(to_usize(v)),
    },
    RangeKey {
        key: "risk.brute_force_networks",
        valid: 2..=I64_MAX,
        type_max: I64_MAX,
        set: |r, v| r.risk.get_or_insert_default().brute_force_networks = Some(to_usize(v)),
    },
];

/// A value for `key`: near the ends of its valid range or anywhere its type allows.
fn value_for(key: &RangeKey) -> BoxedStrategy<u64> {
    let (lo, hi, max) = (*key.valid.start(), *key.valid.end(), key.type_max);
    prop_oneof![
        lo.saturating_sub(2)..=lo.saturating_add(2),
        hi.saturating_sub(2)..=hi.saturating_add(2).min(max),
        0..=max,
    ]
    .boxed()
}

/// Some of [`RANGE_KEYS`] (by index), each with a value.
fn range_values() -> impl Strategy<Value = Vec<(usize, u64)>> {
    let per_key: Vec<BoxedStrategy<Option<u64>>> = RANGE_KEYS
        .iter()
        .map(|k| proptest::option::weighted(0.3, value_for(k)).boxed())
        .collect();
    per_key.prop_map(|values| {
        values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i, v)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn written_and_read_back_is_the_same(raw in raw_config()) {
        let text = toml::to_string(&raw).unwrap();
        let back = load(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        prop_assert_eq!(format!("{back:?}"), format!("{raw:?}"), "{}", text);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name(
        raw in raw_config(),
        table in prop::sample::select(TABLES),
        key in unknown_key(),
    ) {
        let mut file = table_with(&raw, table);
        let target = table_mut(&mut file, table);
        target.insert(key.clone(), Value::Integer(1));
        let problems = load(&toml::to_string(&file).unwrap()).unwrap_err();
        prop_assert!(problems.iter().any(|p| p.contains(&key)), "{} in [{}]: {:?}", key, table, problems);
    }

    #[test]
    fn a_number_its_key_cannot_hold_is_refused_by_name(
        index in 0..RANGE_KEYS.len(),
        value in prop_oneof![i64::MIN..0, (i64::from(u32::MAX) + 1)..=i64::MAX],
    ) {
        let range_key = &RANGE_KEYS[index];
        // Every non-negative TOML integer fits a 64-bit key.
        prop_assume!(u64::try_from(value).map_or(true, |v| v > range_key.type_max));
        let (table, key) = range_key.key.split_once('.').unwrap_or(("", range_key.key));
        let mut file = table_with(&RawConfig::default(), table);
        table_mut(&mut file, table).insert(key.into(), Value::Integer(value));
        let problems = load(&toml::to_string(&file).unwrap()).unwrap_err();
        prop_assert!(problems.iter().any(|p| p.contains(key)), "{} = {}: {:?}", range_key.key, value, problems);
    }

    #[test]
    fn numbers_are_accepted_exactly_in_range(values in range_values()) {
        let mut raw = RawConfig::default();
        for &(i, v) in &values {
            (RANGE_KEYS[i].set)(&mut raw, v);
        }
        let text = toml::to_string(&raw).unwrap();
        let read = load(&text).map_err(|e| TestCaseError::fail(format!("{e:?}\n{text}")))?;
        let out_of_range: Vec<&str> = values
            .iter()
            .filter(|&&(i, v)| !RANGE_KEYS[i].valid.contains(&v))
            .map(|&(i, _)| RANGE_KEYS[i].key)
            .collect();
        match read.validate() {
            Ok(_) => prop_assert!(out_of_range.is_empty(), "{:?} accepted:\n{}", out_of_range, text),
            Err(e) => {
                prop_assert!(!out_of_range.is_empty(), "refused: {}\n{}", e, text);
                for k in RANGE_KEYS.iter().map(|k| k.key) {
                    let named = e.0.iter().any(|p| p.contains(k));
                    prop_assert_eq!(named, out_of_range.contains(&k), "{}: {}\n{}", k, e, text);
                }
            }
        }
    }
}
