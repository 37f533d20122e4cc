//! Published apps (application proxy) and who may use them.
//!
//! An app joins an external URL (one app per address, across tenants) to an
//! internal URL that the connectors of one connector group forward to. Each
//! app has its own OIDC client at the tenant's STS for pre-authentication: a
//! public client (PKCE) whose redirect URI is the app's
//! `{external_url}.postern/callback`. The store makes and removes it with the
//! app and keeps its redirect URIs in step with the external URL; the clients
//! API shows it with the app's ID and refuses to delete it on its own.

use crate::AdminState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use postern_store::{
    App, AppLimits, AppSpec, ExternalScheme, HostRefusal, HostRules, Preauth, PrincipalKind, StoreError,
};
use serde_json::json;
use url::Url;

use crate::auth::Caller;
use crate::connector_groups;
use crate::error::ApiError;
use crate::input::{Body, Problems, check_text};
use crate::views;
use crate::wire::{
    AppSettings, AppView, AssignApp, AssignmentView, DEFAULT_BACKEND_TIMEOUT_SECS, IDENTITY_HEADERS,
    MAX_BACKEND_TIMEOUT_SECS, MAX_BODY_LIMIT, MAX_RATE_LIMIT,
};

/// Longest app name.
const MAX_NAME: usize = 100;
/// Longest URL.
const MAX_URL: usize = 2000;
/// Path segments starting with this belong to the front door (its callback),
/// in every app's space: no app may be published below one.
const RESERVED_SEGMENT: &str = ".postern";

/// What is wrong with the path of `raw` as written, before the URL parser
/// resolves it (SEC-13): it would turn `/docs/../../admin/` into `/admin/` and
/// `\` into `/`, publishing something other than what was asked. Refused:
/// `.` and `..` segments (also before a `;`), encoded dots, slashes and
/// backslashes, backslashes, and empty segments, none of which the front door
/// lets through to a backend as sent.
fn raw_path_problem(raw: &str) -> Option<&'static str> {
    let after_scheme = raw.split_once(':').map_or(raw, |(_, rest)| rest);
    let authority_and_path = after_scheme.trim_start_matches(['/', '\\']);
    let path = authority_and_path
        .find(['/', '\\', '?', '#'])
        .map_or("", |i| &authority_and_path[i..]);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%5c") {
        Some("must not contain backslashes (plain or %5C)")
    } else if lower.contains("%2f") {
        Some("must not contain encoded slashes (%2F)")
    } else if lower.contains("%2e") {
        Some("must not contain encoded dots (%2E)")
    } else if path.split('/').any(|s| matches!(s.split(';').next(), Some("." | ".."))) {
        Some("must not contain . or .. segments")
    } else if path.contains("//") {
        Some("must not contain empty segments (//)")
    } else {
        None
    }
}

/// Parses an `http` or `https` URL with a host and without a query, fragment
/// or credentials, whose path as written is already normalized
/// ([`raw_path_problem`]); `field` names it in the problems. The URL is stored
/// as the parser serializes it (lowercase host, no default port).
fn check_http_url(problems: &mut Problems, field: &str, raw: &str) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > MAX_URL {
        problems.add(format!(
            "{field} must be an http or https URL of at most {MAX_URL} characters."
        ));
        return None;
    }
    let url = match Url::parse(raw) {
        Ok(url) => url,
        Err(e) => {
            problems.add(format!("{field}: {raw:?} is not an absolute URL ({e})."));
            return None;
        }
    };
    let mut found = Vec::new();
    if !matches!(url.scheme(), "http" | "https") {
        found.push(format!("{field} must use http or https, not {}.", url.scheme()));
    } else if url.host_str().is_none_or(str::is_empty) {
        found.push(format!("{field} must name a host."));
    }
    if url.query().is_some() {
        found.push(format!("{field} must not have a query."));
    }
    if url.fragment().is_some() {
        found.push(format!("{field} must not have a fragment."));
    }
    if !url.username().is_empty() || url.password().is_some() {
        found.push(format!("{field} must not contain credentials."));
    }
    if let Some(why) = raw_path_problem(raw) {
        found.push(format!("{field}: the path {why}."));
    }
    let ok = found.is_empty();
    found.into_iter().for_each(|p| problems.add(p));
    ok.then_some(url)
}

