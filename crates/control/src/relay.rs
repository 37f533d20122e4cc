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
use futures_util::StreamExt;
use postern_proto::lines::{Decoded, LineDecoder};
use postern_proto::relay::{
    BootstrapResponse, QueueFrame, QueueResult, ValidationResult, agent_duplex_queue_path, agent_queue_path,
};
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
        duplex_queue_path: Some(agent_duplex_queue_path(&identity.tenant_id)),
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
    /// The two-way queue's reader of results: it ends with the stream.
    results: Option<AbortOnDrop>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    let state = open_queue(&control, &tenant, identity, &headers).await?;
    Ok(respond(state))
}

/// `POST /v1/t/{tenant}/agent/queue/duplex`: the queue as for `GET`, and the
/// request's body carries the agent's results back, newline-delimited
/// [`QueueResult`]s, read for as long as the queue stream lasts. A result so
/// costs no request and no identity check of its own: the certificate was
/// checked when the queue opened, and the queue ends at once when the agent is
/// removed (`crate::revocation`), ending this body's reader with it.
pub(crate) async fn duplex_queue(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ControlError> {
    let mut state = open_queue(&control, &tenant, identity, &headers).await?;
    let reader = tokio::spawn(read_results(control.clone(), state.identity.clone(), body));
    state.results = Some(AbortOnDrop(reader.abort_handle()));
    Ok(respond(state))
}

/// Checks the caller and its credential and subscribes it to its tenant's queue.
async fn open_queue(
    control: &Arc<Control>,
    tenant: &str,
    identity: ComponentIdentity,
    headers: &HeaderMap,
) -> Result<StreamState, ControlError> {
    require_tenant(&identity, tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    let token = bearer(headers)
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
    if still_trusted(control, &identity, None).await == Some(false) {
        return Err(ControlError::Revoked(
            "this agent is no longer registered (removed, re-registered or renewed); register it again".into(),
        ));
    }
    tracing::info!(agent = %identity.component_id, "agent attached to its tenant's queue");
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Ok(StreamState {
        control: control.clone(),
        subscription,
        identity,
        expires_at: UnixTime::from_secs(claims.exp),
        heartbeat,
        done: false,
        results: None,
    })
}

/// The queue stream as a response.
fn respond(state: StreamState) -> Response {
    let stream = futures_util::stream::unfold(state, next_line);
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Lines on a two-way queue that are not results, or results refused (another
/// agent's request, another protocol), after which its body is not read
/// further: an agent that sends them is broken or hostile, and each is a
/// warning in the log.
const BAD_RESULT_LINES: u32 = 32;

/// Reads results from a two-way queue's request body until it ends (or the
/// queue stream ends and aborts this). Memory is bounded by one line
/// ([`postern_proto::lines::MAX_LINE`]). A line that is not a result is
/// skipped; a longer line, or [`BAD_RESULT_LINES`] lines skipped or refused,
/// end the reading (the agent's later results then go by `POST`, which it
/// falls back to when its line fills).
async fn read_results(control: Arc<Control>, identity: ComponentIdentity, body: Body) {
    let agent = &identity.component_id;
    let mut chunks = body.into_data_stream();
    let mut decoder = LineDecoder::default();
    let mut lines: Vec<Decoded<QueueResult>> = Vec::new();
    let mut bad = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::debug!(%agent, error = %e, "the agent's results stream broke");
                return;
            }
        };
        if let Err(e) = decoder.push(&chunk, &mut lines) {
            tracing::warn!(%agent, error = %e, "the agent's results stream is not read further");
            return;
        }
        for line in lines.drain(..) {
            let accepted = match line {
                Decoded::Frame(answer) => deliver(&control, &identity, answer).await,
                Decoded::Skipped(why) => {
                    tracing::warn!(%agent, why, "skipped a results line that is not a result");
                    false
                }
            };
            if !accepted {
                bad += 1;
                if bad >= BAD_RESULT_LINES {
                    tracing::warn!(%agent, lines = bad, "the agent's results stream is not read further: too many lines were not results it may give");
                    return;
                }
            }
        }
    }
}

/// Hands one streamed result to the relay, as [`result`] does for a posted one.
/// False when it is refused (a result for a request that is no longer
/// pending is not: that is a late answer after failover).
async fn deliver(control: &Control, identity: &ComponentIdentity, answer: QueueResult) -> bool {
    let QueueResult { request_id, result } = answer;
    if let Err(e) = check_protocol(result.protocol) {
        tracing::warn!(agent = %identity.component_id, request = %request_id, error = %e, "result refused");
        return false;
    }
    match control
        .relay
        .deliver_result(&identity.tenant_id, &identity.component_id, &request_id, result)
        .await
    {
        Ok(()) => true,
        Err(e @ ResultRejected::Unknown) => {
            tracing::debug!(agent = %identity.component_id, request = %request_id, error = %e, "result for no pending request");
            true
        }
        Err(e) => {
            tracing::warn!(agent = %identity.component_id, request = %request_id, error = %e, "result refused");
            false
        }
    }
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
