//! Published apps: list, publish, edit, assignments, delete, and "Test this
//! app" (DNS, connectors, backend reachability, by `POST /api/v1/apps/{id}/test`).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::{ApiFailure, b, items, n, s};
use crate::html::{Notice, Page, Viewer, esc, input, seg, select, table};
use crate::session::SignedIn;
use crate::{Console, DoneParam, Fields, done, failure_page};

const MESSAGES: &[(&str, &str)] = &[
    ("published", "The app is published."),
    ("saved", "The app's settings are saved."),
    ("assigned", "The assignment is added."),
    ("unassigned", "The assignment is removed."),
    ("deleted", "The app is deleted."),
];

/// `GET /admin/apps`.
pub(crate) async fn list(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let apps = match console.get(&session, "/api/v1/apps").await {
        Ok(a) => a,
        Err(f) => return failure_page("Apps", &f, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&apps)
        .iter()
        .map(|a| {
            let mut problem = String::new();
            if let Some(p) = a.get("host_problem").and_then(Value::as_str) {
                problem = format!(r#"<br><span class="warn">Not served: {}</span>"#, esc(p));
            }
            vec![
                format!(
                    r#"<a href="/admin/apps/{}">{}</a>{problem}"#,
                    esc(&seg(s(a, "id"))),
                    esc(s(a, "name"))
                ),
                esc(s(a, "external_url")),
                esc(s(a, "internal_url")),
                esc(s(a, "preauth")),
                esc(s(&a["connector_group"], "name")),
            ]
        })
        .collect();
    Page::new("Apps")
        .notice(d.notice(MESSAGES))
        .push(r#"<p><a id="publish-app" href="/admin/apps/new">Publish an app</a></p>"#)
        .push(table(
            &[
                "Name",
                "External URL",
                "Internal URL",
                "Pre-authentication",
                "Connector group",
            ],
            &rows,
        ))
        .render(Some(&viewer))
}

/// The connector groups as select options (by name).
async fn group_options(console: &Console, session: &crate::session::Session) -> Vec<(String, String)> {
    let mut options = vec![(String::new(), "(the default group)".to_owned())];
    if let Ok(groups) = console.get(session, "/api/v1/connector-groups").await {
        for g in items(&groups) {
            options.push((s(g, "name").to_owned(), s(g, "name").to_owned()));
        }
    }
    options
}

fn preauth_options() -> Vec<(String, String)> {
    vec![
        ("sts".into(), "Pre-authenticated: users sign in first".into()),
        ("passthrough".into(), "Passthrough: no sign-in at the front door".into()),
    ]
}

/// The publish form, with `values` from a refused attempt.
fn publish_form(viewer: &Viewer, groups: &[(String, String)], values: &Fields) -> String {
    let preauth = values.opt("preauth").unwrap_or_else(|| "sts".into());
    format!(
        r#"<form id="publish" method="post" action="/admin/apps">{csrf}<fieldset>{name}{ext}{int}{pre}{grp}<p><button type="submit" id="publish-submit" name="action" value="publish">Publish</button></p></fieldset></form>"#,
        csrf = viewer.csrf_field(),
        name = input("name", "Name", "text", &values.get("name")),
        ext = input(
            "external_url",
            "External URL (where users reach it, e.g. https://wiki.acme.example/)",
            "text",
            &values.get("external_url")
        ),
        int = input(
            "internal_url",
            "Internal URL (where connectors forward to, e.g. http://wiki.corp:8080/)",
            "text",
            &values.get("internal_url")
        ),
        pre = select("preauth", "Pre-authentication", &preauth_options(), &preauth),
        grp = select(
            "connector_group",
            "Connector group",
            groups,
            &values.get("connector_group")
        ),
    )
}

/// `GET /admin/apps/new`.
pub(crate) async fn new_form(State(console): State<Arc<Console>>, SignedIn(session): SignedIn) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = group_options(&console, &session).await;
    Page::new("Publish an app")
        .push(publish_form(&viewer, &groups, &Fields(vec![])))
        .render(Some(&viewer))
}

/// `POST /admin/apps`: `POST /api/v1/apps`.
pub(crate) async fn create(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let mut body = json!({
        "name": fields.get("name"),
        "external_url": fields.get("external_url"),
        "internal_url": fields.get("internal_url"),
    });
    if let Some(p) = fields.opt("preauth") {
        body["preauth"] = json!(p);
    }
    if let Some(g) = fields.opt("connector_group") {
        body["connector_group"] = json!(g);
    }
    match console.call(&session, Method::POST, "/api/v1/apps", Some(body)).await {
        Ok(app) => done(&format!("/admin/apps/{}?done=published", seg(s(&app, "id")))),
        Err(f) => {
            let viewer = match console.viewer(&session).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let groups = group_options(&console, &session).await;
            Page::new("Publish an app")
                .status(f.status)
                .notice(Some(f.notice("The app was not published")))
                .push(publish_form(&viewer, &groups, &fields))
                .render(Some(&viewer))
        }
    }
}

fn opt_num(v: &Value, key: &str) -> String {
    n(v, key).map(|x| x.to_string()).unwrap_or_default()
}

fn checkbox(name: &str, label: &str, on: bool) -> String {
    format!(
        r#"<label><input type="checkbox" id="f-{name}" name="{name}" value="on"{}> {label}</label>"#,
        if on { " checked" } else { "" },
        name = esc(name),
        label = esc(label),
    )
}

/// The edit form, showing every setting (a save replaces the app).
fn edit_form(viewer: &Viewer, app: &Value, groups: &[(String, String)]) -> String {
    let id = seg(s(app, "id"));
    let identity: Vec<&str> = items(&app["identity_headers"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    format!(
        r#"<form id="edit" method="post" action="/admin/apps/{id}">{csrf}<fieldset><legend>Settings</legend>{name}{ext}{int}{pre}{grp}{timeout}{tls}{th}{tl}{idh}{rate}{burst}{body}<p><button type="submit" id="edit-submit" name="action" value="save">Save</button></p></fieldset></form>"#,
        id = esc(&id),
        csrf = viewer.csrf_field(),
        name = input("name", "Name", "text", s(app, "name")),
        ext = input("external_url", "External URL", "text", s(app, "external_url")),
        int = input("internal_url", "Internal URL", "text", s(app, "internal_url")),
        pre = select("preauth", "Pre-authentication", &preauth_options(), s(app, "preauth")),
        grp = select(
            "connector_group",
            "Connector group",
            groups,
            s(&app["connector_group"], "name")
        ),
        timeout = input(
            "backend_timeout_secs",
            "Backend timeout (seconds)",
            "number",
            &opt_num(app, "backend_timeout_secs")
        ),
        tls = checkbox(
            "validate_backend_tls",
            "Check the backend's TLS certificate",
            b(app, "validate_backend_tls")
        ),
        th = checkbox(
            "translate_headers",
            "Translate headers (Location, cookies)",
            b(app, "translate_headers")
        ),
        tl = checkbox(
            "translate_links",
            "Translate links in HTML and CSS",
            b(app, "translate_links")
        ),
        idh = input(
            "identity_headers",
            "Identity headers sent to the backend (comma-separated: user, email, groups, assertion)",
            "text",
            &identity.join(", ")
        ),
        rate = input(
            "rate_limit_per_sec",
            "Requests per second (blank: the installation's)",
            "number",
            &opt_num(app, "rate_limit_per_sec")
        ),
        burst = input(
            "rate_limit_burst",
            "Burst (blank: the default)",
            "number",
            &opt_num(app, "rate_limit_burst")
        ),
        body = input(
            "max_body_bytes",
            "Largest request body in bytes, 0 for none (blank: the installation's)",
            "number",
            &opt_num(app, "max_body_bytes")
        ),
    )
}

fn assignments_section(viewer: &Viewer, app_id: &str, assignments: &Value) -> String {
    let id = esc(&seg(app_id));
    let rows: Vec<Vec<String>> = items(assignments)
        .iter()
        .map(|a| {
            vec![
                esc(s(a, "kind")),
                esc(a.get("name").and_then(Value::as_str).unwrap_or("(deleted)")),
                format!("<code>{}</code>", esc(s(a, "id"))),
                format!(
                    r#"<form class="inline" id="unassign-{pid}" method="post" action="/admin/apps/{id}/unassign">{csrf}<input type="hidden" name="kind" value="{kind}"><input type="hidden" name="principal" value="{pid}"><button type="submit" name="action" value="unassign">Unassign</button></form>"#,
                    csrf = viewer.csrf_field(),
                    kind = esc(s(a, "kind")),
                    pid = esc(s(a, "id")),
                ),
            ]
        })
        .collect();
    let kinds = vec![
        ("user".to_owned(), "User".to_owned()),
        ("group".to_owned(), "Group".to_owned()),
    ];
    format!(
        r#"<h2>Assignments</h2>{table}<form id="assign" method="post" action="/admin/apps/{id}/assign">{csrf}<fieldset><legend>Assign a user or group</legend>{kind}{principal}<p><button type="submit" id="assign-submit" name="action" value="assign">Assign</button></p></fieldset></form>"#,
        table = table(&["Kind", "Name", "ID", ""], &rows),
        csrf = viewer.csrf_field(),
        kind = select("kind", "Kind", &kinds, "user"),
        principal = input("principal", "Username, group name or ID", "text", ""),
    )
}

fn probe_section(probe: &Value) -> String {
    let mut out = String::from(r#"<h2>Test results</h2><table id="test-results"><tbody>"#);
    for (key, label) in [("dns", "DNS"), ("connectors", "Connectors"), ("backend", "Backend")] {
        let check = &probe[key];
        let verdict = if b(check, "ok") { "OK" } else { "Problem" };
        let mut details = String::new();
        for d in items(&check["details"]) {
            details.push_str(&format!("<li>{}</li>", esc(d.as_str().unwrap_or(""))));
        }
        if !details.is_empty() {
            details = format!("<ul>{details}</ul>");
        }
        out.push_str(&format!(
            r#"<tr id="test-{key}"><th>{label}</th><td class="{cls}">{verdict}</td><td>{summary}{details}</td></tr>"#,
            cls = if b(check, "ok") { "ok" } else { "err" },
            summary = esc(s(check, "summary")),
        ));
    }
    out.push_str("</tbody></table>");
    out
}

/// The app page: settings, assignments, test and delete.
async fn app_page(
    console: &Console,
    session: &crate::session::Session,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
    probe: Option<&Value>,
) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let app = match console.get(session, &format!("/api/v1/apps/{}", seg(id))).await {
        Ok(a) => a,
        Err(f) => return failure_page("App", &f, Some(&viewer)),
    };
    let assignments = console
        .get(session, &format!("/api/v1/apps/{}/assignments", seg(id)))
        .await
        .unwrap_or(Value::Null);
    let groups = group_options(console, session).await;
    let mut page = Page::new(format!("App {}", s(&app, "name")))
        .status(status)
        .notice(notice)
        .push(format!(
            r#"<p>Users reach it at <a href="{ext}">{ext}</a>; sign-in callback <code>{cb}</code>; client <code>{client}</code>.</p>"#,
            ext = esc(s(&app, "external_url")),
            cb = esc(s(&app, "redirect_uri")),
            client = esc(s(&app, "client_id")),
        ));
    if let Some(p) = app.get("host_problem").and_then(Value::as_str) {
        page = page.push(format!(r#"<p class="warn">Not served: {}</p>"#, esc(p)));
    }
    page = page.push(format!(
        r#"<p>{test} <a id="delete-app" href="/admin/apps/{id}/delete">Delete this app…</a></p>"#,
        test = viewer.button(&format!("/admin/apps/{}/test", seg(id)), "test", "Test this app"),
        id = esc(&seg(id)),
    ));
    if let Some(p) = probe {
        page = page.push(probe_section(p));
    }
    page.push(edit_form(&viewer, &app, &groups))
        .push(assignments_section(&viewer, id, &assignments))
        .render(Some(&viewer))
}

/// `GET /admin/apps/{id}`.
pub(crate) async fn show(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Query(d): Query<DoneParam>,
) -> Response {
    app_page(&console, &session, &id, d.notice(MESSAGES), StatusCode::OK, None).await
}

/// A number field: absent when blank; a problem when not a number.
fn number(fields: &Fields, name: &str, label: &str, problems: &mut Vec<String>) -> Option<i64> {
    let v = fields.opt(name)?;
    match v.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            problems.push(format!("{label} must be a whole number."));
            None
        }
    }
}

/// `POST /admin/apps/{id}`: `PUT /api/v1/apps/{id}` with every setting.
pub(crate) async fn update(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let mut problems = Vec::new();
    let timeout = number(&fields, "backend_timeout_secs", "The backend timeout", &mut problems);
    let rate = number(&fields, "rate_limit_per_sec", "The request rate", &mut problems);
    let burst = number(&fields, "rate_limit_burst", "The burst", &mut problems);
    let max_body = number(&fields, "max_body_bytes", "The body limit", &mut problems);
    if !problems.is_empty() {
        let f = ApiFailure {
            status: StatusCode::BAD_REQUEST,
            message: "the request is not valid".into(),
            problems,
        };
        return app_page(
            &console,
            &session,
            &id,
            Some(f.notice("The settings were not saved")),
            StatusCode::BAD_REQUEST,
            None,
        )
        .await;
    }
    let identity: Vec<String> = fields
        .get("identity_headers")
        .split(',')
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    let mut body = json!({
        "name": fields.get("name"),
        "external_url": fields.get("external_url"),
        "internal_url": fields.get("internal_url"),
        "validate_backend_tls": fields.checked("validate_backend_tls"),
        "translate_headers": fields.checked("translate_headers"),
        "translate_links": fields.checked("translate_links"),
        "identity_headers": identity,
    });
    for (key, value) in [
        ("backend_timeout_secs", timeout),
        ("rate_limit_per_sec", rate),
        ("rate_limit_burst", burst),
        ("max_body_bytes", max_body),
    ] {
        if let Some(v) = value {
            body[key] = json!(v);
        }
    }
    for key in ["preauth", "connector_group"] {
        if let Some(v) = fields.opt(key) {
            body[key] = json!(v);
        }
    }
    match console
        .call(&session, Method::PUT, &format!("/api/v1/apps/{}", seg(&id)), Some(body))
        .await
    {
        Ok(_) => done(&format!("/admin/apps/{}?done=saved", seg(&id))),
        Err(f) => {
            app_page(
                &console,
                &session,
                &id,
                Some(f.notice("The settings were not saved")),
                f.status,
                None,
            )
            .await
        }
    }
}

/// `POST /admin/apps/{id}/assign`: `POST /api/v1/apps/{id}/assignments`.
pub(crate) async fn assign(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let body = json!({ "kind": fields.get("kind"), "id": fields.get("principal") });
    match console
        .call(
            &session,
            Method::POST,
            &format!("/api/v1/apps/{}/assignments", seg(&id)),
            Some(body),
        )
        .await
    {
        Ok(_) => done(&format!("/admin/apps/{}?done=assigned", seg(&id))),
        Err(f) => {
            app_page(
                &console,
                &session,
                &id,
                Some(f.notice("The assignment was not added")),
                f.status,
                None,
            )
            .await
        }
    }
}

/// `POST /admin/apps/{id}/unassign`.
pub(crate) async fn unassign(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let path = format!(
        "/api/v1/apps/{}/assignments/{}/{}",
        seg(&id),
        seg(&fields.get("kind")),
        seg(&fields.get("principal"))
    );
    match console.call(&session, Method::DELETE, &path, None).await {
        Ok(_) => done(&format!("/admin/apps/{}?done=unassigned", seg(&id))),
        Err(f) => {
            app_page(
                &console,
                &session,
                &id,
                Some(f.notice("The assignment was not removed")),
                f.status,
                None,
            )
            .await
        }
    }
}

/// `POST /admin/apps/{id}/test`: `POST /api/v1/apps/{id}/test`, shown on the
/// app's page.
pub(crate) async fn test(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    match console
        .call(&session, Method::POST, &format!("/api/v1/apps/{}/test", seg(&id)), None)
        .await
    {
        Ok(probe) => {
            let all_ok = ["dns", "connectors", "backend"].iter().all(|k| b(&probe[*k], "ok"));
            let notice = if all_ok {
                Notice::Done("The app answers through its connectors.".into())
            } else {
                Notice::Failed("The test found a problem; see the results below.".into(), vec![])
            };
            app_page(&console, &session, &id, Some(notice), StatusCode::OK, Some(&probe)).await
        }
        Err(f) => {
            app_page(
                &console,
                &session,
                &id,
                Some(f.notice("The app could not be tested")),
                f.status,
                None,
            )
            .await
        }
    }
}

/// `GET /admin/apps/{id}/delete`: the confirm step.
pub(crate) async fn confirm_delete(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let app = match console.get(&session, &format!("/api/v1/apps/{}", seg(&id))).await {
        Ok(a) => a,
        Err(f) => return failure_page("Delete app", &f, Some(&viewer)),
    };
    Page::new(format!("Delete app {}?", s(&app, "name")))
        .push(format!(
            "<p>Users will no longer reach {} through Postern, and its assignments are removed.</p>",
            esc(s(&app, "external_url"))
        ))
        .push(viewer.button(&format!("/admin/apps/{}/delete", seg(&id)), "delete", "Delete"))
        .push(format!(r#" <a href="/admin/apps/{}">Cancel</a>"#, esc(&seg(&id))))
        .render(Some(&viewer))
}

/// `POST /admin/apps/{id}/delete`: `DELETE /api/v1/apps/{id}`.
pub(crate) async fn delete(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    match console
        .call(&session, Method::DELETE, &format!("/api/v1/apps/{}", seg(&id)), None)
        .await
    {
        Ok(_) => done("/admin/apps?done=deleted"),
        Err(f) => {
            let viewer = console.viewer(&session).await.ok();
            failure_page("The app was not deleted", &f, viewer.as_ref())
        }
    }
}