/// The external address: scheme, lowercase host with a port unless it is the
/// scheme's default, and a path prefix that starts and ends with `/`.
fn check_external_url(problems: &mut Problems, raw: &str) -> Option<(ExternalScheme, String, String)> {
    let url = check_http_url(problems, "external_url", raw)?;
    let scheme = ExternalScheme::parse(url.scheme())?;
    // The URL parser has lowercased the host and dropped a default port.
    let host = url.host_str()?.to_ascii_lowercase();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let mut prefix = url.path().to_owned();
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    if prefix.split('/').any(|segment| segment.starts_with(RESERVED_SEGMENT)) {
        problems.add(format!(
            "external_url: path segments starting with {RESERVED_SEGMENT} are reserved for the front door."
        ));
        return None;
    }
    Some((scheme, host, prefix))
}

/// The identity headers asked for, in canonical order; all of them when none
/// were named. Each unknown one is a problem.
fn check_identity_headers(problems: &mut Problems, given: Option<&[String]>) -> Vec<String> {
    let Some(given) = given else {
        return IDENTITY_HEADERS.iter().map(|h| (*h).to_owned()).collect();
    };
    for header in given {
        if !IDENTITY_HEADERS.contains(&header.as_str()) {
            problems.add(format!(
                "identity_headers: {header:?} is not an identity header; use {}.",
                IDENTITY_HEADERS.join(", ")
            ));
        }
    }
    IDENTITY_HEADERS
        .iter()
        .filter(|h| given.iter().any(|g| g == *h))
        .map(|h| (*h).to_owned())
        .collect()
}

/// Whether the caller's tenant may publish on the external host (SEC-12): a
/// 409 when another tenant publishes there, a problem naming `external_url`
/// for every other refusal.
async fn check_host(
    state: &AdminState,
    rules: &HostRules,
    tenant_id: &str,
    host: &str,
    problems: &mut Problems,
) -> Result<(), ApiError> {
    match state.store.host_refusal(rules, tenant_id, host).await? {
        None => Ok(()),
        Some(refusal @ HostRefusal::ClaimedElsewhere { .. }) => Err(ApiError::Conflict(refusal.to_string())),
        Some(refusal) => {
            problems.add(format!("external_url: {refusal}."));
            Ok(())
        }
    }
}

/// Validates a request, reporting every problem at once, and resolves the
/// connector group in the caller's tenant.
async fn validate(
    state: &AdminState,
    rules: &HostRules,
    caller: &Caller,
    req: &AppSettings,
) -> Result<AppSpec, ApiError> {
    let mut problems = Problems::new();
    let name = check_text(&mut problems, "name", &req.name, MAX_NAME);
    let external = check_external_url(&mut problems, &req.external_url);
    if let Some((_, host, _)) = &external {
        check_host(state, rules, &caller.tenant.id, host, &mut problems).await?;
    }
    let internal_url = check_http_url(&mut problems, "internal_url", &req.internal_url).map(String::from);
    let backend_timeout_secs = req.backend_timeout_secs.unwrap_or(DEFAULT_BACKEND_TIMEOUT_SECS);
    if !(1..=MAX_BACKEND_TIMEOUT_SECS).contains(&backend_timeout_secs) {
        problems.add(format!("backend_timeout_secs must be 1 to {MAX_BACKEND_TIMEOUT_SECS}."));
    }
    let identity_headers = check_identity_headers(&mut problems, req.identity_headers.as_deref());
    let limits = check_app_limits(&mut problems, req);
    let tenant_id = &caller.tenant.id;
    let group = match &req.connector_group {
        Some(wanted) => {
            let found = connector_groups::find(state, tenant_id, wanted).await?;
            if found.is_none() {
                problems.add(format!(
                    "connector_group: there is no connector group {wanted:?} in this tenant."
                ));
            }
            found
        }
        None => Some(state.store.default_connector_group(tenant_id, state.now()).await?),
    };
    problems.finish()?;
    let (Some((external_scheme, external_host, path_prefix)), Some(internal_url), Some(group)) =
        (external, internal_url, group)
    else {
        return Err(ApiError::Internal("app validation passed without a value".into()));
    };
    Ok(AppSpec {
        name,
        external_scheme,
        external_host,
        path_prefix,
        internal_url,
        preauth: req.preauth.unwrap_or(Preauth::Sts),
        connector_group_id: group.id,
        backend_timeout_secs,
        validate_backend_tls: req.validate_backend_tls.unwrap_or(true),
        translate_headers: req.translate_headers.unwrap_or(true),
        translate_links: req.translate_links.unwrap_or(false),
        identity_headers,
        limits,
    })
}

