//! Users of a tenant: create, read, change, disable, delete; set a cloud
//! password; reset MFA. Every change that takes a credential away (disabling,
//! new password, MFA reset) also ends the user's sessions and refresh tokens.

use crate::AdminState;
use crate::views::View;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_keyring::SecretString;
use postern_store::{DomainAuthMode, NewUser, StoreError, User, UserSource, normalize_username};
use postern_sts::password::check_new_password;
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_text};
use crate::views;
use crate::wire::{CreateUser, NameDirectoryUser, SetPassword, UpdateUser, UserView};

/// Longest display name.
const MAX_DISPLAY_NAME: usize = 100;
/// Longest email address (RFC 5321 path limit).
const MAX_EMAIL: usize = 254;

/// Checks an email address loosely: one `@` with something on both sides, no
/// spaces or control characters.
fn check_email(problems: &mut Problems, email: &str) -> String {
    let email = email.trim();
    let plausible = email.len() <= MAX_EMAIL
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@'));
    if !plausible {
        problems.add("email must be an address like name@example.com.");
    }
    email.to_owned()
}

/// `GET /api/v1/users`.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<UserView>>, ApiError> {
    let users = state.store.users(&caller.tenant.id).await?;
    Ok(Json(views::all(&users)))
}

/// `GET /api/v1/users/{id}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    let user = state.store.user(&caller.tenant.id, &id).await?;
    Ok(Json(View::view(&user)))
}

