//! Domains of a tenant: the DNS names its usernames end in, whether ownership
//! is verified, and how their passwords are checked.
//!
//! Verification by DNS is not automated: the service has no resolver to ask
//! (and the machines it is developed on have no DNS at all). A new domain gets a
//! token to publish as a TXT record, `postern-verify=<token>`; an operator (a
//! global administrator of the system tenant) checks it and vouches for the
//! domain with `POST /api/v1/tenants/{name}/domains/{domain}/verify`. A tenant's
//! own `POST /api/v1/domains/{name}/verify` answers 409 saying so.

use crate::AdminState;
use crate::views::View;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{Domain, Tenant};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::Body;
use crate::views;
use crate::wire::{CreateDomain, DOMAIN_TXT_PREFIX, DomainView, UpdateDomain};

/// The stored form of a domain name from a path or body.
fn normalize(name: &str) -> String {
    name.trim().to_lowercase()
}

/// `GET /api/v1/domains`.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<DomainView>>, ApiError> {
    let domains = state.store.domains(&caller.tenant.id).await?;
    Ok(Json(views::all(&domains)))
}

/// `POST /api/v1/domains`: adds an unverified domain with a fresh verification
/// token.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateDomain>,
) -> Result<(StatusCode, Json<DomainView>), ApiError> {
    let name = normalize(&req.name);
    postern_sts::validate_domain(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let token = postern_keyring::random_token()?;
    let domain = state
        .store
        .add_domain(&caller.tenant.id, &name, token.expose(), state.now())
        .await?;
    caller
        .audit(&state, "domain.add", format!("domain:{name}"), json!({}))
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&domain))))
}

/// `GET /api/v1/domains/{name}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<DomainView>, ApiError> {
    let domain = state.store.domain(&caller.tenant.id, &normalize(&name)).await?;
    Ok(Json(View::view(&domain)))
}

/// `PATCH /api/v1/domains/{name}`: sets the authentication mode.
pub(crate) async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<UpdateDomain>,
) -> Result<Json<DomainView>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let name = normalize(&name);
    let before = state.store.domain(tenant_id, &name).await?;
    state
        .store
        .set_domain_auth_mode(tenant_id, &name, req.auth_mode)
        .await?;
    caller
        .audit(
            &state,
            "domain.auth_mode",
            format!("domain:{name}"),
            json!({ "from": before.auth_mode, "to": req.auth_mode }),
        )
        .await?;
    let domain = state.store.domain(tenant_id, &name).await?;
    Ok(Json(View::view(&domain)))
}

/// `DELETE /api/v1/domains/{name}`: refused (409) while users still use it.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = normalize(&name);
    state.store.remove_domain(&caller.tenant.id, &name).await?;
    caller
        .audit(&state, "domain.remove", format!("domain:{name}"), json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/domains/{name}/verify`: a tenant cannot verify its own domain
/// (409 naming the TXT record and who can); an operator verifying one of the
/// system tenant's domains vouches for it directly.
pub(crate) async fn verify(
    State(state): State<AdminState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<DomainView>, ApiError> {
    let domain = state.store.domain(&caller.tenant.id, &normalize(&name)).await?;
    if domain.verified {
        return Ok(Json(View::view(&domain)));
    }
    if !caller.is_operator() {
        return Err(ApiError::Conflict(format!(
            "automatic DNS verification is not available yet: publish the TXT record \
             \"{DOMAIN_TXT_PREFIX}{}\" at {} and ask an operator of this service to verify \
             the domain",
            domain.verification_token, domain.name
        )));
    }
    let tenant = caller.tenant.clone();
    mark_verified(&state, &caller, &tenant, domain).await
}

/// `POST /api/v1/tenants/{name}/domains/{domain}/verify`: an operator vouches
/// for a tenant's domain.
pub(crate) async fn operator_verify(
    State(state): State<AdminState>,
    caller: Caller,
    Path((tenant_name, domain_name)): Path<(String, String)>,
) -> Result<Json<DomainView>, ApiError> {
    let tenant = state.store.tenant_by_name(&tenant_name).await?;
    let domain = state.store.domain(&tenant.id, &normalize(&domain_name)).await?;
    if domain.verified {
        return Ok(Json(View::view(&domain)));
    }
    mark_verified(&state, &caller, &tenant, domain).await
}

/// Marks `domain` of `tenant` verified and records it in the tenant's audit log
/// and, when the operator acts on another tenant, in the operator's as well.
async fn mark_verified(
    state: &AdminState,
    caller: &Caller,
    tenant: &Tenant,
    domain: Domain,
) -> Result<Json<DomainView>, ApiError> {
    state.store.verify_domain(&tenant.id, &domain.name).await?;
    let target = format!("domain:{}", domain.name);
    let detail = json!({ "tenant": tenant.name, "vouched_by_operator": true });
    caller
        .audit_in(state, &tenant.id, "domain.verify", target.clone(), detail.clone())
        .await?;
    if tenant.id != caller.tenant.id {
        caller.audit(state, "domain.verify", target, detail).await?;
    }
    let domain = state.store.domain(&tenant.id, &domain.name).await?;
    Ok(Json(View::view(&domain)))
}
