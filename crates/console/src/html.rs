//! The console's HTML: escaping, the one layout every page shares, and the
//! headers every console response carries (a strict CSP, no caching, no
//! referrer, no framing).
//!
//! Everything that comes from a user or the API goes through [`esc`]; markup
//! the console writes itself is built with `format!` around escaped values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The Content-Security-Policy of every console response: nothing but the
/// console's own stylesheet, forms posting to the console only, no framing.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's stylesheet, served at `/admin/console.css`.
pub(crate) const STYLESHEET: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}\
header{background:#1d2733;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:center;flex-wrap:wrap}\
header a{color:#fff;text-decoration:none}header a:hover{text-decoration:underline}\
header .who{margin-left:auto;font-size:.9em}header form{display:inline}\
main{padding:1em 1.5em;max-width:78em}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{border:1px solid #d6dae0;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#eef0f3}form.inline{display:inline}fieldset{border:1px solid #d6dae0;background:#fff;margin:1em 0}\
label{display:block;margin:.4em 0}input[type=text],input[type=url],input[type=password],input[type=number],select,textarea{min-width:22em}\
textarea{width:100%;min-height:16em;font-family:monospace}button{margin:.2em .2em .2em 0}\
.err{background:#fde8e8;border:1px solid #e0a0a0;padding:.6em}.ok{background:#e6f6ea;border:1px solid #9fd0aa;padding:.6em}\
.warn{background:#fff5dc;border:1px solid #e0c877;padding:.6em}code,.mono{font-family:monospace}.secret{font-size:1.1em;word-break:break-all}";

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Percent-encodes one path segment (an ID in a console or API URL).
pub(crate) fn seg(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A Unix time as an RFC 3339 date (UTC), or `-`.
pub(crate) fn date(secs: Option<i64>) -> String {
    secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// Adds the console's security headers to a response.
pub(crate) fn secure_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Referrers only within the console's origin: with `no-referrer` Chromium
    // sends `Origin: null` on the console's own forms.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// What the layout knows of the signed-in administrator.
#[derive(Clone, Debug, Default)]
pub(crate) struct Viewer {
    /// The tenant's short name.
    pub tenant: String,
    /// The administrator's sign-in name.
    pub username: String,
    /// Their roles (wire names).
    pub roles: Vec<String>,
    /// The session's CSRF token, for the forms of the page.
    pub csrf: String,
}

impl Viewer {
    /// Whether the viewer holds `role` or global administrator.
    pub(crate) fn holds(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role || r == "global_administrator")
    }

    /// The hidden CSRF field every form carries.
    pub(crate) fn csrf_field(&self) -> String {
        format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&self.csrf))
    }

    /// A one-button form posting to `action` (already a console path).
    pub(crate) fn button(&self, action: &str, id: &str, label: &str) -> String {
        format!(
            r#"<form class="inline" id="{id}" method="post" action="{action}">{csrf}<button type="submit" name="action" value="{value}">{label}</button></form>"#,
            id = esc(id),
            action = esc(action),
            csrf = self.csrf_field(),
            value = esc(id),
            label = esc(label),
        )
    }
}

/// A message shown above a page's content.
#[derive(Clone, Debug)]
pub(crate) enum Notice {
    /// Something was done.
    Done(String),
    /// Something was refused or failed; with every problem the API listed.
    Failed(String, Vec<String>),
}

impl Notice {
    fn render(&self) -> String {
        match self {
            Notice::Done(m) => format!(r#"<p class="ok" role="status">{}</p>"#, esc(m)),
            Notice::Failed(m, problems) => {
                let mut out = format!(r#"<div class="err" role="alert"><p>{}</p>"#, esc(m));
                if !problems.is_empty() {
                    out.push_str("<ul>");
                    for p in problems {
                        out.push_str(&format!("<li>{}</li>", esc(p)));
                    }
                    out.push_str("</ul>");
                }
                out.push_str("</div>");
                out
            }
        }
    }
}

/// One console page: a title, optional notice and body markup.
pub(crate) struct Page {
    status: StatusCode,
    title: String,
    notice: Option<Notice>,
    body: String,
}

impl Page {
    /// A page titled `title` (escaped here).
    pub(crate) fn new(title: impl Into<String>) -> Self {
        Self {
            status: StatusCode::OK,
            title: title.into(),
            notice: None,
            body: String::new(),
        }
    }

    /// Sets the HTTP status.
    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Shows `notice` above the content.
    pub(crate) fn notice(mut self, notice: Option<Notice>) -> Self {
        self.notice = notice;
        self
    }

    /// Appends markup (the caller escapes what it interpolates).
    pub(crate) fn push(mut self, markup: impl AsRef<str>) -> Self {
        self.body.push_str(markup.as_ref());
        self
    }

    /// The page inside the console's layout, with navigation for `viewer`
    /// (or none before sign-in).
    pub(crate) fn render(self, viewer: Option<&Viewer>) -> Response {
        let mut nav = String::new();
        if let Some(v) = viewer {
            let mut links = vec![("/admin", "Overview")];
            if v.holds("application_administrator") {
                links.push(("/admin/apps", "Apps"));
                links.push(("/admin/connectors", "Connectors"));
            }
            if v.holds("hybrid_identity_administrator") {
                links.push(("/admin/agents", "Agents"));
            }
            links.push(("/admin/tokens", "Registration tokens"));
            if v.holds("global_administrator") {
                links.push(("/admin/users", "Users"));
                links.push(("/admin/groups", "Groups"));
                links.push(("/admin/policies", "Policies"));
                links.push(("/admin/signins", "Sign-in log"));
                links.push(("/admin/audit", "Audit log"));
            }
            for (href, label) in links {
                nav.push_str(&format!(r#"<a href="{href}">{label}</a>"#));
            }
            nav.push_str(&format!(
                r#"<span class="who">{user} · {tenant} <form id="signout" method="post" action="/admin/logout">{csrf}<button type="submit" name="action" value="signout">Sign out</button></form></span>"#,
                user = esc(&v.username),
                tenant = esc(&v.tenant),
                csrf = v.csrf_field(),
            ));
        }
        let notice = self.notice.as_ref().map(Notice::render).unwrap_or_default();
        let html = format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Postern admin</title><link rel="stylesheet" href="/admin/console.css"></head>
<body><header><strong>Postern admin</strong>{nav}</header>
<main><h1>{title}</h1>{notice}{body}</main></body></html>"#,
            title = esc(&self.title),
            body = self.body,
        );
        let mut response = (self.status, html).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        secure_headers(response)
    }
}

/// A table with `headings` and rows of already-escaped cells.
pub(crate) fn table(headings: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return "<p>None.</p>".into();
    }
    let mut out = String::from("<table><thead><tr>");
    for h in headings {
        out.push_str(&format!("<th>{}</th>", esc(h)));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(&format!("<td>{cell}</td>"));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A labelled text input.
pub(crate) fn input(name: &str, label: &str, kind: &str, value: &str) -> String {
    format!(
        r#"<label for="f-{name}">{label}</label><input id="f-{name}" name="{name}" type="{kind}" value="{value}">"#,
        name = esc(name),
        label = esc(label),
        kind = esc(kind),
        value = esc(value),
    )
}

/// A labelled select of `(value, label)` options with `selected` chosen.
pub(crate) fn select(name: &str, label: &str, options: &[(String, String)], selected: &str) -> String {
    let mut out = format!(
        r#"<label for="f-{name}">{label}</label><select id="f-{name}" name="{name}">"#,
        name = esc(name),
        label = esc(label)
    );
    for (value, text) in options {
        let sel = if value == selected { " selected" } else { "" };
        out.push_str(&format!(
            r#"<option value="{}"{sel}>{}</option>"#,
            esc(value),
            esc(text)
        ));
    }
    out.push_str("</select>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(seg("a b/c"), "a%20b%2Fc");
        assert_eq!(date(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(date(None), "-");
    }

    #[test]
    fn pages_carry_the_security_headers() {
        let r = Page::new("<b>x</b>").render(None);
        let h = r.headers();
        assert_eq!(h.get(header::CONTENT_SECURITY_POLICY).unwrap(), CSP);
        assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(h.get(header::REFERRER_POLICY).unwrap(), "same-origin");
    }
}