/// The tenant's domain a new `username` (normalized) lies in. A name without
/// `@domain`, an invalid name or a domain the tenant does not have is a
/// problem (and `None`); whether the domain suits the new user is the
/// caller's to say.
async fn username_domain(
    state: &AdminState,
    tenant_id: &str,
    username: &str,
    problems: &mut Problems,
) -> Result<Option<postern_store::Domain>, ApiError> {
    let Some((_, domain)) = username.rsplit_once('@') else {
        problems.add("username must look like name@domain.");
        return Ok(None);
    };
    problems.check(postern_sts::validate_username(username, domain));
    match state.store.domain(tenant_id, domain).await {
        Ok(d) => Ok(Some(d)),
        Err(StoreError::NotFound) => {
            problems.add(format!("{domain} is not a domain of this tenant."));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/v1/users`: a cloud user of a verified domain of the tenant,
/// with or without a password.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let tenant_id = &caller.tenant.id;
    let username = normalize_username(&req.username);
    let mut problems = Problems::new();
    match username_domain(&state, tenant_id, &username, &mut problems).await? {
        Some(d) if !d.verified => problems.add(format!(
            "{} is not verified yet; users can only be created in verified domains.",
            d.name
        )),
        Some(d) if d.auth_mode == DomainAuthMode::Passthrough && req.password.is_some() => problems.add(format!(
            "passwords of {} are checked on-prem (pass-through authentication); leave password out.",
            d.name
        )),
        _ => {}
    }
    let display_name = check_text(
        &mut problems,
        "display_name",
        req.display_name.as_deref().unwrap_or(&username),
        MAX_DISPLAY_NAME,
    );
    let email = req.email.as_deref().map(|e| check_email(&mut problems, e));
    if let Some(password) = &req.password {
        problems.check(check_new_password(password, &username));
    }
    problems.finish()?;
    let hash = match &req.password {
        Some(password) => Some(state.sts.hasher().hash(password).await?),
        None => None,
    };
    let mut new = NewUser::cloud(&username, &display_name, hash);
    new.email = email;
    new.mfa_required = req.mfa_required;
    let user = state.store.create_user(tenant_id, new, state.now()).await?;
    caller
        .audit(
            &state,
            "user.create",
            format!("user:{}", user.id),
            json!({
                "username": user.username,
                "has_password": user.password_hash.is_some(),
                "mfa_required": user.mfa_required,
            }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&user))))
}

/// `POST /api/v1/users/directory`: a directory account named before its first
/// sign-in, in a verified pass-through domain of the tenant. Without it a
/// directory user exists only after signing in once, so nothing can be
/// assigned to them before; the first pass-through sign-in under this name
/// adopts the account ([`postern_store::Store::name_directory_user`]).
pub(crate) async fn name_directory_user(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<NameDirectoryUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let tenant_id = &caller.tenant.id;
    let username = normalize_username(&req.username);
    let mut problems = Problems::new();
    match username_domain(&state, tenant_id, &username, &mut problems).await? {
        Some(d) if !d.verified => problems.add(format!(
            "{} is not verified yet; directory users can only be named in verified pass-through domains.",
            d.name
        )),
        Some(d) if d.auth_mode != DomainAuthMode::Passthrough => problems.add(format!(
            "{} is not a pass-through domain (its passwords are kept here); \
             create a cloud user instead, or set the domain's auth mode to passthrough.",
            d.name
        )),
        _ => {}
    }
    let display_name = check_text(
        &mut problems,
        "display_name",
        req.display_name.as_deref().unwrap_or(&username),
        MAX_DISPLAY_NAME,
    );
    let email = req.email.as_deref().map(|e| check_email(&mut problems, e));
    problems.finish()?;
    let user = state
        .store
        .name_directory_user(
            tenant_id,
            &username,
            &display_name,
            email.as_deref(),
            req.mfa_required,
            state.now(),
        )
        .await?;
    caller
        .audit(
            &state,
            "user.name_directory",
            format!("user:{}", user.id),
            json!({ "username": user.username, "mfa_required": user.mfa_required }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(View::view(&user))))
}

/// `PATCH /api/v1/users/{id}`: profile, MFA requirement, enabled. Disabling
/// ends the user's sessions; the last enabled global administrator cannot be
/// disabled.
pub(crate) async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let current = state.store.user(tenant_id, &id).await?;
    let mut problems = Problems::new();
    let update = postern_store::UserUpdate {
        display_name: req
            .display_name
            .as_deref()
            .map(|n| check_text(&mut problems, "display_name", n, MAX_DISPLAY_NAME)),
        email: req
            .email
            .as_ref()
            .map(|e| e.as_deref().map(|e| check_email(&mut problems, e))),
        enabled: req.enabled,
        mfa_required: req.mfa_required,
    };
    problems.finish()?;
    // The store refuses (409) to disable the last enabled global administrator.
    let disabling = current.enabled && update.enabled == Some(false);
    let now = state.now();
    let user = state.store.update_user(tenant_id, &id, &update, now).await?;
    if disabling {
        state.store.end_user_sessions(tenant_id, &id, now).await?;
    }
    caller
        .audit(
            &state,
            "user.update",
            format!("user:{id}"),
            json!({
                "display_name": update.display_name,
                "email": update.email,
                "enabled": update.enabled,
                "mfa_required": update.mfa_required,
            }),
        )
        .await?;
    Ok(Json(View::view(&user)))
}

/// `DELETE /api/v1/users/{id}`: refused for the last enabled global
/// administrator.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = &caller.tenant.id;
    let user = state.store.user(tenant_id, &id).await?;
    // The store refuses (409) to delete the last enabled global administrator.
    state.store.delete_user(tenant_id, &id).await?;
    caller
        .audit(
            &state,
            "user.delete",
            format!("user:{id}"),
            json!({ "username": user.username }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a cloud password for a user whose password lives elsewhere.
async fn ensure_cloud_password_applies(state: &AdminState, user: &User) -> Result<(), ApiError> {
    if user.source == UserSource::Directory {
        return Err(ApiError::Conflict(
            "this account comes from the on-prem directory; its password is managed there".into(),
        ));
    }
    if let Some((_, domain)) = user.username.rsplit_once('@') {
        match state.store.domain(&user.tenant_id, domain).await {
            Ok(d) if d.auth_mode == DomainAuthMode::Passthrough => {
                return Err(ApiError::Conflict(format!(
                    "passwords of {domain} are checked on-prem (pass-through authentication)"
                )));
            }
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `POST /api/v1/users/{id}/password`: sets a new cloud password and ends the
/// user's sessions.
pub(crate) async fn set_password(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<SetPassword>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = &caller.tenant.id;
    let user = state.store.user(tenant_id, &id).await?;
    ensure_cloud_password_applies(&state, &user).await?;
    let password: SecretString = req.password;
    check_new_password(&password, &user.username).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let hash = state.sts.hasher().hash(&password).await?;
    let now = state.now();
    state.store.set_password_hash(tenant_id, &id, &hash, now).await?;
    state.store.end_user_sessions(tenant_id, &id, now).await?;
    caller
        .audit(&state, "user.password.set", format!("user:{id}"), json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users/{id}/mfa/reset`: removes the authenticator and recovery
/// codes (the user enrols again at next sign-in) and ends the user's sessions.
pub(crate) async fn reset_mfa(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant_id = &caller.tenant.id;
    let now = state.now();
    state.store.reset_mfa(tenant_id, &id, now).await?;
    state.store.end_user_sessions(tenant_id, &id, now).await?;
    caller
        .audit(&state, "user.mfa.reset", format!("user:{id}"), json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        let mut p = Problems::new();
        assert_eq!(check_email(&mut p, " a@b.test "), "a@b.test");
        assert!(p.finish().is_ok());
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            let mut p = Problems::new();
            check_email(&mut p, bad);
            assert!(p.finish().is_err(), "{bad}");
        }
    }
}
