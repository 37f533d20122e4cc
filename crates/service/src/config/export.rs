//! The `[export]` table: pushing sign-in and audit events to a syslog
//! receiver and/or an HTTPS webhook (SEC-10).

use std::path::PathBuf;

use postern_export::{ExportSettings, SyslogTarget, WebhookTarget};
use postern_keyring::SecretString;
use serde::{Deserialize, Serialize};

/// Smallest spool allowed.
const MIN_SPOOL_BYTES: u64 = 4096;
/// Largest batch allowed.
const MAX_BATCH: usize = 10_000;

/// `[export]` as written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExport {
    /// `tcp://host[:port]` or `tls://host[:port]` of a syslog receiver
    /// (RFC 5424, octet-counted frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syslog_url: Option<String>,
    /// `https://…` of a webhook that takes batches of JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// Bearer token sent to the webhook. Give it through the environment
    /// (`POSTERN_EXPORT__WEBHOOK_TOKEN`), not the file.
    #[serde(skip_serializing)]
    pub webhook_token: Option<SecretString>,
    /// More trust anchors (PEM) for the receivers' certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `HOSTNAME` in syslog messages; default: the public URL's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Most bytes each receiver's spool (in the data dir) may hold; default 64 MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_max_bytes: Option<u64>,
    /// Most events claimed or sent at once; default 500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
}

/// The export settings from `raw` (none configured when absent); problems go
/// to `problems`.
pub(crate) fn validate_export(raw: Option<RawExport>, problems: &mut Vec<String>) -> ExportSettings {
    let mut settings = ExportSettings::default();
    let Some(raw) = raw else {
        return settings;
    };
    if let Some(url) = &raw.syslog_url {
        match SyslogTarget::parse(url) {
            Ok(t) => settings.syslog = Some(t),
            Err(e) => problems.push(format!("export.syslog_url: {e}")),
        }
    }
    match (&raw.webhook_url, raw.webhook_token) {
        (Some(url), token) => match WebhookTarget::new(url, token) {
            Ok(t) => settings.webhook = Some(t),
            Err(e) => problems.push(format!("export.webhook_url: {e}")),
        },
        (None, Some(_)) => problems.push("export.webhook_token is set but export.webhook_url is not".into()),
        (None, None) => {}
    }
    if raw.syslog_url.is_none() && raw.webhook_url.is_none() {
        problems.push("export needs syslog_url or webhook_url (or remove the [export] table)".into());
    }
    if let Some(ca) = raw.ca_file {
        if !ca.is_file() {
            problems.push(format!("export.ca_file {} is not a readable file", ca.display()));
        }
        settings.ca_file = Some(ca);
    }
    if let Some(name) = raw.hostname {
        if name.is_empty() || name.len() > 255 || !name.chars().all(|c| c.is_ascii_graphic()) {
            problems.push("export.hostname must be 1 to 255 printable ASCII characters without spaces".into());
        }
        settings.hostname = Some(name);
    }
    if let Some(bytes) = raw.spool_max_bytes {
        if bytes < MIN_SPOOL_BYTES {
            problems.push(format!("export.spool_max_bytes must be at least {MIN_SPOOL_BYTES}"));
        }
        settings.spool_max_bytes = bytes;
    }
    if let Some(batch) = raw.batch {
        if batch == 0 || batch > MAX_BATCH {
            problems.push(format!("export.batch must be 1 to {MAX_BATCH}"));
        }
        settings.batch = batch;
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_export_problem_is_reported() {
        let mut problems = Vec::new();
        validate_export(
            Some(RawExport {
                syslog_url: Some("udp://siem:514".into()),
                webhook_url: Some("http://siem/in".into()),
                webhook_token: Some("s3cret-token".into()),
                ca_file: Some("/nonexistent/ca.pem".into()),
                hostname: Some("a host".into()),
                spool_max_bytes: Some(10),
                batch: Some(0),
            }),
            &mut problems,
        );
        let all = problems.join("\n");
        for needle in [
            "export.syslog_url",
            "export.webhook_url",
            "export.ca_file",
            "export.hostname",
            "export.spool_max_bytes",
            "export.batch",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert!(!all.contains("s3cret"), "the token is never echoed");

        let mut problems = Vec::new();
        validate_export(
            Some(RawExport {
                webhook_token: Some("t".into()),
                ..Default::default()
            }),
            &mut problems,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn export_table_from_toml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postern.toml");
        std::fs::write(
            &path,
            "[export]\nsyslog_url = \"tcp://127.0.0.1:1514\"\nspool_max_bytes = 8192\nbatch = 50\n",
        )
        .unwrap();
        let c = crate::RawConfig::load(Some(&path), &crate::RawConfig::default())
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(c.export.syslog.unwrap().to_string(), "tcp://127.0.0.1:1514");
        assert_eq!((c.export.spool_max_bytes, c.export.batch), (8192, 50));
        std::fs::write(&path, "[export]\nsyslog_ulr = \"tcp://127.0.0.1:1514\"\n").unwrap();
        let err = crate::RawConfig::load(Some(&path), &crate::RawConfig::default()).unwrap_err();
        assert!(err.0.join("\n").contains("syslog_ulr"), "{err}");
    }

    #[test]
    fn nothing_configured_exports_nothing() {
        let mut problems = Vec::new();
        assert!(!validate_export(None, &mut problems).is_enabled());
        let s = validate_export(
            Some(RawExport {
                syslog_url: Some("tls://siem.example.com".into()),
                spool_max_bytes: Some(1 << 20),
                ..Default::default()
            }),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert!(s.syslog.is_some_and(|t| t.is_tls()));
        assert_eq!(s.spool_max_bytes, 1 << 20);
        assert_eq!(s.batch, ExportSettings::default().batch);
    }
}
