//! Configuration of `postern serve`: a TOML file, overlaid by `POSTERN_*`
//! environment variables (nested keys with `__`, e.g. `POSTERN_TLS__CERT`), overlaid
//! by command-line flags. Unknown keys are errors; `validate` reports every problem
//! at once, not just the first.

mod abuse;
mod cluster;
mod export;
mod passwords;
mod risk;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ipnet::IpNet;
use postern_keyring::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

pub use abuse::AbuseLimits;
pub use cluster::RawCluster;
pub use export::RawExport;
pub use passwords::RawPasswords;
pub use risk::RawRisk;

/// Environment keys the service reads (after the `POSTERN_` prefix, lowercased,
/// `__` meaning a nested table). Other `POSTERN_*` variables belong to other tools
/// (tests, the CLI) and are ignored.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "public_url",
    "apps_domain",
    "listen",
    "metrics_listen",
    "database_url",
    "database_max_connections",
    "kek",
    "log_format",
    "trusted_proxies",
    "tls.cert",
    "tls.key",
    "tls.certificates",
    "tls.certificates_dir",
    "tls.self_signed",
    "limits.max_connections",
    "limits.max_body_bytes",
    "limits.header_timeout_secs",
    "limits.idle_timeout_secs",
    "limits.request_timeout_secs",
    "limits.shutdown_grace_secs",
    "limits.client_requests_per_sec",
    "limits.client_burst",
    "limits.app_requests_per_sec",
    "limits.app_burst",
    "limits.tenant_requests_per_sec",
    "limits.tenant_burst",
    "limits.connections_per_client",
    "limits.app_max_body_bytes",
    "limits.tenant_pending_signins",
    "control.listen",
    "control.url",
    "control.hostnames",
    "control.tls_cert",
    "control.tls_key",
    "control.tls_anchors",
    "control.minimum_component_version",
    "control.update_check_secs",
    "export.syslog_url",
    "export.webhook_url",
    "export.webhook_token",
    "export.ca_file",
    "export.hostname",
    "export.spool_max_bytes",
    "export.batch",
];

/// `POSTERN_*` variables that belong to other tools (the CLI, the test harness)
/// and are not service configuration.
const ENV_OF_OTHER_TOOLS: &[&str] = &[
    "config",
    "config_dir",
    "server",
    "tenant",
    "registration_token",
    "state_dir",
    "test_postgres",
    "samba_idle_secs",
];

/// Names of `POSTERN_*` environment variables that configure nothing: most likely
/// typos, which must not be silently ignored.
fn unknown_env_vars(vars: impl Iterator<Item = String>) -> Vec<String> {
    vars.filter_map(|name| {
        let key = name.strip_prefix("POSTERN_")?.to_lowercase().replace("__", ".");
        let known = ENV_KEYS.contains(&key.as_str())
            || risk::ENV_KEYS.contains(&key.as_str())
            || passwords::ENV_KEYS.contains(&key.as_str())
            || cluster::ENV_KEYS.contains(&key.as_str())
            || ENV_OF_OTHER_TOOLS.contains(&key.as_str());
        (!known).then(|| format!("unknown environment variable {name}"))
    })
    .collect()
}

