//! Connector groups, connectors and agents: status, version, last seen,
//! certificate expiry; creating groups, moving connectors, revoking (with a
//! confirm step).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::{b, items, n, s};
use crate::html::{Page, Viewer, date, esc, input, seg, select, table};
use crate::session::{Session, SignedIn};
use crate::{Console, DoneParam, Fields, done, failure_page};

const MESSAGES: &[(&str, &str)] = &[
    ("group-created", "The connector group is created."),
    ("group-deleted", "The connector group is deleted."),
    ("moved", "The connector is moved."),
    (
        "revoked",
        "The component is revoked: its certificate no longer works and its tunnels are closed.",
    ),
];

/// A component's row: name, status, version, last seen, certificate expiry.
fn component_cells(c: &Value) -> Vec<String> {
    let mut expiry = esc(&date(n(c, "cert_not_after")));
    if b(c, "renewal_due") {
        expiry.push_str(" (renewal due)");
    }
    vec![
        format!("{}<br><code>{}</code>", esc(s(c, "name")), esc(s(c, "id"))),
        esc(s(c, "status")),
        esc(s(c, "version")),
        format!(
            "{} {}",
            esc(&date(n(c, "last_seen_at"))),
            esc(c.get("last_seen_ip").and_then(Value::as_str).unwrap_or(""))
        ),
        expiry,
    ]
}

