//! Groups of users and their members.

use crate::AdminState;
use crate::views::View;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_description, check_text};
use crate::views;
use crate::wire::{CreateGroup, GroupView, UserView};

/// Longest group name.
const MAX_NAME: usize = 100;

/// `GET /api/v1/groups`.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = state.store.groups(&caller.tenant.id).await?;
    Ok(Json(views::all(&groups)))
}

/// `POST /api/v1/groups`.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &req.name, MAX_NAME);
    let description = check_description(&mut problems, &req.description);
    problems.finish()?;
    let group = state
        .store
        .create_group(&caller.tenant.id, &name, &description, state.now())
        .await?;
    caller
        .audit(
            &state,
            "group.create",
            format!("group:{}", group.id),
            json!({ "name": group.name }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&group))))
}

/// `POST /api/v1/groups/directory`: makes sure a directory group of this name
/// exists before any member signs in, so it can be assigned now. A
/// pass-through sign-in whose agent reports a group of exactly this name
/// (case counts) makes the user a member. 201 when made, 200 when it was
/// there already; 409 when a cloud group has the name (a cloud group never
/// stands in for a directory one).
pub(crate) async fn ensure_directory(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &req.name, MAX_NAME);
    let description = if req.description.is_empty() {
        "From the on-prem directory".to_owned()
    } else {
        check_description(&mut problems, &req.description)
    };
    problems.finish()?;
    let (group, made) = state
        .store
        .ensure_directory_group(&caller.tenant.id, &name, &description, state.now())
        .await?;
    if !made {
        return Ok((StatusCode::OK, Json(View::view(&group))));
    }
    caller
        .audit(
            &state,
            "group.create_directory",
            format!("group:{}", group.id),
            json!({ "name": group.name }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&group))))
}

/// `GET /api/v1/groups/{id}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let group = state.store.group(&caller.tenant.id, &id).await?;
    Ok(Json(View::view(&group)))
}

/// `DELETE /api/v1/groups/{id}`: the group and its memberships.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let group = state.store.group(&caller.tenant.id, &id).await?;
    state.store.delete_group(&caller.tenant.id, &id).await?;
    caller
        .audit(
            &state,
            "group.delete",
            format!("group:{id}"),
            json!({ "name": group.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/groups/{id}/members`.
pub(crate) async fn members(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store.group_members(&caller.tenant.id, &id).await?;
    Ok(Json(views::all(&users)))
}

/// `PUT /api/v1/groups/{id}/members/{user_id}` (idempotent). Group and user must
/// both belong to the caller's tenant.
pub(crate) async fn add_member(
    State(state): State<AdminState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.add_member(&caller.tenant.id, &id, &user_id).await?;
    caller
        .audit(
            &state,
            "group.member.add",
            format!("group:{id}"),
            json!({ "user": user_id }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/groups/{id}/members/{user_id}`: 404 if the user is not a
/// member.
pub(crate) async fn remove_member(
    State(state): State<AdminState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.store.remove_member(&caller.tenant.id, &id, &user_id).await?;
    caller
        .audit(
            &state,
            "group.member.remove",
            format!("group:{id}"),
            json!({ "user": user_id }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
