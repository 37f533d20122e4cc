//! Pre-authentication (APP-1): the front door as an OpenID Connect relying party
//! of the tenant's issuer. A request without a valid session cookie is sent to
//! sign in (authorization code, PKCE S256, `state` and `nonce` kept in a sealed
//! flow cookie scoped to the callback path); the callback redeems the code,
//! verifies the ID token (signature, issuer, audience = this app, expiry, nonce),
//! checks the user may use the app, sets the sealed session cookie and returns to
//! the page first asked for: a path on the same app, never another origin.
//!
//! The app's own endpoints live under `{prefix}.postern/`: `callback`, `signin`
//! (`?rd=/path`, for the app's own sign-in links) and `signout`
//! ([`crate::signout`]: a GET asks, a POST with the page's token signs out).
//!
//! An app session ends after [`crate::EdgeOptions::session_lifetime`], and never
//! after the STS sign-in session its ID token came from ([`session_end`]).

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{ACCEPT, SET_COOKIE};
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use postern_store::App;
use postern_sts::{Admission, ClientIp, ClientKind, Presence};

use crate::cookies::read_cookie;
use crate::session::{
    AppSession, NoSession, SignInFlow, flow_cookie, open_flow, open_session, seal_flow, seal_session, session_cookie,
    session_end,
};
use crate::{Edge, EdgeError, pages};

/// Who is calling, once the session and the assignment are checked.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    pub session: AppSession,
    pub groups: Arc<Vec<String>>,
}

/// What the STS says about a user and an app from where they are, cached briefly.
#[derive(Clone, Debug)]
pub(crate) enum AccessDecision {
    Allowed {
        groups: Arc<Vec<String>>,
    },
    /// A policy demands a second factor this session lacks: sign in again.
    StepUp(String),
    Denied(String),
}

/// The client's address as the listener determined it.
fn client_ip(parts: &Parts) -> ClientIp {
    parts
        .extensions
        .get::<ClientIp>()
        .copied()
        .unwrap_or(ClientIp(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
}

/// Where and how a browser session is, for the policies.
fn presence(parts: &Parts, mfa: bool) -> Presence {
    Presence {
        ip: client_ip(parts),
        mfa,
        client_kind: ClientKind::Browser,
    }
}

/// The app's own endpoints, below its prefix.
const OWN_PREFIX: &str = "/.postern/";

/// Whether `path` (below the app's prefix) is one of the front door's own.
pub(crate) fn is_own_path(path: &str) -> bool {
    path.starts_with(OWN_PREFIX)
}

/// Whether the caller is a script or API client rather than a browser page load:
/// it gets a JSON 401 instead of a redirect it cannot follow.
pub(crate) fn wants_json(parts: &Parts) -> bool {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("x-requested-with").eq_ignore_ascii_case("xmlhttprequest") {
        return true;
    }
    let mode = header("sec-fetch-mode");
    if mode.eq_ignore_ascii_case("cors")
        || (mode.eq_ignore_ascii_case("same-origin") && header("sec-fetch-dest") == "empty")
    {
        return true;
    }
    let accept = parts.headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("text/html") {
        return false;
    }
    accept.contains("application/json") || !(parts.method == Method::GET || parts.method == Method::HEAD)
}

/// A return address the callback may redirect to: a path (with query) on the
/// app's host that lies under its prefix once resolved as a browser resolves it
/// (`..`, `%2e%2e`, `.%2e`, `%2e.` segments; [`crate::paths::normalize`]). It
/// comes back normalized, so the browser goes exactly where it was checked to
/// go. Anything else (another origin, `//host`, backslashes, control
/// characters, a path climbing out of the prefix) is refused: no open redirect.
pub(crate) fn safe_return_path(app: &App, candidate: &str) -> Option<String> {
    if !candidate.starts_with('/')
        || candidate.starts_with("//")
        || candidate.contains('\\')
        || candidate.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return None;
    }
    let (path, query) = candidate.split_at(candidate.find(['?', '#']).unwrap_or(candidate.len()));
    let path = crate::paths::normalize(path).ok()?;
    let prefix = app.path_prefix.as_str();
    let under = path.starts_with(prefix) || path == prefix.trim_end_matches('/');
    under.then(|| format!("{path}{query}"))
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()).as_ref())
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_cookies(mut response: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    response
}

