//! What a shipper of events to a SIEM needs (SEC-10): both logs read in
//! sequence order across every tenant, and per-sink cursors advanced by
//! compare-and-set.
//!
//! Sequence numbers of both logs become visible in commit order (see the
//! `0009_export` migrations), so a cursor never passes an event that commits
//! later. A shipper reads the events after its cursor, keeps them safe, then
//! advances the cursor from the position it read to the last event kept; when
//! another instance advanced it first, the compare-and-set fails and the
//! shipper lets its copy go, so each event is claimed once.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{AuditEntry, SigninEvent, Store, StoreError};

/// Which log a cursor follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExportStream {
    /// The sign-in log.
    Signins,
    /// The audit log.
    Audit,
}

impl ExportStream {
    /// Both logs.
    pub const ALL: [ExportStream; 2] = [ExportStream::Signins, ExportStream::Audit];

    /// The stored form (and the events' `type`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExportStream::Signins => "signin",
            ExportStream::Audit => "audit",
        }
    }
}

/// A sign-in event with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct NumberedSignin {
    /// Position in the sign-in log, from 1, in commit order.
    pub seq: i64,
    /// The tenant's short name (`None` once the tenant is deleted).
    pub tenant_name: Option<String>,
    /// The event.
    #[sqlx(flatten)]
    pub event: SigninEvent,
}

/// An audit entry with its tenant's name.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct NamedAuditEntry {
    /// The tenant's short name (`None` for installation-wide entries and
    /// deleted tenants).
    pub tenant_name: Option<String>,
    /// The entry.
    #[sqlx(flatten)]
    pub entry: AuditEntry,
}

impl Store {
    /// Where `sink`'s cursor on `stream` stands: the last sequence number
    /// claimed, 0 before the first.
    pub async fn export_cursor(&self, sink: &str, stream: ExportStream) -> Result<i64, StoreError> {
        let position: Option<(i64,)> =
            sqlx::query_as("SELECT position FROM export_cursors WHERE sink = $1 AND stream = $2")
                .bind(sink)
                .bind(stream.as_str())
                .fetch_optional(&self.db)
                .await
                .db()?;
        Ok(position.map_or(0, |(p,)| p))
    }

    /// Moves `sink`'s cursor on `stream` from `from` to `to`, only if it still
    /// stands at `from`. Returns whether it moved; `false` means another
    /// instance claimed those events first.
    pub async fn advance_export_cursor(
        &self,
        sink: &str,
        stream: ExportStream,
        from: i64,
        to: i64,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO export_cursors (sink, stream, position, updated_at) VALUES ($1, $2, 0, $3) \
             ON CONFLICT (sink, stream) DO NOTHING",
        )
        .bind(sink)
        .bind(stream.as_str())
        .bind(now)
        .execute(&self.db)
        .await
        .db()?;
        let moved = sqlx::query(
            "UPDATE export_cursors SET position = $1, updated_at = $2 \
             WHERE sink = $3 AND stream = $4 AND position = $5",
        )
        .bind(to)
        .bind(now)
        .bind(sink)
        .bind(stream.as_str())
        .bind(from)
        .execute(&self.db)
        .await
        .db()?
        .rows_affected();
        Ok(moved == 1)
    }

    /// Sign-in events of every tenant after sequence number `after`, in
    /// order, at most `limit`.
    pub async fn signins_after(&self, after: i64, limit: i64) -> Result<Vec<NumberedSignin>, StoreError> {
        sqlx::query_as::<_, NumberedSignin>(
            "SELECT s.seq, t.name AS tenant_name, s.id, s.tenant_id, s.at, s.username, s.user_id, \
             s.client_id, s.ip, s.outcome, s.detail \
             FROM signin_log s LEFT JOIN tenants t ON t.id = s.tenant_id \
             WHERE s.seq > $1 ORDER BY s.seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Audit entries of every tenant (and installation-wide ones) after
    /// sequence number `after`, in order, at most `limit`.
    pub async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<NamedAuditEntry>, StoreError> {
        sqlx::query_as::<_, NamedAuditEntry>(
            "SELECT t.name AS tenant_name, a.seq, a.tenant_id, a.at, a.actor, a.action, a.target, \
             a.detail, a.prev_hash, a.hash \
             FROM audit_log a LEFT JOIN tenants t ON t.id = a.tenant_id \
             WHERE a.seq > $1 ORDER BY a.seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await
        .db()
    }
}
