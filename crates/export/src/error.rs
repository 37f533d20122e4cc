//! The export's errors: each says what happens next.

/// The export could not start or a shipper's turn failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The settings cannot work (a CA file, TLS): the service does not start
    /// until the operator fixes them.
    #[error("export configuration: {0}")]
    Config(String),
    /// The spool directory failed (disk full, permissions): nothing is
    /// claimed from the store until it works again.
    #[error("export spool: {what}: {source}")]
    Spool {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed: the shipper tries again at its next turn.
    #[error(transparent)]
    Store(#[from] postern_store::StoreError),
    /// An event could not be encoded (a bug).
    #[error("encoding an event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A receiver did not accept a batch: it stays in the spool and is sent
    /// again after a backoff.
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Why a receiver did not accept a batch. The batch stays in the spool and is
/// sent again after a backoff; nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No connection (refused, unreachable, name not found).
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The receiver.
        target: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (e.g. the receiver's certificate is not
    /// trusted).
    #[error("TLS with {target}: {source}")]
    Tls {
        /// The receiver.
        target: String,
        /// The error.
        source: std::io::Error,
    },
    /// The connection broke while sending, or the receiver closed it without
    /// confirming it had read everything.
    #[error("sending to {target}: {source}")]
    Send {
        /// The receiver.
        target: String,
        /// The error.
        source: std::io::Error,
    },
    /// The receiver took too long.
    #[error("{target} did not answer within {secs} s")]
    Timeout {
        /// The receiver.
        target: String,
        /// The deadline.
        secs: u64,
    },
    /// The webhook answered with a status other than 2xx.
    #[error("{target} refused the batch with status {status}")]
    Refused {
        /// The receiver.
        target: String,
        /// The HTTP status.
        status: u16,
    },
    /// The webhook request failed (connection, TLS, protocol).
    #[error("posting to {target}: {why}")]
    Http {
        /// The receiver.
        target: String,
        /// What went wrong.
        why: String,
    },
}
