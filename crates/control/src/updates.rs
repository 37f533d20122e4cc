//! Automatic updates over the mTLS endpoint (PTA-8): which release applies to
//! a component, the one-at-a-time lease (one connector per connector group,
//! one agent per tenant), the binary streamed from the store, the updater's
//! reports, and what every component call says about its version (recorded;
//! an update is done when the new version calls in; components older than
//! the minimum are refused with the release to install).
//!
//! The service is not trusted for code: it hands out what the publisher
//! signed, and the updater checks signature, size and SHA-256 itself.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use postern_proto::updates::{
    OfferedRelease, UpdateCheck, UpdateCheckRequest, UpdateOutcome, UpdateReport, UpdateStatus,
};
use postern_proto::{ComponentKind, check_protocol};
use postern_store::{Release, UpdatePolicy};
use semver::Version;

use crate::Control;
use crate::error::ControlError;
use crate::identity::{ComponentIdentity, require_tenant};

/// How soon an updater waiting for its group's lease asks again.
const WAIT_FOR_LEASE_SECS: u64 = 60;
/// Longest detail kept from an updater's report.
const MAX_DETAIL: usize = 1000;

/// Settings of automatic updates.
#[derive(Clone, Debug)]
pub struct UpdateSettings {
    /// Components older than this are refused (426) with the release to
    /// install named; `None` accepts every version.
    pub minimum_version: Option<Version>,
    /// How often updaters ask (they add jitter). Default one hour.
    pub check_interval: Duration,
    /// How long an offered update holds its group's lease at most (download,
    /// install and health check must fit). Default one hour.
    pub lease: Duration,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            minimum_version: None,
            check_interval: Duration::from_secs(3600),
            lease: Duration::from_secs(3600),
        }
    }
}

impl UpdateSettings {
    /// Parses a version as the settings take it (semantic versioning).
    pub fn parse_version(v: &str) -> Result<Version, String> {
        Version::parse(v).map_err(|e| format!("{v:?} is not a version like 0.2.0: {e}"))
    }
}

/// What a component's call says about it, from its headers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reported {
    version: Option<String>,
    target: Option<String>,
}

impl Reported {
    /// Reads `x-postern-version` and `x-postern-target` (short printable values only).
    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let read = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 64)
                .map(str::to_owned)
        };
        Self {
            version: read(postern_proto::updates::VERSION_HEADER),
            target: read(postern_proto::updates::TARGET_HEADER),
        }
    }
}

/// Records the version a component reports, completes its update when the new
/// version calls in, and refuses it when older than the minimum. The updater's
/// own calls are none of these (`is_updater`).
pub(crate) async fn observe(
    control: &Control,
    identity: &ComponentIdentity,
    reported: &Reported,
    ip: &str,
    is_updater: bool,
) -> Result<(), ControlError> {
    if is_updater {
        return Ok(());
    }
    let c = &identity.component;
    if let Some(v) = &reported.version
        && *v != c.version
    {
        let now = control.now();
        control.store.touch_component(&c.id, ip, Some(v), now).await?;
        if control
            .store
            .complete_update_reaching(&c.tenant_id, &c.id, v, now)
            .await?
        {
            tracing::info!(component = %c.id, kind = %c.kind, version = %v, "update done: the new version called in");
        }
    }
    let Some(minimum) = &control.config.updates.minimum_version else {
        return Ok(());
    };
    let version = reported.version.as_deref().unwrap_or(&c.version);
    if Version::parse(version).is_ok_and(|v| v >= *minimum) {
        return Ok(());
    }
    Err(ControlError::Outdated(
        outdated_message(control, c.kind, version, minimum, reported.target.as_deref()).await?,
    ))
}