/// The configuration as written (every field optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Directory for the SQLite database, the KEK file and generated keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// URL users and clients reach the service at, e.g. `https://login.example.com`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Address to listen on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Address of the Prometheus metrics listener (`GET /metrics`, plain
    /// HTTP, no authentication), e.g. `127.0.0.1:9090`; default: none. Never
    /// served on the public listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// The operator's app domain, e.g. `apps.example.com`: each tenant may
    /// publish apps at `{app}-{tenant}.apps.example.com` (one wildcard
    /// certificate serves them), besides hosts under its verified domains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apps_domain: Option<String>,
    /// `postgres://...` to scale out; default: SQLite in the data dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Most database connections this instance opens; default 4 on SQLite, 16 on
    /// PostgreSQL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_max_connections: Option<u32>,
    /// Key-encryption key ring (`ID:BASE64` entries); default: the `kek` file in the
    /// data dir. Give it through the environment, not the file.
    #[serde(skip_serializing)]
    pub kek: Option<SecretString>,
    /// `pretty` (default) or `json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    /// Networks of reverse proxies whose `X-Forwarded-For` is believed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,
    /// TLS for the listener; without it the service speaks plain HTTP (behind a
    /// TLS-terminating load balancer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// Limits protecting the service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<RawLimits>,
    /// The mTLS endpoint for connectors and agents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<RawControl>,
    /// Pushing sign-in and audit events to a SIEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<RawExport>,
    /// Sign-in risk signals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub risk: Option<RawRisk>,
    /// Password hashing: argon2id's parameters, the pool, the memory budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passwords: Option<RawPasswords>,
    /// Several instances behind one load balancer (NATS, peers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<RawCluster>,
}

/// The control endpoint as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// Address of the mTLS listener (default `127.0.0.1:8443`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// URL components reach it at (default: `https://` + the public URL's host and
    /// the listening port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Names for the server certificate issued by the Service CA (default: the
    /// URL's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostnames: Option<Vec<String>>,
    /// A server certificate chain (PEM) to use instead of one from the Service CA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Trust anchors (PEM) to hand to components for that certificate, if it is not
    /// publicly trusted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_anchors: Option<PathBuf>,
    /// Connectors and agents older than this version are refused, with the
    /// release to install named (default: none refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_component_version: Option<String>,
    /// How often updaters ask for a newer release (seconds, default 3600;
    /// they add jitter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_check_secs: Option<u64>,
}

/// TLS of the listener as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain of the default certificate (served to clients whose
    /// SNI name no other certificate covers, and to clients sending none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Its PEM private key (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// More certificates (`[[tls.certificates]]`), each serving the DNS names of its
    /// subjectAltName extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<RawCertificate>>,
    /// A directory of `NAME.crt` (or `NAME.pem`) and `NAME.key` pairs, served like
    /// `certificates`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificates_dir: Option<PathBuf>,
    /// Generate (once, then reuse) a self-signed default certificate in the data
    /// dir, for demos and first runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_signed: Option<bool>,
}

/// One `[[tls.certificates]]` entry as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key (mode 0600).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// Limits as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Open client connections at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Largest request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Time a client has to send its request headers (slow-client protection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_timeout_secs: Option<u64>,
    /// Time a connection may stay open with no request in flight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
    /// Time a request may take in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_secs: Option<u64>,
    /// Time in-flight requests get to finish at shutdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Requests a second per client address (default 100; 0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_requests_per_sec: Option<u32>,
    /// Requests at once above that rate per client address (default twice it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_burst: Option<u32>,
    /// Requests a second per app without its own rate (default 500; 0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_requests_per_sec: Option<u32>,
    /// Requests at once above that rate per app (default twice it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_burst: Option<u32>,
    /// Requests a second per tenant without its own rate (default 750; 0: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_requests_per_sec: Option<u32>,
    /// Requests at once above that rate per tenant (default twice it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_burst: Option<u32>,
    /// Open connections per client address (default 256; 0: no cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections_per_client: Option<usize>,
    /// Largest request body forwarded to an app without its own limit
    /// (default 0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_max_body_bytes: Option<u64>,
    /// Sign-ins waiting on one tenant's agents at once, unless the tenant has
    /// its own cap (default 500; 0: only the service-wide cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_pending_signins: Option<usize>,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (mode 0600).
    pub key: PathBuf,
}

