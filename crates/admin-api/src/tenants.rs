//! Tenants: operators list, create and delete them; a tenant's global
//! administrators read and change their own tenant's settings.

use crate::AdminState;
use crate::views::View;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{TenantLimits, TenantSettings};
use postern_sts::{NewTenantRequest, TenantCreateError};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems};
use crate::views;
use crate::wire::{
    CreateTenant, MAX_PENDING_SIGNINS, MAX_RATE_LIMIT, TenantCreated, TenantLimitsView, TenantView,
    UpdateTenantSettings,
};

/// Allowed failed sign-ins before lockout.
const LOCKOUT_THRESHOLD: std::ops::RangeInclusive<i64> = 1..=100;
/// Allowed first lockout periods, in seconds.
const LOCKOUT_SECONDS: std::ops::RangeInclusive<i64> = 1..=86_400;

/// `GET /api/v1/tenants`.
pub(crate) async fn list(State(state): State<AdminState>) -> Result<Json<Vec<TenantView>>, ApiError> {
    let tenants = state.store.tenants().await?;
    Ok(Json(views::all(&tenants)))
}

/// `POST /api/v1/tenants`: a tenant with its first global administrator. The
/// domain given is verified at once: the operator vouches for it.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let request = NewTenantRequest {
        name: req.name,
        display_name: req.display_name,
        domain: req.domain,
        admin_username: req.admin_username,
        admin_password: req.admin_password,
        is_system: false,
        admin_totp: None,
    };
    let (tenant, admin, _codes) = state
        .sts
        .create_tenant(request, &caller.actor())
        .await
        .map_err(|e| match e {
            TenantCreateError::Invalid(problems) => {
                ApiError::invalid(problems.iter().map(ToString::to_string).collect())
            }
            TenantCreateError::Conflict(msg) => ApiError::Conflict(msg),
            TenantCreateError::SetupCodeUsed => ApiError::Internal("setup code reported without one".into()),
            TenantCreateError::Sts(e) => e.into(),
        })?;
    // The new tenant's log has its own `tenant.create` entry; this one is the
    // operator's record of having done it.
    caller
        .audit(
            &state,
            "tenant.create",
            format!("tenant:{}", tenant.id),
            json!({ "name": tenant.name, "admin": admin.username }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            tenant: View::view(&tenant),
            admin: View::view(&admin),
        }),
    ))
}

/// `DELETE /api/v1/tenants/{name}`: a tenant and everything it owns; its
/// connectors' tunnels and its agents' queue streams close at once. The system
/// tenant cannot be deleted.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = state.store.tenant_by_name(&name).await?;
    if tenant.is_system {
        return Err(ApiError::Conflict("the system tenant cannot be deleted".into()));
    }
    state.store.delete_tenant(&tenant.id, state.now()).await?;
    caller
        .audit(
            &state,
            "tenant.delete",
            format!("tenant:{}", tenant.id),
            json!({ "name": tenant.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/tenants/{name}/limits`: a tenant's own limits at the front
/// door (operators: a tenant's administrators cannot raise their own).
pub(crate) async fn set_limits(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<TenantLimitsView>,
) -> Result<Json<TenantView>, ApiError> {
    let tenant = state.store.tenant_by_name(&name).await?;
    let mut problems = Problems::new();
    for (field, value, max) in [
        ("rate_limit_per_sec", req.rate_limit_per_sec, MAX_RATE_LIMIT),
        ("rate_limit_burst", req.rate_limit_burst, MAX_RATE_LIMIT),
        ("max_pending_signins", req.max_pending_signins, MAX_PENDING_SIGNINS),
    ] {
        if value.is_some_and(|v| !(1..=max).contains(&v)) {
            problems.add(format!("{field} must be 1 to {max}."));
        }
    }
    if req.rate_limit_burst.is_some() && req.rate_limit_per_sec.is_none() {
        problems.add("rate_limit_burst needs rate_limit_per_sec.");
    }
    problems.finish()?;
    let before = View::view(&tenant).limits;
    let limits = TenantLimits {
        rate_limit_per_sec: req.rate_limit_per_sec,
        rate_limit_burst: req.rate_limit_burst,
        max_pending_signins: req.max_pending_signins,
    };
    state.store.update_tenant_limits(&tenant.id, limits).await?;
    caller
        .audit(
            &state,
            "tenant.limits",
            format!("tenant:{}", tenant.id),
            json!({ "name": tenant.name, "before": before, "after": req }),
        )
        .await?;
    let tenant = state.store.tenant(&tenant.id).await?;
    Ok(Json(View::view(&tenant)))
}

/// `GET /api/v1/tenant`: the caller's tenant.
pub(crate) async fn show_own(caller: Caller) -> Json<TenantView> {
    Json(View::view(&caller.tenant))
}

/// `PATCH /api/v1/tenant`: changes the caller's tenant's settings.
pub(crate) async fn update_own(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<UpdateTenantSettings>,
) -> Result<Json<TenantView>, ApiError> {
    let t = &caller.tenant;
    let before = TenantSettings {
        lockout_threshold: t.lockout_threshold,
        lockout_seconds: t.lockout_seconds,
        require_mfa: t.require_mfa,
    };
    let after = TenantSettings {
        lockout_threshold: req.lockout_threshold.unwrap_or(before.lockout_threshold),
        lockout_seconds: req.lockout_seconds.unwrap_or(before.lockout_seconds),
        require_mfa: req.require_mfa.unwrap_or(before.require_mfa),
    };
    let mut problems = Problems::new();
    if !LOCKOUT_THRESHOLD.contains(&after.lockout_threshold) {
        problems.add("lockout_threshold must be 1 to 100.");
    }
    if !LOCKOUT_SECONDS.contains(&after.lockout_seconds) {
        problems.add("lockout_seconds must be 1 to 86400.");
    }
    problems.finish()?;
    state.store.update_tenant_settings(&t.id, after).await?;
    caller
        .audit(
            &state,
            "tenant.settings",
            format!("tenant:{}", t.id),
            json!({
                "lockout_threshold": [before.lockout_threshold, after.lockout_threshold],
                "lockout_seconds": [before.lockout_seconds, after.lockout_seconds],
                "require_mfa": [before.require_mfa, after.require_mfa],
            }),
        )
        .await?;
    let tenant = state.store.tenant(&t.id).await?;
    Ok(Json(View::view(&tenant)))
}
