//! Sign-in risk (SEC-10): the facts behind each signal, gathered here and
//! judged by `postern_policy`. Every signal comes with a sentence for the
//! sign-in log.
//!
//! - Anonymising networks: a file of addresses and ranges (one a line, Tor's
//!   exit list format too), reread whenever its modification time or size
//!   changes. High.
//! - A network the user has not signed in from (smart lockout's familiar
//!   networks, [`crate::lockout::FAMILIAR_FOR`]), for a user known from at least
//!   one other. Low.
//! - Impossible travel from the user's last successful sign-in, only where a
//!   GeoIP database (MaxMind's format) is configured. Medium.
//! - Password spraying: many accounts failing from one network in the recent
//!   window. High. Brute force: one account failing from many networks.
//!   Medium. Both read the sign-in log, bounded in time and rows, summarized
//!   per tenant for a few seconds (at once again after a failure logged here).
//! - The risk an administrator set for the user, with their reason.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use postern_policy::{AddressList, RiskAssessment, RiskLevel, Sighting, SignalKind};
use postern_store::{Tenant, User};
use postern_time::UnixTime;

use crate::Sts;
use crate::client_ip::ClientIp;
use crate::error::StsError;
use crate::lockout::FAMILIAR_FOR;

/// Where risk signals come from, and their thresholds.
#[derive(Clone, Debug)]
pub struct RiskConfig {
    /// A file of anonymising networks (Tor exits, VPN ranges), one address or
    /// CIDR a line; reread when it changes.
    pub anonymizers_file: Option<PathBuf>,
    /// A GeoIP database in MaxMind's format (GeoLite2-City or GeoIP2-City);
    /// without one, impossible travel is not judged.
    pub geoip_database: Option<PathBuf>,
    /// How far back failures count for spraying and brute force.
    pub window: Duration,
    /// Accounts failing from one network within the window that make it spraying.
    pub spray_accounts: usize,
    /// Networks one account fails from within the window that make it brute force.
    pub brute_force_networks: usize,
    /// Faster than this (km/h) between two sign-ins is impossible travel.
    pub max_travel_kmh: f64,
}

impl Default for RiskConfig {
    fn default() -> Self {
        Self {
            anonymizers_file: None,
            geoip_database: None,
            window: Duration::from_secs(10 * 60),
            spray_accounts: 10,
            brute_force_networks: 5,
            max_travel_kmh: 1000.0,
        }
    }
}

/// Failures read from the sign-in log at most this many per tenant and look.
const MAX_FAILURES_READ: i64 = 5000;
/// A tenant's failure summary is reused this long (service clock).
const FAILURES_FRESH_FOR: Duration = Duration::from_secs(5);

/// Who failed from where, recently.
#[derive(Debug, Default)]
struct FailureSummary {
    accounts_by_network: HashMap<String, HashSet<String>>,
    networks_by_account: HashMap<String, HashSet<String>>,
}

/// A file read again when its modification time or size changes.
struct Reloading<T> {
    path: PathBuf,
    loaded: Option<(SystemTime, u64, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(path: PathBuf) -> Self {
        Self { path, loaded: None }
    }

    /// The current contents, reloaded with `load` when the file changed. A file
    /// that cannot be read keeps the last good contents (logged).
    fn current(&mut self, load: impl FnOnce(&Path) -> Result<T, String>) -> Option<Arc<T>> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        match (&self.loaded, stamp) {
            (Some((at, len, value)), Some((now_at, now_len))) if *at == now_at && *len == now_len => {
                return Some(value.clone());
            }
            (_, None) => {
                tracing::warn!(path = %self.path.display(), "risk: file unreadable; keeping what was loaded");
                return self.loaded.as_ref().map(|(_, _, v)| v.clone());
            }
            _ => {}
        }
        let (modified, len) = stamp?;
        match load(&self.path) {
            Ok(value) => {
                let value = Arc::new(value);
                self.loaded = Some((modified, len, value.clone()));
                Some(value)
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "risk: file not loaded; keeping what was loaded");
                self.loaded.as_ref().map(|(_, _, v)| v.clone())
            }
        }
    }
}

