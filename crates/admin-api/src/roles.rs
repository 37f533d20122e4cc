//! Administrative roles of users, and the rule that a tenant always keeps at
//! least one enabled global administrator.

use crate::AdminState;
use axum::Json;
use axum::extract::{Path, State};
use postern_store::Role;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::wire::UserRoles;

/// The role named in a path.
fn parse_role(name: &str) -> Result<Role, ApiError> {
    Role::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        ApiError::bad_request(format!("unknown role {name:?}; roles are {}", known.join(", ")))
    })
}

async fn roles_of(state: &AdminState, user_id: &str) -> Result<Json<UserRoles>, ApiError> {
    Ok(Json(UserRoles {
        user_id: user_id.to_owned(),
        roles: state.store.user_roles(user_id).await?,
    }))
}

/// `GET /api/v1/users/{id}/roles`.
pub(crate) async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserRoles>, ApiError> {
    let user = state.store.user(&caller.tenant.id, &id).await?;
    roles_of(&state, &user.id).await
}

/// `PUT /api/v1/users/{id}/roles/{role}`: gives the role (idempotent).
pub(crate) async fn assign(
    State(state): State<AdminState>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<UserRoles>, ApiError> {
    let role = parse_role(&role)?;
    let user = state.store.user(&caller.tenant.id, &id).await?;
    state.store.assign_role(&user.id, role, state.now()).await?;
    caller
        .audit(
            &state,
            "role.assign",
            format!("user:{}", user.id),
            json!({ "role": role }),
        )
        .await?;
    roles_of(&state, &user.id).await
}

/// `DELETE /api/v1/users/{id}/roles/{role}`: takes the role away; 404 if the
/// user does not hold it, 409 for the last enabled global administrator.
pub(crate) async fn revoke(
    State(state): State<AdminState>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<UserRoles>, ApiError> {
    let role = parse_role(&role)?;
    let tenant_id = &caller.tenant.id;
    let user = state.store.user(tenant_id, &id).await?;
    // The store refuses (409) to demote the tenant's last enabled global
    // administrator, atomically with the change.
    state.store.revoke_role(&user.id, role).await?;
    caller
        .audit(
            &state,
            "role.revoke",
            format!("user:{}", user.id),
            json!({ "role": role }),
        )
        .await?;
    roles_of(&state, &user.id).await
}
