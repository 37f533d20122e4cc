//! Conditional access: policies, named locations, the "what if" evaluation of a
//! sign-in, and the risk an administrator sets for a user. References in a
//! policy may name users, groups, apps and locations by ID or by name; they
//! are resolved in the caller's tenant and stored by ID, and every reference
//! that names nothing is reported with the other problems at once. Every
//! change is audited.

use crate::AdminState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_policy::{AppRef, LocationRef, NamedLocation, PolicyRules, Selection, UserRef};
use postern_store::{StoreError, UserRisk};
use postern_sts::{AccessRequest, Admission, ClientIp, RiskLevel};
use serde_json::json;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_text};
use crate::wire::{
    LocationInput, LocationView, PolicyInput, PolicyView, SetUserRisk, UserRiskView, WhatIf, WhatIfResult,
};

/// Longest policy or location name.
const MAX_NAME: usize = 100;
/// Most ranges in one named location.
const MAX_RANGES: usize = 1000;
/// Longest reason for a user's risk.
const MAX_REASON: usize = 500;

fn policy_view(p: &postern_policy::Policy) -> PolicyView {
    PolicyView {
        id: p.id.clone(),
        name: p.name.clone(),
        state: p.state,
        conditions: p.rules.conditions.clone(),
        grants: p.rules.grants.clone(),
    }
}

fn location_view(l: &NamedLocation) -> LocationView {
    LocationView {
        id: l.id.clone(),
        name: l.name.clone(),
        ranges: l.ranges.iter().map(ToString::to_string).collect(),
        trusted: l.trusted,
    }
}

/// What a lookup by ID (then by name) found: the ID, or nothing.
fn found<T>(result: Result<T, StoreError>) -> Result<Option<T>, ApiError> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Resolves references in the caller's tenant, collecting what names nothing.
struct Resolver<'a> {
    state: &'a AdminState,
    tenant_id: &'a str,
    problems: &'a mut Problems,
}

impl Resolver<'_> {
    async fn user(&mut self, r: &UserRef) -> Result<UserRef, ApiError> {
        let store = &self.state.store;
        Ok(match r {
            UserRef::All => UserRef::All,
            UserRef::User(key) => {
                let by_id = found(store.user(self.tenant_id, key).await)?;
                let user = match by_id {
                    Some(u) => Some(u),
                    None => found(
                        store
                            .user_by_username(self.tenant_id, &postern_store::normalize_username(key))
                            .await,
                    )?,
                };
                match user {
                    Some(u) => UserRef::User(u.id),
                    None => {
                        self.problems.add(format!("user:{key} names no user of this tenant."));
                        r.clone()
                    }
                }
            }
            UserRef::Group(key) => {
                let groups = store.groups(self.tenant_id).await?;
                match groups.into_iter().find(|g| &g.id == key || &g.name == key) {
                    Some(g) => UserRef::Group(g.id),
                    None => {
                        self.problems.add(format!("group:{key} names no group of this tenant."));
                        r.clone()
                    }
                }
            }
        })
    }

    async fn app(&mut self, r: &AppRef) -> Result<AppRef, ApiError> {
        let store = &self.state.store;
        Ok(match r {
            AppRef::All => AppRef::All,
            AppRef::App(key) => {
                let apps = store.apps(self.tenant_id).await?;
                match apps.into_iter().find(|a| &a.id == key || &a.name == key) {
                    Some(a) => AppRef::App(a.id),
                    None => {
                        self.problems
                            .add(format!("app:{key} names no published app of this tenant."));
                        r.clone()
                    }
                }
            }
            AppRef::Client(id) => {
                if found(store.client(self.tenant_id, id).await)?.is_none() {
                    self.problems
                        .add(format!("client:{id} names no OAuth client of this tenant."));
                }
                r.clone()
            }
        })
    }

    async fn location(&mut self, r: &LocationRef) -> Result<LocationRef, ApiError> {
        Ok(match r {
            LocationRef::Named(key) => {
                let locations = self.state.store.locations(self.tenant_id).await?;
                match locations.into_iter().find(|l| &l.id == key || &l.name == key) {
                    Some(l) => LocationRef::Named(l.id),
                    None => {
                        self.problems
                            .add(format!("location:{key} names no location of this tenant."));
                        r.clone()
                    }
                }
            }
            other => other.clone(),
        })
    }

    /// The rules with every reference resolved to an ID.
    async fn rules(&mut self, input: &PolicyInput) -> Result<PolicyRules, ApiError> {
        let c = &input.conditions;
        let mut rules = PolicyRules {
            conditions: c.clone(),
            grants: input.grants.clone(),
        };
        let out = &mut rules.conditions;
        out.users = Selection {
            include: self.users(&c.users.include).await?,
            exclude: self.users(&c.users.exclude).await?,
        };
        let mut include = Vec::new();
        for r in &c.apps.include {
            include.push(self.app(r).await?);
        }
        let mut exclude = Vec::new();
        for r in &c.apps.exclude {
            exclude.push(self.app(r).await?);
        }
        out.apps = Selection { include, exclude };
        if let Some(l) = &c.locations {
            let mut include = Vec::new();
            for r in &l.include {
                include.push(self.location(r).await?);
            }
            let mut exclude = Vec::new();
            for r in &l.exclude {
                exclude.push(self.location(r).await?);
            }
            out.locations = Some(Selection { include, exclude });
        }
        for problem in rules.problems() {
            self.problems.add(problem);
        }
        Ok(rules)
    }

    async fn users(&mut self, refs: &[UserRef]) -> Result<Vec<UserRef>, ApiError> {
        let mut out = Vec::with_capacity(refs.len());
        for r in refs {
            out.push(self.user(r).await?);
        }
        Ok(out)
    }
}

