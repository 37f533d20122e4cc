//! `GET /api/v1/me`: the caller, their tenant and their roles.

use axum::Json;

use crate::auth::Caller;
use crate::wire::{Me, TenantView, UserView};

/// Who the token belongs to.
pub(crate) async fn show(caller: Caller) -> Json<Me> {
    Json(Me {
        user: UserView::from(&caller.user),
        tenant: TenantView::from(&caller.tenant),
        operator: caller.is_operator(),
        roles: caller.roles,
    })
}
