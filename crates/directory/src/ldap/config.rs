//! Configuration of the LDAP back end, and its validation into the settings the back end
//! runs with. Every problem is reported at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postern_keyring::SecretString;
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

use super::attributes::{AttributeNames, ResolvedAttributes};
use super::filter::FilterTemplate;

/// Which kind of directory this is; picks the defaults of filters and attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// Microsoft Active Directory or Samba AD: bind failures carry `data XXX` sub-codes.
    ActiveDirectory,
    /// OpenLDAP (or another server with the password-policy control).
    OpenLdap,
}

/// Default user filter for Active Directory: a person (not a computer account) by UPN,
/// or by `sAMAccountName` (typed bare or as `DOMAIN\name`, or the part of
/// `name@domain` before the `@`).
pub const AD_USER_FILTER: &str = "(&(objectCategory=person)(objectClass=user)(|(userPrincipalName={username})(sAMAccountName={account})(sAMAccountName={user})))";
/// Default user filter for OpenLDAP: the whole name in `uid` or `mail`, or
/// the part before the `@` in `uid` (`alice@example.com` finds `uid=alice`).
pub const OPENLDAP_USER_FILTER: &str = "(&(objectClass=inetOrgPerson)(|(uid={username})(mail={username})(uid={user})))";
/// Default group filter for OpenLDAP, used when an entry has no `memberOf`.
pub const OPENLDAP_GROUP_FILTER: &str = "(&(objectClass=groupOfNames)(member={dn}))";

const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
const DEFAULT_OPERATION_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_SIGN_IN_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_MAX_CONCURRENT_BINDS: usize = 32;

/// The LDAP back end's configuration (the agent's `[directory]` TOML table).
///
/// ```toml
/// flavor = "active_directory"
/// urls = ["ldaps://dc1.example.test", "ldaps://dc2.example.test"]
/// ca_file = "/etc/postern/ad-ca.pem"
/// bind_dn = "CN=svc-postern,CN=Users,DC=example,DC=test"
/// bind_password = "…"
/// base_dn = "DC=example,DC=test"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Active Directory or OpenLDAP: picks default filters, attributes and how bind
    /// failures are read.
    pub flavor: Flavor,
    /// Servers, tried in order (`ldap://host[:port]` or `ldaps://host[:port]`); the last
    /// one that answered is tried first next time.
    pub urls: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS (Samba AD does not support it).
    #[serde(default)]
    pub starttls: bool,
    /// Permit `ldap://` without StartTLS: passwords then cross the network in clear.
    /// For loopback tests only.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// PEM file of the CA certificate(s) that sign the directory's certificate (for AD,
    /// the enterprise CA). Without it, the system's trusted roots are used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN of the service account that searches for users; anonymous when absent (AD
    /// does not allow anonymous searches).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// The service account's password.
    #[serde(default)]
    pub bind_password: Option<SecretString>,
    /// Where user searches start (subtree).
    pub base_dn: String,
    /// User filter with `{username}` (as typed), `{account}` (without a `DOMAIN\`
    /// prefix) and `{user}` (that account without an `@domain` suffix); all
    /// escaped. Defaults to [`AD_USER_FILTER`] or [`OPENLDAP_USER_FILTER`].
    #[serde(default)]
    pub user_filter: Option<String>,
    /// The NetBIOS domain (`EXAMPLE`): a `OTHER\name` username is then refused unasked.
    #[serde(default)]
    pub netbios_domain: Option<String>,
    /// Attribute names, each defaulting per flavor.
    #[serde(default)]
    pub attributes: AttributeNames,
    /// Group search used when the entry has no group attribute values, with `{dn}` (the
    /// user's DN, escaped). Defaults to [`OPENLDAP_GROUP_FILTER`] for OpenLDAP, none for
    /// AD (which keeps `memberOf`). Empty string: no group search.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Where group searches start; `base_dn` when absent.
    #[serde(default)]
    pub group_base_dn: Option<String>,
    /// Deadline for TCP connect plus TLS/StartTLS handshake (default 3000 ms).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Deadline for each search and bind (default 5000 ms).
    #[serde(default)]
    pub operation_timeout_ms: Option<u64>,
    /// Deadline for a whole sign-in: search, bind and group lookup, waits for a free
    /// connection included (default 10000 ms). Past it the answer is
    /// `DirectoryUnreachable`, so the STS can still ask another agent in time.
    #[serde(default)]
    pub sign_in_timeout_ms: Option<u64>,
    /// Most service-bound search connections kept open (default 4).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// Most user binds in flight at once, each on its own connection (default 32).
    #[serde(default)]
    pub max_concurrent_binds: Option<usize>,
    /// Send the password-policy request control with user binds; default on for
    /// OpenLDAP, off for AD (which ignores it).
    #[serde(default)]
    pub password_policy_control: Option<bool>,
}