impl Edge {
    /// The session of the request, checked against the app and the store; or the
    /// response that takes its place (a sign-in redirect, a JSON 401, a 403 page).
    pub(crate) async fn require_access(
        &self,
        app: &Arc<App>,
        parts: &Parts,
        request_id: &str,
    ) -> Result<Access, Response> {
        let now = self.now();
        let cookie = read_cookie(&parts.headers, &session_cookie(app).name);
        let session = match open_session(&self.cookies, app, cookie, now) {
            Ok(s) => s,
            Err(why) => {
                if why != NoSession::Missing {
                    tracing::info!(app = %app.name, reason = why.as_str(), "session cookie refused");
                }
                let original = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                return Err(if wants_json(parts) {
                    let sign_in = format!(
                        "{}.postern/signin?rd={}",
                        app.external_url(),
                        url::form_urlencoded::byte_serialize(original.as_bytes()).collect::<String>()
                    );
                    pages::unauthenticated_json(why.as_str(), &sign_in)
                } else {
                    self.start_sign_in(app, original, request_id).await
                });
            }
        };
        match self.access_decision(app, &session.u, &presence(parts, session.m)).await {
            Ok(AccessDecision::Allowed { groups }) => Ok(Access { session, groups }),
            Ok(AccessDecision::StepUp(why)) => {
                tracing::info!(app = %app.name, user = %session.u, reason = %why, "step-up: back to sign in");
                let original = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                Err(if wants_json(parts) {
                    let sign_in = format!(
                        "{}.postern/signin?rd={}",
                        app.external_url(),
                        url::form_urlencoded::byte_serialize(original.as_bytes()).collect::<String>()
                    );
                    pages::unauthenticated_json("multi-factor authentication required", &sign_in)
                } else {
                    self.start_sign_in(app, original, request_id).await
                })
            }
            Ok(AccessDecision::Denied(why)) => Err(pages::error(
                StatusCode::FORBIDDEN,
                "Access denied",
                &format!("You are signed in as {}, but {why}.", session.n),
                request_id,
            )),
            Err(e) => Err(self.internal_error(&e, request_id)),
        }
    }

    /// Whether `user_id` may use `app` now, from where they are: the STS's
    /// decision ([`postern_sts::Sts::app_admits_from`]: enabled, assigned, and
    /// the tenant's conditional access policies, as `/authorize` decides for
    /// the app's client), cached for [`crate::EdgeOptions::access_cache_ttl`]
    /// per user, address and second factor. A change to apps, users or
    /// policies moves the routing generation and so empties the cache.
    pub(crate) async fn access_decision(
        &self,
        app: &App,
        user_id: &str,
        presence: &Presence,
    ) -> Result<AccessDecision, EdgeError> {
        let key = (app.id.clone(), format!("{user_id} {} {}", presence.ip, presence.mfa));
        let generation = self.store.routing_generation();
        if let Some(d) = self.access.get(&key, generation) {
            return Ok(d);
        }
        let decision = match self.sts.app_admits_from(app, user_id, presence).await? {
            Admission::Allowed { groups } => AccessDecision::Allowed {
                groups: Arc::new(groups),
            },
            Admission::StepUp(why) => AccessDecision::StepUp(why),
            Admission::Denied(denial) => AccessDecision::Denied(denial.to_user()),
        };
        self.access.put(key, decision.clone(), generation);
        Ok(decision)
    }

    /// Sends the browser to the tenant's sign-in, remembering `return_to`.
    async fn start_sign_in(&self, app: &App, return_to: &str, request_id: &str) -> Response {
        let result: Result<Response, EdgeError> = async {
            let tenant = self.store.tenant(&app.tenant_id).await?;
            let flow = SignInFlow {
                st: postern_keyring::random_token()?.expose().to_owned(),
                v: postern_keyring::random_token()?.expose().to_owned(),
                n: postern_keyring::random_token()?.expose().to_owned(),
                r: return_to.to_owned(),
                x: (self.now() + self.options.flow_lifetime).secs(),
            };
            let sealed = seal_flow(&self.cookies, app, &flow)?;
            let mut location = url::Url::parse(&self.sts.authorize_endpoint(&tenant.name))
                .map_err(|e| EdgeError::Internal(format!("authorize endpoint: {e}")))?;
            location
                .query_pairs_mut()
                .append_pair("response_type", "code")
                .append_pair("client_id", &app.client_id)
                .append_pair("redirect_uri", &app.callback_url())
                .append_pair("scope", "openid profile email")
                .append_pair("state", &flow.st)
                .append_pair("nonce", &flow.n)
                .append_pair("code_challenge", &pkce_challenge(&flow.v))
                .append_pair("code_challenge_method", "S256");
            let cookie = flow_cookie(app).set(&sealed, Some(self.options.flow_lifetime));
            Ok(with_cookies(
                pages::redirect(StatusCode::FOUND, location.as_str()),
                &[cookie],
            ))
        }
        .await;
        result.unwrap_or_else(|e| self.internal_error(&e, request_id))
    }