/// "This connector runs 0.1.0 …; install release 0.3.0 …".
async fn outdated_message(
    control: &Control,
    kind: ComponentKind,
    version: &str,
    minimum: &Version,
    target: Option<&str>,
) -> Result<String, ControlError> {
    let releases = control.store.releases().await?;
    let best = releases
        .iter()
        .filter(|r| r.ready && target.is_none_or(|t| r.target == t))
        .filter_map(|r| Version::parse(&r.version).ok().map(|v| (v, r)))
        .filter(|(v, _)| v >= minimum)
        .max_by(|a, b| a.0.cmp(&b.0));
    let install = match best {
        Some((v, r)) => format!(
            "install release {v} ({}, {} channel, notes: {})",
            r.target, r.channel, r.notes_url
        ),
        None => format!("install release {minimum} or newer"),
    };
    Ok(format!(
        "this {kind} runs Postern {version}, older than {minimum}, the oldest version this service accepts; \
         {install} (`postern updater` installs it by itself unless updates are paused for this tenant)"
    ))
}

/// The lease scope of a component: its connector group, or its tenant's agents.
async fn lease_scope(control: &Control, identity: &ComponentIdentity) -> Result<String, ControlError> {
    match identity.kind {
        ComponentKind::Agent => Ok("agents".into()),
        ComponentKind::Connector => {
            let group = match &identity.component.group_id {
                Some(id) => id.clone(),
                None => {
                    control
                        .store
                        .default_connector_group(&identity.tenant_id, control.now())
                        .await?
                        .id
                }
            };
            Ok(format!("group:{group}"))
        }
    }
}

/// Whether a tenant on `policy_channel` takes releases of `release_channel`
/// (beta tenants take stable releases too).
fn channel_admits(policy_channel: &str, release_channel: &str) -> bool {
    release_channel == "stable" || policy_channel == release_channel
}

/// The release to offer: the pinned version if the policy pins one, else the
/// newest; in either case newer than what is installed, for this target and
/// channel, one this installation may upgrade from, and not one this
/// component refused or rolled back before.
fn choose<'a>(
    releases: &'a [Release],
    policy: &UpdatePolicy,
    installed: &Version,
    target: &str,
    failed: &[String],
) -> Option<(Version, &'a Release)> {
    releases
        .iter()
        .filter(|r| r.ready && r.target == target && channel_admits(&policy.channel, &r.channel))
        .filter(|r| !failed.contains(&r.id))
        .filter_map(|r| {
            let v = Version::parse(&r.version).ok()?;
            let min = Version::parse(&r.min_upgrade_from).ok()?;
            (v > *installed && min <= *installed).then_some((v, r))
        })
        .filter(|(v, _)| policy.pinned_version.as_deref().is_none_or(|p| v.to_string() == p))
        .max_by(|a, b| a.0.cmp(&b.0))
}

fn no_update(reason: String, check_again_secs: u64) -> Json<UpdateCheck> {
    Json(UpdateCheck {
        update: None,
        reason,
        check_again_secs,
    })
}

