//! Property tests of the agent's configuration file (issue 14 item 2). The
//! file is parse-only (no `Serialize`), so a small helper renders generated
//! configurations to TOML: every such file parses to the values it was made
//! from; a key the file does not know, anywhere, is refused with the key named;
//! `max_in_flight` is accepted exactly within 1..=1024, and refused outside with
//! the key named.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use postern_directory::{Flavor, LdapConfig, SecretString, hash_password};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use toml::{Table, Value};

use super::{AgentConfig, DirectoryConfig, MAX_IN_FLIGHT_LIMIT};

/// The LDAP settings written to a file.
#[derive(Clone, Debug)]
struct LdapSpec {
    active_directory: bool,
    urls: Vec<String>,
    starttls: Option<bool>,
    allow_plaintext: Option<bool>,
    ca_file: Option<String>,
    bind_dn: Option<String>,
    bind_password: Option<String>,
    base_dn: String,
    user_filter: Option<String>,
    netbios_domain: Option<String>,
    group_filter: Option<String>,
    group_base_dn: Option<String>,
    timeouts_ms: [Option<u64>; 3],
    pool_size: Option<usize>,
}

#[derive(Clone, Debug)]
enum DirectorySpec {
    Ldap(Box<LdapSpec>),
    LocalFile(String),
}

/// A configuration file's contents.
#[derive(Clone, Debug)]
struct Spec {
    max_in_flight: Option<usize>,
    directory: DirectorySpec,
}

/// Any text (TOML escapes what needs it), mostly of the kind configurations hold.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9=,.:/ ()&|*_-]{0,40}",
        1 => any::<String>(),
    ]
}

/// TOML integers are signed 64-bit.
fn toml_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..100_000, 0..=i64::MAX as u64]
}

