//! Users and groups: list, create cloud users, name directory users ahead,
//! enable/disable, reset MFA, roles; groups and their members.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::api::{ApiFailure, b, items, s};
use crate::html::{Notice, Page, Viewer, date, esc, input, seg, select, table};
use crate::session::{Session, SignedIn};
use crate::{Console, DoneParam, Fields, done, failure_page};

const MESSAGES: &[(&str, &str)] = &[
    ("created", "The user is created."),
    (
        "named",
        "The directory user is named; apps and groups can be assigned to them now.",
    ),
    ("enabled", "The user is enabled."),
    ("disabled", "The user is disabled: they cannot sign in."),
    (
        "mfa-reset",
        "The user's MFA is reset: they enrol a new authenticator at their next sign-in.",
    ),
    ("role-added", "The role is granted."),
    ("role-removed", "The role is revoked."),
    ("group-created", "The group is created."),
    ("member-added", "The member is added."),
    ("member-removed", "The member is removed."),
];

const ROLES: [(&str, &str); 3] = [
    ("global_administrator", "Global administrator"),
    ("application_administrator", "Application administrator"),
    ("hybrid_identity_administrator", "Hybrid identity administrator"),
];

fn create_forms(viewer: &Viewer, values: &Fields) -> String {
    format!(
        r#"<form id="create-user" method="post" action="/admin/users">{csrf}<input type="hidden" name="kind" value="cloud"><fieldset><legend>Create a cloud user</legend>{u}{d}{e}{p}<label><input type="checkbox" name="mfa_required" value="on"> Must always use MFA</label><p><button type="submit" name="action" value="create">Create user</button></p></fieldset></form>
<form id="name-directory-user" method="post" action="/admin/users">{csrf}<input type="hidden" name="kind" value="directory"><fieldset><legend>Name a directory user ahead of their first sign-in</legend>{du}<p><button type="submit" name="action" value="name">Name directory user</button></p></fieldset></form>"#,
        csrf = viewer.csrf_field(),
        u = input("username", "Username (name@domain)", "text", &values.get("username")),
        d = input("display_name", "Display name", "text", &values.get("display_name")),
        e = input("email", "Email", "text", &values.get("email")),
        p = input("password", "Initial password", "password", ""),
        du = input(
            "directory_username",
            "Username (name@domain of a pass-through domain)",
            "text",
            ""
        ),
    )
}

async fn users_page(
    console: &Console,
    session: &Session,
    notice: Option<Notice>,
    status: StatusCode,
    values: &Fields,
) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let users = match console.get(session, "/api/v1/users").await {
        Ok(u) => u,
        Err(f) => return failure_page("Users", &f, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&users)
        .iter()
        .map(|u| {
            vec![
                format!(
                    r#"<a href="/admin/users/{}">{}</a>"#,
                    esc(&seg(s(u, "id"))),
                    esc(s(u, "username"))
                ),
                esc(s(u, "display_name")),
                esc(s(u, "source")),
                if b(u, "enabled") { "enabled" } else { "disabled" }.into(),
                if b(u, "mfa_enrolled") { "enrolled" } else { "-" }.into(),
            ]
        })
        .collect();
    Page::new("Users")
        .status(status)
        .notice(notice)
        .push(table(&["Username", "Display name", "Source", "State", "MFA"], &rows))
        .push(create_forms(&viewer, values))
        .render(Some(&viewer))
}

/// `GET /admin/users`.
pub(crate) async fn list(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    users_page(&console, &session, d.notice(MESSAGES), StatusCode::OK, &Fields(vec![])).await
}

/// `POST /admin/users`: a cloud user (`POST /api/v1/users`) or a directory
/// user named ahead (`POST /api/v1/users/directory`).
pub(crate) async fn create(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let (path, body, ok) = if fields.get("kind") == "directory" {
        (
            "/api/v1/users/directory",
            json!({ "username": fields.get("directory_username") }),
            "/admin/users?done=named",
        )
    } else {
        let mut body = json!({
            "username": fields.get("username"),
            "mfa_required": fields.checked("mfa_required"),
        });
        for key in ["display_name", "email", "password"] {
            if let Some(v) = fields.opt(key) {
                body[key] = json!(v);
            }
        }
        ("/api/v1/users", body, "/admin/users?done=created")
    };
    match console.call(&session, Method::POST, path, Some(body)).await {
        Ok(_) => done(ok),
        Err(f) => {
            users_page(
                &console,
                &session,
                Some(f.notice("The user was not created")),
                f.status,
                &fields,
            )
            .await
        }
    }
}

