//! TLS for the listener: rustls with the aws-lc-rs provider, TLS 1.2 and 1.3,
//! ALPN for HTTP/2 and HTTP/1.1, and a certificate per external host picked by the
//! client's SNI name.
//!
//! Certificates come from [`TlsSettings`]: the default pair (`tls.cert`,
//! `tls.key`) or a self-signed default generated in the data dir, a list
//! (`[[tls.certificates]]`) and a directory of `NAME.crt`/`NAME.pem` + `NAME.key`
//! pairs (`tls.certificates_dir`). Each certificate serves the DNS names of its
//! subjectAltName extension. They are parsed once into [`CertifiedKey`]s;
//! [`SniResolver::reload`] reads them all again and swaps the new set in, or keeps
//! the old one if anything is wrong.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postern_pki::ServerName;
use postern_time::{SharedClock, UnixTime};
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use url::Url;
use x509_parser::extensions::GeneralName;

use crate::ServiceError;
use crate::config::{Config, TlsFiles, TlsSettings};

/// Validity of a generated self-signed certificate.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A self-signed certificate this close to its end is replaced at start.
const SELF_SIGNED_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Backdating of a generated certificate, for clients whose clock is behind.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// One thing wrong with the certificates, naming the file or setting at fault.
/// A load reports every problem at once ([`ServiceError::Tls`]).
#[derive(Debug, thiserror::Error)]
enum TlsProblem {
    #[error("{}: not a readable PEM certificate chain: {source}", path.display())]
    UnreadableChain {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: not an X.509 certificate: {detail}", path.display())]
    NotX509 { path: PathBuf, detail: String },
    #[error("{}: unreadable subjectAltName: {detail}", path.display())]
    UnreadableNames { path: PathBuf, detail: String },
    #[error(
        "{} has no names in a subjectAltName extension; clients check host names against those only (not the subject's CN)",
        path.display()
    )]
    NoNames { path: PathBuf },
    #[error(
        "{}: names no host in its subjectAltName (only IP addresses); only the default certificate can serve clients without a host name",
        path.display()
    )]
    OnlyAddresses { path: PathBuf },
    #[error("{}: {source}", path.display())]
    KeyNotPrivate { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable PEM private key: {source}", path.display())]
    UnreadableKey {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: unsupported private key: {source}", path.display())]
    UnsupportedKey { path: PathBuf, source: rustls::Error },
    #[error("{} is not the private key of {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: {source}", path.display())]
    Rejected { path: PathBuf, source: rustls::Error },
    #[error("tls.certificates_dir {}: {source}", dir.display())]
    CertificatesDir { dir: PathBuf, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Generate(#[from] postern_pki::PkiError),
}

/// The listener's TLS: the acceptor, and the resolver behind it that can read
/// the certificates again.
pub(crate) struct PublicTls {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) resolver: Arc<SniResolver>,
}

/// The listener's TLS, or `None` if `config` asks for plain HTTP. `addr` is the
/// bound address, naming the service when there is no public URL.
pub(crate) fn acceptor(
    config: &Config,
    addr: SocketAddr,
    clock: &SharedClock,
) -> Result<Option<PublicTls>, ServiceError> {
    let Some(settings) = &config.tls else {
        return Ok(None);
    };
    let sources = Sources::new(settings, &config.data_dir, config.public_url.as_ref(), addr);
    let resolver = Arc::new(SniResolver::load(sources, clock.now())?);
    Ok(Some(PublicTls {
        acceptor: TlsAcceptor::from(server_config(resolver.clone())?),
        resolver,
    }))
}

/// TLS 1.2 and 1.3 with the aws-lc-rs provider, certificates from `resolver`,
/// ALPN `h2` then `http/1.1`.
fn server_config(resolver: Arc<SniResolver>) -> Result<Arc<ServerConfig>, ServiceError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServiceError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where the certificates come from; read again at each reload.
#[derive(Clone, Debug)]
struct Sources {
    default: Option<TlsFiles>,
    self_signed: Option<SelfSigned>,
    certificates: Vec<TlsFiles>,
    certificates_dir: Option<PathBuf>,
}

impl Sources {
    fn new(settings: &TlsSettings, data_dir: &Path, public_url: Option<&Url>, addr: SocketAddr) -> Self {
        Self {
            default: settings.default.clone(),
            self_signed: settings.self_signed.then(|| SelfSigned {
                dir: data_dir.join("tls"),
                names: self_signed_names(public_url, addr, &settings.self_signed_names),
            }),
            certificates: settings.certificates.clone(),
            certificates_dir: settings.certificates_dir.clone(),
        }
    }
}

/// Picks the certificate for a connection by its SNI name: the certificate naming
/// the host exactly, else one whose wildcard covers the host's first label, else
/// the default (also for clients sending no name, e.g. those dialling an IP address).
pub(crate) struct SniResolver {
    sources: Sources,
    table: RwLock<Arc<CertTable>>,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let table = self.current();
        f.debug_struct("SniResolver")
            .field("exact", &table.exact.len())
            .field("wildcard", &table.wildcard.len())
            .finish_non_exhaustive()
    }
}

impl SniResolver {
    /// Reads every certificate of `sources`; every problem is reported at once.
    fn load(sources: Sources, now: UnixTime) -> Result<Self, ServiceError> {
        let table = CertTable::load(&sources, now)?;
        Ok(Self {
            sources,
            table: RwLock::new(Arc::new(table)),
        })
    }

    /// Reads every certificate again (the list, the directory, the self-signed one)
    /// and serves the new set to the next handshakes. On any problem the current set
    /// stays and the error says why. `postern serve` calls it on SIGHUP.
    pub(crate) fn reload(&self, now: UnixTime) -> Result<(), ServiceError> {
        let table = Arc::new(CertTable::load(&self.sources, now)?);
        *self.table.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = table;
        tracing::info!("TLS certificates reloaded");
        Ok(())
    }

    fn current(&self) -> Arc<CertTable> {
        self.table
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The certificate for a client that sent `server_name` (or none).
    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        self.current().pick(server_name)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()))
    }
}

