//! Rate limits at the front door (SEC-9): token buckets (governor's GCRA) per
//! client address, per app and per tenant. A request over a limit is answered
//! 429 with `Retry-After` (whole seconds, rounded up) and names the limit that
//! tripped.
//!
//! - Per client address: every request on the public listener, the service's
//!   own routes included. IPv4 addresses count one by one; IPv6 addresses by
//!   their /64, the block one subscriber usually holds.
//! - Per app and per tenant: requests for published apps, after routing. An app
//!   or tenant with its own rate gets a bucket of that size.
//!
//! Memory stays bounded under a flood from ever new (or spoofed) addresses:
//! buckets that have filled up again (indistinguishable from new ones) are
//! dropped at most once a second, and when more than [`MAX_TRACKED_KEYS`]
//! are still in use, every bucket of that kind starts again full.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use postern_pages::Page;
use postern_store::{App, TenantLimits};

/// Most keys (addresses, apps, tenants) one kind of limit tracks; past it,
/// after dropping idle buckets, the buckets of that kind start again.
pub const MAX_TRACKED_KEYS: usize = 100_000;

/// Checks between two looks at whether idle buckets are due to be dropped.
const CLEANUP_EVERY_CHECKS: u64 = 1024;

/// How often idle buckets are dropped at most.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(1);

/// A token bucket's size: `per_second` tokens come back each second, up to
/// `burst` held at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    per_second: NonZeroU32,
    burst: NonZeroU32,
}

impl Rate {
    /// A rate of `per_second` requests a second with bursts of `burst`; `None`
    /// when either is zero.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// Requests a second, sustained.
    pub fn per_second(self) -> u32 {
        self.per_second.get()
    }

    /// Requests at once, from a full bucket.
    pub fn burst(self) -> u32 {
        self.burst.get()
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.per_second).allow_burst(self.burst)
    }
}

/// The installation's rates; `None` turns a limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Per client address, every request on the public listener.
    pub client: Option<Rate>,
    /// Per app, unless the app has its own.
    pub app: Option<Rate>,
    /// Per tenant, over all its apps, unless the tenant has its own.
    pub tenant: Option<Rate>,
}

impl Default for RateLimitSettings {
    /// 100/s (bursts of 200) per client address: generous for an office behind
    /// one NAT address; 500/s (1000) per app and 750/s (1500) per tenant, as the
    /// seeds' provider has it.
    fn default() -> Self {
        Self {
            client: Rate::new(100, 200),
            app: Rate::new(500, 1000),
            tenant: Rate::new(750, 1500),
        }
    }
}

impl RateLimitSettings {
    /// Every rate limit off.
    pub fn off() -> Self {
        Self {
            client: None,
            app: None,
            tenant: None,
        }
    }
}

/// Which limit a request went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The client address's.
    Client,
    /// The app's.
    App,
    /// The tenant's.
    Tenant,
}

impl LimitKind {
    /// The name in answers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Client => "client",
            LimitKind::App => "app",
            LimitKind::Tenant => "tenant",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            LimitKind::Client => "Too many requests came from your network address.",
            LimitKind::App => "This application is receiving more requests than it accepts.",
            LimitKind::Tenant => "This organisation's applications are receiving more requests than they accept.",
        }
    }
}

/// A request over a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// The limit it went over.
    pub limit: LimitKind,
    /// When a request would pass again.
    pub retry_after: Duration,
}

impl Throttled {
    /// Counts the refusal in `postern_rate_limited_total`.
    fn count(&self) {
        postern_metrics::record::rate_limited(self.limit.as_str());
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        secs.max(1)
    }

