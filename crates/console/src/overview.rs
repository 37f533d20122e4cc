//! The overview: health, version, certificate expiries of the components,
//! sign-ins of the last minutes and counts — each from the API, as far as the
//! viewer's roles allow.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};

use crate::Console;
use crate::api::{items, n, s};
use crate::html::{Page, date, esc, table};

/// The window of the sign-in summary.
const RECENT_SECS: i64 = 15 * 60;

/// `GET /admin`: the overview when signed in; else the sign-in start.
pub(crate) async fn show(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let session = match console.read_session(&headers) {
        Some(s) if console.is_live(&s) => s,
        other => {
            return Redirect::to(&Console::relogin_location(
                other.as_ref().map(|s| s.tenant.as_str()),
                "/admin",
            ))
            .into_response();
        }
    };
    let viewer = match console.viewer(&session).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let health = match console.sts.store().ping().await {
        Ok(()) => "database reachable".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "console: database ping failed");
            "database unavailable".to_owned()
        }
    };
    let mut counts = Vec::new();
    let mut expiries: Vec<(i64, String)> = Vec::new();
    let now = console.sts.now().secs();
    if viewer.holds("application_administrator") {
        if let Ok(apps) = console.get(&session, "/api/v1/apps").await {
            counts.push(vec!["Apps".into(), items(&apps).len().to_string()]);
        }
        if let Ok(c) = console.get(&session, "/api/v1/connectors").await {
            let active = items(&c).iter().filter(|c| s(c, "status") == "active").count();
            counts.push(vec![
                "Connectors (active)".into(),
                format!("{} ({active})", items(&c).len()),
            ]);
            for c in items(&c) {
                expiries.push((
                    n(c, "cert_not_after").unwrap_or(0),
                    format!("connector {}", s(c, "name")),
                ));
            }
        }
    }
    if viewer.holds("hybrid_identity_administrator")
        && let Ok(a) = console.get(&session, "/api/v1/agents").await
    {
        let active = items(&a).iter().filter(|c| s(c, "status") == "active").count();
        counts.push(vec![
            "Agents (active)".into(),
            format!("{} ({active})", items(&a).len()),
        ]);
        for c in items(&a) {
            expiries.push((n(c, "cert_not_after").unwrap_or(0), format!("agent {}", s(c, "name"))));
        }
    }
    let mut signins = String::new();
    if viewer.holds("global_administrator") {
        if let Ok(u) = console.get(&session, "/api/v1/users").await {
            counts.push(vec!["Users".into(), items(&u).len().to_string()]);
        }
        if let Ok(log) = console
            .get(
                &session,
                &format!("/api/v1/signins?since={}&limit=1000", now - RECENT_SECS),
            )
            .await
        {
            let total = items(&log).len();
            let ok = items(&log).iter().filter(|e| s(e, "outcome") == "success").count();
            signins = format!(
                r#"<h2>Sign-ins, last 15 minutes</h2><p id="recent-signins">{total} attempts, {ok} successful ({:.1} a minute). <a href="/admin/signins">Sign-in log</a></p>"#,
                total as f64 / 15.0
            );
        }
    }
    expiries.sort();
    let expiry_rows: Vec<Vec<String>> = expiries
        .iter()
        .take(10)
        .map(|(at, what)| {
            let days = (at - now) / 86_400;
            vec![esc(what), esc(&date(Some(*at))), format!("{days} days")]
        })
        .collect();
    let count_rows: Vec<Vec<String>> = counts
        .into_iter()
        .map(|r| r.into_iter().map(|c| esc(&c)).collect())
        .collect();
    Page::new("Overview")
        .push(format!(
            r#"<p id="health">Postern {} · {}</p>"#,
            esc(env!("CARGO_PKG_VERSION")),
            esc(&health)
        ))
        .push(table(&["What", "How many"], &count_rows))
        .push(signins)
        .push("<h2>Certificates expiring first</h2>")
        .push(table(&["Component", "Certificate expires", "In"], &expiry_rows))
        .render(Some(&viewer))
}