/// The app's own limits (SEC-9), each in its range.
fn check_app_limits(problems: &mut Problems, req: &AppSettings) -> AppLimits {
    for (field, value) in [
        ("rate_limit_per_sec", req.rate_limit_per_sec),
        ("rate_limit_burst", req.rate_limit_burst),
    ] {
        if value.is_some_and(|v| !(1..=MAX_RATE_LIMIT).contains(&v)) {
            problems.add(format!("{field} must be 1 to {MAX_RATE_LIMIT}."));
        }
    }
    if req.rate_limit_burst.is_some() && req.rate_limit_per_sec.is_none() {
        problems.add("rate_limit_burst needs rate_limit_per_sec.");
    }
    if req.max_body_bytes.is_some_and(|v| !(0..=MAX_BODY_LIMIT).contains(&v)) {
        problems.add(format!("max_body_bytes must be 0 (no limit) to {MAX_BODY_LIMIT}."));
    }
    AppLimits {
        rate_limit_per_sec: req.rate_limit_per_sec,
        rate_limit_burst: req.rate_limit_burst,
        max_body_bytes: req.max_body_bytes,
    }
}

/// Refuses (409) a name another app of the tenant has, or an address another
/// app (of any tenant) is published at. `except` is the app being replaced.
/// The store's unique constraints still decide a race.
async fn check_free(state: &AdminState, tenant_id: &str, spec: &AppSpec, except: Option<&str>) -> Result<(), ApiError> {
    let other = |a: &App| Some(a.id.as_str()) != except;
    if state
        .store
        .apps(tenant_id)
        .await?
        .iter()
        .any(|a| other(a) && a.name == spec.name)
    {
        return Err(ApiError::Conflict(format!(
            "an app named {} exists in this tenant",
            spec.name
        )));
    }
    if state
        .store
        .apps_on_host(&spec.external_host)
        .await?
        .iter()
        .any(|a| other(a) && a.path_prefix == spec.path_prefix)
    {
        return Err(ApiError::Conflict(format!(
            "{} is already published",
            spec.external_url()
        )));
    }
    Ok(())
}

/// The wire view of one app, with what is wrong with its host, if anything.
async fn view(state: &AdminState, rules: &HostRules, app: &App) -> Result<AppView, ApiError> {
    let groups = state.store.connector_groups(&app.tenant_id).await?;
    let mut view = views::app(app, &groups);
    view.host_problem = state
        .store
        .host_refusal(rules, &app.tenant_id, &app.external_host)
        .await?
        .map(|r| r.to_string());
    Ok(view)
}

/// What the audit log keeps of an app's settings.
fn audit_detail(app: &App) -> serde_json::Value {
    json!({
        "name": app.name,
        "external_url": app.external_url(),
        "internal_url": app.internal_url,
        "preauth": app.preauth,
        "connector_group": app.connector_group_id,
        "client_id": app.client_id,
    })
}