/// `GET /admin/connectors`.
pub(crate) async fn connectors(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = match console.get(&session, "/api/v1/connector-groups").await {
        Ok(g) => g,
        Err(f) => return failure_page("Connectors", &f, Some(&viewer)),
    };
    let connectors = match console.get(&session, "/api/v1/connectors").await {
        Ok(c) => c,
        Err(f) => return failure_page("Connectors", &f, Some(&viewer)),
    };
    let group_rows: Vec<Vec<String>> = items(&groups)
        .iter()
        .map(|g| {
            let delete = if b(g, "is_default") {
                "(default)".to_owned()
            } else {
                format!(
                    r#"<a href="/admin/connector-groups/{}/delete">Delete…</a>"#,
                    esc(&seg(s(g, "id")))
                )
            };
            vec![
                esc(s(g, "name")),
                esc(s(g, "description")),
                n(g, "connector_count").unwrap_or(0).to_string(),
                delete,
            ]
        })
        .collect();
    let options: Vec<(String, String)> = items(&groups)
        .iter()
        .map(|g| (s(g, "name").to_owned(), s(g, "name").to_owned()))
        .collect();
    let connector_rows: Vec<Vec<String>> = items(&connectors)
        .iter()
        .map(|c| {
            let id = seg(s(c, "id"));
            let mut row = component_cells(c);
            row.insert(1, esc(s(&c["group"], "name")));
            row.push(format!(
                r#"<form class="inline" id="move-{sid}" method="post" action="/admin/connectors/{id}/move">{csrf}{sel}<button type="submit" name="action" value="move">Move</button></form> <a id="revoke-{sid}" href="/admin/connectors/{id}/revoke">Revoke…</a>"#,
                sid = esc(s(c, "id")),
                id = esc(&id),
                csrf = viewer.csrf_field(),
                sel = select("group", "Group", &options, s(&c["group"], "name")),
            ));
            row
        })
        .collect();
    Page::new("Connectors")
        .notice(d.notice(MESSAGES))
        .push("<h2>Connector groups</h2>")
        .push(table(&["Name", "Description", "Connectors", ""], &group_rows))
        .push(format!(
            r#"<form id="create-group" method="post" action="/admin/connector-groups">{csrf}<fieldset><legend>Create a connector group</legend>{name}{desc}<p><button type="submit" name="action" value="create">Create group</button></p></fieldset></form>"#,
            csrf = viewer.csrf_field(),
            name = input("name", "Name", "text", ""),
            desc = input("description", "Description", "text", ""),
        ))
        .push("<h2>Connectors</h2>")
        .push(table(
            &["Connector", "Group", "Status", "Version", "Last seen", "Certificate expires", ""],
            &connector_rows,
        ))
        .push(r#"<p>New connectors register with a <a href="/admin/tokens">registration token</a> or <code>postern connector register</code>.</p>"#)
        .render(Some(&viewer))
}

/// `POST /admin/connector-groups`.
pub(crate) async fn create_group(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let body = json!({ "name": fields.get("name"), "description": fields.get("description") });
    match console
        .call(&session, Method::POST, "/api/v1/connector-groups", Some(body))
        .await
    {
        Ok(_) => done("/admin/connectors?done=group-created"),
        Err(f) => failed(&console, &session, "The connector group was not created", &f).await,
    }
}

async fn failed(console: &Console, session: &Session, what: &str, f: &crate::api::ApiFailure) -> Response {
    let viewer = console.viewer(session).await.ok();
    Page::new(what)
        .status(f.status)
        .notice(Some(f.notice(what)))
        .push(r#"<p><a href="/admin/connectors">Back to connectors</a> · <a href="/admin/agents">Agents</a></p>"#)
        .render(viewer.as_ref())
}

/// A confirm page for a destructive action.
fn confirm(viewer: &Viewer, title: &str, what: &str, action: &str, id: &str, label: &str, back: &str) -> Response {
    Page::new(title)
        .push(format!("<p>{}</p>", esc(what)))
        .push(viewer.button(action, id, label))
        .push(format!(r#" <a href="{}">Cancel</a>"#, esc(back)))
        .render(Some(viewer))
}

/// `GET /admin/connector-groups/{id}/delete`.
pub(crate) async fn confirm_delete_group(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let group = match console
        .get(&session, &format!("/api/v1/connector-groups/{}", seg(&id)))
        .await
    {
        Ok(g) => g,
        Err(f) => return failure_page("Delete connector group", &f, Some(&viewer)),
    };
    confirm(
        &viewer,
        &format!("Delete connector group {}?", s(&group, "name")),
        "A group that still has connectors or apps cannot be deleted.",
        &format!("/admin/connector-groups/{}/delete", seg(&id)),
        "delete",
        "Delete",
        "/admin/connectors",
    )
}

/// `POST /admin/connector-groups/{id}/delete`.
pub(crate) async fn delete_group(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    match console
        .call(
            &session,
            Method::DELETE,
            &format!("/api/v1/connector-groups/{}", seg(&id)),
            None,
        )
        .await
    {
        Ok(_) => done("/admin/connectors?done=group-deleted"),
        Err(f) => failed(&console, &session, "The connector group was not deleted", &f).await,
    }
}

/// `POST /admin/connectors/{id}/move`.
pub(crate) async fn move_connector(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    match console
        .call(
            &session,
            Method::PUT,
            &format!("/api/v1/connectors/{}/group", seg(&id)),
            Some(json!({ "group": fields.get("group") })),
        )
        .await
    {
        Ok(_) => done("/admin/connectors?done=moved"),
        Err(f) => failed(&console, &session, "The connector was not moved", &f).await,
    }
}

async fn confirm_revoke(console: &Console, session: &Session, kind: &str, id: &str) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let c = match console.get(session, &format!("/api/v1/{kind}s/{}", seg(id))).await {
        Ok(c) => c,
        Err(f) => return failure_page("Revoke", &f, Some(&viewer)),
    };
    confirm(
        &viewer,
        &format!("Revoke {kind} {}?", s(&c, "name")),
        &format!(
            "Its certificate stops working at once and its connections are closed; to come back it must register again. Certificate serial {}.",
            s(&c, "serial")
        ),
        &format!("/admin/{kind}s/{}/revoke", seg(id)),
        "revoke",
        "Revoke",
        &format!("/admin/{kind}s"),
    )
}

async fn revoke(console: &Console, session: &Session, kind: &str, id: &str) -> Response {
    match console
        .call(session, Method::DELETE, &format!("/api/v1/{kind}s/{}", seg(id)), None)
        .await
    {
        Ok(_) => done(&format!("/admin/{kind}s?done=revoked")),
        Err(f) => failed(console, session, &format!("The {kind} was not revoked"), &f).await,
    }
}

/// `GET /admin/connectors/{id}/revoke`.
pub(crate) async fn confirm_revoke_connector(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    confirm_revoke(&console, &session, "connector", &id).await
}

/// `POST /admin/connectors/{id}/revoke`.
pub(crate) async fn revoke_connector(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    revoke(&console, &session, "connector", &id).await
}

/// `GET /admin/agents/{id}/revoke`.
pub(crate) async fn confirm_revoke_agent(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    confirm_revoke(&console, &session, "agent", &id).await
}

/// `POST /admin/agents/{id}/revoke`.
pub(crate) async fn revoke_agent(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    revoke(&console, &session, "agent", &id).await
}

/// `GET /admin/agents`.
pub(crate) async fn agents(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let agents = match console.get(&session, "/api/v1/agents").await {
        Ok(a) => a,
        Err(f) => return failure_page("Agents", &f, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&agents)
        .iter()
        .map(|a| {
            let mut row = component_cells(a);
            row.push(format!(
                r#"<a id="revoke-{sid}" href="/admin/agents/{id}/revoke">Revoke…</a>"#,
                sid = esc(s(a, "id")),
                id = esc(&seg(s(a, "id")))
            ));
            row
        })
        .collect();
    Page::new("Agents")
        .notice(d.notice(MESSAGES))
        .push(table(
            &["Agent", "Status", "Version", "Last seen", "Certificate expires", ""],
            &rows,
        ))
        .push(r#"<p>New agents register with a <a href="/admin/tokens">registration token</a> or <code>postern agent register</code>.</p>"#)
        .render(Some(&viewer))
}