    /// `{prefix}.postern/…`.
    pub(crate) async fn own_endpoint(
        &self,
        app: &Arc<App>,
        path: &str,
        parts: &Parts,
        body: hyper::body::Incoming,
        request_id: &str,
    ) -> Response {
        match path.strip_prefix(OWN_PREFIX).unwrap_or("") {
            "callback" => self.callback(app, parts, request_id).await,
            "signin" => {
                let rd = query_param(parts, "rd").unwrap_or_else(|| app.path_prefix.clone());
                match safe_return_path(app, &rd) {
                    Some(rd) => self.start_sign_in(app, &rd, request_id).await,
                    None => pages::error(
                        StatusCode::BAD_REQUEST,
                        "Sign-in refused",
                        "The address to return to after signing in must be a page of this application.",
                        request_id,
                    ),
                }
            }
            "signout" => self.sign_out(app, parts, body, request_id).await,
            _ => pages::error(StatusCode::NOT_FOUND, "Not found", "There is no such page.", request_id),
        }
    }

    async fn callback(&self, app: &Arc<App>, parts: &Parts, request_id: &str) -> Response {
        let flow_cookie = flow_cookie(app);
        let clear_flow = flow_cookie.clear();
        let fail = |status: StatusCode, cause: &str| {
            tracing::info!(app = %app.name, cause, "pre-authentication failed");
            with_cookies(
                pages::error(status, "Sign-in failed", cause, request_id),
                std::slice::from_ref(&clear_flow),
            )
        };
        let now = self.now();
        let Some(flow) =
            read_cookie(&parts.headers, &flow_cookie.name).and_then(|c| open_flow(&self.cookies, app, c, now))
        else {
            return fail(
                StatusCode::BAD_REQUEST,
                "This sign-in expired or was started in another window. Open the application again to sign in.",
            );
        };
        let state = query_param(parts, "state").unwrap_or_default();
        if !postern_keyring::constant_time_eq(state.as_bytes(), flow.st.as_bytes()) {
            return fail(
                StatusCode::BAD_REQUEST,
                "The sign-in answer does not belong to this sign-in (state mismatch). Open the application again.",
            );
        }
        if let Some(error) = query_param(parts, "error") {
            let description = query_param(parts, "error_description").unwrap_or_default();
            return fail(
                StatusCode::FORBIDDEN,
                &format!("The sign-in service refused: {error}. {description}"),
            );
        }
        let Some(code) = query_param(parts, "code") else {
            return fail(StatusCode::BAD_REQUEST, "The sign-in answer carries no code.");
        };
        let result: Result<Response, EdgeError> = async {
            let tenant = self.store.tenant(&app.tenant_id).await?;
            // The code is redeemed and its ID token's claims checked in this
            // process: no token is signed for the service's own relying party.
            let answer = postern_sts::relying_party::InProcessAnswer {
                code: &code,
                redirect_uri: &app.callback_url(),
                verifier: &flow.v,
                nonce: &flow.n,
            };
            let signed_in = match self
                .sts
                .complete_sign_in_in_process(&tenant, &app.client_id, &answer)
                .await?
            {
                Ok(s) => s,
                Err(why) => {
                    return Ok(fail(
                        StatusCode::BAD_REQUEST,
                        &format!("The sign-in could not be completed: {why}."),
                    ));
                }
            };
            let (claims, user) = (signed_in.claims, signed_in.user);
            let mfa = claims.amr.iter().any(|m| m == "mfa");
            match self.access_decision(app, &user.id, &presence(parts, mfa)).await? {
                AccessDecision::Allowed { .. } => {}
                // The STS has just asked for what the policies demand; a
                // step-up owed here would loop, so it is a refusal.
                AccessDecision::StepUp(why) | AccessDecision::Denied(why) => {
                    return Ok(with_cookies(
                        pages::error(
                            StatusCode::FORBIDDEN,
                            "Access denied",
                            &format!("You are signed in as {}, but {why}.", user.username),
                            request_id,
                        ),
                        std::slice::from_ref(&clear_flow),
                    ));
                }
            }
            let ends = self.app_session_end(&tenant.id, &claims, now).await?;
            let session = AppSession {
                t: tenant.id.clone(),
                a: app.id.clone(),
                u: user.id.clone(),
                n: user.username.clone(),
                e: user.email.clone(),
                i: now.secs(),
                x: ends.secs(),
                m: mfa,
            };
            let sealed = seal_session(&self.cookies, app, &session)?;
            let set = session_cookie(app).set(&sealed, Some(ends.since(now)));
            let back = safe_return_path(app, &flow.r).unwrap_or_else(|| app.path_prefix.clone());
            tracing::info!(app = %app.name, user = %user.id, "pre-authenticated");
            Ok(with_cookies(
                pages::redirect(StatusCode::FOUND, &back),
                &[set, clear_flow.clone()],
            ))
        }
        .await;
        result.unwrap_or_else(|e| self.internal_error(&e, request_id))
    }

