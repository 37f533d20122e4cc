//! `GET /v1/t/{tenant}/connector/tunnel`: a connector turns one of its outbound
//! connections into a tunnel (see [`postern_proto::tunnel`]). Who may call: a
//! connector of the tenant, by its client certificate (checked by
//! [`crate::identity`]). Removing the connector, moving it to another group or
//! deleting its group or tenant closes its tunnels at once
//! ([`crate::revocation`]); besides, the connector's registration is rechecked
//! once the tunnel is in place and every [`RECHECK_EVERY`] (changes made through
//! other service instances).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_proto::ComponentKind;
use postern_proto::tunnel::{PROTOCOL_HEADER, TUNNEL_UPGRADE};

use crate::identity::{ComponentIdentity, require_kind, require_tenant};
use crate::revocation::still_trusted;
use crate::{Control, ControlError};

/// How often a live tunnel's connector is checked against the store.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// How long the connector has to start using the connection after the 101.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(10);

pub(crate) async fn tunnel(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    mut request: Request,
) -> Result<Response, ControlError> {
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Connector)?;
    let wants_tunnel = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_UPGRADE));
    if !wants_tunnel {
        return Err(ControlError::BadRequest(format!(
            "this endpoint only upgrades to {TUNNEL_UPGRADE} (HTTP/1.1 with Connection: Upgrade)"
        )));
    }
    let theirs = request
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| ControlError::BadRequest(format!("the {PROTOCOL_HEADER} header is missing")))?;
    postern_proto::check_protocol(theirs)?;
    let Some(group_id) = identity.component.group_id.clone() else {
        return Err(ControlError::Conflict(
            "this connector belongs to no connector group".into(),
        ));
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Err(ControlError::BadRequest(
            "this connection cannot be upgraded (HTTP/1.1 is required)".into(),
        ));
    };
    tokio::spawn(async move {
        let upgraded = match tokio::time::timeout(UPGRADE_DEADLINE, on_upgrade).await {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                tracing::info!(connector = %identity.component_id, error = %e, "tunnel upgrade failed");
                return;
            }
            Err(_) => {
                tracing::info!(connector = %identity.component_id, "tunnel upgrade timed out");
                return;
            }
        };
        let registry = control.tunnels.clone();
        let id = match registry
            .attach(&identity.tenant_id, &group_id, &identity.component_id, upgraded)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(connector = %identity.component_id, error = %e, "tunnel refused");
                return;
            }
        };
        watch_registration(&control, &identity, &group_id, id).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_UPGRADE));
    Ok(response)
}

/// Closes the tunnel when its connector is no longer registered with the
/// certificate it presented, or moved to another group; returns when the tunnel is
/// gone either way. Revocations made through this process close the tunnel at
/// once ([`crate::revocation`]); this check runs right after the tunnel is in
/// place (a revocation committed while it was being set up found nothing to
/// close), then every [`RECHECK_EVERY`] (changes made through other instances)
/// and whenever revocation announcements were missed.
async fn watch_registration(control: &Control, identity: &ComponentIdentity, group_id: &str, tunnel_id: u64) {
    loop {
        let alive = control
            .tunnels
            .tunnels(&identity.tenant_id, group_id)
            .iter()
            .any(|t| t.id == tunnel_id);
        if !alive {
            return;
        }
        // The database is down (`None`): keep serving; check again later.
        if still_trusted(control, identity, Some(group_id)).await == Some(false) {
            tracing::info!(connector = %identity.component_id, tunnel = tunnel_id, "connector removed, replaced or moved; tunnel closed");
            control.tunnels.close(tunnel_id);
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(RECHECK_EVERY) => {}
            () = control.recheck_requested() => {}
        }
    }
}
