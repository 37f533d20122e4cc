//! Signed releases of the postern binary and automatic updates (PTA-8): the
//! releases (the binary in chunks, streamed by any instance), each tenant's
//! update policy (channel, pinned version, paused), the lease that lets one
//! connector per group (one agent per tenant) update at a time, and every
//! component's update history.
//!
//! The store keeps what the publisher signed as it came; it is not trusted for
//! code: the updater verifies the signature with its own key.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{DbFlag, Store, StoreError, flag, new_id};

/// A release as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Release {
    /// Identifier.
    pub id: String,
    /// Version (from the manifest).
    pub version: String,
    /// Target triple (from the manifest).
    pub target: String,
    /// `stable` or `beta`.
    pub channel: String,
    /// The manifest's exact bytes.
    pub manifest: String,
    /// Its minisign signature.
    pub signature: String,
    /// SHA-256 of the binary (from the manifest).
    pub sha256: String,
    /// Size of the binary (from the manifest).
    pub size: i64,
    /// The oldest version it upgrades from (from the manifest).
    pub min_upgrade_from: String,
    /// Release notes (from the manifest).
    pub notes_url: String,
    /// Whether the whole binary is stored and checked against the manifest.
    #[sqlx(try_from = "DbFlag")]
    pub ready: bool,
    /// Who published it (`user:<id>`).
    pub created_by: String,
    /// When.
    pub created_at: UnixTime,
}

/// What a new release is stored with (the binary follows in chunks).
#[derive(Clone, Debug)]
pub struct NewRelease {
    /// Version.
    pub version: String,
    /// Target triple.
    pub target: String,
    /// Channel.
    pub channel: String,
    /// Manifest bytes.
    pub manifest: String,
    /// Signature.
    pub signature: String,
    /// SHA-256 of the binary.
    pub sha256: String,
    /// Size of the binary.
    pub size: i64,
    /// Oldest version it upgrades from.
    pub min_upgrade_from: String,
    /// Release notes.
    pub notes_url: String,
    /// Who publishes it.
    pub created_by: String,
}

/// A tenant's update policy.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct UpdatePolicy {
    /// Tenant.
    pub tenant_id: String,
    /// `stable` or `beta` (beta also gets stable releases).
    pub channel: String,
    /// Only this version is installed (never a newer one).
    pub pinned_version: Option<String>,
    /// No updates at all.
    #[sqlx(try_from = "DbFlag")]
    pub paused: bool,
    /// Last change.
    pub updated_at: UnixTime,
}

/// One update of one component.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ComponentUpdate {
    /// Identifier.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The component.
    pub component_id: String,
    /// The release.
    pub release_id: String,
    /// Version before.
    pub from_version: String,
    /// Version offered.
    pub to_version: String,
    /// `offered`, `installing`, `succeeded`, `rolled_back`, `refused`,
    /// `failed` or `expired`.
    pub state: String,
    /// What the updater or the service said.
    pub detail: String,
    /// When it was offered.
    pub started_at: UnixTime,
    /// When it ended.
    pub finished_at: Option<UnixTime>,
    /// Its place in the tenant's history (newest highest).
    pub seq: i64,
}

macro_rules! release_columns {
    () => {
        "id, version, target, channel, manifest, signature, sha256, size, min_upgrade_from, notes_url, ready, \
         created_by, created_at"
    };
}
macro_rules! update_columns {
    () => {
        "id, tenant_id, component_id, release_id, from_version, to_version, state, detail, started_at, finished_at, \
         seq"
    };
}

impl Store {
    // ---- releases --------------------------------------------------------------

