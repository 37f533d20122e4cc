//! Conditional access policies: list, view, delete, and create from JSON.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;

use crate::api::{ApiFailure, items, s};
use crate::html::{Notice, Page, esc, seg, table};
use crate::session::{Session, SignedIn};
use crate::{Console, DoneParam, Fields, done, failure_page};

const MESSAGES: &[(&str, &str)] = &[
    ("created", "The policy is created."),
    ("deleted", "The policy is deleted."),
];

const EXAMPLE: &str = r#"{
  "name": "Require MFA for everyone",
  "state": "report_only",
  "conditions": {},
  "grants": ["mfa"]
}"#;

async fn list_page(
    console: &Console,
    session: &Session,
    notice: Option<Notice>,
    status: StatusCode,
    json: &str,
) -> Response {
    let viewer = match console.viewer(session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let policies = match console.get(session, "/api/v1/policies").await {
        Ok(p) => p,
        Err(f) => return failure_page("Policies", &f, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&policies)
        .iter()
        .map(|p| {
            vec![
                format!(
                    r#"<a href="/admin/policies/{}">{}</a>"#,
                    esc(&seg(s(p, "id"))),
                    esc(s(p, "name"))
                ),
                esc(s(p, "state")),
            ]
        })
        .collect();
    Page::new("Conditional access policies")
        .status(status)
        .notice(notice)
        .push(table(&["Name", "State"], &rows))
        .push(format!(
            r#"<form id="create-policy" method="post" action="/admin/policies">{csrf}<fieldset><legend>Create a policy (JSON, as for POST /api/v1/policies)</legend><textarea id="f-policy" name="policy">{json}</textarea><p><button type="submit" name="action" value="create">Create policy</button></p></fieldset></form>"#,
            csrf = viewer.csrf_field(),
            json = esc(json),
        ))
        .render(Some(&viewer))
}

/// `GET /admin/policies`.
pub(crate) async fn list(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(d): Query<DoneParam>,
) -> Response {
    list_page(&console, &session, d.notice(MESSAGES), StatusCode::OK, EXAMPLE).await
}

/// `POST /admin/policies`.
pub(crate) async fn create(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    fields: Fields,
) -> Response {
    let text = fields.get("policy");
    let result = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(body) => {
            console
                .call(&session, Method::POST, "/api/v1/policies", Some(body))
                .await
        }
        Err(e) => Err(ApiFailure {
            status: StatusCode::BAD_REQUEST,
            message: format!("the policy is not valid JSON ({e})"),
            problems: vec![],
        }),
    };
    match result {
        Ok(_) => done("/admin/policies?done=created"),
        Err(f) => {
            list_page(
                &console,
                &session,
                Some(f.notice("The policy was not created")),
                f.status,
                &text,
            )
            .await
        }
    }
}

/// `GET /admin/policies/{id}`.
pub(crate) async fn show(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let policy = match console.get(&session, &format!("/api/v1/policies/{}", seg(&id))).await {
        Ok(p) => p,
        Err(f) => return failure_page("Policy", &f, Some(&viewer)),
    };
    let pretty = serde_json::to_string_pretty(&policy).unwrap_or_default();
    Page::new(format!("Policy {}", s(&policy, "name")))
        .push(format!("<pre>{}</pre>", esc(&pretty)))
        .push(viewer.button(
            &format!("/admin/policies/{}/delete", seg(&id)),
            "delete",
            "Delete this policy",
        ))
        .render(Some(&viewer))
}

/// `POST /admin/policies/{id}/delete`.
pub(crate) async fn delete(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Path(id): Path<String>,
) -> Response {
    match console
        .call(
            &session,
            Method::DELETE,
            &format!("/api/v1/policies/{}", seg(&id)),
            None,
        )
        .await
    {
        Ok(_) => done("/admin/policies?done=deleted"),
        Err(f) => {
            list_page(
                &console,
                &session,
                Some(f.notice("The policy was not deleted")),
                f.status,
                EXAMPLE,
            )
            .await
        }
    }
}