impl LdapConfig {
    /// A configuration with defaults for everything but the essentials.
    pub fn new(flavor: Flavor, urls: Vec<String>, base_dn: impl Into<String>) -> Self {
        Self {
            flavor,
            urls,
            starttls: false,
            allow_plaintext: false,
            ca_file: None,
            bind_dn: None,
            bind_password: None,
            base_dn: base_dn.into(),
            user_filter: None,
            netbios_domain: None,
            attributes: AttributeNames::default(),
            group_filter: None,
            group_base_dn: None,
            connect_timeout_ms: None,
            operation_timeout_ms: None,
            sign_in_timeout_ms: None,
            pool_size: None,
            max_concurrent_binds: None,
            password_policy_control: None,
        }
    }

    /// Checks everything, reads the CA file, and returns the settings to run with, or
    /// every problem found.
    pub(crate) fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();
        let urls = self.check_urls(&mut problems);
        let tls = self.tls_config(&mut problems);

        let service = match (&self.bind_dn, &self.bind_password) {
            (Some(dn), Some(pw)) if !dn.trim().is_empty() && !pw.is_empty() => Some(ServiceAccount {
                dn: dn.clone(),
                password: pw.clone(),
            }),
            (None, None) => {
                if self.flavor == Flavor::ActiveDirectory {
                    problems.push(
                        "Active Directory does not allow anonymous searches: set bind_dn and bind_password".into(),
                    );
                }
                None
            }
            _ => {
                problems.push("bind_dn and bind_password go together, and neither may be empty".into());
                None
            }
        };
        if self.base_dn.trim().is_empty() {
            problems.push("base_dn is empty".into());
        }