/// The certificates by the names they serve.
struct CertTable {
    /// Exact host names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertTable {
    fn load(sources: &Sources, now: UnixTime) -> Result<Self, ServiceError> {
        let mut problems = Vec::new();
        let mut default = None;
        if let Some(files) = &sources.default {
            match load_pair(files) {
                Ok(cert) => default = Some(cert),
                Err(e) => problems.push(e),
            }
        } else if let Some(self_signed) = &sources.self_signed {
            match self_signed.ensure(now) {
                Ok(cert) => default = Some(cert),
                Err(e) => problems.push(e),
            }
        }
        let mut pairs = sources.certificates.clone();
        if let Some(dir) = &sources.certificates_dir {
            match certificate_pairs(dir) {
                Ok((found, ignored)) => {
                    for reason in ignored {
                        tracing::warn!("tls.certificates_dir: {reason}");
                    }
                    pairs.extend(found);
                }
                Err(e) => problems.push(e),
            }
        }
        let mut others = Vec::new();
        for files in &pairs {
            match load_pair(files) {
                Ok(cert) if cert.dns.is_empty() => problems.push(TlsProblem::OnlyAddresses { path: cert.path }),
                Ok(cert) => others.push(cert),
                Err(e) => problems.push(e),
            }
        }
        if !problems.is_empty() {
            let said: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(ServiceError::Tls(said.join("; ")));
        }
        let mut all = default.into_iter().chain(others);
        let Some(first) = all.next() else {
            return Err(ServiceError::Tls(match &sources.certificates_dir {
                Some(dir) => format!(
                    "no certificate to serve: tls.certificates_dir {} holds no NAME.crt + NAME.key pair",
                    dir.display()
                ),
                None => "no certificate to serve".into(),
            }));
        };
        let default = first.key.clone();
        let all: Vec<Loaded> = std::iter::once(first).chain(all).collect();
        let mut claims: HashMap<String, &Loaded> = HashMap::new();
        for cert in &all {
            cert.warn_if_not_valid(now);
            for name in &cert.dns {
                match claims.get(name) {
                    Some(held) if held.not_after >= cert.not_after => tracing::warn!(
                        "TLS: {} and {} both name {name}; serving {}, valid longer",
                        held.path.display(),
                        cert.path.display(),
                        held.path.display()
                    ),
                    _ => {
                        claims.insert(name.clone(), cert);
                    }
                }
            }
        }
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (name, cert) in claims {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_owned(), cert.key.clone()),
                None => exact.insert(name, cert.key.clone()),
            };
        }
        tracing::info!(
            certificates = all.len(),
            default = %all[0].path.display(),
            names = exact.len() + wildcard.len(),
            "TLS certificates loaded"
        );
        Ok(Self {
            exact,
            wildcard,
            default,
        })
    }

    /// Exact name, then a wildcard for exactly the first label, then the default.
    fn pick(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(cert) = self.exact.get(&name) {
            return cert.clone();
        }
        if let Some((first, parent)) = name.split_once('.')
            && !first.is_empty()
            && let Some(cert) = self.wildcard.get(parent)
        {
            return cert.clone();
        }
        self.default.clone()
    }
}