async fn user_page(
    console: &Console,
    session: &Session,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let user = match console.get(session, &format!("/api/v1/users/{}", seg(id))).await {
        Ok(u) => u,
        Err(f) => return failure_page("User", &f, Some(&viewer)),
    };
    let roles = console
        .get(session, &format!("/api/v1/users/{}/roles", seg(id)))
        .await
        .unwrap_or(Value::Null);
    let held: Vec<&str> = items(&roles["roles"]).iter().filter_map(Value::as_str).collect();
    let action = format!("/admin/users/{}", seg(id));
    let button = |op: &str, label: &str| {
        format!(
            r#"<form class="inline" id="{op}" method="post" action="{a}">{csrf}<input type="hidden" name="op" value="{op}"><button type="submit" name="action" value="{op}">{label}</button></form>"#,
            a = esc(&action),
            csrf = viewer.csrf_field(),
        )
    };
    let mut role_rows = Vec::new();
    for (role, label) in ROLES {
        let has = held.contains(&role);
        let op = if has { "remove-role" } else { "add-role" };
        role_rows.push(vec![
            esc(label),
            if has { "yes" } else { "no" }.into(),
            format!(
                r#"<form class="inline" id="{op}-{role}" method="post" action="{a}">{csrf}<input type="hidden" name="op" value="{op}"><input type="hidden" name="role" value="{role}"><button type="submit" name="action" value="{op}">{label}</button></form>"#,
                a = esc(&action),
                csrf = viewer.csrf_field(),
                label = if has { "Revoke" } else { "Grant" },
            ),
        ]);
    }
    let enabled = b(&user, "enabled");
    Page::new(format!("User {}", s(&user, "username")))
        .status(status)
        .notice(notice)
        .push(table(
            &["Display name", "Email", "Source", "State", "MFA", "Created"],
            &[vec![
                esc(s(&user, "display_name")),
                esc(user.get("email").and_then(Value::as_str).unwrap_or("")),
                esc(s(&user, "source")),
                if enabled { "enabled" } else { "disabled" }.into(),
                if b(&user, "mfa_enrolled") {
                    "enrolled"
                } else {
                    "not enrolled"
                }
                .into(),
                esc(&date(crate::api::n(&user, "created_at"))),
            ]],
        ))
        .push(format!(
            "<p>{} {}</p>",
            if enabled {
                button("disable", "Disable")
            } else {
                button("enable", "Enable")
            },
            button("reset-mfa", "Reset MFA"),
        ))
        .push("<h2>Roles</h2>")
        .push(table(&["Role", "Held", ""], &role_rows))
        .render(Some(&viewer))
}

/// `GET /admin/users/{id}`.
pub(crate) async fn show(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Query(d): Query<DoneParam>,
) -> Response {
    user_page(&console, &session, &id, d.notice(MESSAGES), StatusCode::OK).await
}

/// `POST /admin/users/{id}`: enable, disable, reset MFA, grant or revoke a
/// role, by the form's `op`.
pub(crate) async fn update(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let user = format!("/api/v1/users/{}", seg(&id));
    let role = seg(&fields.get("role"));
    let (method, path, body, done_key) = match fields.get("op").as_str() {
        "enable" => (Method::PATCH, user, Some(json!({ "enabled": true })), "enabled"),
        "disable" => (Method::PATCH, user, Some(json!({ "enabled": false })), "disabled"),
        "reset-mfa" => (Method::POST, format!("{user}/mfa/reset"), None, "mfa-reset"),
        "add-role" => (Method::PUT, format!("{user}/roles/{role}"), None, "role-added"),
        "remove-role" => (Method::DELETE, format!("{user}/roles/{role}"), None, "role-removed"),
        _ => {
            let f = ApiFailure {
                status: StatusCode::BAD_REQUEST,
                message: "unknown operation".into(),
                problems: vec![],
            };
            return user_page(&console, &session, &id, Some(f.notice("Nothing was changed")), f.status).await;
        }
    };
    match console.call(&session, method, &path, body).await {
        Ok(_) => done(&format!("/admin/users/{}?done={done_key}", seg(&id))),
        Err(f) => user_page(&console, &session, &id, Some(f.notice("Nothing was changed")), f.status).await,
    }
}

