//! The audit log: append-only and hash-chained. Each entry carries the hash of the
//! one before, so changing or removing an entry breaks the chain at that point and
//! [`Store::verify_audit_chain`] reports it. The database also refuses updates and
//! deletes of the table (triggers in the migrations).

use aws_lc_rs::digest::{Context, SHA256};
use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// The previous-hash of the first entry.
const GENESIS: [u8; 32] = [0; 32];
/// Entries read per page while verifying.
const VERIFY_PAGE: i64 = 500;
/// Attempts to append when other writers race for the same sequence number.
const APPEND_ATTEMPTS: usize = 8;

/// An entry to append.
#[derive(Clone, Debug)]
pub struct NewAuditEntry {
    /// Tenant the action concerns (`None` for installation-wide actions).
    pub tenant_id: Option<String>,
    /// Who acted: `user:<id>`, `system`, `setup`, ...
    pub actor: String,
    /// What was done, e.g. `user.create`.
    pub action: String,
    /// What it was done to, e.g. `user:<id>`.
    pub target: String,
    /// Secret-free details as JSON.
    pub detail: serde_json::Value,
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Tenant concerned.
    pub tenant_id: Option<String>,
    /// When.
    pub at: UnixTime,
    /// Who acted.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// To what.
    pub target: String,
    /// Details (JSON text).
    pub detail: String,
    /// Hash of the previous entry.
    #[serde(skip)]
    pub prev_hash: Vec<u8>,
    /// Hash of this entry.
    #[serde(skip)]
    pub hash: Vec<u8>,
}

/// Result of checking the chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: i64,
    /// The first entry whose hash or link does not match, if any.
    pub first_broken_seq: Option<i64>,
    /// What is wrong with that entry.
    pub problem: Option<AuditBreak>,
}

/// What is wrong with the first broken entry of the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AuditBreak {
    /// The entry is not there: the chain jumps from the entry before it to
    /// `next_found` (entries were removed).
    Missing {
        /// The next sequence number present.
        next_found: i64,
    },
    /// The entry's link to the entry before it does not match: that entry was
    /// changed and its hash recomputed, or entries were removed or inserted.
    Link,
    /// The entry's content does not match its hash: it was changed after it
    /// was written.
    Content,
}

impl std::fmt::Display for AuditBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditBreak::Missing { next_found } => {
                write!(f, "the entry is missing (the next entry present is {next_found})")
            }
            AuditBreak::Link => f.write_str(
                "its link to the entry before it does not match (that entry was changed and rehashed, or entries were removed or inserted)",
            ),
            AuditBreak::Content => f.write_str("its content does not match its hash (it was changed after it was written)"),
        }
    }
}

/// What is wrong with `e`, expected at `expected_seq` after an entry hashed
/// `prev`; `None` when it is sound.
fn check_entry(e: &AuditEntry, expected_seq: i64, prev: &[u8]) -> Option<AuditBreak> {
    if e.seq != expected_seq {
        return Some(AuditBreak::Missing { next_found: e.seq });
    }
    if e.prev_hash != prev {
        return Some(AuditBreak::Link);
    }
    let recomputed = entry_hash(
        prev,
        &Hashed {
            seq: e.seq,
            tenant_id: e.tenant_id.as_deref(),
            at: e.at,
            actor: &e.actor,
            action: &e.action,
            target: &e.target,
            detail: &e.detail,
        },
    );
    (e.hash != recomputed).then_some(AuditBreak::Content)
}

/// The fields of an entry that its hash covers.
#[derive(Clone, Copy)]
struct Hashed<'a> {
    seq: i64,
    tenant_id: Option<&'a str>,
    at: UnixTime,
    actor: &'a str,
    action: &'a str,
    target: &'a str,
    detail: &'a str,
}

