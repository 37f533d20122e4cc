//! Connector groups (CON-5): apps are assigned to a group and any healthy
//! connector of it may serve them. Every tenant has a default group, made on
//! first need, that new connectors join unless told otherwise; it cannot be
//! deleted, and neither can a group that still has connectors or apps (409).

use crate::AdminState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{ComponentKind, ConnectorGroup, StoreError};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_description, check_text};
use crate::views;
use crate::wire::{ConnectorGroupDetail, ConnectorGroupView, CreateConnectorGroup};

/// Longest group name.
const MAX_NAME: usize = 64;

/// Whether `c` may appear in a group name: ASCII letters and digits, space,
/// dash, underscore and dot (names are typed on command lines and in configs).
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')
}

/// Checks a new group's name: 1–64 characters of [`is_name_char`].
fn check_name(problems: &mut Problems, name: &str) -> String {
    let name = check_text(problems, "name", name, MAX_NAME);
    if !name.chars().all(is_name_char) {
        problems.add("name may only contain letters, digits, spaces, dashes, underscores and dots.");
    }
    name
}

/// The problem of a request naming a group the tenant does not have.
pub(crate) fn no_such_group(name_or_id: &str) -> String {
    format!("group: there is no connector group {name_or_id:?} in this tenant.")
}

/// The tenant's connector group with ID or name `name_or_id`, if there is one.
/// The default group is made first if the tenant has none yet, so that it can
/// be named before any connector needed it.
pub(crate) async fn find(
    state: &AdminState,
    tenant_id: &str,
    name_or_id: &str,
) -> Result<Option<ConnectorGroup>, ApiError> {
    state.store.default_connector_group(tenant_id, state.now()).await?;
    match state.store.connector_group(tenant_id, name_or_id).await {
        Err(StoreError::NotFound) => {}
        found => return Ok(Some(found?)),
    }
    match state.store.connector_group_by_name(tenant_id, name_or_id.trim()).await {
        Err(StoreError::NotFound) => Ok(None),
        found => Ok(Some(found?)),
    }
}

/// `GET /api/v1/connector-groups`: every group (the default one included, made
/// if need be) with the number of its connectors.
pub(crate) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Vec<ConnectorGroupView>>, ApiError> {
    let tenant_id = &caller.tenant.id;
    state.store.default_connector_group(tenant_id, state.now()).await?;
    let groups = state.store.connector_groups(tenant_id).await?;
    let connectors = state.store.components(tenant_id, ComponentKind::Connector).await?;
    let count = |g: &ConnectorGroup| {
        connectors
            .iter()
            .filter(|c| c.group_id.as_deref() == Some(g.id.as_str()))
            .count()
    };
    Ok(Json(
        groups.iter().map(|g| views::connector_group(g, count(g))).collect(),
    ))
}

/// `POST /api/v1/connector-groups`.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateConnectorGroup>,
) -> Result<(StatusCode, Json<ConnectorGroupView>), ApiError> {
    let mut problems = Problems::new();
    let name = check_name(&mut problems, &req.name);
    let description = check_description(&mut problems, &req.description);
    problems.finish()?;
    let group = state
        .store
        .create_connector_group(&caller.tenant.id, &name, &description, false, state.now())
        .await?;
    caller
        .audit(
            &state,
            "connector_group.create",
            format!("connector_group:{}", group.id),
            json!({ "name": group.name }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(views::connector_group(&group, 0))))
}

/// `GET /api/v1/connector-groups/{id}`: the group with its connectors.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ConnectorGroupDetail>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let group = state.store.connector_group(tenant_id, &id).await?;
    let now = state.now();
    let connectors: Vec<_> = state
        .store
        .components(tenant_id, ComponentKind::Connector)
        .await?
        .iter()
        .filter(|c| c.group_id.as_deref() == Some(group.id.as_str()))
        .map(|c| views::component(c, Some(&group), now))
        .collect();
    Ok(Json(ConnectorGroupDetail {
        group: views::connector_group(&group, connectors.len()),
        connectors,
    }))
}

/// `DELETE /api/v1/connector-groups/{id}`: refused (409) for the default group
/// and for a group that still has connectors or serves apps. A deleted group's
/// tunnels (none should be left) close at once.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = &caller.tenant.id;
    let group = state.store.connector_group(tenant_id, &id).await?;
    let apps = state.store.apps_of_group(tenant_id, &group.id).await?;
    if !apps.is_empty() {
        let names: Vec<&str> = apps.iter().map(|a| a.name.as_str()).collect();
        return Err(ApiError::Conflict(format!(
            "group {} serves the apps {}; move them to another group or delete them first",
            group.name,
            names.join(", ")
        )));
    }
    state.store.delete_connector_group(tenant_id, &id).await?;
    caller
        .audit(
            &state,
            "connector_group.delete",
            format!("connector_group:{id}"),
            json!({ "name": group.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(name: &str) -> usize {
        let mut p = Problems::new();
        check_name(&mut p, name);
        match p.finish() {
            Ok(()) => 0,
            Err(ApiError::Invalid { problems, .. }) => problems.len(),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn group_names() {
        for ok in ["Default", "eu-west_1.dmz", "Head Office", &"x".repeat(64)] {
            assert_eq!(problems_of(ok), 0, "{ok}");
        }
        for bad in ["", "   ", "a/b", "naïve", "tab\there", "<script>", &"x".repeat(65)] {
            assert_ne!(problems_of(bad), 0, "{bad}");
        }
    }
}
