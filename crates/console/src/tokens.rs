//! Registration tokens for unattended connector and agent installs, shown
//! once.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::api::{ApiFailure, items, n, s};
use crate::html::{Notice, Page, Viewer, date, esc, input, select};
use crate::session::SignedIn;
use crate::{Console, Fields};

async fn form(console: &Console, session: &crate::session::Session, viewer: &Viewer) -> String {
    let mut groups = vec![(String::new(), "(the default group)".to_owned())];
    if let Ok(g) = console.get(session, "/api/v1/connector-groups").await {
        for g in items(&g) {
            groups.push((s(g, "name").to_owned(), s(g, "name").to_owned()));
        }
    }
    let kinds = vec![
        ("connector".to_owned(), "Connector".to_owned()),
        ("agent".to_owned(), "Agent".to_owned()),
    ];
    format!(
        r#"<form id="create-token" method="post" action="/admin/tokens">{csrf}<fieldset><legend>Create a registration token</legend>{kind}{group}{ttl}{uses}<p><button type="submit" id="create-token-submit" name="action" value="create">Create token</button></p></fieldset></form>"#,
        csrf = viewer.csrf_field(),
        kind = select("kind", "For", &kinds, "connector"),
        group = select("group", "Connector group (connectors only)", &groups, ""),
        ttl = input("ttl_secs", "Valid for (seconds, 60 to 86400)", "number", "3600"),
        uses = input("uses", "Registrations it allows (1 to 100)", "number", "1"),
    )
}

/// `GET /admin/tokens`.
pub(crate) async fn show(State(console): State<Arc<Console>>, SignedIn(session): SignedIn) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let form = form(&console, &session, &viewer).await;
    Page::new("Registration tokens")
        .push("<p>A registration token lets <code>postern connector register --token</code> or <code>postern agent register --token</code> register without a browser. It is shown once; the service keeps only its digest.</p>")
        .push(form)
        .render(Some(&viewer))
}

/// `POST /admin/tokens`: `POST /api/v1/registration-tokens`; the token is
/// shown on this response only.
pub(crate) async fn create(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let mut body = json!({ "kind": fields.get("kind") });
    let mut problems = Vec::new();
    for key in ["ttl_secs", "uses"] {
        if let Some(v) = fields.opt(key) {
            match v.parse::<i64>() {
                Ok(n) => body[key] = json!(n),
                Err(_) => problems.push(format!("{key} must be a whole number.")),
            }
        }
    }
    if fields.get("kind") == "connector"
        && let Some(g) = fields.opt("group")
    {
        body["group"] = json!(g);
    }
    let result = if problems.is_empty() {
        console
            .call(&session, Method::POST, "/api/v1/registration-tokens", Some(body))
            .await
    } else {
        Err(ApiFailure {
            status: StatusCode::BAD_REQUEST,
            message: "the request is not valid".into(),
            problems,
        })
    };
    match result {
        Ok(t) => Page::new("Registration token created")
            .notice(Some(Notice::Done(
                "Copy the token now: it cannot be shown again.".into(),
            )))
            .push(format!(
                r#"<p>For: {kind}{group}. Expires {exp}; allows {uses} registration(s).</p><p class="secret"><code id="registration-token">{token}</code></p><p><a href="/admin/tokens">Create another</a></p>"#,
                kind = esc(s(&t, "kind")),
                group = t
                    .get("group")
                    .map(|g| format!(" in group {}", esc(s(g, "name"))))
                    .unwrap_or_default(),
                exp = esc(&date(n(&t, "expires_at"))),
                uses = n(&t, "uses").unwrap_or(1),
                token = esc(s(&t, "token")),
            ))
            .render(Some(&viewer)),
        Err(f) => {
            let form = form(&console, &session, &viewer).await;
            Page::new("Registration tokens")
                .status(f.status)
                .notice(Some(f.notice("The token was not created")))
                .push(form)
                .render(Some(&viewer))
        }
    }
}