    /// Stores a release's manifest; it is offered once its binary is complete
    /// ([`Store::mark_release_ready`]).
    pub async fn create_release(&self, r: &NewRelease, now: UnixTime) -> Result<Release, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO releases (id, version, target, channel, manifest, signature, sha256, size, \
             min_upgrade_from, notes_url, ready, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12)",
        )
        .bind(&id)
        .bind(&r.version)
        .bind(&r.target)
        .bind(&r.channel)
        .bind(&r.manifest)
        .bind(&r.signature)
        .bind(&r.sha256)
        .bind(r.size)
        .bind(&r.min_upgrade_from)
        .bind(&r.notes_url)
        .bind(&r.created_by)
        .bind(now)
        .execute(&self.db)
        .await
        .map_err(|e| match StoreError::from_sqlx(e) {
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("release {} for {} exists already", r.version, r.target))
            }
            e => e,
        })?;
        self.release(&id).await
    }

    /// One release.
    pub async fn release(&self, id: &str) -> Result<Release, StoreError> {
        sqlx::query_as::<_, Release>(concat!("SELECT ", release_columns!(), " FROM releases WHERE id = $1"))
            .bind(id)
            .fetch_one(&self.db)
            .await
            .db()
    }

    /// Every release, newest first by publication.
    pub async fn releases(&self) -> Result<Vec<Release>, StoreError> {
        sqlx::query_as::<_, Release>(concat!(
            "SELECT ",
            release_columns!(),
            " FROM releases ORDER BY created_at DESC, version DESC"
        ))
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Stores chunk `seq` of a release that is not complete yet (a chunk sent
    /// again replaces the earlier copy, so an upload can resume).
    pub async fn put_release_chunk(&self, release_id: &str, seq: i64, data: &[u8]) -> Result<(), StoreError> {
        let release = self.release(release_id).await?;
        if release.ready {
            return Err(StoreError::Conflict(
                "the release is complete; its binary cannot change".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM release_chunks WHERE release_id = $1 AND seq = $2")
            .bind(release_id)
            .bind(seq)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("INSERT INTO release_chunks (release_id, seq, data) VALUES ($1, $2, $3)")
            .bind(release_id)
            .bind(seq)
            .bind(data)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()
    }

    /// How many chunks a release has and the highest sequence number.
    pub async fn release_chunk_span(&self, release_id: &str) -> Result<(i64, Option<i64>), StoreError> {
        let row: (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MAX(seq) FROM release_chunks WHERE release_id = $1")
                .bind(release_id)
                .fetch_one(&self.db)
                .await
                .db()?;
        Ok(row)
    }

    /// Chunk `seq` of a release, if stored.
    pub async fn release_chunk(&self, release_id: &str, seq: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT data FROM release_chunks WHERE release_id = $1 AND seq = $2")
                .bind(release_id)
                .bind(seq)
                .fetch_optional(&self.db)
                .await
                .db()?;
        Ok(row.map(|(d,)| d))
    }

    /// Marks a release complete: from now on it may be offered.
    pub async fn mark_release_ready(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE releases SET ready = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.db)
            .await
            .db()?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Deletes a release and its binary (history rows keep its ID).
    pub async fn delete_release(&self, id: &str) -> Result<Release, StoreError> {
        let release = self.release(id).await?;
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM release_chunks WHERE release_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("DELETE FROM update_leases WHERE release_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query("DELETE FROM releases WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .db()?;
        tx.commit().await.db()?;
        Ok(release)
    }

    // ---- policies --------------------------------------------------------------

    /// A tenant's update policy (stable, not pinned, not paused unless set).
    pub async fn update_policy(&self, tenant_id: &str, now: UnixTime) -> Result<UpdatePolicy, StoreError> {
        let stored = sqlx::query_as::<_, UpdatePolicy>(
            "SELECT tenant_id, channel, pinned_version, paused, updated_at FROM update_policies WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        Ok(stored.unwrap_or(UpdatePolicy {
            tenant_id: tenant_id.to_owned(),
            channel: "stable".into(),
            pinned_version: None,
            paused: false,
            updated_at: now,
        }))
    }

    /// Sets a tenant's update policy.
    pub async fn set_update_policy(&self, p: &UpdatePolicy) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM update_policies WHERE tenant_id = $1")
            .bind(&p.tenant_id)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "INSERT INTO update_policies (tenant_id, channel, pinned_version, paused, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&p.tenant_id)
        .bind(&p.channel)
        .bind(&p.pinned_version)
        .bind(flag(p.paused))
        .bind(p.updated_at)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    // ---- the one-at-a-time lease -------------------------------------------------

    /// Takes the update lease of `scope` (a connector group, or a tenant's
    /// agents) for `component_id` and `release_id` until `until`, if no other
    /// component holds it: true when this component holds it now. An expired
    /// lease is taken over; updates of components that no longer hold a lease
    /// are marked `expired`.
    #[allow(clippy::too_many_arguments)]
    pub async fn acquire_update_lease(
        &self,
        tenant_id: &str,
        scope: &str,
        component_id: &str,
        release_id: &str,
        now: UnixTime,
        until: UnixTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM update_leases WHERE tenant_id = $1 AND scope = $2 AND (expires_at <= $3 OR component_id = $4)",
        )
        .bind(tenant_id)
        .bind(scope)
        .bind(now)
        .bind(component_id)
        .execute(&mut *tx)
        .await
        .db()?;
        let inserted = sqlx::query(
            "INSERT INTO update_leases (tenant_id, scope, component_id, release_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(scope)
        .bind(component_id)
        .bind(release_id)
        .bind(until)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx);
        match inserted {
            Ok(_) => {
                sqlx::query(concat!(
                    "UPDATE component_updates SET state = 'expired', finished_at = $2, \
                     detail = 'the updater did not report before its lease ran out' \
                     WHERE tenant_id = $1 AND state IN ",
                    "('offered', 'installing')",
                    " AND component_id <> $3 AND component_id NOT IN \
                     (SELECT component_id FROM update_leases WHERE tenant_id = $1)"
                ))
                .bind(tenant_id)
                .bind(now)
                .bind(component_id)
                .execute(&mut *tx)
                .await
                .db()?;
                tx.commit().await.db()?;
                Ok(true)
            }
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The component holding the update lease of `scope`, if any holds it now.
    pub async fn update_lease_holder(
        &self,
        tenant_id: &str,
        scope: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT component_id FROM update_leases WHERE tenant_id = $1 AND scope = $2 AND expires_at > $3",
        )
        .bind(tenant_id)
        .bind(scope)
        .bind(now)
        .fetch_optional(&self.db)
        .await
        .db()?;
        Ok(row.map(|(c,)| c))
    }

    /// Whether `component_id` holds a live update lease for `release_id`.
    pub async fn holds_update_lease(
        &self,
        tenant_id: &str,
        component_id: &str,
        release_id: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT scope FROM update_leases WHERE tenant_id = $1 AND component_id = $2 AND release_id = $3 \
             AND expires_at > $4",
        )
        .bind(tenant_id)
        .bind(component_id)
        .bind(release_id)
        .bind(now)
        .fetch_optional(&self.db)
        .await
        .db()?;
        Ok(row.is_some())
    }

    /// Gives up the update leases a component holds.
    pub async fn release_update_lease(&self, tenant_id: &str, component_id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM update_leases WHERE tenant_id = $1 AND component_id = $2")
            .bind(tenant_id)
            .bind(component_id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    // ---- history ---------------------------------------------------------------

    /// Records that `release_id` was offered to a component (or returns the
    /// update already open for that release).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_component_update(
        &self,
        tenant_id: &str,
        component_id: &str,
        release_id: &str,
        from_version: &str,
        to_version: &str,
        now: UnixTime,
    ) -> Result<ComponentUpdate, StoreError> {
        if let Some(open) = self.open_component_update(tenant_id, component_id).await? {
            if open.release_id == release_id {
                return Ok(open);
            }
            self.finish_component_update(tenant_id, component_id, &open.release_id, "expired", "superseded", now)
                .await?;
        }
        let id = new_id();
        sqlx::query(
            "INSERT INTO component_updates (id, tenant_id, component_id, release_id, from_version, to_version, \
             state, detail, started_at, finished_at, seq) VALUES ($1, $2, $3, $4, $5, $6, 'offered', '', $7, NULL, \
             (SELECT COALESCE(MAX(seq), 0) + 1 FROM component_updates WHERE tenant_id = $2))",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(component_id)
        .bind(release_id)
        .bind(from_version)
        .bind(to_version)
        .bind(now)
        .execute(&self.db)
        .await
        .db()?;
        self.component_update(&id).await
    }

    async fn component_update(&self, id: &str) -> Result<ComponentUpdate, StoreError> {
        sqlx::query_as::<_, ComponentUpdate>(concat!(
            "SELECT ",
            update_columns!(),
            " FROM component_updates WHERE id = $1"
        ))
        .bind(id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The component's update that has not ended, if any.
    pub async fn open_component_update(
        &self,
        tenant_id: &str,
        component_id: &str,
    ) -> Result<Option<ComponentUpdate>, StoreError> {
        sqlx::query_as::<_, ComponentUpdate>(concat!(
            "SELECT ",
            update_columns!(),
            " FROM component_updates WHERE tenant_id = $1 AND component_id = $2 AND state IN ",
            "('offered', 'installing')",
            " ORDER BY seq DESC LIMIT 1"
        ))
        .bind(tenant_id)
        .bind(component_id)
        .fetch_optional(&self.db)
        .await
        .db()
    }

    /// Sets the state of the component's open update of `release_id`: an end
    /// state (`succeeded`, `rolled_back`, `refused`, `failed`, `expired`)
    /// closes it; `installing` does not. Returns whether one was open.
    pub async fn finish_component_update(
        &self,
        tenant_id: &str,
        component_id: &str,
        release_id: &str,
        state: &str,
        detail: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let finished_at = (state != "installing").then_some(now);
        let done = sqlx::query(concat!(
            "UPDATE component_updates SET state = $1, detail = $2, finished_at = $3 \
             WHERE tenant_id = $4 AND component_id = $5 AND release_id = $6 AND state IN ",
            "('offered', 'installing')"
        ))
        .bind(state)
        .bind(detail)
        .bind(finished_at)
        .bind(tenant_id)
        .bind(component_id)
        .bind(release_id)
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() > 0)
    }

    /// The component called in with `version`: an open update to that version
    /// has succeeded, and its lease is given back. Returns whether one did.
    pub async fn complete_update_reaching(
        &self,
        tenant_id: &str,
        component_id: &str,
        version: &str,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE component_updates SET state = 'succeeded', finished_at = $1, \
             detail = 'the new version called in' \
             WHERE tenant_id = $2 AND component_id = $3 AND to_version = $4 AND state IN ",
            "('offered', 'installing')"
        ))
        .bind(now)
        .bind(tenant_id)
        .bind(component_id)
        .bind(version)
        .execute(&self.db)
        .await
        .db()?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.release_update_lease(tenant_id, component_id).await?;
        Ok(true)
    }

    /// A tenant's update history, newest first: of one component, or of all.
    pub async fn component_updates(
        &self,
        tenant_id: &str,
        component_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ComponentUpdate>, StoreError> {
        match component_id {
            Some(c) => sqlx::query_as::<_, ComponentUpdate>(concat!(
                "SELECT ",
                update_columns!(),
                " FROM component_updates WHERE tenant_id = $1 AND component_id = $2 \
                 ORDER BY seq DESC LIMIT $3"
            ))
            .bind(tenant_id)
            .bind(c)
            .bind(limit),
            None => sqlx::query_as::<_, ComponentUpdate>(concat!(
                "SELECT ",
                update_columns!(),
                " FROM component_updates WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2"
            ))
            .bind(tenant_id)
            .bind(limit),
        }
        .fetch_all(&self.db)
        .await
        .db()
    }

    /// Releases this component refused or rolled back (not offered to it again;
    /// a `failed` one, e.g. a download cut short, is offered again).
    pub async fn failed_releases(&self, tenant_id: &str, component_id: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT DISTINCT release_id FROM component_updates WHERE tenant_id = $1 AND component_id = $2 \
             AND state IN ('refused', 'rolled_back')",
        )
        .bind(tenant_id)
        .bind(component_id)
        .fetch_all(&self.db)
        .await
        .db()?;
        Ok(rows.into_iter().map(|(r,)| r).collect())
    }

    /// Versions in the field: how many components of each kind report each
    /// version, over every tenant.
    pub async fn component_versions(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        sqlx::query_as("SELECT kind, version, COUNT(*) FROM components GROUP BY kind, version ORDER BY kind, version")
            .fetch_all(&self.db)
            .await
            .db()
    }
}
