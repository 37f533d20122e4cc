//! Releases and automatic updates (PTA-8).
//!
//! Operators publish releases for the whole installation: the signed manifest
//! first (checked: it parses, every field is valid, the signature is in
//! minisign's format), then the binary in chunks of at most 1 MiB (each a
//! request within the service's body limit; a chunk sent again replaces the
//! earlier one, so an upload can resume), then `complete`, which checks the
//! stored bytes against the manifest's size and SHA-256 before the release is
//! offered. The service does not verify the signature: the updater on each
//! host does, with its own key.
//!
//! A tenant's global administrators choose the channel, pin a version or pause
//! updates, and see each component's version, its latest update and the
//! history.

use crate::AdminState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_release::Manifest;
use postern_release::artifact::Sha256Stream;
use postern_store::{ComponentKind, ComponentUpdate, NewRelease, Release, UpdatePolicy};
use serde::Deserialize;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, Query};
use crate::wire::{
    ComponentUpdateView, ComponentVersionView, FieldVersion, PublishRelease, ReleaseView, SetUpdatePolicy,
    UpdatePolicyView, UpdatesOverview,
};

/// Largest chunk of a binary in one request.
const MAX_CHUNK: usize = 1024 * 1024;
/// Most history rows one request returns.
const MAX_HISTORY: i64 = 500;
/// Channels releases are published on.
const CHANNELS: [&str; 2] = ["stable", "beta"];

fn release_view(r: &Release) -> ReleaseView {
    ReleaseView {
        id: r.id.clone(),
        version: r.version.clone(),
        target: r.target.clone(),
        channel: r.channel.clone(),
        sha256: r.sha256.clone(),
        size: u64::try_from(r.size).unwrap_or(0),
        min_upgrade_from: r.min_upgrade_from.clone(),
        notes_url: r.notes_url.clone(),
        ready: r.ready,
        created_by: r.created_by.clone(),
        created_at: r.created_at,
    }
}

fn update_view(u: &ComponentUpdate) -> ComponentUpdateView {
    ComponentUpdateView {
        id: u.id.clone(),
        component_id: u.component_id.clone(),
        release_id: u.release_id.clone(),
        from_version: u.from_version.clone(),
        to_version: u.to_version.clone(),
        state: u.state.clone(),
        detail: u.detail.clone(),
        started_at: u.started_at,
        finished_at: u.finished_at,
    }
}

fn policy_view(p: &UpdatePolicy) -> UpdatePolicyView {
    UpdatePolicyView {
        channel: p.channel.clone(),
        pinned_version: p.pinned_version.clone(),
        paused: p.paused,
        updated_at: p.updated_at,
    }
}

/// `GET /api/v1/system/releases`.
pub(crate) async fn list(State(state): State<AdminState>) -> Result<Json<Vec<ReleaseView>>, ApiError> {
    let releases = state.store.releases().await?;
    Ok(Json(releases.iter().map(release_view).collect()))
}

/// `POST /api/v1/system/releases`: stores a signed manifest; the binary
/// follows.
pub(crate) async fn publish(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<PublishRelease>,
) -> Result<(StatusCode, Json<ReleaseView>), ApiError> {
    let mut problems = Problems::new();
    let manifest = Manifest::from_bytes(req.manifest.as_bytes())
        .map_err(|e| problems.add(e.to_string()))
        .ok();
    problems.check(postern_release::check_signature_form(&req.signature).map_err(|e| e.to_string()));
    if !CHANNELS.contains(&req.channel.as_str()) {
        problems.add(format!("channel must be one of {}.", CHANNELS.join(", ")));
    }
    problems.finish()?;
    let Some(m) = manifest else {
        return Err(ApiError::bad_request("the manifest is invalid"));
    };
    let release = state
        .store
        .create_release(
            &NewRelease {
                version: m.version.clone(),
                target: m.target.clone(),
                channel: req.channel.clone(),
                manifest: req.manifest.clone(),
                signature: req.signature.trim().to_owned(),
                sha256: m.sha256.clone(),
                size: i64::try_from(m.size).map_err(|_| ApiError::bad_request("size is too large"))?,
                min_upgrade_from: m.min_upgrade_from.clone(),
                notes_url: m.notes_url.clone(),
                created_by: caller.actor(),
            },
            state.now(),
        )
        .await?;
    caller
        .audit(
            &state,
            "release.publish",
            format!("release:{}", release.id),
            json!({ "version": release.version, "target": release.target, "channel": release.channel }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(release_view(&release))))
}

