//! The abuse protection keys of `[limits]` (SEC-9): rate limits per client
//! address, app and tenant, connections per client address, the request body
//! limit of apps, and sign-ins waiting on agents per tenant. Tenants and apps
//! may have their own (set through the admin API); these are the
//! installation's defaults. Zero turns a limit off.

use postern_edge::{Rate, RateLimitSettings};

use super::RawLimits;

/// Highest rate or burst accepted.
const MAX_RATE: u32 = 1_000_000;

/// Abuse protection at the front door.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbuseLimits {
    /// Requests a second per client address, app and tenant.
    pub rates: RateLimitSettings,
    /// Open connections per client address (trusted proxies excepted); `None`:
    /// no cap but `max_connections`.
    pub connections_per_client: Option<usize>,
    /// Largest request body forwarded to an app without a limit of its own;
    /// `None`: no limit.
    pub app_max_body_bytes: Option<u64>,
    /// Sign-ins waiting on a tenant's agents at once, unless the tenant has its
    /// own cap; `None`: only the service-wide cap.
    pub tenant_pending_signins: Option<usize>,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            rates: RateLimitSettings::default(),
            connections_per_client: Some(256),
            app_max_body_bytes: None,
            tenant_pending_signins: Some(500),
        }
    }
}

impl AbuseLimits {
    /// Every one of these limits off (tests that are not about them).
    pub fn off() -> Self {
        Self {
            rates: RateLimitSettings::off(),
            connections_per_client: None,
            app_max_body_bytes: None,
            tenant_pending_signins: None,
        }
    }
}

/// The abuse limits of `raw`, or the defaults; problems go to `problems`.
pub(super) fn validate_abuse(raw: &RawLimits, problems: &mut Vec<String>) -> AbuseLimits {
    let d = AbuseLimits::default();
    let rates = RateLimitSettings {
        client: rate(
            problems,
            "client",
            raw.client_requests_per_sec,
            raw.client_burst,
            d.rates.client,
        ),
        app: rate(problems, "app", raw.app_requests_per_sec, raw.app_burst, d.rates.app),
        tenant: rate(
            problems,
            "tenant",
            raw.tenant_requests_per_sec,
            raw.tenant_burst,
            d.rates.tenant,
        ),
    };
    let nonzero = |given: Option<usize>, default: Option<usize>| match given {
        Some(0) => None,
        Some(n) => Some(n),
        None => default,
    };
    AbuseLimits {
        rates,
        connections_per_client: nonzero(raw.connections_per_client, d.connections_per_client),
        app_max_body_bytes: match raw.app_max_body_bytes {
            Some(0) => None,
            Some(n) => Some(n),
            None => d.app_max_body_bytes,
        },
        tenant_pending_signins: nonzero(raw.tenant_pending_signins, d.tenant_pending_signins),
    }
}

/// One rate: `limits.{who}_requests_per_sec` (0: off) and `limits.{who}_burst`
/// (default twice the rate).
fn rate(
    problems: &mut Vec<String>,
    who: &str,
    per_second: Option<u32>,
    burst: Option<u32>,
    default: Option<Rate>,
) -> Option<Rate> {
    for (key, value) in [("requests_per_sec", per_second), ("burst", burst)] {
        if value.is_some_and(|v| v > MAX_RATE) {
            problems.push(format!("limits.{who}_{key} must be at most {MAX_RATE}"));
        }
    }
    match (per_second, burst) {
        (None, None) => default,
        (Some(0), Some(b)) if b > 0 => {
            problems.push(format!(
                "limits.{who}_burst is set but limits.{who}_requests_per_sec is 0 (off)"
            ));
            None
        }
        (Some(0), _) => None,
        (Some(_), Some(0)) | (None, Some(0)) => {
            problems.push(format!("limits.{who}_burst must be at least 1"));
            None
        }
        (Some(r), b) => Rate::new(r, b.unwrap_or(r.saturating_mul(2))),
        (None, Some(b)) => default.and_then(|d| Rate::new(d.per_second(), b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let mut problems = Vec::new();
        let d = validate_abuse(&RawLimits::default(), &mut problems);
        assert_eq!(d, AbuseLimits::default());
        assert_eq!(d.rates.app, Rate::new(500, 1000));
        assert_eq!(d.rates.tenant, Rate::new(750, 1500));
        assert_eq!(d.rates.client, Rate::new(100, 200));
        assert_eq!(d.app_max_body_bytes, None, "apps: no body limit by default");

        let raw = RawLimits {
            client_requests_per_sec: Some(0),
            app_requests_per_sec: Some(50),
            tenant_burst: Some(3000),
            connections_per_client: Some(0),
            app_max_body_bytes: Some(1 << 20),
            tenant_pending_signins: Some(20),
            ..RawLimits::default()
        };
        let a = validate_abuse(&raw, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(a.rates.client, None, "0 turns it off");
        assert_eq!(a.rates.app, Rate::new(50, 100), "burst: twice the rate");
        assert_eq!(a.rates.tenant, Rate::new(750, 3000), "the default rate, this burst");
        assert_eq!(a.connections_per_client, None);
        assert_eq!(a.app_max_body_bytes, Some(1 << 20));
        assert_eq!(a.tenant_pending_signins, Some(20));
    }

    #[test]
    fn problems_are_reported() {
        let raw = RawLimits {
            client_requests_per_sec: Some(0),
            client_burst: Some(10),
            app_requests_per_sec: Some(10),
            app_burst: Some(0),
            tenant_requests_per_sec: Some(MAX_RATE + 1),
            ..RawLimits::default()
        };
        let mut problems = Vec::new();
        validate_abuse(&raw, &mut problems);
        let all = problems.join("\n");
        for needle in [
            "limits.client_burst is set but limits.client_requests_per_sec is 0",
            "limits.app_burst must be at least 1",
            "limits.tenant_requests_per_sec must be at most",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }
}
