//! One function per event worth counting, called from where the event happens
//! (one line at each site). Without an installed exporter they cost a check
//! of an unset global and do nothing.
//!
//! Labels are bounded by the installation: app, tenant and component IDs, and
//! fixed vocabularies (status classes, outcomes, effects). Never user names,
//! paths or client addresses.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::names;

/// The class of an HTTP status: `1xx` … `5xx`, `other` outside 100–599.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

/// A request to a published app ended (its answer sent, or the client gone).
/// `app_id` and `tenant_id` are `-` for a request that reached no app.
pub fn app_request(app_id: &str, tenant_id: &str, status: u16, bytes_in: u64, bytes_out: u64, elapsed: Duration) {
    let (app, tenant) = (app_id.to_owned(), tenant_id.to_owned());
    counter!(names::APP_REQUESTS, "app" => app.clone(), "tenant" => tenant.clone(), "status" => status_class(status))
        .increment(1);
    histogram!(names::APP_REQUEST_DURATION, "app" => app.clone(), "tenant" => tenant.clone())
        .record(elapsed.as_secs_f64());
    counter!(names::APP_BODY_BYTES, "app" => app.clone(), "tenant" => tenant.clone(), "direction" => "in")
        .increment(bytes_in);
    counter!(names::APP_BODY_BYTES, "app" => app, "tenant" => tenant, "direction" => "out").increment(bytes_out);
}

/// A request went over a rate limit (`client`, `app` or `tenant`).
pub fn rate_limited(limit: &'static str) {
    counter!(names::RATE_LIMITED, "limit" => limit).increment(1);
}

/// A pass-through sign-in of `tenant_id` got its answer (or none) after
/// `elapsed`.
pub fn pta_request(tenant_id: &str, outcome: &'static str, elapsed: Duration) {
    counter!(names::PTA_REQUESTS, "tenant" => tenant_id.to_owned(), "outcome" => outcome).increment(1);
    histogram!(names::PTA_DURATION, "tenant" => tenant_id.to_owned(), "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// Smart lockout locked an account of `tenant_id`.
pub fn lockout(tenant_id: &str) {
    counter!(names::LOCKOUTS, "tenant" => tenant_id.to_owned()).increment(1);
}

/// A password attempt was refused because the account is locked.
pub fn lockout_refusal(tenant_id: &str) {
    counter!(names::LOCKOUT_REFUSALS, "tenant" => tenant_id.to_owned()).increment(1);
}

/// Conditional access decided `effect` for a sign-in of `tenant_id`.
pub fn policy_decision(tenant_id: &str, effect: &'static str) {
    counter!(names::POLICY_DECISIONS, "tenant" => tenant_id.to_owned(), "effect" => effect).increment(1);
}

/// The connector answered a tunnel stream for `app_id` with `status`, its
/// head ready after `elapsed`.
pub fn connector_request(app_id: &str, status: u16, elapsed: Duration) {
    counter!(names::CONNECTOR_REQUESTS, "app" => app_id.to_owned(), "status" => status_class(status)).increment(1);
    histogram!(names::CONNECTOR_BACKEND_DURATION, "app" => app_id.to_owned()).record(elapsed.as_secs_f64());
}

/// A connector tunnel came up; the returned guard counts it until dropped.
pub fn connector_tunnel_up() -> Held {
    Held::new(names::CONNECTOR_TUNNELS_UP)
}

/// The agent asked the directory and got `outcome` after `elapsed`.
pub fn agent_validation(outcome: &'static str, elapsed: Duration) {
    counter!(names::AGENT_VALIDATIONS, "outcome" => outcome).increment(1);
    histogram!(names::AGENT_DIRECTORY_DURATION, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// A validation started; the returned guard counts it in flight until dropped.
pub fn agent_validation_started() -> Held {
    Held::new(names::AGENT_IN_FLIGHT)
}

/// Records the running binary's role and version (`postern_build_info`).
pub fn build_info(role: &'static str, version: &str) {
    gauge!(names::BUILD_INFO, "role" => role, "version" => version.to_owned()).set(1.0);
}

/// Counts one of something in a gauge while it lives.
#[derive(Debug)]
#[must_use = "the gauge counts this only while the guard lives"]
pub struct Held(&'static str);

impl Held {
    fn new(name: &'static str) -> Self {
        gauge!(name).increment(1.0);
        Self(name)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        gauge!(self.0).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(499), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(600), "other");
    }
}