/// `PUT /api/v1/system/releases/{id}/chunks/{seq}`: one piece of the binary
/// (1 byte to 1 MiB), numbered from 0.
pub(crate) async fn put_chunk(
    State(state): State<AdminState>,
    Path((id, seq)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let seq: i64 = seq
        .parse()
        .map_err(|_| ApiError::bad_request("the chunk number must be a number"))?;
    let release = state.store.release(&id).await?;
    let most_chunks = release.size;
    if !(0..most_chunks).contains(&seq) {
        return Err(ApiError::bad_request(format!(
            "chunk numbers run from 0 to {}",
            most_chunks - 1
        )));
    }
    if body.is_empty() || body.len() > MAX_CHUNK {
        return Err(ApiError::bad_request(format!("a chunk is 1 to {MAX_CHUNK} bytes")));
    }
    state.store.put_release_chunk(&id, seq, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/system/releases/{id}/complete`: checks the stored binary
/// against the manifest (every chunk from 0 on, size, SHA-256) and offers the
/// release from now on.
pub(crate) async fn complete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ReleaseView>, ApiError> {
    let release = state.store.release(&id).await?;
    let (count, max) = state.store.release_chunk_span(&id).await?;
    if count == 0 || max != Some(count - 1) {
        return Err(ApiError::bad_request(format!(
            "the binary is incomplete: {count} chunks stored, not numbered 0 to {}",
            count - 1
        )));
    }
    let mut hash = Sha256Stream::default();
    for seq in 0..count {
        let chunk = state
            .store
            .release_chunk(&id, seq)
            .await?
            .ok_or_else(|| ApiError::bad_request(format!("chunk {seq} is missing")))?;
        hash.update(&chunk);
    }
    let (sha256, size) = hash.finish();
    let manifest = Manifest::from_bytes(release.manifest.as_bytes()).map_err(|e| ApiError::Internal(e.to_string()))?;
    postern_release::artifact::check_digest(&manifest, &sha256, size)
        .map_err(|e| ApiError::bad_request(format!("{e}; send the chunks again")))?;
    state.store.mark_release_ready(&id).await?;
    caller
        .audit(
            &state,
            "release.complete",
            format!("release:{id}"),
            json!({ "version": release.version, "sha256": sha256, "size": size }),
        )
        .await?;
    let release = state.store.release(&id).await?;
    Ok(Json(release_view(&release)))
}

/// `DELETE /api/v1/system/releases/{id}`: withdraws a release; updates
/// offered with it end when their lease does.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let release = state.store.delete_release(&id).await?;
    caller
        .audit(
            &state,
            "release.delete",
            format!("release:{id}"),
            json!({ "version": release.version, "target": release.target }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/system/versions`: the versions in the field.
pub(crate) async fn field_versions(State(state): State<AdminState>) -> Result<Json<Vec<FieldVersion>>, ApiError> {
    let counts = state.store.component_versions().await?;
    Ok(Json(
        counts
            .into_iter()
            .map(|(kind, version, components)| FieldVersion {
                kind,
                version,
                components,
            })
            .collect(),
    ))
}

/// `GET /api/v1/updates`: the tenant's policy, and every component with its
/// version and latest update.
pub(crate) async fn overview(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<UpdatesOverview>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let policy = state.store.update_policy(tenant_id, state.now()).await?;
    let mut components = Vec::new();
    for kind in [ComponentKind::Connector, ComponentKind::Agent] {
        for c in state.store.components(tenant_id, kind).await? {
            let latest = state.store.component_updates(tenant_id, Some(&c.id), 1).await?;
            components.push(ComponentVersionView {
                id: c.id.clone(),
                kind: c.kind,
                name: c.name.clone(),
                group_id: c.group_id.clone(),
                version: c.version.clone(),
                latest_update: latest.first().map(update_view),
            });
        }
    }
    Ok(Json(UpdatesOverview {
        policy: policy_view(&policy),
        components,
    }))
}

/// `PUT /api/v1/updates/policy`: channel, pinned version, pause.
pub(crate) async fn set_policy(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<SetUpdatePolicy>,
) -> Result<Json<UpdatePolicyView>, ApiError> {
    let mut problems = Problems::new();
    if !CHANNELS.contains(&req.channel.as_str()) {
        problems.add(format!("channel must be one of {}.", CHANNELS.join(", ")));
    }
    let pinned = match req.pinned_version.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => match semver::Version::parse(v) {
            Ok(v) => Some(v.to_string()),
            Err(e) => {
                problems.add(format!("pinned_version {v:?} is not a version like 0.2.0: {e}"));
                None
            }
        },
    };
    problems.finish()?;
    let policy = UpdatePolicy {
        tenant_id: caller.tenant.id.clone(),
        channel: req.channel.clone(),
        pinned_version: pinned,
        paused: req.paused,
        updated_at: state.now(),
    };
    state.store.set_update_policy(&policy).await?;
    caller
        .audit(
            &state,
            "updates.policy",
            format!("tenant:{}", caller.tenant.id),
            json!({ "channel": policy.channel, "pinned_version": policy.pinned_version, "paused": policy.paused }),
        )
        .await?;
    Ok(Json(policy_view(&policy)))
}

/// Query of the update history.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryQuery {
    /// Only this component's.
    component: Option<String>,
    /// At most this many (default and maximum 500).
    limit: Option<i64>,
}

/// `GET /api/v1/updates/history[?component=ID][&limit=N]`: newest first.
pub(crate) async fn history(
    State(state): State<AdminState>,
    caller: Caller,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<ComponentUpdateView>>, ApiError> {
    let limit = q.limit.unwrap_or(MAX_HISTORY).clamp(1, MAX_HISTORY);
    let rows = state
        .store
        .component_updates(&caller.tenant.id, q.component.as_deref(), limit)
        .await?;
    Ok(Json(rows.iter().map(update_view).collect()))
}
