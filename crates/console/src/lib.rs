//! The admin console at `/admin`: server-rendered pages over the admin API,
//! signed in through the tenant's STS.
//!
//! - **Sign-in**: the console is an OIDC client (`postern-console`, public,
//!   PKCE) of the tenant's issuer; the code is redeemed in-process at the STS's
//!   token endpoint for an admin access token (scope `postern:admin`). Admins
//!   always pass MFA at the STS. See the `login` module.
//! - **Every action is an admin API call** made in-process with that token
//!   (module `api`), so the role checks, validation and audit entries are
//!   the API's; the console renders the JSON as HTML, escaping everything.
//! - **Session and CSRF**: one cookie holding the token; every POST must be
//!   same-origin and carry the session's CSRF token
//!   (module `session`).
//! - No JavaScript, no third-party assets; a strict Content-Security-Policy,
//!   `no-store` and `Referrer-Policy: same-origin` on every response.
#![warn(missing_docs)]

mod api;
mod apps;
mod components;
mod html;
mod login;
mod logs;
mod overview;
mod policies;
mod session;
mod tokens;
mod users;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use postern_sts::Sts;
use url::Url;

use crate::api::{ApiFailure, s};
use crate::html::{Notice, Page, Viewer};
use crate::session::Session;

/// The console's shared state.
pub(crate) struct Console {
    sts: Arc<Sts>,
    /// The admin API's router, with the extensions the service layers on.
    api: Router,
    /// The STS's router, for redeeming codes in-process.
    sts_router: Router,
    /// Whether the service is reached over HTTPS (cookies get `Secure` and the
    /// `__Host-` prefix).
    secure: bool,
    /// The service's own origin (`scheme://host[:port]`).
    origin: String,
}

/// The console's routes under `/admin`, for the service to merge. `api` is the
/// admin API's router exactly as the service serves it (with its extensions),
/// which the console calls in-process.
pub fn router(sts: Arc<Sts>, api: Router, public_url: &Url) -> Router {
    let console = Arc::new(Console {
        sts_router: sts.router(),
        secure: public_url.scheme() == "https",
        origin: public_url.origin().ascii_serialization(),
        sts,
        api,
    });
    Router::new()
        .route("/admin", get(overview::show))
        .route("/admin/", get(|| async { Redirect::to("/admin") }))
        .route("/admin/console.css", get(stylesheet))
        .route("/admin/login", get(login::start))
        .route("/admin/callback", get(login::callback))
        .route("/admin/logout", post(login::logout))
        .route("/admin/apps", get(apps::list).post(apps::create))
        .route("/admin/apps/new", get(apps::new_form))
        .route("/admin/apps/{id}", get(apps::show).post(apps::update))
        .route("/admin/apps/{id}/delete", get(apps::confirm_delete).post(apps::delete))
        .route("/admin/apps/{id}/assign", post(apps::assign))
        .route("/admin/apps/{id}/unassign", post(apps::unassign))
        .route("/admin/apps/{id}/test", post(apps::test))
        .route("/admin/connectors", get(components::connectors))
        .route("/admin/connector-groups", post(components::create_group))
        .route(
            "/admin/connector-groups/{id}/delete",
            get(components::confirm_delete_group).post(components::delete_group),
        )
        .route("/admin/connectors/{id}/move", post(components::move_connector))
        .route(
            "/admin/connectors/{id}/revoke",
            get(components::confirm_revoke_connector).post(components::revoke_connector),
        )
        .route("/admin/agents", get(components::agents))
        .route(
            "/admin/agents/{id}/revoke",
            get(components::confirm_revoke_agent).post(components::revoke_agent),
        )
        .route("/admin/tokens", get(tokens::show).post(tokens::create))
        .route("/admin/users", get(users::list).post(users::create))
        .route("/admin/users/{id}", get(users::show).post(users::update))
        .route("/admin/groups", get(users::groups).post(users::create_group))
        .route("/admin/groups/{id}", get(users::group).post(users::change_members))
        .route("/admin/signins", get(logs::signins))
        .route("/admin/audit", get(logs::audit))
        .route("/admin/policies", get(policies::list).post(policies::create))
        .route("/admin/policies/{id}", get(policies::show))
        .route("/admin/policies/{id}/delete", post(policies::delete))
        .route("/admin/{*rest}", get(not_found).post(not_found))
        .layer(from_fn_with_state(console.clone(), session::guard))
        .with_state(console)
}