    /// The 429 answer: JSON for API clients (`wants_json`), else a small page;
    /// both name the limit and when to come back.
    pub fn response(&self, wants_json: bool) -> Response {
        let secs = self.retry_after_secs();
        let mut response = if wants_json {
            let body = serde_json::json!({
                "error": "rate_limited",
                "limit": self.limit.as_str(),
                "retry_after": secs,
            });
            let mut r = Response::new(Body::from(body.to_string()));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        } else {
            Page::error(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                self.limit.explanation(),
            )
            .para(format!(
                "Try again in {secs} second{}. (Limit: {}.)",
                if secs == 1 { "" } else { "s" },
                self.limit.as_str()
            ))
            .into_response()
        };
        *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// Whether an answer to this request should be JSON: API paths, and clients
/// that accept JSON.
pub fn wants_json<B>(request: &http::Request<B>) -> bool {
    request.uri().path().starts_with("/api/")
        || request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json"))
}

/// The key a client address counts under: itself, or its /64 for IPv6.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

type KeyedLimiter<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Token buckets by key, one keyed limiter per distinct rate.
pub struct Buckets<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    clock: C,
    by_rate: RwLock<HashMap<Rate, Arc<KeyedLimiter<K, C>>>>,
    checks: AtomicU64,
    last_cleanup: Mutex<C::Instant>,
}

impl<K: Hash + Eq + Clone, C: Clock> std::fmt::Debug for Buckets<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buckets").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets on the monotonic clock.
    pub fn new() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

impl<K: Hash + Eq + Clone> Default for Buckets<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> Buckets<K, C> {
    /// Buckets on `clock` (tests pass a fake one).
    pub fn with_clock(clock: C) -> Self {
        let now = clock.now();
        Self {
            clock,
            by_rate: RwLock::new(HashMap::new()),
            checks: AtomicU64::new(0),
            last_cleanup: Mutex::new(now),
        }
    }