/// Where the listener's certificates come from. The listener picks one per
/// connection by the client's SNI name: a certificate naming the host exactly,
/// else one with a matching wildcard, else the default.
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// The default certificate (`tls.cert`, `tls.key`).
    pub default: Option<TlsFiles>,
    /// Generate a self-signed default certificate in `{data_dir}/tls` (exclusive
    /// with `default`).
    pub self_signed: bool,
    /// DNS names the self-signed certificate names besides the public host and
    /// loopback (e.g. `*.demo.localhost` for the apps of `postern demo`).
    pub self_signed_names: Vec<String>,
    /// More certificates (`[[tls.certificates]]`).
    pub certificates: Vec<TlsFiles>,
    /// A directory of `NAME.crt`/`NAME.pem` + `NAME.key` pairs, read at start and
    /// at each reload.
    pub certificates_dir: Option<PathBuf>,
}

/// Limits protecting the service (SEC-9).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open client connections at most; more are closed at once.
    pub max_connections: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Time from accept to the complete head of the first request (TLS
    /// handshake, HTTP/2 preface and SETTINGS included); for each later HTTP/1.1
    /// request, from its first byte to its complete head. A connection that
    /// misses it is closed.
    pub header_timeout: Duration,
    /// Time a connection may stay open with no request in flight (an idle
    /// HTTP/1.1 keep-alive connection, an HTTP/2 connection with no stream open);
    /// then it is closed (HTTP/2 with GOAWAY). Streams in progress never count
    /// as idle.
    pub idle_timeout: Duration,
    /// Time a request may take in all.
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Abuse protection at the front door: rate limits, connections per
    /// client, the body limit of apps, sign-ins waiting per tenant.
    pub abuse: AbuseLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_body_bytes: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(20),
            abuse: AbuseLimits::default(),
        }
    }
}

/// Settings of the control endpoint.
#[derive(Clone, Debug)]
pub struct ControlSettings {
    /// Listening address.
    pub listen: SocketAddr,
    /// URL components use; `None` means derive from the public URL and the bound port.
    pub url: Option<Url>,
    /// Names for an issued server certificate; empty means the URL's host.
    pub hostnames: Vec<String>,
    /// Operator-provided certificate, key and anchors (PEM files).
    pub tls_files: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// The oldest component version accepted (checked to be a version).
    pub minimum_component_version: Option<String>,
    /// How often updaters ask for a newer release.
    pub update_check: Duration,
}

impl Default for ControlSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            url: None,
            hostnames: Vec::new(),
            tls_files: None,
            minimum_component_version: None,
            update_check: Duration::from_secs(3600),
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Data directory (created if missing, mode 0700).
    pub data_dir: PathBuf,
    /// Public URL; `None` means "derive from the listening address" (tests, local
    /// use).
    pub public_url: Option<Url>,
    /// Listening address.
    pub listen: SocketAddr,
    /// The Prometheus metrics listener's address; `None`: no metrics served.
    pub metrics_listen: Option<SocketAddr>,
    /// The operator's app domain (`{app}-{tenant}.{apps_domain}` names), if any.
    pub apps_domain: Option<String>,
    /// Database URL.
    pub database_url: String,
    /// Most database connections; `None`: the default for the database.
    pub database_max_connections: Option<u32>,
    /// KEK ring from configuration, if not from the data dir.
    pub kek: Option<SecretString>,
    /// Log format.
    pub log_format: LogFormat,
    /// Trusted reverse proxies.
    pub trusted_proxies: Vec<IpNet>,
    /// Listener TLS; `None` means plain HTTP.
    pub tls: Option<TlsSettings>,
    /// Limits.
    pub limits: Limits,
    /// The control endpoint.
    pub control: ControlSettings,
    /// Pushing sign-in and audit events to a SIEM (disabled unless a receiver
    /// is configured).
    pub export: postern_export::ExportSettings,
    /// Sign-in risk signals (anonymising networks, GeoIP, thresholds).
    pub risk: postern_sts::RiskConfig,
    /// Password hashing within the memory budget (argon2id, the pool).
    pub passwords: postern_sts::HashingSettings,
    /// Several instances behind one load balancer; `None`: this one alone.
    pub cluster: Option<postern_cluster::ClusterSettings>,
}