/// A certificate chain and key, checked and ready to serve.
struct Loaded {
    /// The certificate file, for messages.
    path: PathBuf,
    key: Arc<CertifiedKey>,
    /// DNS names, lower case, valid wildcards (`*.example.com`) included.
    dns: Vec<String>,
    ips: Vec<IpAddr>,
    not_before: i64,
    not_after: i64,
}

impl Loaded {
    /// Expired or not yet valid certificates are served (refusing to start would
    /// take every other host down with them) but logged.
    fn warn_if_not_valid(&self, now: UnixTime) {
        if now.secs() >= self.not_after {
            tracing::warn!(
                "TLS: {} expired at {}; clients will refuse it until it is renewed",
                self.path.display(),
                unix_to_text(self.not_after)
            );
        } else if now.secs() < self.not_before {
            tracing::warn!(
                "TLS: {} is valid only from {}; clients will refuse it until then",
                self.path.display(),
                unix_to_text(self.not_before)
            );
        }
    }

    fn leaf(&self) -> &[u8] {
        self.key.cert.first().map(|c| c.as_ref()).unwrap_or_default()
    }
}

fn unix_to_text(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Reads, parses and checks one certificate chain and its key. Errors name the
/// file at fault.
fn load_pair(files: &TlsFiles) -> Result<Loaded, TlsProblem> {
    let (cert_path, key_path) = (&files.cert, &files.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|source| TlsProblem::UnreadableChain {
            path: cert_path.clone(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsProblem::NoCertificate {
            path: cert_path.clone(),
        });
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsProblem::NotX509 {
        path: cert_path.clone(),
        detail: e.to_string(),
    })?;
    let validity = parsed.validity();
    let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
    let (dns, ips) = subject_alt_names(&parsed, cert_path)?;
    postern_keyring::check_private_mode(key_path).map_err(|source| TlsProblem::KeyNotPrivate {
        path: key_path.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsProblem::UnreadableKey {
        path: key_path.clone(),
        source,
    })?;
    let signing_key =
        rustls::crypto::aws_lc_rs::sign::any_supported_type(&key).map_err(|source| TlsProblem::UnsupportedKey {
            path: key_path.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsProblem::KeyMismatch {
                key: key_path.clone(),
                cert: cert_path.clone(),
            });
        }
        Err(source) => {
            return Err(TlsProblem::Rejected {
                path: cert_path.clone(),
                source,
            });
        }
    }
    Ok(Loaded {
        path: files.cert.clone(),
        key: Arc::new(certified),
        dns,
        ips,
        not_before,
        not_after,
    })
}

/// The DNS names (lower case; wildcards only as a whole first label under at least
/// two more labels, per RFC 6125) and IP addresses of a certificate.
fn subject_alt_names(
    cert: &x509_parser::certificate::X509Certificate<'_>,
    path: &Path,
) -> Result<(Vec<String>, Vec<IpAddr>), TlsProblem> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsProblem::UnreadableNames {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    let (mut dns, mut ips) = (Vec::new(), Vec::new());
    for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if valid_dns_name(&name) {
                    dns.push(name);
                } else {
                    tracing::warn!(
                        "TLS: {}: ignoring the name {name:?}: wildcards must be a whole first label over at least two more (*.example.com)",
                        path.display()
                    );
                }
            }
            GeneralName::IPAddress(octets) => match <[u8; 4]>::try_from(*octets) {
                Ok(v4) => ips.push(IpAddr::from(v4)),
                Err(_) => {
                    if let Ok(v6) = <[u8; 16]>::try_from(*octets) {
                        ips.push(IpAddr::from(v6));
                    }
                }
            },
            _ => {}
        }
    }
    if dns.is_empty() && ips.is_empty() {
        return Err(TlsProblem::NoNames { path: path.to_owned() });
    }
    Ok((dns, ips))
}

/// A host name, or `*.` + a host name of at least two labels.
fn valid_dns_name(name: &str) -> bool {
    let host = match name.strip_prefix("*.") {
        Some(parent) => {
            if !parent.contains('.') {
                return false;
            }
            parent
        }
        None => name,
    };
    !host.is_empty() && !host.contains('*') && host.split('.').all(|label| !label.is_empty())
}

