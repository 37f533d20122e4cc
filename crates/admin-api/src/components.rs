//! Registered on-prem components: connectors (application administrators) and
//! authentication agents (hybrid identity administrators), with their status.
//!
//! Deleting a component revokes its certificates at once (BEY-6): the service
//! checks the presented serial against the store on every mTLS request, so the
//! component is refused from its next request on, and the serial is listed on
//! its CA's next revocation list. What it holds open ends at once as well: the
//! store announces the deletion ([`postern_store::Revocation`]) and the control
//! plane closes the connector's tunnels or the agent's queue stream. A component
//! of the other kind does not exist for a route (404), just like one of another
//! tenant.

use crate::AdminState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{Component, ComponentKind, ConnectorGroup, StoreError};
use serde_json::json;
use std::collections::HashMap;

use crate::auth::Caller;
use crate::connector_groups;
use crate::error::ApiError;
use crate::input::Body;
use crate::views;
use crate::wire::{ComponentView, MoveConnector};

/// The revocation reason recorded when an administrator removes a component.
const REMOVED: &str = "removed";

/// Component `id` of the caller's tenant, if it is of `kind`.
async fn load(state: &AdminState, tenant_id: &str, kind: ComponentKind, id: &str) -> Result<Component, ApiError> {
    let c = state.store.component(tenant_id, id).await?;
    if c.kind != kind {
        return Err(ApiError::NotFound);
    }
    Ok(c)
}

/// The view of one component, with its connector group looked up.
async fn view(state: &AdminState, c: &Component) -> Result<ComponentView, ApiError> {
    let group = match &c.group_id {
        Some(id) => match state.store.connector_group(&c.tenant_id, id).await {
            Ok(g) => Some(g),
            Err(StoreError::NotFound) => None,
            Err(e) => return Err(e.into()),
        },
        None => None,
    };
    Ok(views::component(c, group.as_ref(), state.now()))
}

/// Every component of `kind` in the tenant, by name.
async fn list(state: &AdminState, caller: &Caller, kind: ComponentKind) -> Result<Json<Vec<ComponentView>>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let components = state.store.components(tenant_id, kind).await?;
    let groups: HashMap<String, ConnectorGroup> = match kind {
        ComponentKind::Connector => state
            .store
            .connector_groups(tenant_id)
            .await?
            .into_iter()
            .map(|g| (g.id.clone(), g))
            .collect(),
        ComponentKind::Agent => HashMap::new(),
    };
    let now = state.now();
    Ok(Json(
        components
            .iter()
            .map(|c| views::component(c, c.group_id.as_ref().and_then(|g| groups.get(g)), now))
            .collect(),
    ))
}

/// One component of `kind`.
async fn show(
    state: &AdminState,
    caller: &Caller,
    kind: ComponentKind,
    id: &str,
) -> Result<Json<ComponentView>, ApiError> {
    let c = load(state, &caller.tenant.id, kind, id).await?;
    Ok(Json(view(state, &c).await?))
}

/// Deletes a component of `kind` and revokes its certificates.
async fn delete(state: &AdminState, caller: &Caller, kind: ComponentKind, id: &str) -> Result<StatusCode, ApiError> {
    let tenant_id = &caller.tenant.id;
    load(state, tenant_id, kind, id).await?;
    let c = state
        .store
        .delete_component(tenant_id, id, REMOVED, state.now())
        .await?;
    let revoked: Vec<&str> = std::iter::once(c.serial.as_str())
        .chain(c.previous_serial.as_deref())
        .collect();
    caller
        .audit(
            state,
            &format!("{kind}.delete"),
            format!("{kind}:{id}"),
            json!({ "name": c.name, "revoked_serials": revoked, "reason": REMOVED }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/connectors`.
pub(crate) async fn list_connectors(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Vec<ComponentView>>, ApiError> {
    list(&state, &caller, ComponentKind::Connector).await
}

/// `GET /api/v1/connectors/{id}`.
pub(crate) async fn show_connector(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ComponentView>, ApiError> {
    show(&state, &caller, ComponentKind::Connector, &id).await
}

/// `DELETE /api/v1/connectors/{id}`: removes the connector and revokes its
/// certificates; it is refused from its next request on and its tunnels close at
/// once.
pub(crate) async fn delete_connector(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ComponentKind::Connector, &id).await
}

/// `PUT /api/v1/connectors/{id}/group`: moves the connector to another group
/// (by name or ID); the connectors of both groups refetch their configuration,
/// and its tunnels for the group it left close at once. Moving it to the group it
/// is in changes nothing.
pub(crate) async fn move_connector(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<MoveConnector>,
) -> Result<Json<ComponentView>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let c = load(&state, tenant_id, ComponentKind::Connector, &id).await?;
    let to = connector_groups::find(&state, tenant_id, &req.group)
        .await?
        .ok_or_else(|| ApiError::bad_request(connector_groups::no_such_group(&req.group)))?;
    if c.group_id.as_deref() != Some(to.id.as_str()) {
        state.store.move_connector(tenant_id, &id, &to.id).await?;
        caller
            .audit(
                &state,
                "connector.move",
                format!("connector:{id}"),
                json!({ "name": c.name, "from": c.group_id, "to": to.id, "to_name": to.name }),
            )
            .await?;
    }
    let c = state.store.component(tenant_id, &id).await?;
    Ok(Json(views::component(&c, Some(&to), state.now())))
}

/// `GET /api/v1/agents`.
pub(crate) async fn list_agents(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Vec<ComponentView>>, ApiError> {
    list(&state, &caller, ComponentKind::Agent).await
}

/// `GET /api/v1/agents/{id}`.
pub(crate) async fn show_agent(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ComponentView>, ApiError> {
    show(&state, &caller, ComponentKind::Agent, &id).await
}

/// `DELETE /api/v1/agents/{id}`: removes the agent and revokes its
/// certificates; it is refused from its next request on, its queue stream ends
/// at once and the sign-ins it holds move on to other agents.
pub(crate) async fn delete_agent(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    delete(&state, &caller, ComponentKind::Agent, &id).await
}