    /// Takes a token from `key`'s bucket of size `rate`; when it is empty, how
    /// long until one comes back.
    pub fn check(&self, key: &K, rate: Rate) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CLEANUP_EVERY_CHECKS == CLEANUP_EVERY_CHECKS - 1 {
            self.cleanup_if_due();
        }
        let limiter = self.limiter(rate);
        limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Keys tracked now, over every rate.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().values().map(|l| l.len()).sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Rate, Arc<KeyedLimiter<K, C>>>> {
        // The map only ever gains or loses whole limiters: a panic elsewhere
        // cannot leave it torn.
        self.by_rate.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Rate, Arc<KeyedLimiter<K, C>>>> {
        self.by_rate.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn limiter(&self, rate: Rate) -> Arc<KeyedLimiter<K, C>> {
        if let Some(limiter) = self.read().get(&rate) {
            return limiter.clone();
        }
        self.write()
            .entry(rate)
            .or_insert_with(|| Arc::new(RateLimiter::dashmap_with_clock(rate.quota(), self.clock.clone())))
            .clone()
    }

    /// Drops buckets that have filled up again, at most once per
    /// [`CLEANUP_INTERVAL`]; starts over when too many keys are still in use.
    fn cleanup_if_due(&self) {
        let now = self.clock.now();
        {
            let mut last = self
                .last_cleanup
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if now.duration_since(*last) < CLEANUP_INTERVAL.into() {
                return;
            }
            *last = now;
        }
        self.cleanup();
    }

    /// Drops every bucket indistinguishable from a new one, and limiters left
    /// without keys; when more than [`MAX_TRACKED_KEYS`] remain, drops them all.
    pub fn cleanup(&self) {
        let mut by_rate = self.write();
        for limiter in by_rate.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        by_rate.retain(|_, limiter| !limiter.is_empty());
        let tracked: usize = by_rate.values().map(|l| l.len()).sum();
        if tracked > MAX_TRACKED_KEYS {
            tracing::warn!(
                tracked,
                "more rate-limited keys in use than are tracked; every bucket of this kind starts again"
            );
            by_rate.clear();
        }
    }
}

/// The front door's buckets: per client address, app and tenant.
#[derive(Debug, Default)]
pub struct RateLimits {
    settings: RateLimitSettings,
    clients: Buckets<IpAddr>,
    apps: Buckets<String>,
    tenants: Buckets<String>,
}

impl RateLimits {
    /// Buckets for `settings`.
    pub fn new(settings: RateLimitSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The installation's rates.
    pub fn settings(&self) -> RateLimitSettings {
        self.settings
    }

    /// Takes a token for a request from `ip` (the resolved client address).
    pub fn check_client(&self, ip: IpAddr) -> Result<(), Throttled> {
        let Some(rate) = self.settings.client else {
            return Ok(());
        };
        self.clients
            .check(&client_key(ip), rate)
            .map_err(|retry_after| Throttled {
                limit: LimitKind::Client,
                retry_after,
            })
            .inspect_err(Throttled::count)
    }

    /// Takes a token from the app's bucket (its own rate, else the
    /// installation's), then from its tenant's.
    pub fn check_app(
        &self,
        app_id: &str,
        app_rate: Option<Rate>,
        tenant_id: &str,
        tenant_rate: Option<Rate>,
    ) -> Result<(), Throttled> {
        if let Some(rate) = app_rate.or(self.settings.app) {
            self.apps
                .check(&app_id.to_owned(), rate)
                .map_err(|retry_after| Throttled {
                    limit: LimitKind::App,
                    retry_after,
                })
                .inspect_err(Throttled::count)?;
        }
        if let Some(rate) = tenant_rate.or(self.settings.tenant) {
            self.tenants
                .check(&tenant_id.to_owned(), rate)
                .map_err(|retry_after| Throttled {
                    limit: LimitKind::Tenant,
                    retry_after,
                })
                .inspect_err(Throttled::count)?;
        }
        Ok(())
    }
}

/// A stored rate (per second, and burst: twice the rate when not given);
/// `None` when absent or out of range.
pub fn stored_rate(per_second: Option<i64>, burst: Option<i64>) -> Option<Rate> {
    let per_second = u32::try_from(per_second?).ok()?;
    let burst = match burst {
        Some(b) => u32::try_from(b).ok()?,
        None => per_second.saturating_mul(2),
    };
    Rate::new(per_second, burst)
}

impl crate::Edge {
    /// Takes a token for a request from client address `ip` (the resolved one:
    /// `X-Forwarded-For` only from trusted proxies).
    pub fn check_client_rate(&self, ip: IpAddr) -> Result<(), Throttled> {
        self.rate_limits.check_client(ip)
    }

    /// Takes a token for a request to `app` from the app's bucket and its
    /// tenant's, each of its own rate if it has one.
    pub(crate) async fn check_app_rate(&self, app: &App) -> Result<(), Throttled> {
        let app_rate = stored_rate(app.limits.rate_limit_per_sec, app.limits.rate_limit_burst);
        let tenant_rate = self
            .tenant_limits(&app.tenant_id)
            .await
            .and_then(|limits| stored_rate(limits.rate_limit_per_sec, limits.rate_limit_burst));
        self.rate_limits
            .check_app(&app.id, app_rate, &app.tenant_id, tenant_rate)
    }

    /// The tenant's own limits (cached under the routing generation, which
    /// moves when an operator changes them); `None` when it cannot be read:
    /// the installation's limits apply then.
    pub(crate) async fn tenant_limits(&self, tenant_id: &str) -> Option<TenantLimits> {
        let generation = self.store.routing_generation();
        let key = tenant_id.to_owned();
        if let Some(limits) = self.tenant_limits.get(&key, generation) {
            return Some(limits);
        }
        match self.store.tenant(tenant_id).await {
            Ok(tenant) => {
                self.tenant_limits.put(key, tenant.limits, generation);
                Some(tenant.limits)
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant_id, error = %e, "tenant limits unavailable; the installation's apply");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate::new(per_second, burst).unwrap()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let clock = FakeRelativeClock::default();
        let buckets: Buckets<&str, _> = Buckets::with_clock(clock.clone());
        let r = rate(10, 20);
        for i in 0..20 {
            assert_eq!(buckets.check(&"a", r), Ok(()), "request {i} of the burst");
        }
        let wait = buckets.check(&"a", r).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100), "one token every 100 ms");
        assert_eq!(buckets.check(&"b", r), Ok(()), "another key has its own bucket");
        clock.advance(Duration::from_millis(100));
        assert_eq!(buckets.check(&"a", r), Ok(()));
        assert!(buckets.check(&"a", r).is_err());
        let other = rate(1, 1);
        assert_eq!(buckets.check(&"a", other), Ok(()), "another rate is another bucket");
        assert!(buckets.check(&"a", other).is_err());
    }

    #[test]
    fn idle_buckets_are_dropped_and_the_count_is_bounded() {
        let clock = FakeRelativeClock::default();
        let buckets: Buckets<u32, _> = Buckets::with_clock(clock.clone());
        let r = rate(100, 200);
        for key in 0..5000 {
            let _ = buckets.check(&key, r);
        }
        assert_eq!(buckets.len(), 5000);
        buckets.cleanup();
        assert_eq!(buckets.len(), 5000, "buckets in use stay");
        clock.advance(Duration::from_secs(3));
        buckets.cleanup();
        assert_eq!(buckets.len(), 0, "full again: dropped");

        // A flood of ever new keys: the periodic cleanup keeps the count
        // bounded by the keys seen in the last interval.
        for key in 0..(MAX_TRACKED_KEYS as u32 + 10_000) {
            let _ = buckets.check(&key, r);
            if key % 10_000 == 0 {
                clock.advance(Duration::from_secs(3));
            }
        }
        assert!(
            buckets.len() <= 10_000 + CLEANUP_EVERY_CHECKS as usize,
            "{}",
            buckets.len()
        );
        // Past the ceiling, in one interval: every bucket starts again.
        for key in 0..(MAX_TRACKED_KEYS as u32 + 1) {
            let _ = buckets.check(&key, r);
        }
        buckets.cleanup();
        assert_eq!(buckets.len(), 0);
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let t = |ms| Throttled {
            limit: LimitKind::App,
            retry_after: Duration::from_millis(ms),
        };
        assert_eq!(t(0).retry_after_secs(), 1);
        assert_eq!(t(1).retry_after_secs(), 1);
        assert_eq!(t(1000).retry_after_secs(), 1);
        assert_eq!(t(1001).retry_after_secs(), 2);
        let r = t(2500).response(true);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[RETRY_AFTER], "3");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(t(10).response(false).headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let limits = RateLimits::new(RateLimitSettings {
            client: Some(rate(1, 1)),
            ..RateLimitSettings::off()
        });
        assert!(limits.check_client(a).is_ok());
        assert_eq!(limits.check_client(b).unwrap_err().limit, LimitKind::Client);
        assert!(limits.check_client(c).is_ok());
    }

    #[test]
    fn app_and_tenant_buckets_trip_for_their_own_keys_only() {
        let limits = RateLimits::new(RateLimitSettings {
            client: None,
            app: Some(rate(1, 2)),
            tenant: Some(rate(1, 3)),
        });
        assert!(limits.check_app("wiki", None, "acme", None).is_ok());
        assert!(limits.check_app("wiki", None, "acme", None).is_ok());
        assert_eq!(
            limits.check_app("wiki", None, "acme", None).unwrap_err().limit,
            LimitKind::App
        );
        assert!(
            limits.check_app("crm", None, "acme", None).is_ok(),
            "the tenant's third"
        );
        assert_eq!(
            limits.check_app("crm", None, "acme", None).unwrap_err().limit,
            LimitKind::Tenant
        );
        assert!(
            limits.check_app("crm-beta", None, "beta", None).is_ok(),
            "another tenant"
        );
        assert!(
            limits
                .check_app("big", Some(rate(1, 100)), "gamma", Some(rate(1, 100)))
                .is_ok()
                && limits
                    .check_app("big", Some(rate(1, 100)), "gamma", Some(rate(1, 100)))
                    .is_ok()
                && limits
                    .check_app("big", Some(rate(1, 100)), "gamma", Some(rate(1, 100)))
                    .is_ok(),
            "own rates win over the installation's"
        );
    }
}
