//! Opening connections: URLs tried in turn, TLS with the configured roots, a deadline on
//! connect plus handshake, and every operation under a deadline.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use rustls::ClientConfig;

/// Why the directory could not be asked; the text goes to logs and to
/// [`Outcome::DirectoryUnreachable`](crate::Outcome). It never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Unreachable(pub String);

/// Opens connections to the configured servers.
pub(crate) struct Connector {
    urls: Vec<String>,
    settings: LdapConnSettings,
    connect_timeout: Duration,
    operation_timeout: Duration,
    /// Index of the server that answered last; tried first.
    preferred: AtomicUsize,
}

impl Connector {
    pub(crate) fn new(
        urls: Vec<String>,
        starttls: bool,
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
        operation_timeout: Duration,
    ) -> Self {
        let settings = LdapConnSettings::new()
            .set_conn_timeout(connect_timeout)
            .set_starttls(starttls)
            .set_config(tls);
        Self {
            urls,
            settings,
            connect_timeout,
            operation_timeout,
            preferred: AtomicUsize::new(0),
        }
    }

    /// The deadline of each search or bind.
    pub(crate) fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// Opens a connection to the first server that answers, starting with the one that
    /// answered last. The error names every server and why it failed.
    pub(crate) async fn open(&self) -> Result<Ldap, Unreachable> {
        let count = self.urls.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut failures = Vec::with_capacity(count);
        for step in 0..count {
            let index = (start + step) % count;
            let url = &self.urls[index];
            // ldap3 applies the timeout to connect + StartTLS + TLS handshake; the outer
            // one is a backstop for anything it does not cover.
            let attempt = tokio::time::timeout(
                self.connect_timeout + Duration::from_millis(100),
                LdapConnAsync::with_settings(self.settings.clone(), url),
            )
            .await;
            match attempt {
                Ok(Ok((conn, ldap))) => {
                    tokio::spawn(async move {
                        if let Err(e) = conn.drive().await {
                            tracing::debug!(error = %e, "directory connection ended");
                        }
                    });
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(ldap);
                }
                Ok(Err(e)) => failures.push(format!("{url}: {}", describe(&e))),
                Err(_) => failures.push(format!("{url}: no connection within {:?}", self.connect_timeout)),
            }
        }
        Err(Unreachable(failures.join("; ")))
    }

    /// Runs `operation` under the operation deadline.
    pub(crate) async fn deadline<T>(
        &self,
        what: &str,
        operation: impl Future<Output = Result<T, LdapError>>,
    ) -> Result<T, Unreachable> {
        match tokio::time::timeout(self.operation_timeout, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Unreachable(format!("{what}: {}", describe(&e)))),
            Err(_) => Err(Unreachable(format!(
                "{what}: no answer within {:?}",
                self.operation_timeout
            ))),
        }
    }
}

/// A readable cause for an ldap3 error, naming TLS failures as such.
pub(crate) fn describe(error: &LdapError) -> String {
    match error {
        LdapError::Io { source } => match source.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            std::io::ErrorKind::TimedOut => "timed out".into(),
            _ => match source.get_ref() {
                // tokio-rustls reports handshake failures as io::Error wrapping rustls::Error.
                Some(inner) => format!("TLS or transport failure: {inner}"),
                None => format!("transport failure: {source}"),
            },
        },
        LdapError::Timeout { .. } => "timed out".into(),
        other => other.to_string(),
    }
}
