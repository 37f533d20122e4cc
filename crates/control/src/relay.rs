//! The agents' side of the relay on the mTLS endpoint (PTA-4, PTA-5): bootstrap
//! (a short-lived credential for the tenant's queue only), the queue stream
//! (newline-delimited JSON, heartbeats, closed when the credential expires, at
//! once when the agent or its tenant is removed: [`crate::revocation`], and when
//! the service shuts down: [`Control::go_away`]), and
//! results (including an agent's "declined": the request moves on at once).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_proto::relay::{BootstrapResponse, QueueFrame, ValidationResult, agent_queue_path};
use postern_proto::{ComponentKind, PROTOCOL_VERSION, check_protocol};
use postern_relay::{ResultRejected, Subscription};
use postern_time::UnixTime;

use crate::Control;
use crate::error::ControlError;
use crate::identity::{ComponentIdentity, require_kind, require_tenant};
use crate::revocation::still_trusted;

/// The queue stream sends a heartbeat at least this often.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Validations an agent is asked to run at once, at most.
pub const MAX_IN_FLIGHT: u32 = 64;

/// `POST /v1/t/{tenant}/agent/bootstrap`.
pub(crate) async fn bootstrap(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
) -> Result<Json<BootstrapResponse>, ControlError> {
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    let (credential, expires_at) = control
        .sts
        .issue_queue_credential(&identity.tenant_id, &identity.component_id)
        .await?;
    Ok(Json(BootstrapResponse {
        protocol: PROTOCOL_VERSION,
        queue_path: agent_queue_path(&identity.tenant_id),
        queue_credential: credential,
        expires_at: expires_at.secs(),
        heartbeat_secs: HEARTBEAT.as_secs(),
        max_in_flight: MAX_IN_FLIGHT,
    }))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// What the stream needs between frames.
struct StreamState {
    control: Arc<Control>,
    subscription: Subscription,
    identity: ComponentIdentity,
    expires_at: UnixTime,
    heartbeat: tokio::time::Interval,
    done: bool,
}

fn frame(f: &QueueFrame) -> Option<Bytes> {
    let mut line = serde_json::to_vec(f).ok()?;
    line.push(b'\n');
    Some(Bytes::from(line))
}

/// The next line of the stream, or `None` to end it: when the relay closed the
/// subscription (the agent or its tenant was removed), or a check against the
/// store (each heartbeat, and at once when revocation announcements were
/// missed) finds the credential expired or the agent no longer current.
async fn next_line(mut s: StreamState) -> Option<(Result<Bytes, std::convert::Infallible>, StreamState)> {
    loop {
        if s.done {
            return None;
        }
        let heartbeat = tokio::select! {
            request = s.subscription.recv() => {
                let Some(request) = request else {
                    tracing::info!(agent = %s.identity.component_id, "queue stream closed (the agent was removed)");
                    return None;
                };
                let line = frame(&QueueFrame::Validate((*request).clone()))?;
                return Some((Ok(line), s));
            }
            _ = s.heartbeat.tick() => true,
            () = s.control.recheck_requested() => false,
            () = s.control.going_away() => {
                // The agent reconnects at once: to the next process, or another instance.
                tracing::info!(agent = %s.identity.component_id, "queue stream closed (the service is going away)");
                return None;
            }
        };
        let now = s.control.now();
        // The agent bootstraps again (or learns it must register again). The
        // database being down (`None`) ends nothing.
        let current = still_trusted(&s.control, &s.identity, None).await != Some(false);
        if now >= s.expires_at || !current {
            tracing::info!(agent = %s.identity.component_id, "queue stream closed (credential expired or agent no longer current)");
            s.done = true;
            continue;
        }
        if heartbeat {
            let line = frame(&QueueFrame::Heartbeat { at: now.secs() })?;
            return Some((Ok(line), s));
        }
    }
}

/// `GET /v1/t/{tenant}/agent/queue`: the tenant's queue, as this agent sees it.
pub(crate) async fn queue(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    headers: HeaderMap,
) -> Result<Response, ControlError> {
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    let token = bearer(&headers)
        .ok_or_else(|| ControlError::Unauthenticated("the queue credential is missing; bootstrap first".into()))?;
    let claims = control.sts.verify_queue_credential(token).await?.map_err(|e| {
        ControlError::Unauthenticated(format!("the queue credential was refused ({e}); bootstrap again"))
    })?;
    if claims.tid != identity.tenant_id || claims.sub != identity.component_id {
        return Err(ControlError::Forbidden(
            "this queue credential belongs to another agent or tenant".into(),
        ));
    }
    let subscription = control.relay.subscribe(&identity.tenant_id, &identity.component_id);
    // A removal committed since the identity check found no subscription to
    // close: look once more now that there is one.
    if still_trusted(&control, &identity, None).await == Some(false) {
        return Err(ControlError::Revoked(
            "this agent is no longer registered (removed, re-registered or renewed); register it again".into(),
        ));
    }
    tracing::info!(agent = %identity.component_id, "agent attached to its tenant's queue");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = StreamState {
        control: control.clone(),
        subscription,
        identity,
        expires_at: UnixTime::from_secs(claims.exp),
        heartbeat,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, next_line);
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// `POST /v1/t/{tenant}/agent/results/{request_id}`.
pub(crate) async fn result(
    State(control): State<Arc<Control>>,
    Path((tenant, request_id)): Path<(String, String)>,
    Extension(identity): Extension<ComponentIdentity>,
    Json(result): Json<ValidationResult>,
) -> Result<StatusCode, ControlError> {
    check_protocol(result.protocol)?;
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    match control
        .relay
        .deliver_result(&identity.tenant_id, &identity.component_id, &request_id, result)
        .await
    {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(e @ ResultRejected::Unknown) => Err(ControlError::NotFoundMsg(e.to_string())),
        Err(e) => {
            tracing::warn!(agent = %identity.component_id, request = %request_id, error = %e, "result refused");
            Err(ControlError::Forbidden(e.to_string()))
        }
    }
}
