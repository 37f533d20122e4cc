//! Registration tokens for unattended installs (CON-1, PTA-2): an administrator
//! mints one here and hands it to an installer, which registers a connector or
//! an agent with it instead of an interactive sign-in.
//!
//! The token is `ptr_` and 256 random bits (so secret scanners recognise it),
//! shown once in the answer; the store keeps only its SHA-256 digest. It is
//! bound to the caller's tenant and to one kind of component, and expires after
//! at most a day and a hundred uses. Minting one needs the role that
//! registering that kind needs: application administrator for connectors,
//! hybrid identity administrator for agents. The route table admits any
//! administrative role; the kind in the body decides here.

use crate::views::View;
use std::time::Duration;

use crate::AdminState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use postern_keyring::SecretString;
use postern_store::{ComponentKind, Role};
use serde_json::json;

use crate::auth::Caller;
use crate::connector_groups;
use crate::error::ApiError;
use crate::input::{Body, Problems};
use crate::wire::{CreateRegistrationToken, REGISTRATION_TOKEN_PREFIX, RegistrationTokenCreated};

/// Default lifetime, in seconds.
const DEFAULT_TTL_SECS: i64 = 3600;
/// Shortest lifetime, in seconds.
const MIN_TTL_SECS: i64 = 60;
/// Longest lifetime, in seconds.
const MAX_TTL_SECS: i64 = 86_400;
/// Most registrations one token allows.
const MAX_USES: i64 = 100;
/// Characters of the token after its prefix that the audit log shows, to tell
/// tokens apart (as the enrolment endpoint names the token it was used with).
const SHOWN_CHARS: usize = 6;

/// `POST /api/v1/registration-tokens`.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<CreateRegistrationToken>,
) -> Result<(StatusCode, Json<RegistrationTokenCreated>), ApiError> {
    let kind = req.kind;
    let required = Role::to_register(kind);
    if !caller.holds(required) {
        return Err(ApiError::Forbidden(format!(
            "registration tokens for {kind}s require the {required} role (or higher)"
        )));
    }
    let tenant_id = &caller.tenant.id;
    let mut problems = Problems::new();
    let ttl = req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if !(MIN_TTL_SECS..=MAX_TTL_SECS).contains(&ttl) {
        problems.add(format!("ttl_secs must be {MIN_TTL_SECS} to {MAX_TTL_SECS}."));
    }
    let uses = req.uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        problems.add(format!("uses must be 1 to {MAX_USES}."));
    }
    let group = match (&req.group, kind) {
        (None, _) => None,
        (Some(_), ComponentKind::Agent) => {
            problems.add("group: agents do not belong to connector groups; leave group out.");
            None
        }
        (Some(name), ComponentKind::Connector) => {
            let found = connector_groups::find(&state, tenant_id, name).await?;
            if found.is_none() {
                problems.add(connector_groups::no_such_group(name));
            }
            found
        }
    };
    problems.finish()?;

    let token = SecretString::new(format!(
        "{REGISTRATION_TOKEN_PREFIX}{}",
        postern_keyring::random_token()?.expose()
    ));
    let now = state.now();
    let expires_at = now + Duration::from_secs(ttl.unsigned_abs());
    state
        .store
        .create_registration_token(
            &postern_keyring::digest(token.expose()),
            tenant_id,
            kind,
            group.as_ref().map(|g| g.id.as_str()),
            &caller.actor(),
            uses,
            now,
            expires_at,
        )
        .await?;
    let shown: String = token
        .expose()
        .chars()
        .take(REGISTRATION_TOKEN_PREFIX.len() + SHOWN_CHARS)
        .collect();
    caller
        .audit(
            &state,
            "registration_token.create",
            format!("registration_token:{shown}…"),
            json!({
                "kind": kind,
                "group": group.as_ref().map(|g| &g.name),
                "expires_at": expires_at,
                "uses": uses,
            }),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(RegistrationTokenCreated {
            token,
            kind,
            group: group.as_ref().map(View::view),
            expires_at,
            uses,
        }),
    ))
}
