//! The events as receivers get them: one JSON object each, `type` `signin` or
//! `audit`, with a unique `id`, the `seq` of the event in its log and the
//! `time` (RFC 3339, UTC). The same JSON is a webhook line, the MSG of a
//! syslog message and a line of the spool.

use postern_store::{NamedAuditEntry, NumberedSignin, SigninOutcome};
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

/// A sign-in attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SigninRecord {
    /// The event's ID (unique, stable).
    pub id: String,
    /// Its position in the sign-in log.
    pub seq: i64,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The tenant's ID.
    pub tenant_id: String,
    /// The tenant's short name, if it still exists.
    pub tenant: Option<String>,
    /// The sign-in name typed.
    pub username: String,
    /// The account, when it exists.
    pub user_id: Option<String>,
    /// The client the user was signing in to.
    pub client_id: Option<String>,
    /// The client's IP address.
    pub ip: String,
    /// How it ended.
    pub outcome: SigninOutcome,
    /// A short, secret-free explanation.
    pub detail: String,
}

/// An entry of the hash-chained audit log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The event's ID: `audit-{seq}`.
    pub id: String,
    /// Its position in the audit chain.
    pub seq: i64,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The tenant concerned (`None` for installation-wide actions).
    pub tenant_id: Option<String>,
    /// The tenant's short name, if any.
    pub tenant: Option<String>,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// Secret-free details.
    pub detail: serde_json::Value,
    /// The entry's hash (hex), so a receiver can check the chain itself.
    pub hash: String,
    /// The previous entry's hash (hex).
    pub prev_hash: String,
}

/// One event for a receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportEvent {
    /// A sign-in attempt.
    Signin(SigninRecord),
    /// An audit log entry.
    Audit(AuditRecord),
}

/// Syslog facility `authpriv`: sign-ins.
const FACILITY_AUTHPRIV: u8 = 10;
/// Syslog facility `log audit`: audit entries.
const FACILITY_LOG_AUDIT: u8 = 13;
/// Syslog severity `warning`.
const WARNING: u8 = 4;
/// Syslog severity `notice`.
const NOTICE: u8 = 5;
/// Syslog severity `informational`.
const INFO: u8 = 6;

impl ExportEvent {
    /// The event's unique ID.
    pub fn id(&self) -> &str {
        match self {
            ExportEvent::Signin(s) => &s.id,
            ExportEvent::Audit(a) => &a.id,
        }
    }

    /// Its position in its log.
    pub fn seq(&self) -> i64 {
        match self {
            ExportEvent::Signin(s) => s.seq,
            ExportEvent::Audit(a) => a.seq,
        }
    }

    /// When it happened (RFC 3339, UTC).
    pub fn time(&self) -> &str {
        match self {
            ExportEvent::Signin(s) => &s.time,
            ExportEvent::Audit(a) => &a.time,
        }
    }

    /// The log it comes from: `signin` or `audit` (the syslog MSGID).
    pub fn kind(&self) -> &'static str {
        match self {
            ExportEvent::Signin(_) => "signin",
            ExportEvent::Audit(_) => "audit",
        }
    }

    /// The syslog PRI value: facility `authpriv` for sign-ins (informational
    /// when they succeed, warning for lockouts, notice otherwise), `log audit`
    /// for audit entries (notice).
    pub fn syslog_priority(&self) -> u8 {
        match self {
            ExportEvent::Signin(s) => {
                let severity = match s.outcome {
                    SigninOutcome::Success => INFO,
                    SigninOutcome::LockedOut => WARNING,
                    _ => NOTICE,
                };
                FACILITY_AUTHPRIV * 8 + severity
            }
            ExportEvent::Audit(_) => FACILITY_LOG_AUDIT * 8 + NOTICE,
        }
    }

    /// The event as one line of JSON.
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// RFC 3339 (UTC) of `at`; the epoch if it is out of range.
fn rfc3339(at: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(at.secs())
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<NumberedSignin> for ExportEvent {
    fn from(s: NumberedSignin) -> Self {
        let e = s.event;
        ExportEvent::Signin(SigninRecord {
            id: e.id,
            seq: s.seq,
            time: rfc3339(e.at),
            tenant_id: e.tenant_id,
            tenant: s.tenant_name,
            username: e.username,
            user_id: e.user_id,
            client_id: e.client_id,
            ip: e.ip,
            outcome: e.outcome,
            detail: e.detail,
        })
    }
}

impl From<NamedAuditEntry> for ExportEvent {
    fn from(a: NamedAuditEntry) -> Self {
        let e = a.entry;
        let detail = serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::String(e.detail));
        ExportEvent::Audit(AuditRecord {
            id: format!("audit-{}", e.seq),
            seq: e.seq,
            time: rfc3339(e.at),
            tenant_id: e.tenant_id,
            tenant: a.tenant_name,
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail,
            hash: hex(&e.hash),
            prev_hash: hex(&e.prev_hash),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn signin(seq: i64, outcome: SigninOutcome) -> ExportEvent {
        ExportEvent::Signin(SigninRecord {
            id: format!("s{seq}"),
            seq,
            time: rfc3339(UnixTime::from_secs(1_700_000_000)),
            tenant_id: "t1".into(),
            tenant: Some("acme".into()),
            username: "alice@acme.test".into(),
            user_id: None,
            client_id: None,
            ip: "192.0.2.1".into(),
            outcome,
            detail: String::new(),
        })
    }

    #[test]
    fn events_round_trip_as_json_with_their_type() {
        let e = signin(3, SigninOutcome::LockedOut);
        let line = e.to_json_line().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "signin");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["outcome"], "locked_out");
        assert_eq!(serde_json::from_str::<ExportEvent>(&line).unwrap(), e);
        assert_eq!(e.syslog_priority(), 10 * 8 + 4);
        assert_eq!(signin(1, SigninOutcome::Success).syslog_priority(), 86);
    }
}