/// Checks and resolves a policy body: its name and rules.
async fn checked_policy(
    state: &AdminState,
    caller: &Caller,
    input: &PolicyInput,
) -> Result<(String, PolicyRules), ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &input.name, MAX_NAME);
    let rules = Resolver {
        state,
        tenant_id: &caller.tenant.id,
        problems: &mut problems,
    }
    .rules(input)
    .await?;
    problems.finish()?;
    Ok((name, rules))
}

/// `GET /api/v1/policies`.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<PolicyView>>, ApiError> {
    let policies = state.store.policies(&caller.tenant.id).await?;
    Ok(Json(policies.iter().map(policy_view).collect()))
}

/// `POST /api/v1/policies`.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(input): Body<PolicyInput>,
) -> Result<(StatusCode, Json<PolicyView>), ApiError> {
    let (name, rules) = checked_policy(&state, &caller, &input).await?;
    let policy = state
        .store
        .create_policy(&caller.tenant.id, &name, input.state, &rules, state.now())
        .await?;
    caller
        .audit(
            &state,
            "policy.create",
            format!("policy:{}", policy.id),
            json!({ "name": policy.name, "state": policy.state, "rules": policy.rules }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(policy_view(&policy))))
}

/// `GET /api/v1/policies/{id}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(policy_view(&state.store.policy(&caller.tenant.id, &id).await?)))
}

/// `PUT /api/v1/policies/{id}`: replaces name, state, conditions and grants.
pub(crate) async fn replace(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<PolicyInput>,
) -> Result<Json<PolicyView>, ApiError> {
    state.store.policy(&caller.tenant.id, &id).await?;
    let (name, rules) = checked_policy(&state, &caller, &input).await?;
    let policy = state
        .store
        .replace_policy(&caller.tenant.id, &id, &name, input.state, &rules, state.now())
        .await?;
    caller
        .audit(
            &state,
            "policy.update",
            format!("policy:{id}"),
            json!({ "name": policy.name, "state": policy.state, "rules": policy.rules }),
        )
        .await?;
    Ok(Json(policy_view(&policy)))
}