/// The `NAME.crt` (or `NAME.pem`) + `NAME.key` pairs in `dir`, by name, and the
/// reasons other candidate files are ignored. Hidden files and other extensions are
/// skipped silently.
fn certificate_pairs(dir: &Path) -> Result<(Vec<TlsFiles>, Vec<String>), TlsProblem> {
    let unreadable = |source: std::io::Error| TlsProblem::CertificatesDir {
        dir: dir.to_owned(),
        source,
    };
    let mut certs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut keys: BTreeMap<String, PathBuf> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let path = entry.map_err(unreadable)?.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') || !path.is_file() {
            continue;
        }
        let Some((stem, extension)) = file_name.rsplit_once('.') else {
            continue;
        };
        match extension {
            "crt" | "pem" => certs.entry(stem.to_owned()).or_default().push(path),
            "key" => {
                keys.insert(stem.to_owned(), path);
            }
            _ => {}
        }
    }
    let mut pairs = Vec::new();
    let mut ignored = Vec::new();
    for (stem, mut candidates) in certs {
        // `.crt` before `.pem`.
        candidates.sort_by_key(|p| p.extension().is_some_and(|e| e == "pem"));
        let mut candidates = candidates.into_iter();
        let Some(cert) = candidates.next() else {
            continue;
        };
        for other in candidates {
            ignored.push(format!(
                "{} ignored: {} is used for {stem}",
                other.display(),
                cert.display()
            ));
        }
        match keys.remove(&stem) {
            Some(key) => pairs.push(TlsFiles { cert, key }),
            None => ignored.push(format!("{} ignored: no {stem}.key beside it", cert.display())),
        }
    }
    for (stem, key) in keys {
        ignored.push(format!(
            "{} ignored: no {stem}.crt or {stem}.pem beside it",
            key.display()
        ));
    }
    Ok((pairs, ignored))
}

/// The names of the self-signed certificate: the public URL's host and, for a
/// domain, every name one label under it (published apps); `localhost` and the
/// loopback addresses for local use; then `extra` (lowercased, each once).
/// Without a public URL, the bound address.
fn self_signed_names(public_url: Option<&Url>, addr: SocketAddr, extra: &[String]) -> Vec<ServerName> {
    let mut names = Vec::new();
    match public_url.and_then(|u| u.host()) {
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if domain.contains('.') {
                names.push(ServerName::Dns(format!("*.{domain}")));
            }
            names.insert(0, ServerName::Dns(domain));
        }
        Some(url::Host::Ipv4(ip)) => names.push(ServerName::Ip(ip.into())),
        Some(url::Host::Ipv6(ip)) => names.push(ServerName::Ip(ip.into())),
        None if !addr.ip().is_unspecified() => names.push(ServerName::Ip(addr.ip())),
        None => {}
    }
    let local = [
        ServerName::Dns("localhost".into()),
        ServerName::Ip(Ipv4Addr::LOCALHOST.into()),
        ServerName::Ip(Ipv6Addr::LOCALHOST.into()),
    ];
    let extra = extra
        .iter()
        .map(|name| ServerName::Dns(name.trim().trim_end_matches('.').to_ascii_lowercase()));
    for name in local.into_iter().chain(extra) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A self-signed default certificate kept in the data dir.
#[derive(Clone, Debug)]
struct SelfSigned {
    /// `{data_dir}/tls`.
    dir: PathBuf,
    names: Vec<ServerName>,
}