        let user_filter_text = self.user_filter.as_deref().unwrap_or(match self.flavor {
            Flavor::ActiveDirectory => AD_USER_FILTER,
            Flavor::OpenLdap => OPENLDAP_USER_FILTER,
        });
        let user_filter = FilterTemplate::parse(user_filter_text, &["username", "account", "user"])
            .map_err(|e| problems.push(format!("user_filter: {e}")))
            .ok();
        let group_filter_text = match (&self.group_filter, self.flavor) {
            (Some(f), _) if f.trim().is_empty() => None,
            (Some(f), _) => Some(f.as_str()),
            (None, Flavor::OpenLdap) => Some(OPENLDAP_GROUP_FILTER),
            (None, Flavor::ActiveDirectory) => None,
        };
        let group_filter = match group_filter_text.map(|t| FilterTemplate::parse(t, &["dn"])) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                problems.push(format!("group_filter: {e}"));
                None
            }
            None => None,
        };

        let millis = |value: Option<u64>, default: u64, name: &str, problems: &mut Vec<String>| {
            let ms = value.unwrap_or(default);
            if ms == 0 || ms > 600_000 {
                problems.push(format!("{name} must be between 1 and 600000 ms, not {ms}"));
            }
            Duration::from_millis(ms)
        };
        let connect_timeout = millis(
            self.connect_timeout_ms,
            DEFAULT_CONNECT_TIMEOUT_MS,
            "connect_timeout_ms",
            &mut problems,
        );
        let operation_timeout = millis(
            self.operation_timeout_ms,
            DEFAULT_OPERATION_TIMEOUT_MS,
            "operation_timeout_ms",
            &mut problems,
        );
        let sign_in_timeout = millis(
            self.sign_in_timeout_ms,
            DEFAULT_SIGN_IN_TIMEOUT_MS,
            "sign_in_timeout_ms",
            &mut problems,
        );
        let pool_size = self.pool_size.unwrap_or(DEFAULT_POOL_SIZE);
        if !(1..=64).contains(&pool_size) {
            problems.push(format!("pool_size must be between 1 and 64, not {pool_size}"));
        }
        let max_concurrent_binds = self.max_concurrent_binds.unwrap_or(DEFAULT_MAX_CONCURRENT_BINDS);
        if !(1..=1024).contains(&max_concurrent_binds) {
            problems.push(format!(
                "max_concurrent_binds must be between 1 and 1024, not {max_concurrent_binds}"
            ));
        }

        match (user_filter, tls) {
            (Some(user_filter), Some(tls)) if problems.is_empty() => Ok(Settings {
                flavor: self.flavor,
                urls,
                starttls: self.starttls,
                tls,
                service,
                base_dn: self.base_dn.clone(),
                user_filter,
                netbios_domain: self.netbios_domain.clone().filter(|d| !d.trim().is_empty()),
                attributes: ResolvedAttributes::resolve(self.flavor, &self.attributes),
                group_filter,
                group_base_dn: self.group_base_dn.clone().unwrap_or_else(|| self.base_dn.clone()),
                connect_timeout,
                operation_timeout,
                sign_in_timeout,
                pool_size,
                max_concurrent_binds,
                password_policy_control: self.password_policy_control.unwrap_or(self.flavor == Flavor::OpenLdap),
            }),
            _ => Err(ConfigError { problems }),
        }
    }

    fn check_urls(&self, problems: &mut Vec<String>) -> Vec<String> {
        if self.urls.is_empty() {
            problems.push("urls is empty: name at least one ldap:// or ldaps:// server".into());
        }
        let mut urls = Vec::new();
        for raw in &self.urls {
            let parsed = match url::Url::parse(raw) {
                Ok(u) => u,
                Err(e) => {
                    problems.push(format!("url {raw:?}: {e}"));
                    continue;
                }
            };
            if parsed.host_str().is_none_or(str::is_empty) {
                problems.push(format!("url {raw:?} has no host"));
            }
            match parsed.scheme() {
                "ldaps" if self.starttls => problems.push(format!(
                    "url {raw:?}: starttls applies to ldap:// URLs; ldaps:// is already TLS"
                )),
                "ldaps" => {}
                "ldap" if self.starttls || self.allow_plaintext => {}
                "ldap" => problems.push(format!(
                    "url {raw:?} would send passwords in clear: use ldaps://, set starttls = true, \
                     or (for tests on loopback) allow_plaintext = true"
                )),
                other => problems.push(format!("url {raw:?}: scheme {other:?} is not ldap or ldaps")),
            }
            urls.push(raw.clone());
        }
        urls
    }

    /// The TLS client configuration: aws-lc-rs, roots from `ca_file` or the system.
    fn tls_config(&self, problems: &mut Vec<String>) -> Option<Arc<ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => match load_ca_file(path) {
                Ok(certs) => add_numbered(&mut roots, certs, &format!("ca_file {}", path.display()), problems),
                Err(e) => problems.push(format!("ca_file {}: {e}", path.display())),
            },
            None => add_system_roots(&mut roots, problems),
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        match ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
            Ok(builder) => Some(Arc::new(builder.with_root_certificates(roots).with_no_client_auth())),
            Err(e) => {
                problems.push(format!("TLS: {e}"));
                None
            }
        }
    }
}