/// `DELETE /api/v1/policies/{id}`.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let policy = state.store.policy(&caller.tenant.id, &id).await?;
    state.store.delete_policy(&caller.tenant.id, &id).await?;
    caller
        .audit(
            &state,
            "policy.delete",
            format!("policy:{id}"),
            json!({ "name": policy.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Checks a location body (every bad range named).
fn checked_location(input: &LocationInput, id: String) -> Result<NamedLocation, ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &input.name, MAX_NAME);
    if input.ranges.is_empty() || input.ranges.len() > MAX_RANGES {
        problems.add(format!("ranges must hold 1 to {MAX_RANGES} addresses or CIDR ranges."));
    }
    let mut ranges = Vec::new();
    for r in &input.ranges {
        match postern_policy::parse_range(r) {
            Ok(net) => ranges.push(net),
            Err(e) => problems.add(format!("ranges: {e}.")),
        }
    }
    problems.finish()?;
    Ok(NamedLocation {
        id,
        name,
        ranges,
        trusted: input.trusted,
    })
}

/// `GET /api/v1/locations`.
pub(crate) async fn list_locations(
    State(state): State<AdminState>,
    caller: Caller,
) -> Result<Json<Vec<LocationView>>, ApiError> {
    let locations = state.store.locations(&caller.tenant.id).await?;
    Ok(Json(locations.iter().map(location_view).collect()))
}

/// `POST /api/v1/locations`.
pub(crate) async fn create_location(
    State(state): State<AdminState>,
    caller: Caller,
    Body(input): Body<LocationInput>,
) -> Result<(StatusCode, Json<LocationView>), ApiError> {
    let location = checked_location(&input, String::new())?;
    let location = state
        .store
        .create_location(&caller.tenant.id, &location, state.now())
        .await?;
    let view = location_view(&location);
    caller
        .audit(
            &state,
            "location.create",
            format!("location:{}", view.id),
            json!({ "name": view.name, "ranges": view.ranges, "trusted": view.trusted }),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/v1/locations/{id}`.
pub(crate) async fn show_location(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<LocationView>, ApiError> {
    Ok(Json(location_view(
        &state.store.location(&caller.tenant.id, &id).await?,
    )))
}

/// `PUT /api/v1/locations/{id}`.
pub(crate) async fn replace_location(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(input): Body<LocationInput>,
) -> Result<Json<LocationView>, ApiError> {
    state.store.location(&caller.tenant.id, &id).await?;
    let location = checked_location(&input, id.clone())?;
    let location = state
        .store
        .replace_location(&caller.tenant.id, &location, state.now())
        .await?;
    let view = location_view(&location);
    caller
        .audit(
            &state,
            "location.update",
            format!("location:{id}"),
            json!({ "name": view.name, "ranges": view.ranges, "trusted": view.trusted }),
        )
        .await?;
    Ok(Json(view))
}

/// `DELETE /api/v1/locations/{id}`: 409 while a policy names it.
pub(crate) async fn delete_location(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let location = state.store.location(&caller.tenant.id, &id).await?;
    state.store.delete_location(&caller.tenant.id, &id).await?;
    caller
        .audit(
            &state,
            "location.delete",
            format!("location:{id}"),
            json!({ "name": location.name }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/policies/what-if`: what the service would decide for a
/// sign-in of a user to an app (or client) from an address, now: the same
/// evaluation as a real sign-in, risk signals included, with each policy's
/// explanation. Nothing is logged or changed.
pub(crate) async fn what_if(
    State(state): State<AdminState>,
    caller: Caller,
    Body(q): Body<WhatIf>,
) -> Result<Json<WhatIfResult>, ApiError> {
    let tenant = &caller.tenant;
    let store = state.store;
    let mut problems = Problems::new();
    let ip = q.ip.trim().parse().map(ClientIp);
    if ip.is_err() {
        problems.add(format!("ip: {:?} is not an IP address.", q.ip));
    }
    let user = match found(store.user(&tenant.id, &q.user).await)? {
        Some(u) => Some(u),
        None => found(
            store
                .user_by_username(&tenant.id, &postern_store::normalize_username(&q.user))
                .await,
        )?,
    };
    if user.is_none() {
        problems.add(format!("user: {} names no user of this tenant.", q.user));
    }
    let (app, client_id) = match &q.app {
        None => (None, None),
        Some(key) => {
            let app = store
                .apps(&tenant.id)
                .await?
                .into_iter()
                .find(|a| &a.id == key || &a.name == key || &a.client_id == key);
            match app {
                Some(app) => {
                    let client = app.client_id.clone();
                    (Some(app), Some(client))
                }
                None if found(store.client(&tenant.id, key).await)?.is_some() => (None, Some(key.clone())),
                None => {
                    problems.add(format!("app: {key} names no app or client of this tenant."));
                    (None, None)
                }
            }
        }
    };
    problems.finish()?;
    let (Some(user), Ok(ip)) = (user, ip) else {
        return Err(ApiError::Internal("what-if: checked values missing".into()));
    };
    let verdict = state
        .sts
        .preview_access(AccessRequest {
            tenant,
            username: &user.username,
            user: Some(&user),
            client_id: client_id.as_deref(),
            app: app.as_ref(),
            ip,
            client_kind: q.client_kind,
            risk: None,
        })
        .await?;
    let app_refuses = match &app {
        Some(app) => match state.sts.app_admits(app, &user.id).await? {
            Admission::Denied(denial) => Some(denial.to_string()),
            Admission::Allowed { .. } | Admission::StepUp(_) => None,
        },
        None if !user.enabled => Some("the user's account is disabled".to_owned()),
        None => None,
    };
    let d = &verdict.decision;
    let allowed = app_refuses.is_none() && !d.blocked() && (!d.requires_mfa() || q.mfa);
    Ok(Json(WhatIfResult {
        effect: d.effect,
        reasons: d.reasons.clone(),
        report_only_effect: d.report_only_effect,
        allowed,
        app_refuses,
        evaluations: d.evaluations.clone(),
        risk: verdict.risk,
    }))
}

/// `PUT /api/v1/users/{id}/risk`: sets the user's risk level (it feeds every
/// sign-in's risk until dismissed).
pub(crate) async fn set_user_risk(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<SetUserRisk>,
) -> Result<Json<UserRiskView>, ApiError> {
    let mut problems = Problems::new();
    if req.level == RiskLevel::None {
        problems.add("level must be low, medium or high; to clear the risk, dismiss it (DELETE).");
    }
    let reason = check_text(&mut problems, "reason", &req.reason, MAX_REASON);
    problems.finish()?;
    let risk = UserRisk {
        user_id: id.clone(),
        level: req.level,
        reason,
        set_by: caller.actor(),
        set_at: state.now(),
    };
    state.store.set_user_risk(&caller.tenant.id, &risk).await?;
    caller
        .audit(
            &state,
            "user.risk.set",
            format!("user:{id}"),
            json!({ "level": risk.level, "reason": risk.reason }),
        )
        .await?;
    Ok(Json(UserRiskView {
        user_id: risk.user_id,
        level: risk.level,
        reason: risk.reason,
        set_by: risk.set_by,
        set_at: risk.set_at,
    }))
}

/// `DELETE /api/v1/users/{id}/risk`: dismisses it (404 if none is set).
pub(crate) async fn dismiss_user_risk(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.dismiss_user_risk(&caller.tenant.id, &id).await? {
        return Err(ApiError::NotFound);
    }
    caller
        .audit(&state, "user.risk.dismiss", format!("user:{id}"), json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