async fn groups_page(console: &Console, session: &Session, notice: Option<Notice>, status: StatusCode) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let groups = match console.get(session, "/api/v1/groups").await {
        Ok(g) => g,
        Err(f) => return failure_page("Groups", &f, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&groups)
        .iter()
        .map(|g| {
            vec![
                format!(
                    r#"<a href="/admin/groups/{}">{}</a>"#,
                    esc(&seg(s(g, "id"))),
                    esc(s(g, "name"))
                ),
                esc(s(g, "description")),
                esc(s(g, "source")),
            ]
        })
        .collect();
    let sources = vec![
        ("cloud".to_owned(), "Cloud group (members managed here)".to_owned()),
        (
            "directory".to_owned(),
            "Directory group (by the name the agent reports)".to_owned(),
        ),
    ];
    Page::new("Groups")
        .status(status)
        .notice(notice)
        .push(table(&["Name", "Description", "Source"], &rows))
        .push(format!(
            r#"<form id="create-group" method="post" action="/admin/groups">{csrf}<fieldset><legend>Create a group</legend>{name}{desc}{src}<p><button type="submit" name="action" value="create">Create group</button></p></fieldset></form>"#,
            csrf = viewer.csrf_field(),
            name = input("name", "Name", "text", ""),
            desc = input("description", "Description", "text", ""),
            src = select("source", "Kind", &sources, "cloud"),
        ))
        .render(Some(&viewer))
}

/// `GET /admin/groups`.
pub(crate) async fn groups(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    groups_page(&console, &session, d.notice(MESSAGES), StatusCode::OK).await
}

/// `POST /admin/groups`.
pub(crate) async fn create_group(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let path = if fields.get("source") == "directory" {
        "/api/v1/groups/directory"
    } else {
        "/api/v1/groups"
    };
    let body = json!({ "name": fields.get("name"), "description": fields.get("description") });
    match console.call(&session, Method::POST, path, Some(body)).await {
        Ok(_) => done("/admin/groups?done=group-created"),
        Err(f) => {
            groups_page(
                &console,
                &session,
                Some(f.notice("The group was not created")),
                f.status,
            )
            .await
        }
    }
}

async fn group_page(
    console: &Console,
    session: &Session,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let group = match console.get(session, &format!("/api/v1/groups/{}", seg(id))).await {
        Ok(g) => g,
        Err(f) => return failure_page("Group", &f, Some(&viewer)),
    };
    let members = console
        .get(session, &format!("/api/v1/groups/{}/members", seg(id)))
        .await
        .unwrap_or(Value::Null);
    let action = format!("/admin/groups/{}", seg(id));
    let rows: Vec<Vec<String>> = items(&members)
        .iter()
        .map(|u| {
            vec![
                esc(s(u, "username")),
                format!(
                    r#"<form class="inline" method="post" action="{a}">{csrf}<input type="hidden" name="op" value="remove"><input type="hidden" name="user" value="{id}"><button type="submit" name="action" value="remove">Remove</button></form>"#,
                    a = esc(&action),
                    csrf = viewer.csrf_field(),
                    id = esc(s(u, "id")),
                ),
            ]
        })
        .collect();
    Page::new(format!("Group {}", s(&group, "name")))
        .status(status)
        .notice(notice)
        .push(format!("<p>{} ({})</p>", esc(s(&group, "description")), esc(s(&group, "source"))))
        .push(table(&["Member", ""], &rows))
        .push(format!(
            r#"<form id="add-member" method="post" action="{a}">{csrf}<input type="hidden" name="op" value="add"><fieldset><legend>Add a member</legend>{user}<p><button type="submit" name="action" value="add">Add member</button></p></fieldset></form>"#,
            a = esc(&action),
            csrf = viewer.csrf_field(),
            user = input("user", "Username or user ID", "text", ""),
        ))
        .render(Some(&viewer))
}

/// `GET /admin/groups/{id}`.
pub(crate) async fn group(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    Query(d): Query<DoneParam>,
) -> Response {
    group_page(&console, &session, &id, d.notice(MESSAGES), StatusCode::OK).await
}

/// `POST /admin/groups/{id}`: add or remove a member (by username or ID).
pub(crate) async fn change_members(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
    fields: Fields,
) -> Response {
    let mut user = fields.get("user");
    // The API names members by ID: look a username up first.
    if user.contains('@')
        && let Ok(users) = console.get(&session, "/api/v1/users").await
        && let Some(found) = items(&users).iter().find(|u| s(u, "username") == user)
    {
        user = s(found, "id").to_owned();
    }
    let path = format!("/api/v1/groups/{}/members/{}", seg(&id), seg(&user));
    let (method, key) = if fields.get("op") == "remove" {
        (Method::DELETE, "member-removed")
    } else {
        (Method::PUT, "member-added")
    };
    match console.call(&session, method, &path, None).await {
        Ok(_) => done(&format!("/admin/groups/{}?done={key}", seg(&id))),
        Err(f) => {
            group_page(
                &console,
                &session,
                &id,
                Some(f.notice("The members were not changed")),
                f.status,
            )
            .await
        }
    }
}
