//! `GET /api/v1/me`: the caller, their tenant and their roles.

use crate::views::View;
use axum::Json;

use crate::auth::Caller;
use crate::wire::Me;

/// Who the token belongs to.
pub(crate) async fn show(caller: Caller) -> Json<Me> {
    Json(Me {
        user: View::view(&caller.user),
        tenant: View::view(&caller.tenant),
        operator: caller.is_operator(),
        roles: caller.roles,
    })
}