/// `GET /api/v1/apps`: the tenant's apps, by name; an app whose host the
/// tenant may not publish on (published before the rules, or its domain lost
/// its verification) says why in `host_problem`, and is not served.
pub(crate) async fn list(State(state): State<AdminState>, caller: Caller) -> Result<Json<Vec<AppView>>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let apps = state.store.apps(tenant_id).await?;
    let groups = state.store.connector_groups(tenant_id).await?;
    let violations = state.store.host_violations(&state.host_rules, Some(tenant_id)).await?;
    Ok(Json(
        apps.iter()
            .map(|a| {
                let mut view = views::app(a, &groups);
                view.host_problem = violations
                    .iter()
                    .find(|v| v.app.id == a.id)
                    .map(|v| v.refusal.to_string());
                view
            })
            .collect(),
    ))
}

/// `POST /api/v1/apps`: publishes an app, with its OIDC client.
pub(crate) async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    Body(req): Body<AppSettings>,
) -> Result<(StatusCode, Json<AppView>), ApiError> {
    let tenant_id = &caller.tenant.id;
    let spec = validate(&state, &state.host_rules, &caller, &req).await?;
    check_free(&state, tenant_id, &spec, None).await?;
    let client_id = uuid::Uuid::new_v4().to_string();
    let app = state
        .store
        .create_app(tenant_id, &spec, &client_id, state.now())
        .await?;
    caller
        .audit(&state, "app.create", format!("app:{}", app.id), audit_detail(&app))
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &state.host_rules, &app).await?)))
}