async fn stylesheet() -> Response {
    let mut r = html::STYLESHEET.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

async fn not_found() -> Response {
    Page::new("Not found")
        .status(StatusCode::NOT_FOUND)
        .push(r#"<p>There is no console page at this address. <a href="/admin">Back to the console</a></p>"#)
        .render(None)
}

impl Console {
    /// Who the session belongs to, for the layout (`GET /api/v1/me`). A
    /// session the API no longer accepts signs in again; a user without any
    /// administrative role gets the 403 page.
    pub(crate) async fn viewer(&self, session: &Session) -> Result<Viewer, Response> {
        match self.get(session, "/api/v1/me").await {
            Ok(me) => Ok(Viewer {
                tenant: session.tenant.clone(),
                username: s(&me["user"], "username").to_owned(),
                roles: api::items(&me["roles"])
                    .iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect(),
                csrf: session.csrf(),
            }),
            Err(f) if f.status == StatusCode::UNAUTHORIZED => {
                let mut r = Redirect::to(&Console::relogin_location(Some(&session.tenant), "/admin")).into_response();
                r.headers_mut().append(header::SET_COOKIE, self.clear_session());
                Err(r)
            }
            Err(f) if f.status == StatusCode::FORBIDDEN => Err(no_role_page()),
            Err(f) => Err(failure_page("The console could not load", &f, None)),
        }
    }
}

/// The 403 page of a signed-in user who holds no administrative role.
pub(crate) fn no_role_page() -> Response {
    Page::new("No administrative role")
        .status(StatusCode::FORBIDDEN)
        .notice(Some(Notice::Failed(
            "You are signed in, but your account holds no administrative role in this organisation, so the console has nothing for you. Ask a global administrator for a role.".into(),
            vec![],
        )))
        .render(None)
}

/// A page that only shows why an API call failed, with the API's status.
pub(crate) fn failure_page(title: &str, failure: &ApiFailure, viewer: Option<&Viewer>) -> Response {
    let status = if failure.status.is_client_error() || failure.status.is_server_error() {
        failure.status
    } else {
        StatusCode::BAD_GATEWAY
    };
    Page::new(title)
        .status(status)
        .notice(Some(failure.notice(title)))
        .render(viewer)
}

/// A 303 to a console page after a change succeeded; `done` names the fixed
/// message the page shows (never text from the request).
pub(crate) fn done(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// The fields of a posted console form.
pub(crate) struct Fields(Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequest<S> for Fields {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, _: &S) -> Result<Self, Response> {
        // The guard has already read (and bounded) the body.
        let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .map_err(|_| StatusCode::BAD_REQUEST.into_response())?;
        Ok(Fields(session::form_fields(&bytes)))
    }
}

impl Fields {
    /// The trimmed value of field `name` (`""` when absent).
    pub(crate) fn get(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// The value of field `name`, `None` when absent or blank.
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name)).filter(|v| !v.is_empty())
    }

    /// Whether checkbox `name` was ticked.
    pub(crate) fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
}

/// `?done=…` of a page shown after a change: which fixed message to show.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct DoneParam {
    done: Option<String>,
}

impl DoneParam {
    /// The message for `done`, from the page's own fixed list.
    pub(crate) fn notice(&self, messages: &[(&str, &str)]) -> Option<Notice> {
        let key = self.done.as_deref()?;
        messages
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, m)| Notice::Done((*m).to_owned()))
    }
}
