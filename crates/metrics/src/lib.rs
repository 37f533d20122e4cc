//! Prometheus metrics of the service, the connector and the agent.
//!
//! Code records events through [`record`] (one call at each site: app
//! requests, rate-limit refusals, pass-through sign-ins, lockouts, policy
//! decisions, connector streams, agent validations); state of the moment
//! (tunnels, certificate expiries, versions) is reported at scrape time by
//! [`Collector`]s. [`MetricsServer`] serves both at `GET /metrics` on an
//! address of its own, off by default and never on the public listener
//! (`metrics_listen` of `postern serve`, `--metrics-listen` of `postern
//! connector run` and `postern agent run`). Series names are in [`names`];
//! `docs/operations.md` ("Metrics") lists them with their labels.
#![warn(missing_docs)]

mod exporter;
pub mod names;
pub mod record;
mod scrape;

pub use exporter::{MetricsError, MetricsServer, install};
pub use scrape::{BoxFuture, Collector, Family};