/// `POST /v1/t/{tenant}/updates/check`: is there a newer release for this
/// component, and may it update now?
pub(crate) async fn check(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    Json(request): Json<UpdateCheckRequest>,
) -> Result<Json<UpdateCheck>, ControlError> {
    check_protocol(request.protocol)?;
    require_tenant(&identity, &tenant)?;
    let installed = Version::parse(&request.installed_version)
        .map_err(|e| ControlError::BadRequest(format!("installed_version {:?}: {e}", request.installed_version)))?;
    let now = control.now();
    let interval = control.config.updates.check_interval.as_secs();
    let policy = control.store.update_policy(&identity.tenant_id, now).await?;
    if policy.paused {
        return Ok(no_update("updates are paused for this tenant".into(), interval));
    }
    let releases = control.store.releases().await?;
    let failed = control
        .store
        .failed_releases(&identity.tenant_id, &identity.component_id)
        .await?;
    let Some((version, release)) = choose(&releases, &policy, &installed, &request.target, &failed) else {
        let why = match &policy.pinned_version {
            Some(p) => format!("up to date: {installed} is installed and the tenant pins {p}"),
            None => format!("up to date: {installed} is installed ({} channel)", policy.channel),
        };
        return Ok(no_update(why, interval));
    };
    let scope = lease_scope(&control, &identity).await?;
    let until = now + control.config.updates.lease;
    if !control
        .store
        .acquire_update_lease(
            &identity.tenant_id,
            &scope,
            &identity.component_id,
            &release.id,
            now,
            until,
        )
        .await?
    {
        let others = match identity.kind {
            ComponentKind::Connector => "another connector of this connector group",
            ComponentKind::Agent => "another agent of this tenant",
        };
        return Ok(no_update(
            format!("{others} is updating; they update one at a time"),
            WAIT_FOR_LEASE_SECS,
        ));
    }
    control
        .store
        .start_component_update(
            &identity.tenant_id,
            &identity.component_id,
            &release.id,
            &installed.to_string(),
            &version.to_string(),
            now,
        )
        .await?;
    tracing::info!(component = %identity.component_id, from = %installed, to = %version, "update offered");
    Ok(Json(UpdateCheck {
        update: Some(OfferedRelease {
            release_id: release.id.clone(),
            version: release.version.clone(),
            manifest: release.manifest.clone(),
            signature: release.signature.clone(),
            size: u64::try_from(release.size).unwrap_or(0),
        }),
        reason: format!("{version} is available ({} channel)", release.channel),
        check_again_secs: interval,
    }))
}

/// `GET /v1/t/{tenant}/updates/releases/{id}/binary`: the binary, streamed
/// chunk by chunk from the store with its `Content-Length`, for the component
/// holding the lease for that release. A chunk missing before the announced
/// length cuts the response short (the updater notices and refuses).
pub(crate) async fn download(
    State(control): State<Arc<Control>>,
    Path((tenant, release_id)): Path<(String, String)>,
    Extension(identity): Extension<ComponentIdentity>,
) -> Result<Response, ControlError> {
    require_tenant(&identity, &tenant)?;
    let now = control.now();
    if !control
        .store
        .holds_update_lease(&identity.tenant_id, &identity.component_id, &release_id, now)
        .await?
    {
        return Err(ControlError::Forbidden(
            "this component was not offered that release (or its lease ran out); check for updates first".into(),
        ));
    }
    let release = control.store.release(&release_id).await?;
    let size = u64::try_from(release.size).unwrap_or(0);
    let store = control.store.clone();
    let chunks = futures_util::stream::unfold((0i64, 0u64), move |(seq, sent)| {
        let store = store.clone();
        let release_id = release_id.clone();
        async move {
            if sent >= size {
                return None;
            }
            match store.release_chunk(&release_id, seq).await {
                Ok(Some(data)) => {
                    let room = usize::try_from(size - sent).unwrap_or(usize::MAX);
                    let mut data = bytes::Bytes::from(data);
                    data.truncate(room);
                    let next = sent + data.len() as u64;
                    Some((Ok::<_, std::io::Error>(data), (seq + 1, next)))
                }
                Ok(None) => {
                    tracing::error!(release = %release_id, seq, "release binary incomplete in the store");
                    Some((Err(std::io::Error::other("release binary incomplete")), (seq, size)))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (seq, size))),
            }
        }
    });
    let mut response = Body::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, header::HeaderValue::from(size));
    Ok(response)
}