/// Adds the system's trust anchors (or those `SSL_CERT_FILE` / `SSL_CERT_DIR`
/// name). A file that cannot be read or a certificate that cannot be used is a
/// problem naming the store, and the file and certificate where known: never
/// skipped, so it shows at start rather than as an "unknown issuer" later.
fn add_system_roots(roots: &mut rustls::RootCertStore, problems: &mut Vec<String>) {
    let dir = std::env::var_os("SSL_CERT_DIR");
    if let Some(file) = std::env::var_os("SSL_CERT_FILE").filter(|_| dir.is_none()) {
        let path = Path::new(&file);
        match load_ca_file(path) {
            Ok(certs) => add_numbered(roots, certs, &format!("SSL_CERT_FILE {}", path.display()), problems),
            Err(e) => problems.push(format!("SSL_CERT_FILE {}: {e}", path.display())),
        }
        return;
    }
    let store = match dir {
        Some(d) => format!("SSL_CERT_DIR {}", d.to_string_lossy()),
        None => "the system trust store".to_owned(),
    };
    let native = rustls_native_certs::load_native_certs();
    problems.extend(native.errors.iter().map(|e| format!("{store}: {e}")));
    add_numbered(roots, native.certs, &store, problems);
}

/// Adds `certs` from `source`; each one that cannot be a trust anchor is a
/// problem naming `source` and its position (1 for the first).
fn add_numbered(
    roots: &mut rustls::RootCertStore,
    certs: Vec<CertificateDer<'static>>,
    source: &str,
    problems: &mut Vec<String>,
) {
    for (n, cert) in certs.into_iter().enumerate() {
        if let Err(e) = roots.add(cert) {
            problems.push(format!(
                "{source}: certificate #{} cannot be a trust anchor: {e}",
                n + 1
            ));
        }
    }
}

fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut certs = Vec::new();
    for (n, item) in CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .enumerate()
    {
        certs.push(item.map_err(|e| format!("certificate #{} is not readable PEM: {e}", n + 1))?);
    }
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The configuration is not usable; every problem is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// One line per problem, each saying what to change.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "directory configuration has {} problem(s): ", self.problems.len())?;
        f.write_str(&self.problems.join("; "))
    }
}

/// The service account used for searches.
#[derive(Clone, Debug)]
pub(crate) struct ServiceAccount {
    pub dn: String,
    pub password: SecretString,
}