/// `GET /api/v1/apps/{id}`.
pub(crate) async fn show(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AppView>, ApiError> {
    let app = state.store.app(&caller.tenant.id, &id).await?;
    Ok(Json(view(&state, &state.host_rules, &app).await?))
}

/// `PUT /api/v1/apps/{id}`: replaces every setting; the app keeps its ID and
/// its OIDC client, whose redirect URIs follow the external URL.
pub(crate) async fn replace(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<AppSettings>,
) -> Result<Json<AppView>, ApiError> {
    let tenant_id = &caller.tenant.id;
    let before = state.store.app(tenant_id, &id).await?;
    let spec = validate(&state, &state.host_rules, &caller, &req).await?;
    check_free(&state, tenant_id, &spec, Some(&id)).await?;
    let app = state.store.update_app(tenant_id, &id, &spec, state.now()).await?;
    caller
        .audit(
            &state,
            "app.update",
            format!("app:{id}"),
            json!({ "before": audit_detail(&before), "after": audit_detail(&app) }),
        )
        .await?;
    Ok(Json(view(&state, &state.host_rules, &app).await?))
}

/// `POST /api/v1/apps/{id}/test`: asks the front door to test the app (DNS,
/// connected connectors, a `GET` of the backend through a tunnel). Changes
/// nothing; recorded in the audit log because it sends a request to the
/// backend.
pub(crate) async fn test(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<crate::wire::AppProbe>, ApiError> {
    let app = state.store.app(&caller.tenant.id, &id).await?;
    let front_door = state.front_door()?;
    let name = app.name.clone();
    let probe = front_door.probe_app(app).await.map_err(ApiError::Unavailable)?;
    caller
        .audit(
            &state,
            "app.test",
            format!("app:{id}"),
            json!({ "name": name, "backend_status": probe.backend_status, "backend_ok": probe.backend.ok }),
        )
        .await?;
    Ok(Json(probe))
}

/// `DELETE /api/v1/apps/{id}`: unpublishes the app; its OIDC client, the
/// client's tokens and the app's assignments go with it.
pub(crate) async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let app = state.store.delete_app(&caller.tenant.id, &id).await?;
    caller
        .audit(&state, "app.delete", format!("app:{id}"), audit_detail(&app))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The name of a user (username) or group of the tenant; `None` if it is gone.
async fn principal_name(
    state: &AdminState,
    tenant_id: &str,
    kind: PrincipalKind,
    id: &str,
) -> Result<Option<String>, ApiError> {
    let name = match kind {
        PrincipalKind::User => state.store.user(tenant_id, id).await.map(|u| u.username),
        PrincipalKind::Group => state.store.group(tenant_id, id).await.map(|g| g.name),
    };
    match name {
        Ok(name) => Ok(Some(name)),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The ID of the user or group `given` names: its ID, a username or a group
/// name, in the tenant. `None` when nothing matches.
async fn resolve_principal(
    state: &AdminState,
    tenant_id: &str,
    kind: PrincipalKind,
    given: &str,
) -> Result<Option<String>, ApiError> {
    if principal_name(state, tenant_id, kind, given).await?.is_some() {
        return Ok(Some(given.to_owned()));
    }
    match kind {
        PrincipalKind::User => match state.store.user_by_username(tenant_id, given).await {
            Ok(user) => Ok(Some(user.id)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        },
        // Group names are unique in a tenant.
        PrincipalKind::Group => Ok(state
            .store
            .groups(tenant_id)
            .await?
            .into_iter()
            .find(|g| g.name == given)
            .map(|g| g.id)),
    }
}

/// The app's assignments with their names.
async fn assignment_views(state: &AdminState, tenant_id: &str, app_id: &str) -> Result<Vec<AssignmentView>, ApiError> {
    let mut views = Vec::new();
    for (kind, id) in state.store.app_assignments(tenant_id, app_id).await? {
        let name = principal_name(state, tenant_id, kind, &id).await?;
        views.push(AssignmentView { kind, id, name });
    }
    Ok(views)
}

/// `GET /api/v1/apps/{id}/assignments`.
pub(crate) async fn assignments(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<AssignmentView>>, ApiError> {
    Ok(Json(assignment_views(&state, &caller.tenant.id, &id).await?))
}

/// `POST /api/v1/apps/{id}/assignments`: assigns a user or group of the
/// tenant (idempotent), named by ID, username or group name, so an application
/// administrator (who may not list users) can name them. Answers with every
/// assignment of the app.
pub(crate) async fn assign(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(req): Body<AssignApp>,
) -> Result<Json<Vec<AssignmentView>>, ApiError> {
    let tenant_id = &caller.tenant.id;
    state.store.app(tenant_id, &id).await?;
    let Some(principal_id) = resolve_principal(&state, tenant_id, req.kind, &req.id).await? else {
        let kind = match req.kind {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
        };
        return Err(ApiError::bad_request(format!(
            "id: there is no {kind} {:?} in this tenant.",
            req.id
        )));
    };
    state.store.assign_app(tenant_id, &id, req.kind, &principal_id).await?;
    caller
        .audit(
            &state,
            "app.assign",
            format!("app:{id}"),
            json!({ "kind": req.kind, "id": principal_id }),
        )
        .await?;
    Ok(Json(assignment_views(&state, tenant_id, &id).await?))
}

/// `DELETE /api/v1/apps/{id}/assignments/{kind}/{principal}`: the principal by
/// ID or name; 404 when it is not assigned.
pub(crate) async fn unassign(
    State(state): State<AdminState>,
    caller: Caller,
    Path((id, kind, principal_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind = match kind.as_str() {
        "user" => PrincipalKind::User,
        "group" => PrincipalKind::Group,
        other => {
            return Err(ApiError::bad_request(format!("kind: {other:?} is not user or group.")));
        }
    };
    // A name works too, as long as it still names someone; otherwise the ID as
    // given (a deleted principal's leftover assignment).
    let principal_id = resolve_principal(&state, &caller.tenant.id, kind, &principal_id)
        .await?
        .unwrap_or(principal_id);
    state
        .store
        .unassign_app(&caller.tenant.id, &id, kind, &principal_id)
        .await?;
    caller
        .audit(
            &state,
            "app.unassign",
            format!("app:{id}"),
            json!({ "kind": kind, "id": principal_id }),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(f: impl FnOnce(&mut Problems)) -> Vec<String> {
        let mut p = Problems::new();
        f(&mut p);
        match p.finish() {
            Ok(()) => Vec::new(),
            Err(ApiError::Invalid { problems, .. }) => problems,
            Err(other) => panic!("{other:?}"),
        }
    }

    fn external(raw: &str) -> Result<(ExternalScheme, String, String), Vec<String>> {
        let mut found = None;
        let problems = problems(|p| found = check_external_url(p, raw));
        found.ok_or(problems)
    }

    #[test]
    fn external_urls_are_normalized() {
        let https = ExternalScheme::Https;
        for (raw, host, prefix) in [
            ("https://wiki.example.com", "wiki.example.com", "/"),
            ("https://Wiki.EXAMPLE.com/", "wiki.example.com", "/"),
            ("https://wiki.example.com/docs", "wiki.example.com", "/docs/"),
            ("https://wiki.example.com/Docs/v2/", "wiki.example.com", "/Docs/v2/"),
            ("https://wiki.example.com:443/a", "wiki.example.com", "/a/"),
            ("https://wiki.example.com:8443/a", "wiki.example.com:8443", "/a/"),
            ("  https://wiki.example.com/a/b  ", "wiki.example.com", "/a/b/"),
            ("https://wiki.example.com/a%20b/", "wiki.example.com", "/a%20b/"),
        ] {
            assert_eq!(external(raw), Ok((https, host.to_owned(), prefix.to_owned())), "{raw}");
        }
        assert_eq!(
            external("http://intranet.example.com:80/x"),
            Ok((ExternalScheme::Http, "intranet.example.com".into(), "/x/".into()))
        );
    }

    #[test]
    fn bad_external_urls_name_the_field() {
        for bad in [
            "",
            "wiki.example.com",
            "/docs",
            "ftp://wiki.example.com/",
            "https://wiki.example.com/?a=1",
            "https://wiki.example.com/#top",
            "https://u:p@wiki.example.com/",
            "https://wiki.example.com/.postern/",
            "https://wiki.example.com/a/.postern-x/b",
            "https://wiki.example.com/a/../b",
            "https://wiki.example.com/docs/../../admin/",
            "https://wiki.example.com/./docs/",
            "https://wiki.example.com/docs/%2e%2e/admin/",
            "https://wiki.example.com/docs/.%2E/",
            "https://wiki.example.com/docs%2Fadmin/",
            "https://wiki.example.com/docs\\..\\admin/",
            "https://wiki.example.com/docs/%5c/",
            "https://wiki.example.com//docs/",
            "https://wiki.example.com/docs/..;/",
            &format!("https://wiki.example.com/{}", "a".repeat(2000)),
        ] {
            let found = external(bad).expect_err(bad);
            assert!(
                !found.is_empty() && found.iter().all(|p| p.starts_with("external_url")),
                "{bad}: {found:?}"
            );
        }
    }

    #[test]
    fn internal_urls_keep_their_base_path() {
        let mut kept = None;
        assert!(problems(|p| kept = check_http_url(p, "internal_url", "http://wiki.corp.local:8080/base")).is_empty());
        assert_eq!(
            kept.map(String::from).as_deref(),
            Some("http://wiki.corp.local:8080/base")
        );
        for bad in [
            "mailto:a@b.test",
            "http://wiki.corp/?q",
            "https://a:b@wiki.corp/",
            "wiki.corp",
            "http://wiki.corp/base/../../",
            "http://wiki.corp/base/%2e%2e/",
            "http://wiki.corp/base%2f..%2f",
            "http://wiki.corp\\base\\..\\",
        ] {
            let found = problems(|p| {
                check_http_url(p, "internal_url", bad);
            });
            assert!(found.iter().any(|p| p.starts_with("internal_url")), "{bad}: {found:?}");
        }
    }

    #[test]
    fn identity_headers_default_to_all_and_refuse_unknown_ones() {
        let mut got = Vec::new();
        assert!(problems(|p| got = check_identity_headers(p, None)).is_empty());
        assert_eq!(got, IDENTITY_HEADERS);
        let asked = ["groups".to_owned(), "user".to_owned(), "user".to_owned()];
        assert!(problems(|p| got = check_identity_headers(p, Some(&asked))).is_empty());
        assert_eq!(got, ["user", "groups"], "canonical order, no repeats");
        assert!(problems(|p| got = check_identity_headers(p, Some(&[]))).is_empty());
        assert!(got.is_empty());
        let found = problems(|p| {
            check_identity_headers(p, Some(&["user".to_owned(), "x-roles".to_owned()]));
        });
        assert_eq!(found.len(), 1);
        assert!(found[0].contains("\"x-roles\""), "{found:?}");
    }
}
