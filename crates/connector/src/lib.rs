//! The connector's data path: tunnels dialled out to the service, each an HTTP/2 server for the requests the service sends, forwarded to internal apps.
//!
//! # How a request travels
//!
//! 1. [`TunnelPool`] keeps a few TLS 1.3 connections to the control endpoint, each
//!    authenticated by the connector's client certificate and upgraded with
//!    `GET /v1/t/{tenant}/connector/tunnel` (`Upgrade: postern-tunnel/1`); see
//!    [`postern_proto::tunnel`] for the contract.
//! 2. On each upgraded connection [`serve_tunnel`] runs an HTTP/2 *server*: the
//!    service opens one stream per user request, naming the app in `x-postern-app`.
//! 3. The stream is forwarded to the app's internal URL from the connector's own
//!    configuration ([`AppTable`]), never to a URL taken from the request: `:path`
//!    is appended to the internal base path and `:authority` becomes the `Host`.
//!    Bodies stream both ways frame by frame; HTTP/2 flow control carries the
//!    backend's pace back to the service, and no body is ever held whole.
//! 4. When the backend gives no response the stream gets 502 or 504 with
//!    `x-postern-error` ([`postern_proto::tunnel::BackendError`]); when it dies in
//!    the middle of its body the stream is reset, never ended as if complete.
//! 5. Upgrades (WebSocket) become an HTTP/1.1 upgrade towards the backend and, on
//!    `101`, a full-duplex byte copy over the HTTP/2 stream.
//!
//! # Use
//!
//! [`Connector`] is the whole connector: the configuration exchange and watch
//! with the control API, and the pool below, until a shutdown. The pieces, for
//! a caller that drives the configuration itself:
//!
//! ```no_run
//! # async fn demo(client: &postern_uplink::ControlClient, apps: &[postern_proto::control::AppRef]) -> Result<(), postern_connector::TunnelError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use postern_connector::{AppTable, Backends, BackendOptions, PoolOptions, TunnelEndpoint, TunnelPool};
//!
//! let (tables, table) = tokio::sync::watch::channel(Arc::new(AppTable::new(apps, Duration::from_secs(30))));
//! let backends = Backends::new(&BackendOptions::default())?;
//! let pool = TunnelPool::start(TunnelEndpoint::from_client(client), table, backends, PoolOptions::default())?;
//! // On a new configuration: tables.send_replace(Arc::new(AppTable::new(...)));
//! pool.shutdown().await; // GOAWAY, in-flight requests finish within the grace period
//! # drop(tables); Ok(()) }
//! ```
#![warn(missing_docs)]

mod apps;
mod backend;
mod dial;
mod error;
mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod pool;
mod runtime;
mod tunnel;

pub use apps::{App, AppTable};
pub use backend::{BackendOptions, Backends};
pub use error::TunnelError;
pub use pool::{PoolOptions, PoolStatus, TunnelEndpoint, TunnelPool};
pub use runtime::{Connector, ConnectorError};
pub use tunnel::{TunnelOptions, serve_tunnel};