/// `POST /v1/t/{tenant}/updates/report`: how the update went. `installed`
/// keeps the lease until the new version calls in; every other outcome ends
/// the update and gives the lease back.
pub(crate) async fn report(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    Json(report): Json<UpdateReport>,
) -> Result<StatusCode, ControlError> {
    check_protocol(report.protocol)?;
    require_tenant(&identity, &tenant)?;
    let now = control.now();
    let detail: String = report
        .detail
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    let state = match report.outcome {
        UpdateOutcome::Installed => "installing",
        other => other.as_str(),
    };
    let found = control
        .store
        .finish_component_update(
            &identity.tenant_id,
            &identity.component_id,
            &report.release_id,
            state,
            &detail,
            now,
        )
        .await?;
    if report.outcome != UpdateOutcome::Installed {
        control
            .store
            .release_update_lease(&identity.tenant_id, &identity.component_id)
            .await?;
    }
    // The new version may call in before the updater says it installed it:
    // the update has succeeded already.
    if !found && report.outcome != UpdateOutcome::Installed {
        return Err(ControlError::NotFoundMsg(
            "no update of that release is open for this component".into(),
        ));
    }
    tracing::info!(component = %identity.component_id, outcome = report.outcome.as_str(), %detail, "update report");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/t/{tenant}/updates/status`: the version the component last
/// reported and its latest update's state.
pub(crate) async fn status(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
) -> Result<Json<UpdateStatus>, ControlError> {
    require_tenant(&identity, &tenant)?;
    let component = control
        .store
        .component(&identity.tenant_id, &identity.component_id)
        .await?;
    let latest = control
        .store
        .component_updates(&identity.tenant_id, Some(&identity.component_id), 1)
        .await?
        .into_iter()
        .next();
    Ok(Json(UpdateStatus {
        reported_version: component.version,
        state: latest.as_ref().map(|u| u.state.clone()),
        to_version: latest.map(|u| u.to_version),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(id: &str, version: &str, min: &str, channel: &str) -> Release {
        Release {
            id: id.into(),
            version: version.into(),
            target: "t".into(),
            channel: channel.into(),
            manifest: String::new(),
            signature: String::new(),
            sha256: String::new(),
            size: 1,
            min_upgrade_from: min.into(),
            notes_url: String::new(),
            ready: true,
            created_by: String::new(),
            created_at: postern_time::UnixTime::from_secs(0),
        }
    }

    fn policy(channel: &str, pinned: Option<&str>) -> UpdatePolicy {
        UpdatePolicy {
            tenant_id: "t".into(),
            channel: channel.into(),
            pinned_version: pinned.map(str::to_owned),
            paused: false,
            updated_at: postern_time::UnixTime::from_secs(0),
        }
    }

    #[test]
    fn the_newest_applicable_release_is_chosen() {
        let releases = vec![
            release("a", "0.2.0", "0.1.0", "stable"),
            release("b", "0.3.0", "0.2.0", "stable"),
            release("c", "0.4.0-beta.1", "0.1.0", "beta"),
            release("d", "0.0.9", "0.0.1", "stable"),
        ];
        let v = |s: &str| Version::parse(s).unwrap();
        let pick = |p: &UpdatePolicy, installed: &str, failed: &[String]| {
            choose(&releases, p, &v(installed), "t", failed).map(|(_, r)| r.id.clone())
        };
        // 0.3.0 needs 0.2.0 first; never the older 0.0.9.
        assert_eq!(pick(&policy("stable", None), "0.1.0", &[]).as_deref(), Some("a"));
        assert_eq!(pick(&policy("stable", None), "0.2.0", &[]).as_deref(), Some("b"));
        assert_eq!(pick(&policy("stable", None), "0.3.0", &[]), None);
        // Beta tenants get beta releases too.
        assert_eq!(pick(&policy("beta", None), "0.1.0", &[]).as_deref(), Some("c"));
        // A pin holds the tenant at that version.
        assert_eq!(pick(&policy("stable", Some("0.2.0")), "0.2.0", &[]), None);
        assert_eq!(pick(&policy("beta", Some("0.2.0")), "0.1.0", &[]).as_deref(), Some("a"));
        // A release this component refused is not offered again.
        assert_eq!(pick(&policy("stable", None), "0.1.0", &["a".into()]), None);
        // Another target gets nothing.
        assert!(choose(&releases, &policy("stable", None), &v("0.1.0"), "other", &[]).is_none());
    }
}
