//! Administrative roles of users, and the rule that a tenant always keeps at
//! least one enabled global administrator.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use postern_store::Role;
use postern_sts::Sts;
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

async fn roles_of(sts: &Sts, user_id: &str) -> Result<Json<UserRoles>, ApiError> {
    Ok(Json(UserRoles {
        user_id: user_id.to_owned(),
        roles: sts.store().user_roles(user_id).await?,
    }))
}

/// `GET /api/v1/users/{id}/roles`.
pub(crate) async fn list(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserRoles>, ApiError> {
    let user = sts.store().user(&caller.tenant.id, &id).await?;
    roles_of(&sts, &user.id).await
}

/// `PUT /api/v1/users/{id}/roles/{role}`: gives the role (idempotent).
pub(crate) async fn assign(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<UserRoles>, ApiError> {
    let role = parse_role(&role)?;
    let user = sts.store().user(&caller.tenant.id, &id).await?;
    sts.store().assign_role(&user.id, role, sts.now()).await?;
    caller
        .audit(
            &sts,
            "role.assign",
            format!("user:{}", user.id),
            json!({ "role": role }),
        )
        .await?;
    roles_of(&sts, &user.id).await
}

/// `DELETE /api/v1/users/{id}/roles/{role}`: takes the role away; 404 if the
/// user does not hold it, 409 for the last enabled global administrator.
pub(crate) async fn revoke(
    State(sts): State<Arc<Sts>>,
    caller: Caller,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<UserRoles>, ApiError> {
    let role = parse_role(&role)?;
    let tenant_id = &caller.tenant.id;
    let user = sts.store().user(tenant_id, &id).await?;
    // The store refuses (409) to demote the tenant's last enabled global
    // administrator, atomically with the change.
    sts.store().revoke_role(&user.id, role).await?;
    caller
        .audit(
            &sts,
            "role.revoke",
            format!("user:{}", user.id),
            json!({ "role": role }),
        )
        .await?;
    roles_of(&sts, &user.id).await
}