/// Every problem found in a configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigError(pub Vec<String>);

/// The default data directory.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./postern-data")
}

impl RawConfig {
    /// Reads the file at `path` (if given), then the environment, then `overrides`
    /// (from command-line flags), later sources winning.
    pub fn load(path: Option<&Path>, overrides: &RawConfig) -> Result<RawConfig, ConfigError> {
        let unknown = unknown_env_vars(std::env::vars().map(|(k, _)| k));
        if !unknown.is_empty() {
            return Err(ConfigError(unknown));
        }
        let env_keys: Vec<&str> = ENV_KEYS
            .iter()
            .chain(risk::ENV_KEYS)
            .chain(passwords::ENV_KEYS)
            .chain(cluster::ENV_KEYS)
            .copied()
            .collect();
        let mut figment = Figment::new();
        if let Some(p) = path {
            if !p.exists() {
                return Err(ConfigError(vec![format!("config file {} does not exist", p.display())]));
            }
            figment = figment.merge(Toml::file(p));
        }
        figment = figment
            .merge(Env::prefixed("POSTERN_").split("__").only(&env_keys))
            .merge(Serialized::defaults(overrides.clone()).profile(figment::Profile::Default));
        let mut raw: RawConfig = figment
            .extract()
            .map_err(|e| ConfigError(e.into_iter().map(|e| e.to_string()).collect()))?;
        if raw.kek.is_none() {
            raw.kek = overrides.kek.clone();
        }
        Ok(raw)
    }

    /// Checks everything and returns the typed configuration, or every problem.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        let listen = match self.listen.as_deref().unwrap_or("127.0.0.1:8080").parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                problems.push(format!(
                    "listen {:?} is not an address like 0.0.0.0:443",
                    self.listen.unwrap_or_default()
                ));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
        };
        let public_url = validate_public_url(self.public_url.as_deref(), &mut problems);
        let database_url = match self.database_url {
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") || u.starts_with("sqlite:") => u,
            Some(_) => {
                problems.push("database_url must start with postgres:// or sqlite:".into());
                String::new()
            }
            None => format!("sqlite://{}", data_dir.join("postern.db").display()),
        };
        if self.database_max_connections == Some(0) {
            problems.push("database_max_connections must be at least 1".into());
        }
        let log_format = match self.log_format.as_deref().unwrap_or("pretty") {
            "pretty" => LogFormat::Pretty,
            "json" => LogFormat::Json,
            other => {
                problems.push(format!("log_format {other:?} must be pretty or json"));
                LogFormat::Pretty
            }
        };
        let mut trusted_proxies = Vec::new();
        for p in self.trusted_proxies.unwrap_or_default() {
            match p.parse::<IpNet>().or_else(|_| p.parse::<IpAddr>().map(IpNet::from)) {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => problems.push(format!("trusted_proxies: {p:?} is not an address or network")),
            }
        }
        let tls = self.tls.and_then(|raw| validate_tls(raw, &mut problems));
        let limits = validate_limits(self.limits.unwrap_or_default(), &mut problems);
        let control = validate_control(self.control.unwrap_or_default(), &mut problems);
        let metrics_listen =
            validate_metrics_listen(self.metrics_listen.as_deref(), &[listen, control.listen], &mut problems);
        let apps_domain = self
            .apps_domain
            .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase());
        if let Some(d) = &apps_domain
            && let Err(e) = postern_sts::validate_domain(d)
        {
            problems.push(format!("apps_domain: {e}"));
        }
        let export = export::validate_export(self.export, &mut problems);
        let risk = risk::validate_risk(self.risk, &mut problems);
        let passwords = passwords::validate_passwords(self.passwords, &mut problems);
        let cluster = cluster::validate_cluster(self.cluster, &database_url, self.kek.is_some(), &mut problems);
        if let Some(kek) = &self.kek
            && let Err(e) = postern_keyring::Keyring::from_text(kek.expose())
        {
            problems.push(format!("kek: {e}"));
        }
        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            data_dir,
            public_url,
            listen,
            metrics_listen,
            apps_domain,
            database_url,
            database_max_connections: self.database_max_connections,
            kek: self.kek,
            log_format,
            trusted_proxies,
            tls,
            limits,
            control,
            export,
            risk,
            passwords,
            cluster,
        })
    }
}