impl SelfSigned {
    fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("self-signed.crt"),
            key: self.dir.join("self-signed.key"),
        }
    }

    /// The stored certificate if it is valid for a while yet and names all of
    /// `names`; else a new one, stored 0600. Logs its SHA-256 fingerprint either way.
    fn ensure(&self, now: UnixTime) -> Result<Loaded, TlsProblem> {
        let files = self.files();
        let (loaded, how) = match self.reusable(&files, now)? {
            Some(loaded) => (loaded, "reused"),
            None => {
                self.generate(&files, now)?;
                (load_pair(&files)?, "generated")
            }
        };
        tracing::info!(
            path = %files.cert.display(),
            names = %self.names.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
            sha256 = %fingerprint(loaded.leaf()),
            valid_until = %unix_to_text(loaded.not_after),
            "self-signed TLS certificate {how}: browsers warn about it; compare this fingerprint with the one they show"
        );
        Ok(loaded)
    }

    /// The stored certificate, if it can serve on; `None` to make a new one. A key
    /// others can read is an error, not a reason to replace it silently.
    fn reusable(&self, files: &TlsFiles, now: UnixTime) -> Result<Option<Loaded>, TlsProblem> {
        if !files.cert.exists() && !files.key.exists() {
            return Ok(None);
        }
        if files.key.exists() {
            postern_keyring::check_private_mode(&files.key).map_err(|source| TlsProblem::KeyNotPrivate {
                path: files.key.clone(),
                source,
            })?;
        }
        let loaded = match load_pair(files) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!("TLS: replacing the self-signed certificate: {e}");
                return Ok(None);
            }
        };
        let reason = if now.secs() < loaded.not_before || (now + SELF_SIGNED_RENEW_BEFORE).secs() >= loaded.not_after {
            Some("it expires soon or is not valid now")
        } else if !self.names.iter().all(|n| match n {
            ServerName::Dns(d) => loaded.dns.contains(d),
            ServerName::Ip(ip) => loaded.ips.contains(ip),
        }) {
            Some("the service's host changed")
        } else {
            None
        };
        match reason {
            Some(reason) => {
                tracing::info!("TLS: replacing the self-signed certificate: {reason}");
                Ok(None)
            }
            None => Ok(Some(loaded)),
        }
    }

    fn generate(&self, files: &TlsFiles, now: UnixTime) -> Result<(), TlsProblem> {
        let dir_problem = |source: std::io::Error| TlsProblem::Write {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(dir_problem)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_problem)?;
        }
        let made =
            postern_pki::self_signed_server(&self.names, now - CLOCK_SKEW_ALLOWANCE, now + SELF_SIGNED_VALIDITY)?;
        // The key first: a crash in between leaves a mismatched pair, which the next
        // start replaces.
        for (path, contents) in [
            (&files.key, made.key_pem.as_bytes()),
            (&files.cert, made.cert_pem.as_bytes()),
        ] {
            postern_keyring::replace_private_file(path, contents).map_err(|source| TlsProblem::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// SHA-256 of a certificate, as browsers show it (`AB:CD:…`).
fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixTime = UnixTime::from_secs(1_750_000_000);

    /// Writes a self-signed certificate for `names` and its key (0600) as
    /// `dir/stem.crt` and `dir/stem.key`; returns the files and the leaf's DER.
    fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> (TlsFiles, Vec<u8>) {
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        write_with(dir, stem, params)
    }

    fn write_with(dir: &Path, stem: &str, params: rcgen::CertificateParams) -> (TlsFiles, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        postern_keyring::replace_private_file(&files.key, key.serialize_pem().as_bytes()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        (files, cert.der().to_vec())
    }

    fn sources(default: Option<TlsFiles>, certificates: Vec<TlsFiles>, dir: Option<&Path>) -> Sources {
        Sources {
            default,
            self_signed: None,
            certificates,
            certificates_dir: dir.map(Path::to_path_buf),
        }
    }

    fn served(resolver: &SniResolver, name: Option<&str>) -> Vec<u8> {
        resolver.pick(name).cert[0].to_vec()
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn sni_picks_exact_then_one_label_wildcard_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let (login, login_der) = write_cert(dir.path(), "login", &["login.example.com"]);
        let (wiki, wiki_der) = write_cert(dir.path(), "wiki", &["wiki.example.com", "crm.example.com"]);
        let (apps, apps_der) = write_cert(dir.path(), "apps", &["*.apps.example.com"]);
        let (special, special_der) = write_cert(dir.path(), "special", &["special.apps.example.com"]);
        let resolver = SniResolver::load(sources(Some(login), vec![wiki, apps, special], None), NOW).unwrap();

        assert_eq!(served(&resolver, Some("login.example.com")), login_der);
        assert_eq!(served(&resolver, Some("wiki.example.com")), wiki_der);
        assert_eq!(served(&resolver, Some("crm.example.com")), wiki_der);
        assert_eq!(
            served(&resolver, Some("WIKI.Example.com.")),
            wiki_der,
            "case and a final dot do not matter"
        );
        assert_eq!(served(&resolver, Some("x.apps.example.com")), apps_der);
        assert_eq!(
            served(&resolver, Some("special.apps.example.com")),
            special_der,
            "exact before wildcard"
        );
        assert_eq!(
            served(&resolver, Some("a.b.apps.example.com")),
            login_der,
            "a wildcard covers one label only"
        );
        assert_eq!(
            served(&resolver, Some("apps.example.com")),
            login_der,
            "nor the parent itself"
        );
        assert_eq!(served(&resolver, Some("unknown.org")), login_der);
        assert_eq!(served(&resolver, None), login_der, "no SNI: the default");
    }

    #[test]
    fn without_a_default_pair_the_first_listed_certificate_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let (wiki, wiki_der) = write_cert(dir.path(), "wiki", &["wiki.example.com"]);
        let (crm, crm_der) = write_cert(dir.path(), "crm", &["crm.example.com"]);
        let resolver = SniResolver::load(sources(None, vec![wiki, crm], None), NOW).unwrap();
        assert_eq!(served(&resolver, None), wiki_der);
        assert_eq!(served(&resolver, Some("other.example.com")), wiki_der);
        assert_eq!(served(&resolver, Some("crm.example.com")), crm_der);
    }

    #[test]
    fn wildcards_follow_rfc_6125() {
        assert!(valid_dns_name("*.apps.example.com"));
        assert!(valid_dns_name("*.example.com"));
        assert!(valid_dns_name("wiki.example.com"));
        assert!(!valid_dns_name("*.com"), "a wildcard over a top-level domain");
        assert!(!valid_dns_name("w*.example.com"), "partial label");
        assert!(!valid_dns_name("wiki.*.example.com"), "not the first label");
        assert!(!valid_dns_name("*.*.example.com"));
        assert!(!valid_dns_name("a..example.com"));
        // Such names are dropped; a certificate left with none is refused.
        let dir = tempfile::tempdir().unwrap();
        let (bad, _) = write_cert(dir.path(), "bad", &["*.com", "w*.example.com"]);
        let err = SniResolver::load(sources(None, vec![bad], None), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.crt") && err.contains("subjectAltName"), "{err}");
    }

    #[test]
    fn directory_pairs_are_loaded_and_unpaired_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_der) = write_cert(dir.path(), "a", &["a.example.com"]);
        // `NAME.pem` works as well as `NAME.crt`.
        let (b, b_der) = write_cert(dir.path(), "b", &["b.example.com"]);
        let b_pem = dir.path().join("b.pem");
        std::fs::rename(&b.cert, &b_pem).unwrap();
        // A certificate without a key, a key without a certificate, noise.
        let (c, _) = write_cert(dir.path(), "c", &["c.example.com"]);
        std::fs::remove_file(&c.key).unwrap();
        let (d, _) = write_cert(dir.path(), "d", &["d.example.com"]);
        std::fs::remove_file(&d.cert).unwrap();
        std::fs::write(dir.path().join("README.txt"), "certificates").unwrap();
        std::fs::write(dir.path().join(".hidden.crt"), "junk").unwrap();
        std::fs::create_dir(dir.path().join("sub.crt")).unwrap();

        let (pairs, ignored) = certificate_pairs(dir.path()).unwrap();
        assert_eq!(
            pairs,
            vec![
                a.clone(),
                TlsFiles {
                    cert: b_pem,
                    key: b.key.clone()
                }
            ]
        );
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(
            ignored[0].contains("c.crt") && ignored[0].contains("no c.key"),
            "{ignored:?}"
        );
        assert!(
            ignored[1].contains("d.key") && ignored[1].contains("no d.crt"),
            "{ignored:?}"
        );

        let resolver = SniResolver::load(sources(None, vec![], Some(dir.path())), NOW).unwrap();
        assert_eq!(served(&resolver, Some("a.example.com")), a_der);
        assert_eq!(served(&resolver, Some("b.example.com")), b_der);
        assert_eq!(served(&resolver, Some("c.example.com")), a_der, "unpaired: not served");
    }

    #[test]
    fn an_empty_directory_alone_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = SniResolver::load(sources(None, vec![], Some(dir.path())), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no certificate to serve"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = write_cert(dir.path(), "a", &["a.example.com"]);
        set_mode(&a.key, 0o644);
        let err = SniResolver::load(sources(None, vec![], Some(dir.path())), NOW)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&a.key.display().to_string()), "names the file: {err}");
        assert!(err.contains("chmod 600"), "{err}");
        set_mode(&a.key, 0o600);
        assert!(SniResolver::load(sources(None, vec![], Some(dir.path())), NOW).is_ok());
    }

    #[test]
    fn unusable_files_are_refused_naming_each() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = write_cert(dir.path(), "a", &["a.example.com"]);
        let (b, _) = write_cert(dir.path(), "b", &["b.example.com"]);
        let mismatched = TlsFiles {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let not_pem = TlsFiles {
            cert: garbage.clone(),
            key: a.key.clone(),
        };
        let bad_key = dir.path().join("bad.key");
        postern_keyring::replace_private_file(
            &bad_key,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let unusable_key = TlsFiles {
            cert: b.cert.clone(),
            key: bad_key.clone(),
        };
        let (nameless, _) = write_with(dir.path(), "nameless", rcgen::CertificateParams::default());
        let err = SniResolver::load(
            sources(Some(mismatched), vec![not_pem, unusable_key, nameless], None),
            NOW,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!(
                "{} is not the private key of {}",
                b.key.display(),
                a.cert.display()
            )),
            "{err}"
        );
        assert!(
            err.contains(&format!("{} holds no PEM certificate", garbage.display())),
            "{err}"
        );
        assert!(err.contains(&format!("{}: ", bad_key.display())), "{err}");
        assert!(err.contains("nameless.crt has no names"), "{err}");
    }

    #[test]
    fn an_expired_certificate_is_served_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.example.com".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let (old, old_der) = write_with(dir.path(), "old", params);
        let resolver = SniResolver::load(sources(None, vec![old], None), NOW).unwrap();
        assert_eq!(served(&resolver, Some("old.example.com")), old_der);
    }

    #[test]
    fn of_two_certificates_for_one_name_the_one_valid_longer_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["wiki.example.com".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let (short, short_der) = write_with(dir.path(), "short", params);
        let mut params = rcgen::CertificateParams::new(vec!["wiki.example.com".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 1);
        let (long, long_der) = write_with(dir.path(), "long", params);
        let resolver = SniResolver::load(sources(None, vec![short.clone(), long.clone()], None), NOW).unwrap();
        assert_eq!(served(&resolver, Some("wiki.example.com")), long_der);
        let resolver = SniResolver::load(sources(None, vec![long, short], None), NOW).unwrap();
        assert_eq!(served(&resolver, Some("wiki.example.com")), long_der);
        assert_ne!(short_der, long_der);
    }

    #[test]
    fn reload_swaps_certificates_in_and_keeps_the_old_ones_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let (_, first_der) = write_cert(dir.path(), "wiki", &["wiki.example.com"]);
        let resolver = SniResolver::load(sources(None, vec![], Some(dir.path())), NOW).unwrap();
        assert_eq!(served(&resolver, Some("wiki.example.com")), first_der);

        // Renewed in place, and a new host added.
        let (_, renewed_der) = write_cert(dir.path(), "wiki", &["wiki.example.com"]);
        let (_, crm_der) = write_cert(dir.path(), "crm", &["crm.example.com"]);
        resolver.reload(NOW).unwrap();
        assert_eq!(served(&resolver, Some("wiki.example.com")), renewed_der);
        assert_eq!(served(&resolver, Some("crm.example.com")), crm_der);

        // A broken file: the reload fails and the current set stays.
        std::fs::write(dir.path().join("crm.crt"), "truncated").unwrap();
        let err = resolver.reload(NOW).unwrap_err().to_string();
        assert!(err.contains("crm.crt"), "{err}");
        assert_eq!(served(&resolver, Some("crm.example.com")), crm_der);
    }

    fn self_signed(data_dir: &Path, public_url: &str) -> SelfSigned {
        SelfSigned {
            dir: data_dir.join("tls"),
            names: self_signed_names(
                Some(&Url::parse(public_url).unwrap()),
                "0.0.0.0:443".parse().unwrap(),
                &[],
            ),
        }
    }

    #[test]
    fn self_signed_names_cover_the_host_its_apps_and_localhost() {
        let names = self_signed_names(
            Some(&Url::parse("https://login.example.com").unwrap()),
            "0.0.0.0:443".parse().unwrap(),
            &[],
        );
        assert_eq!(
            names,
            vec![
                ServerName::Dns("login.example.com".into()),
                ServerName::Dns("*.login.example.com".into()),
                ServerName::Dns("localhost".into()),
                ServerName::Ip(Ipv4Addr::LOCALHOST.into()),
                ServerName::Ip(Ipv6Addr::LOCALHOST.into()),
            ]
        );
        let names = self_signed_names(None, "192.0.2.7:443".parse().unwrap(), &[]);
        assert_eq!(names[0], ServerName::Ip("192.0.2.7".parse().unwrap()));
        assert_eq!(self_signed_names(None, "0.0.0.0:443".parse().unwrap(), &[]).len(), 3);
    }

    #[test]
    fn self_signed_names_take_extra_names_once() {
        let extra = [
            "*.demo.localhost".to_owned(),
            "Wiki.Demo.Localhost.".to_owned(),
            "localhost".to_owned(),
        ];
        let names = self_signed_names(
            Some(&Url::parse("https://localhost:9443").unwrap()),
            "127.0.0.1:9443".parse().unwrap(),
            &extra,
        );
        assert_eq!(
            names,
            vec![
                ServerName::Dns("localhost".into()),
                ServerName::Ip(Ipv4Addr::LOCALHOST.into()),
                ServerName::Ip(Ipv6Addr::LOCALHOST.into()),
                ServerName::Dns("*.demo.localhost".into()),
                ServerName::Dns("wiki.demo.localhost".into()),
            ]
        );
    }

    #[test]
    fn a_self_signed_certificate_without_a_new_extra_name_is_replaced() {
        let data = tempfile::tempdir().unwrap();
        let url = Url::parse("https://localhost:9443").unwrap();
        let addr: SocketAddr = "127.0.0.1:9443".parse().unwrap();
        let plain = SelfSigned {
            dir: data.path().join("tls"),
            names: self_signed_names(Some(&url), addr, &[]),
        };
        let first = plain.ensure(NOW).unwrap();
        assert!(!first.dns.contains(&"*.demo.localhost".to_string()));
        let demo = SelfSigned {
            names: self_signed_names(Some(&url), addr, &["*.demo.localhost".to_owned()]),
            ..plain
        };
        let second = demo.ensure(NOW).unwrap();
        assert_ne!(
            second.leaf(),
            first.leaf(),
            "a certificate missing a wanted name is replaced"
        );
        assert!(second.dns.contains(&"*.demo.localhost".to_string()));
        assert_eq!(demo.ensure(NOW).unwrap().leaf(), second.leaf(), "then reused");
    }

    #[test]
    fn self_signed_is_generated_private_then_reused_then_renewed() {
        let data = tempfile::tempdir().unwrap();
        let spec = self_signed(data.path(), "https://login.example.com");
        let first = spec.ensure(NOW).unwrap();
        let files = spec.files();
        assert_eq!(files.cert, data.path().join("tls/self-signed.crt"));
        #[cfg(unix)]
        for path in [&files.cert, &files.key] {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(first.dns, vec!["login.example.com", "*.login.example.com", "localhost"]);
        assert!(first.not_before <= NOW.secs() && NOW.secs() + 300 * 24 * 3600 < first.not_after);
        let (_, parsed) = x509_parser::parse_x509_certificate(first.leaf()).unwrap();
        assert!(!parsed.is_ca());

        // The next start reuses it.
        let later = NOW + Duration::from_secs(100 * 24 * 3600);
        let again = spec.ensure(later).unwrap();
        assert_eq!(again.leaf(), first.leaf());

        // Close to its end, it is replaced.
        let near_end = NOW + Duration::from_secs(340 * 24 * 3600);
        let renewed = spec.ensure(near_end).unwrap();
        assert_ne!(renewed.leaf(), first.leaf());
        assert!(renewed.not_after > near_end.secs() + 300 * 24 * 3600);

        // A new public host gets a new certificate.
        let moved = self_signed(data.path(), "https://sso.example.org");
        let other = moved.ensure(near_end).unwrap();
        assert_ne!(other.leaf(), renewed.leaf());
        assert!(other.dns.contains(&"*.sso.example.org".to_string()));

        // The resolver serves it as the default.
        let resolver = SniResolver::load(
            Sources {
                default: None,
                self_signed: Some(moved),
                certificates: vec![],
                certificates_dir: None,
            },
            near_end,
        )
        .unwrap();
        assert_eq!(served(&resolver, None), other.leaf());
        assert_eq!(served(&resolver, Some("wiki.sso.example.org")), other.leaf());
        assert_eq!(fingerprint(other.leaf()).len(), 32 * 3 - 1);
    }

    #[test]
    fn a_damaged_self_signed_pair_is_replaced() {
        let data = tempfile::tempdir().unwrap();
        let spec = self_signed(data.path(), "https://login.example.com");
        let first = spec.ensure(NOW).unwrap();
        std::fs::write(spec.files().cert, "half written").unwrap();
        let second = spec.ensure(NOW).unwrap();
        assert_ne!(second.leaf(), first.leaf());
    }

    #[cfg(unix)]
    #[test]
    fn a_self_signed_key_others_can_read_is_refused() {
        let data = tempfile::tempdir().unwrap();
        let spec = self_signed(data.path(), "https://login.example.com");
        spec.ensure(NOW).unwrap();
        set_mode(&spec.files().key, 0o640);
        let err = spec.ensure(NOW).err().unwrap();
        assert!(matches!(err, TlsProblem::KeyNotPrivate { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("self-signed.key") && err.contains("chmod 600"), "{err}");
    }
}
