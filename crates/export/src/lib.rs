//! Shipping sign-in and audit events out to SIEMs (SEC-10, BEY-5): to a
//! syslog receiver (RFC 5424 over TCP or TLS) and/or an HTTPS webhook (JSON
//! lines), through a bounded on-disk spool, so a receiver outage loses nothing.
//!
//! Each configured receiver gets a shipper task (see [`start`]): it claims the
//! events after the receiver's cursor in the store into its spool (cursors
//! advance by compare-and-set, so with several instances each event is claimed
//! by one), sends the spool oldest first with retry and backoff, and deletes a
//! batch once the receiver accepted it. Delivery is at least once: a batch
//! whose receipt was lost (the receiver took it and then failed, or the
//! service stopped mid-send) is sent again; receivers can drop repeats by the
//! events' `id`.
#![warn(missing_docs)]

mod error;
mod event;
mod shipper;
mod sink;
mod spool;
pub mod syslog;
mod tls;
pub mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use postern_store::Store;
use postern_time::SharedClock;
use postern_uplink::Backoff;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{DeliveryError, ExportError};
pub use event::{AuditRecord, ExportEvent, SigninRecord};
pub use sink::Sink;
pub use syslog::{SyslogSink, SyslogTarget};
pub use webhook::{WebhookSink, WebhookTarget};

/// Where and how events are exported (`[export]` in the configuration).
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// The syslog receiver, if any.
    pub syslog: Option<SyslogTarget>,
    /// The webhook, if any.
    pub webhook: Option<WebhookTarget>,
    /// More trust anchors (PEM) for receivers' certificates, besides the
    /// system's.
    pub ca_file: Option<PathBuf>,
    /// `HOSTNAME` of syslog messages; default: the public URL's host.
    pub hostname: Option<String>,
    /// Most bytes each receiver's spool holds.
    pub spool_max_bytes: u64,
    /// Most events claimed, or sent, at once.
    pub batch: usize,
    /// How often the store is asked for new events when caught up.
    pub poll_interval: Duration,
    /// First wait after a failed delivery (it doubles, with jitter).
    pub retry_min: Duration,
    /// Longest wait between deliveries that fail.
    pub retry_max: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            syslog: None,
            webhook: None,
            ca_file: None,
            hostname: None,
            spool_max_bytes: 64 * 1024 * 1024,
            batch: 500,
            poll_interval: Duration::from_secs(1),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

impl ExportSettings {
    /// Whether any receiver is configured.
    pub fn is_enabled(&self) -> bool {
        self.syslog.is_some() || self.webhook.is_some()
    }
}

/// What the shippers share.
struct Shared<'a> {
    settings: &'a ExportSettings,
    store: &'a Store,
    clock: &'a SharedClock,
    spool_root: &'a Path,
    shutdown: &'a watch::Receiver<bool>,
}

/// Opens `sink`'s spool and spawns its shipper.
async fn spawn_shipper<S: Sink>(sink: S, shared: &Shared<'_>) -> Result<JoinHandle<()>, ExportError> {
    let s = shared.settings;
    let spool = spool::Spool::open(&shared.spool_root.join(sink.name()), s.spool_max_bytes).await?;
    let backoff =
        Backoff::try_new(s.retry_min, s.retry_max).map_err(|e| ExportError::Config(format!("retry delays: {e}")))?;
    let shipper = shipper::Shipper {
        sink,
        store: shared.store.clone(),
        clock: shared.clock.clone(),
        max_spool_bytes: s.spool_max_bytes,
        spool,
        batch: s.batch.max(1),
        poll_interval: s.poll_interval,
        backoff,
        spool_full: false,
        failing: false,
    };
    Ok(tokio::spawn(shipper.run(shared.shutdown.clone())))
}

/// Starts a shipper for each configured receiver, its spool under
/// `spool_root/{syslog,webhook}`, until `shutdown` turns true. Syslog
/// messages name `settings.hostname`, else `default_hostname`. Returns the
/// tasks (none when nothing is configured).
pub async fn start(
    settings: &ExportSettings,
    store: &Store,
    clock: &SharedClock,
    spool_root: &Path,
    default_hostname: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, ExportError> {
    let mut tasks = Vec::new();
    if !settings.is_enabled() {
        return Ok(tasks);
    }
    let tls = tls::client_config(settings.ca_file.as_deref(), clock.clone())?;
    let shared = Shared {
        settings,
        store,
        clock,
        spool_root,
        shutdown,
    };
    if let Some(target) = &settings.syslog {
        let hostname = settings.hostname.as_deref().unwrap_or(default_hostname).to_owned();
        tracing::info!(receiver = "syslog", target = %target, "exporting sign-in and audit events");
        let sink = SyslogSink::new(target.clone(), hostname, Arc::new(tls.clone()));
        tasks.push(spawn_shipper(sink, &shared).await?);
    }
    if let Some(target) = &settings.webhook {
        tracing::info!(receiver = "webhook", target = %target, "exporting sign-in and audit events");
        let sink = WebhookSink::new(target.clone(), tls)?;
        tasks.push(spawn_shipper(sink, &shared).await?);
    }
    Ok(tasks)
}
