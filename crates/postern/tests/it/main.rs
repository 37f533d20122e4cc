//! End-to-end tests of `postern`: the real service on loopback, real HTTP clients,
//! a real OpenID Connect relying party library. One test binary on purpose: each
//! file under `tests/` would be another slow link (see kanidm's
//! DO_NOT_ADD_MORE_TESTS_HERE); add modules here instead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod admin_cli;
mod app_hosts;
mod apps_admin;
mod browser;
mod client_api;
mod cluster;
mod cluster_processes;
mod common;
mod component_cli;
mod components;
mod connection_deadlines;
mod console;
mod cross_tenant;
mod demo;
mod directory_ahead;
mod faults;
mod limits;
mod lockout;
mod logs;
mod memory;
mod metrics;
mod mfa;
mod oidc;
mod openapi;
mod policies;
mod proxy;
mod proxy_harness;
mod proxy_streams;
mod pta;
mod readme;
mod registration_approval;
mod restarts;
mod revocation;
mod secrets;
mod serve_signals;
mod setup;
mod signin_pages;
mod tokens;
mod updates;