fn load_anonymizers(path: &Path) -> Result<AddressList, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (list, bad) = AddressList::parse(&text);
    if !bad.is_empty() {
        tracing::warn!(path = %path.display(), lines = ?bad.iter().map(|(n, _)| n).collect::<Vec<_>>(), "risk: lines of the anonymising networks file ignored");
    }
    tracing::info!(path = %path.display(), entries = list.len(), "risk: anonymising networks loaded");
    Ok(list)
}

type GeoReader = maxminddb::Reader<Vec<u8>>;

fn load_geoip(path: &Path) -> Result<GeoReader, String> {
    maxminddb::Reader::open_readfile(path).map_err(|e| e.to_string())
}

/// Whether `path` opens as a GeoIP database (MaxMind's format); why not.
pub fn check_geoip_database(path: &Path) -> Result<(), String> {
    load_geoip(path).map(|_| ())
}

/// Latitude and longitude of an address, from a City database.
#[derive(serde::Deserialize)]
struct GeoRecord {
    location: Option<GeoLocation>,
}

#[derive(serde::Deserialize)]
struct GeoLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

fn locate(reader: &GeoReader, ip: IpAddr) -> Option<(f64, f64)> {
    let record: GeoRecord = reader.lookup(ip).ok()?.decode().ok()??;
    let location = record.location?;
    Some((location.latitude?, location.longitude?))
}

/// The per-process state of risk assessment: the files, and recent failures.
pub(crate) struct RiskAssessor {
    config: RiskConfig,
    anonymizers: Option<Mutex<Reloading<AddressList>>>,
    geoip: Option<Mutex<Reloading<GeoReader>>>,
    failures: Mutex<HashMap<String, (UnixTime, Arc<FailureSummary>)>>,
}

impl std::fmt::Debug for RiskAssessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskAssessor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RiskAssessor {
    pub(crate) fn new(config: RiskConfig) -> Self {
        Self {
            anonymizers: config.anonymizers_file.clone().map(|p| Mutex::new(Reloading::new(p))),
            geoip: config.geoip_database.clone().map(|p| Mutex::new(Reloading::new(p))),
            failures: Mutex::new(HashMap::new()),
            config,
        }
    }

    fn anonymizers(&self) -> Option<Arc<AddressList>> {
        self.anonymizers.as_ref()?.lock().ok()?.current(load_anonymizers)
    }

    fn geoip(&self) -> Option<Arc<GeoReader>> {
        self.geoip.as_ref()?.lock().ok()?.current(load_geoip)
    }

    /// Forgets a tenant's failure summary (a failure was just logged here).
    pub(crate) fn failure_logged(&self, tenant_id: &str) {
        if let Ok(mut cache) = self.failures.lock() {
            cache.remove(tenant_id);
        }
    }

    fn cached_failures(&self, tenant_id: &str, now: UnixTime) -> Option<Arc<FailureSummary>> {
        let cache = self.failures.lock().ok()?;
        let (at, summary) = cache.get(tenant_id)?;
        (now.since(*at) < FAILURES_FRESH_FOR && *at <= now).then(|| summary.clone())
    }

    fn keep_failures(&self, tenant_id: &str, now: UnixTime, summary: Arc<FailureSummary>) {
        if let Ok(mut cache) = self.failures.lock() {
            cache.insert(tenant_id.to_owned(), (now, summary));
        }
    }
}

impl Sts {
    /// The sign-in risk of `username` (the account `user`, if it exists) of
    /// `tenant` signing in from `ip` now, with every signal explained.
    pub async fn assess_risk(
        &self,
        tenant: &Tenant,
        username: &str,
        user: Option<&User>,
        ip: ClientIp,
    ) -> Result<RiskAssessment, StsError> {
        let mut risk = RiskAssessment::default();
        let now = self.now();
        if let Some(list) = self.risk.anonymizers()
            && list.contains(ip.0)
        {
            risk.raise(
                SignalKind::AnonymizingNetwork,
                RiskLevel::High,
                format!("{ip} is on the list of anonymising networks"),
            );
        }
        self.failure_signals(tenant, username, ip, now, &mut risk).await?;
        if let Some(user) = user {
            self.user_signals(tenant, user, ip, now, &mut risk).await?;
        }
        Ok(risk)
    }