fn toml_usize() -> impl Strategy<Value = usize> {
    toml_u64().prop_map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

fn ldap() -> impl Strategy<Value = LdapSpec> {
    (
        (
            any::<bool>(),
            proptest::collection::vec(text(), 0..4),
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::array::uniform3(proptest::option::of(toml_u64())),
            proptest::option::of(toml_usize()),
        ),
    )
        .prop_map(
            |(
                (active_directory, urls, starttls, allow_plaintext, ca_file, bind_dn, bind_password),
                (base_dn, user_filter, netbios_domain, group_filter, group_base_dn, timeouts_ms, pool_size),
            )| LdapSpec {
                active_directory,
                urls,
                starttls,
                allow_plaintext,
                ca_file,
                bind_dn,
                bind_password,
                base_dn,
                user_filter,
                netbios_domain,
                group_filter,
                group_base_dn,
                timeouts_ms,
                pool_size,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    let directory = prop_oneof![
        ldap().prop_map(|l| DirectorySpec::Ldap(Box::new(l))),
        text().prop_map(DirectorySpec::LocalFile),
    ];
    (proptest::option::of(toml_usize()), directory).prop_map(|(max_in_flight, directory)| Spec {
        max_in_flight,
        directory,
    })
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap())
}

/// The file for `spec`, as a table (absent options are left out).
fn render(spec: &Spec) -> Table {
    let mut directory = Table::new();
    match &spec.directory {
        DirectorySpec::LocalFile(path) => {
            directory.insert("kind".into(), "local_file".into());
            directory.insert("path".into(), path.clone().into());
        }
        DirectorySpec::Ldap(l) => {
            directory.insert("kind".into(), "ldap".into());
            let flavor = if l.active_directory {
                "active_directory"
            } else {
                "open_ldap"
            };
            directory.insert("flavor".into(), flavor.into());
            directory.insert(
                "urls".into(),
                Value::Array(l.urls.iter().map(|u| u.clone().into()).collect()),
            );
            directory.insert("base_dn".into(), l.base_dn.clone().into());
            for (key, value) in [("starttls", l.starttls), ("allow_plaintext", l.allow_plaintext)] {
                if let Some(v) = value {
                    directory.insert(key.into(), v.into());
                }
            }
            for (key, value) in [
                ("ca_file", &l.ca_file),
                ("bind_dn", &l.bind_dn),
                ("bind_password", &l.bind_password),
                ("user_filter", &l.user_filter),
                ("netbios_domain", &l.netbios_domain),
                ("group_filter", &l.group_filter),
                ("group_base_dn", &l.group_base_dn),
            ] {
                if let Some(v) = value {
                    directory.insert(key.into(), v.clone().into());
                }
            }
            let [connect, operation, sign_in] = l.timeouts_ms;
            for (key, value) in [
                ("connect_timeout_ms", connect),
                ("operation_timeout_ms", operation),
                ("sign_in_timeout_ms", sign_in),
                ("pool_size", l.pool_size.map(|n| n as u64)),
            ] {
                if let Some(v) = value {
                    directory.insert(key.into(), int(v));
                }
            }
        }
    }
    let mut file = Table::new();
    if let Some(n) = spec.max_in_flight {
        file.insert("max_in_flight".into(), int(n as u64));
    }
    file.insert("directory".into(), Value::Table(directory));
    file
}

fn expose(secret: &Option<SecretString>) -> Option<&str> {
    secret.as_ref().map(SecretString::expose)
}

/// Whether the parsed LDAP settings are the ones written.
fn same_ldap(l: &LdapSpec, parsed: &LdapConfig) -> Result<(), TestCaseError> {
    let flavor = if l.active_directory {
        Flavor::ActiveDirectory
    } else {
        Flavor::OpenLdap
    };
    prop_assert_eq!(parsed.flavor, flavor);
    prop_assert_eq!(&parsed.urls, &l.urls);
    prop_assert_eq!(parsed.starttls, l.starttls.unwrap_or(false));
    prop_assert_eq!(parsed.allow_plaintext, l.allow_plaintext.unwrap_or(false));
    prop_assert_eq!(&parsed.ca_file, &l.ca_file.as_ref().map(PathBuf::from));
    prop_assert_eq!(&parsed.bind_dn, &l.bind_dn);
    prop_assert_eq!(expose(&parsed.bind_password), l.bind_password.as_deref());
    prop_assert_eq!(&parsed.base_dn, &l.base_dn);
    prop_assert_eq!(&parsed.user_filter, &l.user_filter);
    prop_assert_eq!(&parsed.netbios_domain, &l.netbios_domain);
    prop_assert_eq!(&parsed.group_filter, &l.group_filter);
    prop_assert_eq!(&parsed.group_base_dn, &l.group_base_dn);
    prop_assert_eq!(
        [
            parsed.connect_timeout_ms,
            parsed.operation_timeout_ms,
            parsed.sign_in_timeout_ms
        ],
        l.timeouts_ms
    );
    prop_assert_eq!(parsed.pool_size, l.pool_size);
    Ok(())
}

/// Keys no table of the file has.
fn unknown_key() -> impl Strategy<Value = String> {
    "[a-z][a-z_]{0,15}".prop_filter("a key the file knows", |k| {
        ![
            "max_in_flight",
            "directory",
            "kind",
            "path",
            "flavor",
            "urls",
            "starttls",
            "allow_plaintext",
            "ca_file",
            "bind_dn",
            "bind_password",
            "base_dn",
            "user_filter",
            "netbios_domain",
            "attributes",
            "group_filter",
            "group_base_dn",
            "connect_timeout_ms",
            "operation_timeout_ms",
            "sign_in_timeout_ms",
            "pool_size",
        ]
        .contains(&k.as_str())
    })
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    #[test]
    fn a_rendered_file_parses_to_what_it_was_made_from(spec in spec()) {
        let text = toml::to_string(&render(&spec)).unwrap();
        let parsed: AgentConfig = toml::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(parsed.max_in_flight, spec.max_in_flight);
        match (&spec.directory, &parsed.directory) {
            (DirectorySpec::LocalFile(path), DirectoryConfig::LocalFile(local)) => {
                prop_assert_eq!(&local.path, &PathBuf::from(path));
            }
            (DirectorySpec::Ldap(l), DirectoryConfig::Ldap(parsed)) => same_ldap(l, parsed)?,
            (written, parsed) => return Err(TestCaseError::fail(format!("wrote {written:?}, read {parsed:?}"))),
        }
    }

    #[test]
    fn an_unknown_key_is_refused_by_name(spec in spec(), key in unknown_key(), in_directory in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut file = render(&spec);
        let table = if in_directory {
            match file.get_mut("directory") {
                Some(Value::Table(t)) => t,
                _ => unreachable!("render writes [directory]"),
            }
        } else {
            &mut file
        };
        table.insert(key.clone(), Value::Integer(1));
        let path = dir.path().join("agent.toml");
        write(&path, &toml::to_string(&file).unwrap());
        let err = AgentConfig::load_with_env(&path, |_| None).unwrap_err().to_string();
        prop_assert!(err.contains(&format!("unknown field `{key}`")), "{}", err);
    }
}

/// `max_in_flight` is accepted exactly within 1..=1024 (with a directory that
/// loads), and refused outside with the key and the value named.
#[test]
fn max_in_flight_is_accepted_exactly_in_range() {
    let dir = tempfile::tempdir().unwrap();
    let accounts = dir.path().join("accounts");
    let hash = hash_password(&SecretString::from("pw")).unwrap();
    write(&accounts, &format!("alice:{hash}\n"));
    let path = dir.path().join("agent.toml");
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let values = prop_oneof![0usize..=1100, toml_usize()];
    runner
        .run(&values, |n| {
            let spec = Spec {
                max_in_flight: Some(n),
                directory: DirectorySpec::LocalFile(accounts.display().to_string()),
            };
            write(&path, &toml::to_string(&render(&spec)).unwrap());
            match AgentConfig::load_with_env(&path, |_| None) {
                Ok(loaded) => {
                    prop_assert!((1..=MAX_IN_FLIGHT_LIMIT).contains(&n), "{} accepted", n);
                    prop_assert_eq!(loaded.max_in_flight, Some(n));
                }
                Err(e) => {
                    prop_assert!(!(1..=MAX_IN_FLIGHT_LIMIT).contains(&n), "{} refused: {}", n, e);
                    prop_assert_eq!(e.problems.len(), 1, "{}", e);
                    prop_assert!(e.problems[0].contains("max_in_flight") && e.problems[0].contains(&n.to_string()));
                }
            }
            Ok(())
        })
        .unwrap();
}
