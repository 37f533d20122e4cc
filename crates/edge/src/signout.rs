//! Signing out of an app at `{prefix}.postern/signout`, safe from logout CSRF: a
//! GET never ends anything. With a session it shows a page whose form POSTs back
//! with a token derived from the session cookie, which only the browser holding
//! that cookie can know; a cross-site POST arrives without the cookie
//! (`SameSite=Lax`) or without the token and is refused. The confirmed POST
//! clears the app session and sends the browser to the tenant's end-session
//! endpoint, which ends the STS session (asking first, as it does for any
//! request without an ID token hint). A GET without a session goes straight to
//! the tenant's end-session endpoint.

use std::sync::Arc;

use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::SET_COOKIE;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use postern_store::App;

use crate::cookies::read_cookie;
use crate::session::{open_session, session_cookie};
use crate::{Edge, pages};

/// Largest sign-out form accepted.
const MAX_FORM: usize = 4096;

/// Name of the form field carrying the token.
const TOKEN_FIELD: &str = "csrf";

/// The sign-out token of the session cookie `sealed` of `app`.
fn sign_out_token(app: &App, sealed: &str) -> String {
    URL_SAFE_NO_PAD.encode(postern_keyring::digest(&format!(
        "postern-app-signout:{}:{sealed}",
        app.id
    )))
}

/// The form field `name` of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Edge {
    /// `{prefix}.postern/signout`: GET asks, POST with the token signs out.
    pub(crate) async fn sign_out(&self, app: &Arc<App>, parts: &Parts, body: Incoming, request_id: &str) -> Response {
        let cookie = session_cookie(app);
        let sealed = read_cookie(&parts.headers, &cookie.name)
            .filter(|sealed| open_session(&self.cookies, app, Some(sealed), self.now()).is_ok());
        if parts.method != Method::POST {
            return match sealed {
                Some(sealed) => pages::confirm_sign_out(
                    &app.name,
                    &format!("{}.postern/signout", app.path_prefix),
                    TOKEN_FIELD,
                    &sign_out_token(app, sealed),
                ),
                None => pages::redirect(StatusCode::FOUND, &self.end_session_url(app).await),
            };
        }
        let given = match Limited::new(body, MAX_FORM).collect().await {
            Ok(collected) => form_field(&collected.to_bytes(), TOKEN_FIELD),
            Err(_) => None,
        };
        let confirmed = match (sealed, given) {
            (Some(sealed), Some(given)) => {
                postern_keyring::constant_time_eq(sign_out_token(app, sealed).as_bytes(), given.as_bytes())
            }
            _ => false,
        };
        if !confirmed {
            tracing::info!(app = %app.name, request = %request_id, "sign-out without a valid confirmation refused");
            return pages::error(
                StatusCode::FORBIDDEN,
                "Sign-out refused",
                "This sign-out request did not come from this application's sign-out page. Open the sign-out link again.",
                request_id,
            );
        }
        let mut response = pages::redirect(StatusCode::SEE_OTHER, &self.end_session_url(app).await);
        if let Ok(clear) = HeaderValue::from_str(&cookie.clear()) {
            response.headers_mut().append(SET_COOKIE, clear);
        }
        response
    }

    /// The tenant's end-session endpoint, returning to the app afterwards; the
    /// app itself when the tenant cannot be read.
    async fn end_session_url(&self, app: &App) -> String {
        let Ok(tenant) = self.store.tenant(&app.tenant_id).await else {
            return app.external_url();
        };
        match url::Url::parse(&self.sts.end_session_endpoint(&tenant.name)) {
            Ok(mut url) => {
                url.query_pairs_mut()
                    .append_pair("client_id", &app.client_id)
                    .append_pair("post_logout_redirect_uri", &app.external_url());
                url.into()
            }
            Err(_) => app.external_url(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_belong_to_one_session_of_one_app() {
        let mut app = App {
            id: "a".into(),
            tenant_id: "t".into(),
            name: "a".into(),
            external_scheme: postern_store::ExternalScheme::Https,
            external_host: "h".into(),
            path_prefix: "/".into(),
            internal_url: "http://i/".into(),
            preauth: postern_store::Preauth::Sts,
            connector_group_id: "g".into(),
            backend_timeout_secs: 85,
            validate_backend_tls: true,
            translate_headers: true,
            translate_links: false,
            identity_headers: Vec::new(),
            limits: postern_store::AppLimits::default(),
            client_id: "c".into(),
            created_at: postern_time::UnixTime::from_secs(0),
            updated_at: postern_time::UnixTime::from_secs(0),
        };
        let token = sign_out_token(&app, "v1.k.session-one");
        assert_ne!(token, sign_out_token(&app, "v1.k.session-two"));
        app.id = "b".into();
        assert_ne!(token, sign_out_token(&app, "v1.k.session-one"));
        assert!(!token.contains("session-one"));
    }

    #[test]
    fn the_token_is_read_from_the_form() {
        assert_eq!(
            form_field(b"action=submit&csrf=abc-_", "csrf").as_deref(),
            Some("abc-_")
        );
        assert_eq!(form_field(b"action=submit", "csrf"), None);
    }
}
