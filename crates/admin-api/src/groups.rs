//! Groups of users and their members.

use crate::views::View;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_sts::Sts;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_description, check_text};
use crate::views;
use crate::wire::{CreateGroup, GroupView, UserView};

/// Longest group name.
const MAX_NAME: usize = 100;

/// `GET /api/v1/groups`.
pub(crate) async fn list(State(sts): State<Arc<Sts>>, caller: Caller) -> Result<Json<Vec<GroupView>>, ApiError> {
    let groups = sts.store().groups(&caller.tenant.id).await?;
    Ok(Json(views::all(&groups)))
}

/// `POST /api/v1/groups`.
pub(crate) async fn create(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Body(req): Body<CreateGroup>,
) -> Result<(StatusCode, Json<GroupView>), ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &req.name, MAX_NAME);
    let description = check_description(&mut problems, &req.description);
    problems.finish()?;
    let group = sts
        .store()
        .create_group(&caller.tenant.id, &name, &description, sts.now())
        .await?;
    caller
        .audit(
            &sts,
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
    State(sts): State<Arc<Sts>>,
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
    let (group, made) = sts
        .store()
        .ensure_directory_group(&caller.tenant.id, &name, &description, sts.now())
        .await?;
    if !made {
        return Ok((StatusCode::OK, Json(View::view(&group))));
    }
    caller
        .audit(
            &sts,
            "group.create_directory",
            format!("group:{}", group.id),
            json!({ "name": group.name }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&group))))
}

/// `GET /api/v1/groups/{id}`.
pub(crate) async fn show(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    let group = sts.store().group(&caller.tenant.id, &id).await?;
    Ok(Json(View::view(&group)))
}

/// `DELETE /api/v1/groups/{id}`: the group and its memberships.
pub(crate) async fn delete(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let group = sts.store().group(&caller.tenant.id, &id).await?;
    sts.store().delete_group(&caller.tenant.id, &id).await?;
    caller
        .audit(
            &sts,
            "group.delete",
            format!("group:{id}"),
            json!({ "name": group.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/groups/{id}/members`.
pub(crate) async fn members(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = sts.store().group_members(&caller.tenant.id, &id).await?;
    Ok(Json(views::all(&users)))
}

/// `PUT /api/v1/groups/{id}/members/{user_id}` (idempotent). Group and user must
/// both belong to the caller's tenant.
pub(crate) async fn add_member(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    sts.store().add_member(&caller.tenant.id, &id, &user_id).await?;
    caller
        .audit(
            &sts,
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
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    sts.store().remove_member(&caller.tenant.id, &id, &user_id).await?;
    caller
        .audit(
            &sts,
            "group.member.remove",
            format!("group:{id}"),
            json!({ "user": user_id }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