/// Validated settings.
#[derive(Clone)]
pub(crate) struct Settings {
    pub flavor: Flavor,
    pub urls: Vec<String>,
    pub starttls: bool,
    pub tls: Arc<ClientConfig>,
    pub service: Option<ServiceAccount>,
    pub base_dn: String,
    pub user_filter: FilterTemplate,
    pub netbios_domain: Option<String>,
    pub attributes: ResolvedAttributes,
    pub group_filter: Option<FilterTemplate>,
    pub group_base_dn: String,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub sign_in_timeout: Duration,
    pub pool_size: usize,
    pub max_concurrent_binds: usize,
    pub password_policy_control: bool,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("flavor", &self.flavor)
            .field("urls", &self.urls)
            .field("starttls", &self.starttls)
            .field("service", &self.service)
            .field("base_dn", &self.base_dn)
            .field("user_filter", &self.user_filter)
            .field("pool_size", &self.pool_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An AD configuration with a service account whose password is `svc-Secret-42`.
    pub(crate) fn ad() -> LdapConfig {
        LdapConfig {
            bind_dn: Some("CN=svc,CN=Users,DC=example,DC=test".into()),
            bind_password: Some(SecretString::from("svc-Secret-42")),
            ..LdapConfig::new(
                Flavor::ActiveDirectory,
                vec!["ldaps://dc1.example.test".into()],
                "DC=example,DC=test",
            )
        }
    }

    #[test]
    fn defaults_validate() {
        let s = ad().validate().unwrap();
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        assert_eq!(s.operation_timeout, Duration::from_secs(5));
        assert!(s.group_filter.is_none());
        assert!(!s.password_policy_control);
        let mut ol = LdapConfig::new(
            Flavor::OpenLdap,
            vec!["ldap://127.0.0.1:389".into()],
            "dc=example,dc=com",
        );
        ol.starttls = true;
        let s = ol.validate().unwrap();
        assert!(s.group_filter.is_some());
        assert!(s.password_policy_control);
        assert!(s.service.is_none());
    }

    #[test]
    fn every_problem_is_reported() {
        let config = LdapConfig {
            urls: vec!["ldap://dc1".into(), "http://dc2".into(), "not a url".into()],
            bind_password: None,
            base_dn: " ".into(),
            user_filter: Some("(uid=alice)".into()),
            connect_timeout_ms: Some(0),
            pool_size: Some(0),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ad()
        };
        let err = config.validate().unwrap_err();
        let text = err.to_string();
        for needle in [
            "in clear",
            "scheme \"http\"",
            "not a url",
            "bind_dn and bind_password",
            "base_dn is empty",
            "user_filter",
            "connect_timeout_ms",
            "pool_size",
            "ca_file",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert_eq!(err.problems.len(), 9, "{text}");
    }

    #[test]
    fn a_ca_file_with_a_broken_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ad-ca.pem");
        crate::testing::TestPki::unrelated_ca(&path).unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        // PEM armour around bytes that are no certificate ("not a certificate").
        let broken = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        std::fs::write(&path, format!("{good}{broken}")).unwrap();
        let config = LdapConfig {
            ca_file: Some(path.clone()),
            ..ad()
        };
        let text = config.validate().unwrap_err().to_string();
        assert!(
            text.contains(&format!(
                "ca_file {}: certificate #2 cannot be a trust anchor",
                path.display()
            )),
            "{text}"
        );
        std::fs::write(&path, &good).unwrap();
        assert!(config.validate().is_ok(), "the good certificate alone is fine");
    }

    #[test]
    fn starttls_with_ldaps_is_refused() {
        let config = LdapConfig { starttls: true, ..ad() };
        assert!(config.validate().unwrap_err().to_string().contains("starttls applies"));
    }

    #[test]
    fn anonymous_ad_is_refused() {
        let config = LdapConfig {
            bind_dn: None,
            bind_password: None,
            ..ad()
        };
        assert!(config.validate().unwrap_err().to_string().contains("anonymous"));
    }

    #[test]
    fn toml_parses_and_unknown_fields_are_refused() {
        let config: LdapConfig = toml::from_str(
            r#"
            flavor = "open_ldap"
            urls = ["ldaps://ldap.example.com"]
            bind_dn = "cn=reader,dc=example,dc=com"
            bind_password = "reader-Secret-1"
            base_dn = "dc=example,dc=com"
            connect_timeout_ms = 1500
            [attributes]
            display_name = "displayName"
            "#,
        )
        .unwrap();
        assert_eq!(config.flavor, Flavor::OpenLdap);
        assert_eq!(config.attributes.display_name.as_deref(), Some("displayName"));
        assert!(config.validate().is_ok());
        let err = toml::from_str::<LdapConfig>("flavor = \"open_ldap\"\nurls = []\nbase_dn = \"x\"\nbind_pw = \"x\"")
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn debug_never_shows_passwords() {
        let config = ad();
        let debug = format!("{config:?}");
        assert!(!debug.contains("svc-Secret-42"), "{debug}");
        let settings = config.validate().unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("svc-Secret-42"), "{debug}");
        let err = LdapConfig {
            pool_size: Some(0),
            ..ad()
        }
        .validate()
        .unwrap_err();
        assert!(!format!("{err} {err:?}").contains("svc-Secret-42"));
    }
}
