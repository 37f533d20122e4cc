//! What a receiver of events is to the shipper.

use std::future::Future;

use crate::error::DeliveryError;
use crate::event::ExportEvent;

/// A receiver of events: syslog or a webhook.
pub trait Sink: Send + Sync + 'static {
    /// The receiver's kind (`syslog`, `webhook`): names its cursors in the
    /// store and its spool directory.
    fn name(&self) -> &'static str;

    /// Sends `events`, in order. `Ok` only once the receiver has accepted all
    /// of them; on an error any of them may have arrived and all are sent
    /// again later.
    fn deliver(&self, events: &[ExportEvent]) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}