/// The public URL, if one is configured: an http(s) origin, https unless on a
/// loopback address.
fn validate_public_url(raw: Option<&str>, problems: &mut Vec<String>) -> Option<Url> {
    match raw.map(Url::parse) {
        None => None,
        Some(Err(e)) => {
            problems.push(format!("public_url: {e}"));
            None
        }
        Some(Ok(u)) => {
            if !matches!(u.scheme(), "https" | "http") {
                problems.push("public_url must be an http(s) URL".into());
            }
            if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty() {
                problems.push("public_url must be an origin only, like https://login.example.com".into());
            }
            if u.scheme() == "http" && !is_loopback_host(&u) {
                problems.push(
                    "public_url must use https unless it is a loopback address (put a TLS listener or a TLS-terminating load balancer in front)".into(),
                );
            }
            Some(u)
        }
    }
}

/// The limits, defaults filling what `raw` leaves out.
fn validate_limits(raw_limits: RawLimits, problems: &mut Vec<String>) -> Limits {
    let d = Limits::default();
    let limits = Limits {
        max_connections: raw_limits.max_connections.unwrap_or(d.max_connections),
        max_body_bytes: raw_limits.max_body_bytes.unwrap_or(d.max_body_bytes),
        header_timeout: raw_limits
            .header_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(d.header_timeout),
        idle_timeout: raw_limits
            .idle_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(d.idle_timeout),
        request_timeout: raw_limits
            .request_timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(d.request_timeout),
        shutdown_grace: raw_limits
            .shutdown_grace_secs
            .map(Duration::from_secs)
            .unwrap_or(d.shutdown_grace),
        abuse: abuse::validate_abuse(&raw_limits, problems),
    };
    if limits.max_connections == 0 {
        problems.push("limits.max_connections must be at least 1".into());
    }
    if limits.max_body_bytes < 1024 {
        problems.push("limits.max_body_bytes must be at least 1024".into());
    }
    for (name, timeout) in [
        ("header_timeout_secs", limits.header_timeout),
        ("idle_timeout_secs", limits.idle_timeout),
        ("request_timeout_secs", limits.request_timeout),
    ] {
        if timeout.is_zero() {
            problems.push(format!("limits.{name} must be at least one second"));
        }
    }
    limits
}

/// The control endpoint's settings, defaults filling what `raw_control` leaves out.
fn validate_control(raw_control: RawControl, problems: &mut Vec<String>) -> ControlSettings {
    let mut control = ControlSettings::default();
    if let Some(l) = &raw_control.listen {
        match l.parse::<SocketAddr>() {
            Ok(a) => control.listen = a,
            Err(_) => problems.push(format!("control.listen {l:?} is not an address like 0.0.0.0:8443")),
        }
    }
    if let Some(u) = &raw_control.url {
        match Url::parse(u) {
            Ok(u) if u.scheme() == "https" && u.path() == "/" => control.url = Some(u),
            _ => problems.push("control.url must be an https origin, like https://connect.example.com:8443".into()),
        }
    }
    control.hostnames = raw_control.hostnames.clone().unwrap_or_default();
    match (&raw_control.tls_cert, &raw_control.tls_key) {
        (None, None) => {}
        (Some(cert), Some(key)) => {
            for (what, path) in [("control.tls_cert", cert), ("control.tls_key", key)] {
                if !path.is_file() {
                    problems.push(format!("{what} {} is not a readable file", path.display()));
                }
            }
            control.tls_files = Some((cert.clone(), key.clone(), raw_control.tls_anchors.clone()));
        }
        _ => problems.push("control needs both tls_cert and tls_key, or neither".into()),
    }
    if let Some(v) = &raw_control.minimum_component_version {
        match postern_control::UpdateSettings::parse_version(v) {
            Ok(_) => control.minimum_component_version = Some(v.clone()),
            Err(e) => problems.push(format!("control.minimum_component_version: {e}")),
        }
    }
    match raw_control.update_check_secs {
        Some(secs) if !(60..=7 * 86400).contains(&secs) => {
            problems.push("control.update_check_secs must be 60 to 604800".into())
        }
        Some(secs) => control.update_check = Duration::from_secs(secs),
        None => {}
    }
    control
}

