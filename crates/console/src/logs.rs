//! The sign-in and audit logs, with the filters the API offers (since / after
//! and a limit), and a filter on the shown rows.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::api::{items, n, s};
use crate::html::{Page, date, esc, input, table};
use crate::session::SignedIn;
use crate::{Console, failure_page};

/// Filters of the log pages.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogFilter {
    /// Sign-ins: the last this many minutes.
    minutes: Option<i64>,
    /// Audit: entries after this sequence number.
    after: Option<i64>,
    /// At most this many.
    limit: Option<i64>,
    /// Only rows containing this text.
    q: Option<String>,
}

fn matches(q: &Option<String>, cells: &[String]) -> bool {
    match q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        None => true,
        Some(q) => cells.iter().any(|c| c.to_lowercase().contains(&q.to_lowercase())),
    }
}

/// `GET /admin/signins?minutes=&limit=&q=`.
pub(crate) async fn signins(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(f): Query<LogFilter>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let minutes = f.minutes.unwrap_or(60).clamp(1, 60 * 24 * 90);
    let limit = f.limit.unwrap_or(200).clamp(1, 1000);
    let since = console.sts.now().secs() - minutes * 60;
    let log = match console
        .get(&session, &format!("/api/v1/signins?since={since}&limit={limit}"))
        .await
    {
        Ok(l) => l,
        Err(e) => return failure_page("Sign-in log", &e, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&log)
        .iter()
        .rev()
        .map(|e| {
            vec![
                date(n(e, "at")),
                s(e, "username").to_owned(),
                s(e, "outcome").to_owned(),
                e.get("client_id").and_then(|v| v.as_str()).unwrap_or("").to_owned(),
                s(e, "ip").to_owned(),
                s(e, "detail").to_owned(),
            ]
        })
        .filter(|cells| matches(&f.q, cells))
        .map(|cells| cells.iter().map(|c| esc(c)).collect())
        .collect();
    Page::new("Sign-in log")
        .push(format!(
            r#"<form id="filter" method="get" action="/admin/signins">{}{}{}<button type="submit">Filter</button></form>"#,
            input("minutes", "Last minutes", "number", &minutes.to_string()),
            input("limit", "At most", "number", &limit.to_string()),
            input("q", "Containing", "text", f.q.as_deref().unwrap_or("")),
        ))
        .push(table(&["When", "Username", "Outcome", "Client", "Address", "Detail"], &rows))
        .render(Some(&viewer))
}

/// `GET /admin/audit?after=&limit=&q=`.
pub(crate) async fn audit(
    State(console): State<Arc<Console>>,
    SignedIn(session): SignedIn,
    Query(f): Query<LogFilter>,
) -> Response {
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let after = f.after.unwrap_or(0).max(0);
    let limit = f.limit.unwrap_or(200).clamp(1, 1000);
    let log = match console
        .get(&session, &format!("/api/v1/audit?after={after}&limit={limit}"))
        .await
    {
        Ok(l) => l,
        Err(e) => return failure_page("Audit log", &e, Some(&viewer)),
    };
    let rows: Vec<Vec<String>> = items(&log)
        .iter()
        .rev()
        .map(|e| {
            vec![
                n(e, "seq").unwrap_or(0).to_string(),
                date(n(e, "at")),
                s(e, "actor").to_owned(),
                s(e, "action").to_owned(),
                s(e, "target").to_owned(),
                e.get("detail").map(ToString::to_string).unwrap_or_default(),
            ]
        })
        .filter(|cells| matches(&f.q, cells))
        .map(|cells| cells.iter().map(|c| esc(c)).collect())
        .collect();
    Page::new("Audit log")
        .push(format!(
            r#"<form id="filter" method="get" action="/admin/audit">{}{}{}<button type="submit">Filter</button></form>"#,
            input("after", "After entry number", "number", &after.to_string()),
            input("limit", "At most", "number", &limit.to_string()),
            input("q", "Containing", "text", f.q.as_deref().unwrap_or("")),
        ))
        .push(table(&["#", "When", "Actor", "Action", "Target", "Detail"], &rows))
        .render(Some(&viewer))
}