    /// When the app session begun with `claims` ends ([`session_end`]): the STS
    /// session the token names (`sid`) is looked up; one that has ended, or
    /// belongs to another user, counts as none.
    async fn app_session_end(
        &self,
        tenant_id: &str,
        claims: &postern_sts::tokens::IdClaims,
        now: postern_time::UnixTime,
    ) -> Result<postern_time::UnixTime, EdgeError> {
        let sts_session_end = match claims.sid.as_deref() {
            Some(sid) => match self.store.session(tenant_id, sid, now).await {
                Ok(s) if s.user_id == claims.sub => Some(s.expires_at),
                Ok(_) | Err(postern_store::StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let token_exp = postern_time::UnixTime::from_secs(claims.exp);
        Ok(session_end(
            now,
            self.options.session_lifetime,
            sts_session_end,
            token_exp,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(prefix: &str) -> App {
        App {
            id: "a".into(),
            tenant_id: "t".into(),
            name: "a".into(),
            external_scheme: postern_store::ExternalScheme::Https,
            external_host: "h".into(),
            path_prefix: prefix.into(),
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
        }
    }

    #[test]
    fn return_paths_stay_on_the_app() {
        let root = app("/");
        assert_eq!(safe_return_path(&root, "/x?y=1").as_deref(), Some("/x?y=1"));
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/\\evil.example",
            "evil",
            "",
            "/x\r\nLocation: https://evil.example",
            "/a/../../b",
        ] {
            assert_eq!(safe_return_path(&root, bad), None, "{bad:?}");
        }
        let docs = app("/docs/");
        assert_eq!(safe_return_path(&docs, "/docs/a").as_deref(), Some("/docs/a"));
        assert_eq!(safe_return_path(&docs, "/docs").as_deref(), Some("/docs"));
        assert_eq!(safe_return_path(&docs, "/other"), None);
        assert_eq!(safe_return_path(&docs, "/docs/../admin"), None);
    }

    /// Return paths are checked as a browser resolves them: every spelling of a
    /// dot segment that climbs out of the prefix is refused; one that stays
    /// inside comes back resolved.
    #[test]
    fn encoded_dot_segments_cannot_leave_the_prefix() {
        let docs = app("/docs/");
        let table: &[(&str, Option<&str>)] = &[
            ("/docs/a?b=../c", Some("/docs/a?b=../c")),
            ("/docs/./a", Some("/docs/a")),
            ("/docs/x/%2e%2e/a", Some("/docs/a")),
            ("/docs/x/.%2e/a#frag", Some("/docs/a#frag")),
            ("/docs/%2e", Some("/docs/")),
            ("/docs/%2e%2e/admin", None),
            ("/docs/%2E%2E/admin", None),
            ("/docs/.%2e/admin", None),
            ("/docs/.%2E/admin", None),
            ("/docs/%2e./admin", None),
            ("/docs/%2E./admin?x=1", None),
            ("/docs/%2e/../admin", None),
            ("/docs/..\\admin", None),
            ("/docs\\..\\admin", None),
            ("/docs/..%2fadmin", None),
            ("/docs/..%5cadmin", None),
            ("/docs/..;/admin", None),
            ("/docs/%2e%2e", None),
            ("/docs//../admin", None),
            ("/%2e%2e/docs/a", None),
        ];
        for (candidate, expected) in table {
            assert_eq!(
                safe_return_path(&docs, candidate).as_deref(),
                *expected,
                "{candidate:?}"
            );
        }
    }

    #[test]
    fn scripts_get_json_browsers_get_redirects() {
        let parts = |headers: &[(&str, &str)], method: Method| {
            let mut b = http::Request::builder().method(method).uri("/");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert!(!wants_json(&parts(
            &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
            Method::GET
        )));
        assert!(!wants_json(&parts(&[], Method::GET)));
        assert!(wants_json(&parts(&[("accept", "application/json")], Method::GET)));
        assert!(wants_json(&parts(
            &[("x-requested-with", "XMLHttpRequest")],
            Method::GET
        )));
        assert!(wants_json(&parts(&[("sec-fetch-mode", "cors")], Method::GET)));
        assert!(wants_json(&parts(&[], Method::POST)));
        assert!(!wants_json(&parts(&[("accept", "text/html")], Method::POST)));
    }

    #[test]
    fn the_callback_is_an_own_path() {
        let callback = format!("/{}", postern_store::APP_CALLBACK_PATH);
        assert!(is_own_path(&callback));
        assert_eq!(callback.strip_prefix(OWN_PREFIX), Some("callback"));
    }

    #[test]
    fn pkce_challenge_is_rfc7636() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