    async fn user_signals(
        &self,
        tenant: &Tenant,
        user: &User,
        ip: ClientIp,
        now: UnixTime,
        risk: &mut RiskAssessment,
    ) -> Result<(), StsError> {
        if let Some(set) = self.store.user_risk(&tenant.id, &user.id).await? {
            risk.raise(
                SignalKind::UserRisk,
                set.level,
                format!("an administrator set the user's risk to {}: {}", set.level, set.reason),
            );
        }
        let network = ip.network();
        let since = now - FAMILIAR_FOR;
        let seen = self.store.network_last_seen(&user.id, &network).await?;
        if seen.is_none_or(|at| at < since) {
            let known = self.store.familiar_network_count(&user.id, since).await?;
            if known > 0 {
                risk.raise(
                    SignalKind::UnfamiliarNetwork,
                    RiskLevel::Low,
                    format!("no successful sign-in from {network} in 90 days (known from {known} other networks)"),
                );
            }
        }
        if let Some(reader) = self.risk.geoip()
            && let Some((last_ip, last_at)) = self.store.last_success(&user.id).await?
            && let Ok(last_ip) = last_ip.parse::<IpAddr>()
            && let (Some(from), Some(to)) = (locate(&reader, last_ip), locate(&reader, ip.0))
        {
            let before = Sighting {
                latitude: from.0,
                longitude: from.1,
                at: last_at.secs(),
            };
            let here = Sighting {
                latitude: to.0,
                longitude: to.1,
                at: now.secs(),
            };
            if let Some(t) = postern_policy::impossible_travel(&before, &here, self.config.risk.max_travel_kmh) {
                risk.raise(
                    SignalKind::ImpossibleTravel,
                    RiskLevel::Medium,
                    format!(
                        "{:.0} km from the last sign-in ({last_ip}) in {:.1} h: {:.0} km/h",
                        t.km, t.hours, t.kmh
                    ),
                );
            }
        }
        Ok(())
    }

    async fn failure_signals(
        &self,
        tenant: &Tenant,
        username: &str,
        ip: ClientIp,
        now: UnixTime,
        risk: &mut RiskAssessment,
    ) -> Result<(), StsError> {
        let config = &self.config.risk;
        let summary = match self.risk.cached_failures(&tenant.id, now) {
            Some(s) => s,
            None => {
                let rows = self
                    .store
                    .recent_failures(&tenant.id, now - config.window, MAX_FAILURES_READ)
                    .await?;
                let mut summary = FailureSummary::default();
                for row in rows {
                    let Ok(addr) = row.ip.parse::<IpAddr>() else {
                        continue;
                    };
                    let network = ClientIp(addr).network();
                    summary
                        .accounts_by_network
                        .entry(network.clone())
                        .or_default()
                        .insert(row.username.clone());
                    summary
                        .networks_by_account
                        .entry(row.username)
                        .or_default()
                        .insert(network);
                }
                let summary = Arc::new(summary);
                self.risk.keep_failures(&tenant.id, now, summary.clone());
                summary
            }
        };
        let minutes = config.window.as_secs() / 60;
        let network = ip.network();
        let accounts = summary.accounts_by_network.get(&network).map_or(0, HashSet::len);
        if accounts >= config.spray_accounts.max(1) {
            risk.raise(
                SignalKind::PasswordSpraying,
                RiskLevel::High,
                format!("{accounts} accounts failed from {network} in the last {minutes} minutes"),
            );
        }
        let networks = summary.networks_by_account.get(username).map_or(0, HashSet::len);
        if networks >= config.brute_force_networks.max(1) {
            risk.raise(
                SignalKind::BruteForce,
                RiskLevel::Medium,
                format!("this account failed from {networks} networks in the last {minutes} minutes"),
            );
        }
        Ok(())
    }
}
