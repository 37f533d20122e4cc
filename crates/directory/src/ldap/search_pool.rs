//! A bounded pool of connections bound as the service account, used only for searches.
//!
//! At most `size` connections exist at once: a search first takes one of `size`
//! semaphore permits, then an idle connection, and opens a new one only when none is
//! idle. A connection that fails or times out is dropped, never returned. Idle
//! connections older than [`MAX_IDLE`] are dropped too (AD closes idle connections
//! after 15 minutes), and a search that fails on a reused connection is tried once more
//! on a fresh one.
//!
//! User binds never use this pool: they change a connection's identity (they have
//! their own idle list in [`super::LdapDirectory`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, Scope, SearchOptions, SearchResult};
use tokio::sync::Semaphore;

use super::attributes::Entry;
use super::config::ServiceAccount;
use super::connection::{Connector, Unreachable};

/// Idle connections older than this are closed rather than reused.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(300);

/// Counts of the pool's connections, for tests and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Most connections the pool may hold.
    pub size: usize,
    /// Connections open now (idle or in use).
    pub open: usize,
    /// Of those, idle.
    pub idle: usize,
    /// Most connections ever open at once.
    pub peak_open: usize,
}

/// One search request.
pub(crate) struct Search<'a> {
    pub base: &'a str,
    pub filter: &'a str,
    pub attributes: &'a [&'a str],
    /// Entries beyond this are not wanted (the server answers sizeLimitExceeded).
    pub size_limit: i32,
}

pub(crate) struct SearchPool {
    connector: Arc<Connector>,
    service: Option<ServiceAccount>,
    permits: Semaphore,
    idle: Mutex<Vec<Pooled>>,
    gauge: Arc<Gauge>,
    size: usize,
}

/// Open-connection counters shared with every [`Pooled`] connection.
#[derive(Default)]
struct Gauge {
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// A service-bound connection; counted as open until dropped.
struct Pooled {
    ldap: Ldap,
    since: Instant,
    gauge: Arc<Gauge>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.gauge.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SearchPool {
    pub(crate) fn new(connector: Arc<Connector>, service: Option<ServiceAccount>, size: usize) -> Self {
        Self {
            connector,
            service,
            permits: Semaphore::new(size),
            idle: Mutex::new(Vec::with_capacity(size)),
            gauge: Arc::new(Gauge::default()),
            size,
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            open: self.gauge.open.load(Ordering::Relaxed),
            idle: self.idle.lock().map(|idle| idle.len()).unwrap_or(0),
            peak_open: self.gauge.peak.load(Ordering::Relaxed),
        }
    }

    /// Runs `search` and returns the entries (references and malformed entries left
    /// out). A result code other than success or sizeLimitExceeded is an error: the
    /// base DN or the filter is wrong, which is the agent's problem, not the user's.
    pub(crate) async fn search(&self, search: &Search<'_>) -> Result<Vec<Entry>, Unreachable> {
        let timeout = self.connector.operation_timeout();
        let _permit = tokio::time::timeout(timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                Unreachable(format!(
                    "all {} search connections stayed busy for {timeout:?}",
                    self.size
                ))
            })?
            .map_err(|_| Unreachable("search pool closed".into()))?;

        let mut retried = false;
        loop {
            let (mut conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.open().await?, false),
            };
            let options = SearchOptions::new().sizelimit(search.size_limit);
            let result = self
                .connector
                .deadline(
                    "search",
                    conn.ldap.with_search_options(options).search(
                        search.base,
                        Scope::Subtree,
                        search.filter,
                        search.attributes.to_vec(),
                    ),
                )
                .await;
            match result {
                Ok(SearchResult(raw, result)) => {
                    // 0 success, 4 sizeLimitExceeded (more than one match: the caller
                    // sees more entries than it wanted).
                    if result.rc == 0 || result.rc == 4 {
                        self.put_back(conn);
                        return Ok(raw.into_iter().filter_map(Entry::decode).collect());
                    }
                    if matches!(result.rc, 51 | 52 | 80) {
                        // busy, unavailable, other: the connection may be unusable.
                        drop(conn);
                    } else {
                        self.put_back(conn);
                    }
                    return Err(Unreachable(format!("search under {:?} failed: {result}", search.base)));
                }
                Err(e) if reused && !retried => {
                    // The server may have closed an idle connection; try a fresh one.
                    tracing::debug!(error = %e.0, "search on a reused connection failed; retrying");
                    drop(conn);
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn take_idle(&self) -> Option<Pooled> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if conn.since.elapsed() < MAX_IDLE && !conn.ldap.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, mut conn: Pooled) {
        if conn.ldap.is_closed() {
            return;
        }
        conn.since = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
    }

    /// Opens a connection and binds it as the service account (or leaves it anonymous).
    async fn open(&self) -> Result<Pooled, Unreachable> {
        let ldap = self.connector.open().await?;
        let open = self.gauge.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.gauge.peak.fetch_max(open, Ordering::Relaxed);
        let mut conn = Pooled {
            ldap,
            since: Instant::now(),
            gauge: self.gauge.clone(),
        };
        if let Some(service) = &self.service {
            let result = self
                .connector
                .deadline(
                    "service account bind",
                    conn.ldap.simple_bind(&service.dn, service.password.expose()),
                )
                .await?;
            if result.rc != 0 {
                // The text may say why (e.g. AD's data 52e); it never holds the password.
                return Err(Unreachable(format!(
                    "the service account {:?} could not bind (result {}: {}); check bind_dn and bind_password",
                    service.dn, result.rc, result.text
                )));
            }
        }
        Ok(conn)
    }
}
