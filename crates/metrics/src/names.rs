//! The name, type and help text of every series, in one place: the recording
//! hooks ([`crate::record`]), the scrape-time collectors and
//! `docs/operations.md` ("Metrics") follow these.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests to published apps, by `app` (ID), `tenant` (ID) and `status`
/// (class: `2xx` … `5xx`).
pub const APP_REQUESTS: &str = "postern_app_requests_total";
/// Time from the request's arrival to the end of its answer, by `app` and
/// `tenant`.
pub const APP_REQUEST_DURATION: &str = "postern_app_request_duration_seconds";
/// Body bytes of app requests, by `app`, `tenant` and `direction` (`in`: from
/// the client to the backend, `out`: back).
pub const APP_BODY_BYTES: &str = "postern_app_body_bytes_total";
/// Requests refused with 429 at the front door, by `limit` (`client`, `app`,
/// `tenant`).
pub const RATE_LIMITED: &str = "postern_rate_limited_total";
/// Pass-through sign-ins asked of the tenant's agents, by `tenant` and
/// `outcome` (the directory's answer, or why none came).
pub const PTA_REQUESTS: &str = "postern_pta_requests_total";
/// Time from handing a pass-through sign-in to the relay to its answer, by
/// `tenant` and `outcome`.
pub const PTA_DURATION: &str = "postern_pta_request_duration_seconds";
/// Accounts locked by smart lockout, by `tenant`.
pub const LOCKOUTS: &str = "postern_lockouts_total";
/// Password attempts refused because the account was locked, by `tenant`.
pub const LOCKOUT_REFUSALS: &str = "postern_lockout_refusals_total";
/// Conditional access decisions, by `tenant` and `effect` (`allow`,
/// `require_mfa`, `block`).
pub const POLICY_DECISIONS: &str = "postern_policy_decisions_total";
/// Open tunnels of a connector group on this instance, by `tenant` and
/// `group` (scrape time).
pub const TUNNELS: &str = "postern_tunnels";
/// Requests in flight on a group's tunnels, by `tenant` and `group` (scrape
/// time).
pub const TUNNEL_REQUESTS_IN_FLIGHT: &str = "postern_tunnel_requests_in_flight";
/// 1 if a connector group has at least one open tunnel on this instance,
/// else 0, for every group, by `tenant` and `group` (scrape time).
pub const CONNECTOR_GROUP_UP: &str = "postern_connector_group_up";
/// When each connector's and agent's certificate expires (Unix seconds), by
/// `tenant`, `kind` and `component` (ID) (scrape time).
pub const COMPONENT_CERT_EXPIRY: &str = "postern_component_certificate_expiry_timestamp_seconds";
/// When each of the service's certificate authorities expires (Unix
/// seconds), by `ca` (`connectors`, `agents`, `service`) (scrape time).
pub const CA_EXPIRY: &str = "postern_ca_expiry_timestamp_seconds";
/// Registered components, by `kind` and reported `version` (scrape time).
pub const COMPONENTS: &str = "postern_components";
/// Always 1, by `role` (`service`, `connector`, `agent`) and `version`.
pub const BUILD_INFO: &str = "postern_build_info";

/// Tunnel streams the connector forwarded, by `app` and `status` (class).
pub const CONNECTOR_REQUESTS: &str = "postern_connector_requests_total";
/// Time from a tunnel stream's arrival to the backend's response head, by
/// `app`.
pub const CONNECTOR_BACKEND_DURATION: &str = "postern_connector_backend_duration_seconds";
/// Tunnels the connector has open to the service.
pub const CONNECTOR_TUNNELS_UP: &str = "postern_connector_tunnels_up";

/// Passwords the agent checked against the directory, by `outcome`.
pub const AGENT_VALIDATIONS: &str = "postern_agent_validations_total";
/// Time the directory took to answer, by `outcome`.
pub const AGENT_DIRECTORY_DURATION: &str = "postern_agent_directory_duration_seconds";
/// Validations the agent is running now.
pub const AGENT_IN_FLIGHT: &str = "postern_agent_validations_in_flight";

/// Histogram buckets of every `…_seconds` series: 1 ms to 60 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Gives every series recorded through the facade its help text and unit.
pub(crate) fn describe_all() {
    describe_counter!(
        APP_REQUESTS,
        Unit::Count,
        "Requests to published apps by app, tenant and status class."
    );
    describe_histogram!(
        APP_REQUEST_DURATION,
        Unit::Seconds,
        "Time from an app request's arrival to the end of its answer."
    );
    describe_counter!(APP_BODY_BYTES, Unit::Bytes, "Body bytes of app requests by direction.");
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Requests refused with 429 by the limit they went over."
    );
    describe_counter!(PTA_REQUESTS, Unit::Count, "Pass-through sign-ins by outcome.");
    describe_histogram!(
        PTA_DURATION,
        Unit::Seconds,
        "Time pass-through sign-ins waited on the agents."
    );
    describe_counter!(LOCKOUTS, Unit::Count, "Accounts locked by smart lockout.");
    describe_counter!(
        LOCKOUT_REFUSALS,
        Unit::Count,
        "Password attempts refused while the account was locked."
    );
    describe_counter!(POLICY_DECISIONS, Unit::Count, "Conditional access decisions by effect.");
    describe_gauge!(BUILD_INFO, Unit::Count, "The running binary's role and version.");
    describe_counter!(
        CONNECTOR_REQUESTS,
        Unit::Count,
        "Tunnel streams forwarded by app and status class."
    );
    describe_histogram!(
        CONNECTOR_BACKEND_DURATION,
        Unit::Seconds,
        "Time from a tunnel stream's arrival to the backend's response head."
    );
    describe_gauge!(CONNECTOR_TUNNELS_UP, Unit::Count, "Tunnels open to the service.");
    describe_counter!(
        AGENT_VALIDATIONS,
        Unit::Count,
        "Passwords checked against the directory by outcome."
    );
    describe_histogram!(
        AGENT_DIRECTORY_DURATION,
        Unit::Seconds,
        "Time the directory took to answer."
    );
    describe_gauge!(AGENT_IN_FLIGHT, Unit::Count, "Validations running now.");
}