/// The hash of an entry: SHA-256 over the previous hash and each field,
/// length-prefixed so that no two different entries encode the same.
fn entry_hash(prev: &[u8], e: &Hashed<'_>) -> Vec<u8> {
    let Hashed {
        seq,
        tenant_id,
        at,
        actor,
        action,
        target,
        detail,
    } = *e;
    let mut ctx = Context::new(&SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(prev);
    field(&seq.to_be_bytes());
    field(tenant_id.unwrap_or("").as_bytes());
    field(&[u8::from(tenant_id.is_some())]);
    field(&at.secs().to_be_bytes());
    field(actor.as_bytes());
    field(action.as_bytes());
    field(target.as_bytes());
    field(detail.as_bytes());
    ctx.finish().as_ref().to_vec()
}

/// The PostgreSQL advisory lock appenders of the audit chain take in turn.
const AUDIT_APPEND_LOCK: i64 = 0x706f_7374_6175_6469; // "postaudi"

impl Store {
    /// Appends an entry to the chain and returns its sequence number.
    pub async fn append_audit(&self, entry: &NewAuditEntry, now: UnixTime) -> Result<i64, StoreError> {
        let detail = entry.detail.to_string();
        for _ in 0..APPEND_ATTEMPTS {
            let mut tx = self.begin_write().await?;
            if self.backend() == crate::Backend::Postgres {
                // Appenders take turns (SQLite's BEGIN IMMEDIATE does the same):
                // each reads the tail another may be about to extend, and
                // retrying on the sequence number's conflict starves under a
                // burst of administrators' changes. Released at commit.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(AUDIT_APPEND_LOCK)
                    .execute(&mut *tx)
                    .await
                    .db()?;
            }
            let last: Option<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .db()?;
            let (seq, prev) = match last {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, GENESIS.to_vec()),
            };
            let hash = entry_hash(
                &prev,
                &Hashed {
                    seq,
                    tenant_id: entry.tenant_id.as_deref(),
                    at: now,
                    actor: &entry.actor,
                    action: &entry.action,
                    target: &entry.target,
                    detail: &detail,
                },
            );
            let inserted = sqlx::query(
                "INSERT INTO audit_log (seq, tenant_id, at, actor, action, target, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(seq)
            .bind(&entry.tenant_id)
            .bind(now)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&detail)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx);
            match inserted {
                Ok(_) => {
                    tx.commit().await.db()?;
                    return Ok(seq);
                }
                // Another writer took this sequence number; read the new tail.
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Conflict("audit log is too busy; retry".into()))
    }

    /// A tenant's audit entries after sequence `after`, oldest first.
    pub async fn audit_entries(&self, tenant_id: &str, after: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        sqlx::query_as::<_, AuditEntry>(
            "SELECT seq, tenant_id, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
             WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Recomputes the whole chain and reports the first entry that does not match.
    pub async fn verify_audit_chain(&self) -> Result<AuditVerification, StoreError> {
        let mut prev = GENESIS.to_vec();
        let mut expected_seq = 1;
        let mut checked = 0;
        loop {
            let page = sqlx::query_as::<_, AuditEntry>(
                "SELECT seq, tenant_id, at, actor, action, target, detail, prev_hash, hash FROM audit_log \
                 WHERE seq >= $1 ORDER BY seq LIMIT $2",
            )
            .bind(expected_seq)
            .bind(VERIFY_PAGE)
            .fetch_all(&self.db)
            .await
            .db()?;
            let Some(last) = page.last() else { break };
            let next_seq = last.seq + 1;
            for e in &page {
                checked += 1;
                if let Some(problem) = check_entry(e, expected_seq, &prev) {
                    return Ok(AuditVerification {
                        entries: checked,
                        first_broken_seq: Some(expected_seq.min(e.seq)),
                        problem: Some(problem),
                    });
                }
                prev = e.hash.clone();
                expected_seq += 1;
            }
            expected_seq = next_seq;
        }
        Ok(AuditVerification {
            entries: checked,
            first_broken_seq: None,
            problem: None,
        })
    }
}