/// The metrics listener's address, if one is configured: an address, and not
/// one of the service's other listeners (`taken`).
fn validate_metrics_listen(raw: Option<&str>, taken: &[SocketAddr], problems: &mut Vec<String>) -> Option<SocketAddr> {
    let raw = raw?;
    match raw.parse::<SocketAddr>() {
        Ok(addr) if addr.port() != 0 && taken.contains(&addr) => {
            problems.push(format!(
                "metrics_listen {raw:?} is the address of another listener: give metrics an address of their own"
            ));
            None
        }
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!("metrics_listen {raw:?} is not an address like 127.0.0.1:9090"));
            None
        }
    }
}

/// The listener's TLS settings, or `None` for plain HTTP; problems go to `problems`.
fn validate_tls(raw: RawTls, problems: &mut Vec<String>) -> Option<TlsSettings> {
    let problems_before = problems.len();
    let default = match (raw.cert, raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            check_file(problems, "tls.cert", &cert);
            check_file(problems, "tls.key", &key);
            Some(TlsFiles { cert, key })
        }
        _ => {
            problems.push("tls needs both cert and key, or neither".into());
            None
        }
    };
    let mut certificates = Vec::new();
    for (i, c) in raw.certificates.unwrap_or_default().into_iter().enumerate() {
        match (c.cert, c.key) {
            (Some(cert), Some(key)) => {
                check_file(problems, &format!("tls.certificates[{i}].cert"), &cert);
                check_file(problems, &format!("tls.certificates[{i}].key"), &key);
                certificates.push(TlsFiles { cert, key });
            }
            _ => problems.push(format!("tls.certificates[{i}] needs both cert and key")),
        }
    }
    if let Some(dir) = &raw.certificates_dir
        && !dir.is_dir()
    {
        problems.push(format!("tls.certificates_dir {} is not a directory", dir.display()));
    }
    let self_signed = raw.self_signed.unwrap_or(false);
    if self_signed && default.is_some() {
        problems.push("tls.self_signed and tls.cert/tls.key both give the default certificate: choose one".into());
    }
    let settings = TlsSettings {
        default,
        self_signed,
        self_signed_names: Vec::new(),
        certificates,
        certificates_dir: raw.certificates_dir,
    };
    let anything = settings.default.is_some()
        || settings.self_signed
        || !settings.certificates.is_empty()
        || settings.certificates_dir.is_some();
    if anything {
        Some(settings)
    } else {
        if raw.self_signed.is_none() && problems.len() == problems_before {
            // An empty `[tls]` table: most likely a mistake, not a wish for plain HTTP.
            problems.push("tls needs cert and key, certificates, certificates_dir or self_signed = true".into());
        }
        None
    }
}

fn check_file(problems: &mut Vec<String>, what: &str, path: &Path) {
    if !path.is_file() {
        problems.push(format!("{what} {} is not a readable file", path.display()));
    }
}

pub(crate) fn is_loopback_host(u: &Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// A configuration for tests and local use: everything in `data_dir`, listening
    /// on an ephemeral loopback port.
    pub fn local(data_dir: PathBuf) -> Self {
        Self {
            database_url: format!("sqlite://{}", data_dir.join("postern.db").display()),
            database_max_connections: None,
            data_dir,
            public_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            apps_domain: None,
            kek: None,
            log_format: LogFormat::Pretty,
            trusted_proxies: Vec::new(),
            tls: None,
            limits: Limits::default(),
            control: ControlSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..ControlSettings::default()
            },
            export: postern_export::ExportSettings::default(),
            risk: postern_sts::RiskConfig::default(),
            passwords: postern_sts::HashingSettings::default(),
            cluster: None,
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_listen_is_off_by_default_and_never_another_listener() {
        let default = RawConfig::default().validate().unwrap();
        assert_eq!(default.metrics_listen, None);
        let own = RawConfig {
            metrics_listen: Some("127.0.0.1:9090".into()),
            ..Default::default()
        };
        assert_eq!(
            own.validate().unwrap().metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
        for (raw, needle) in [("127.0.0.1:8080", "another listener"), ("nine", "not an address")] {
            let err = RawConfig {
                metrics_listen: Some(raw.into()),
                ..Default::default()
            }
            .validate()
            .unwrap_err();
            assert!(
                err.0.iter().any(|p| p.contains("metrics_listen") && p.contains(needle)),
                "{err}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let raw = RawConfig {
            public_url: Some("http://login.example.com/path".into()),
            listen: Some("nonsense".into()),
            database_url: Some("mysql://x".into()),
            database_max_connections: Some(0),
            log_format: Some("xml".into()),
            trusted_proxies: Some(vec!["10.0.0.0/8".into(), "bogus".into()]),
            tls: Some(RawTls {
                cert: Some("/nonexistent.pem".into()),
                key: None,
                ..Default::default()
            }),
            limits: Some(RawLimits {
                max_connections: Some(0),
                idle_timeout_secs: Some(0),
                ..Default::default()
            }),
            kek: Some(SecretString::from("1:short")),
            ..Default::default()
        };
        let err = raw.validate().unwrap_err();
        let all = err.0.join("\n");
        for needle in [
            "listen",
            "origin only",
            "https unless",
            "database_url",
            "database_max_connections",
            "log_format",
            "bogus",
            "cert and key",
            "max_connections",
            "limits.idle_timeout_secs",
            "kek",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(!all.contains("short"), "a secret value must not be echoed");
    }

    #[test]
    fn unknown_environment_variables_are_reported() {
        let vars = [
            "POSTERN_LISTEN",
            "POSTERN_TLS__CERT",
            "POSTERN_LISTEN_PORT",
            "POSTERN_CONFIG",
            "PATH",
            "POSTERN_TLS__KYE",
        ];
        let unknown = unknown_env_vars(vars.iter().map(|v| v.to_string()));
        assert_eq!(
            unknown,
            vec![
                "unknown environment variable POSTERN_LISTEN_PORT",
                "unknown environment variable POSTERN_TLS__KYE"
            ]
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = RawConfig::default().validate().unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert!(c.database_url.starts_with("sqlite://"));
        assert_eq!(c.database_max_connections, None, "the store's default for the database");
        assert!(c.public_url.is_none());
        let c = RawConfig {
            public_url: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.public_url.unwrap().as_str(), "http://127.0.0.1:9000/");
    }

    #[test]
    fn toml_with_unknown_keys_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:443\"\nlisten_port = 1\n[tls]\ncert = \"a\"\nkye = \"b\"\n",
        )
        .unwrap();
        let err = RawConfig::load(Some(&path), &RawConfig::default()).unwrap_err();
        let all = err.0.join("\n");
        assert!(all.contains("listen_port"), "{all}");
        let ok = dir.path().join("ok.toml");
        std::fs::write(
            &ok,
            "listen = \"0.0.0.0:8443\"\npublic_url = \"https://login.example.com\"\ndatabase_max_connections = 8\n[limits]\nmax_connections = 5\nidle_timeout_secs = 90\n",
        )
        .unwrap();
        let flags = RawConfig {
            listen: Some("127.0.0.1:9443".into()),
            ..Default::default()
        };
        let c = RawConfig::load(Some(&ok), &flags).unwrap().validate().unwrap();
        assert_eq!(c.listen.port(), 9443, "flags win over the file");
        assert_eq!(c.limits.max_connections, 5);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(90));
        assert_eq!(c.limits.header_timeout, Duration::from_secs(10), "the default");
        assert_eq!(c.database_max_connections, Some(8));
        assert!(RawConfig::load(Some(&dir.path().join("missing.toml")), &RawConfig::default()).is_err());
    }
    #[test]
    fn tls_certificates_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in ["default.crt", "default.key", "wiki.crt", "wiki.key"] {
            std::fs::write(d.join(f), "x").unwrap();
        }
        std::fs::create_dir(d.join("certs")).unwrap();
        let path = d.join("postern.toml");
        std::fs::write(
            &path,
            format!(
                "[tls]\ncert = \"{0}/default.crt\"\nkey = \"{0}/default.key\"\ncertificates_dir = \"{0}/certs\"\n\n[[tls.certificates]]\ncert = \"{0}/wiki.crt\"\nkey = \"{0}/wiki.key\"\n",
                d.display()
            ),
        )
        .unwrap();
        let c = RawConfig::load(Some(&path), &RawConfig::default())
            .unwrap()
            .validate()
            .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(tls.default.unwrap().cert, d.join("default.crt"));
        assert_eq!(
            tls.certificates,
            vec![TlsFiles {
                cert: d.join("wiki.crt"),
                key: d.join("wiki.key")
            }]
        );
        assert_eq!(tls.certificates_dir.unwrap(), d.join("certs"));
        assert!(!tls.self_signed);

        std::fs::write(&path, "[tls]\nself_signed = true\n").unwrap();
        let c = RawConfig::load(Some(&path), &RawConfig::default())
            .unwrap()
            .validate()
            .unwrap();
        let tls = c.tls.unwrap();
        assert!(tls.self_signed && tls.default.is_none());

        std::fs::write(&path, "[[tls.certificates]]\ncert = \"a\"\nkye = \"b\"\n").unwrap();
        let err = RawConfig::load(Some(&path), &RawConfig::default()).unwrap_err();
        assert!(err.0.join("\n").contains("kye"), "{err}");
    }

    #[test]
    fn tls_problems_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file.pem");
        std::fs::write(&file, "x").unwrap();
        let raw = |tls: RawTls| RawConfig {
            tls: Some(tls),
            ..Default::default()
        };
        let err = raw(RawTls {
            cert: Some(file.clone()),
            key: Some(file.clone()),
            self_signed: Some(true),
            certificates: Some(vec![
                RawCertificate {
                    cert: Some(file.clone()),
                    key: None,
                },
                RawCertificate {
                    cert: Some(file.clone()),
                    key: Some(dir.path().join("missing.key")),
                },
            ]),
            certificates_dir: Some(file.clone()),
        })
        .validate()
        .unwrap_err()
        .0
        .join("\n");
        for needle in [
            "self_signed and tls.cert/tls.key",
            "tls.certificates[0] needs both cert and key",
            "tls.certificates[1].key",
            "missing.key is not a readable file",
            "certificates_dir",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
        let err = raw(RawTls::default()).validate().unwrap_err().0.join("\n");
        assert!(err.contains("self_signed = true"), "an empty [tls] table: {err}");
        let off = raw(RawTls {
            self_signed: Some(false),
            ..Default::default()
        })
        .validate()
        .unwrap();
        assert!(off.tls.is_none(), "self_signed = false alone means plain HTTP");
    }
}
