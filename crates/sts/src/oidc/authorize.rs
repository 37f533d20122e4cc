//! The authorization endpoint (RFC 6749 §4.1, OIDC Core §3.1.2): code flow with
//! PKCE S256 only. Until the client and its redirect URI are known good, errors are
//! shown as a page; after that they go back to the client (RFC 6749 §4.1.2.1).
//! A published app's client gets a code only for a user the app admits, by the
//! front door's decision ([`Sts::app_admits`]); anyone else gets `access_denied`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use postern_store::{AuthCode, OAuthClient, Session, StoreError, Tenant, User};
use postern_time::UnixTime;
use serde::Deserialize;
use url::Url;

use super::{GRANT_CODE, has_scope, validate_scope};
use crate::client_ip::ClientIp;
use crate::conditional::{AccessRequest, AccessVerdict};
use crate::error::{OAuthError, StsError};
use crate::pages::Page;
use crate::signin::flow::{AuthRequest, Purpose};
use crate::signin::see_other;
use crate::{Admission, Denial, Sts};

/// Parameters of an authorization request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    nonce: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    prompt: Option<String>,
    max_age: Option<String>,
    response_mode: Option<String>,
    request: Option<String>,
    request_uri: Option<String>,
}

/// Longest `state` or `nonce` accepted.
const MAX_PARAM_LEN: usize = 1024;

/// The client's address; the listener sets it on every request (a router
/// used without it sees the unspecified address).
pub(crate) fn client_ip(ip: Option<Extension<ClientIp>>) -> ClientIp {
    ip.map_or(
        ClientIp(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        |Extension(ip)| ip,
    )
}

/// `GET /t/{tenant}/authorize`.
pub(crate) async fn authorize(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Query(params): Query<AuthorizeParams>,
) -> Result<Response, StsError> {
    handle(&sts, &tenant, &headers, client_ip(ip), params).await
}

/// `POST /t/{tenant}/authorize` (form-encoded, OIDC Core §3.1.2.1).
pub(crate) async fn authorize_form(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Form(params): Form<AuthorizeParams>,
) -> Result<Response, StsError> {
    handle(&sts, &tenant, &headers, client_ip(ip), params).await
}

fn bad_client_page(tenant: &Tenant, message: &str) -> Response {
    Page::error(StatusCode::BAD_REQUEST, "This sign-in request is not valid", message)
        .context(&tenant.display_name)
        .para("Contact the application's administrator; the request cannot be completed.")
        .into_response()
}

/// Where to send the browser back to the client with an error (RFC 6749
/// §4.1.2.1, with `iss` per RFC 9207).
fn error_location(
    sts: &Sts,
    tenant: &Tenant,
    redirect_uri: &Url,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> String {
    let mut url = redirect_uri.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("error", error);
        q.append_pair("error_description", description);
        if let Some(s) = state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &sts.issuer(&tenant.name));
    }
    url.into()
}

/// A redirect back to the client with an error.
fn error_redirect(
    sts: &Sts,
    tenant: &Tenant,
    redirect_uri: &Url,
    state: Option<&str>,
    error: &str,
    description: &str,
) -> Response {
    see_other(
        &error_location(sts, tenant, redirect_uri, state, error, description),
        [],
    )
}

/// An authorization request: the client and its return address are checked
/// first (errors shown as a page), then the request itself (errors sent back to
/// the client); an existing session may answer at once, else the sign-in pages
/// start.
async fn handle(
    sts: &Sts,
    tenant_name: &str,
    headers: &HeaderMap,
    ip: ClientIp,
    p: AuthorizeParams,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(tenant_name).await?;
    let (client, redirect_raw, redirect_uri) = match known_client(sts, &tenant, &p).await? {
        Ok(known) => known,
        Err(page) => return Ok(page),
    };

    // From here on, errors go back to the client.
    let back = ReturnTo {
        sts,
        tenant: &tenant,
        redirect_uri: &redirect_uri,
        state: p.state.as_deref(),
    };
    let checked = match checked_request(&client, redirect_raw, &p) {
        Ok(checked) => checked,
        Err(e) => return Ok(back.error(e.error, &e.description)),
    };

    // Single sign-on: an existing session may answer without any page.
    if let Some((session, user)) = reusable_session(sts, &tenant, headers, &checked).await? {
        return answer_from_session(&back, checked, &user, &session, headers, ip).await;
    }
    if checked.prompt_none {
        return Ok(back.error("login_required", "the user is not signed in"));
    }
    crate::signin::start_page(sts, &tenant, Purpose::Authorize(checked.request), headers).await
}

/// Where errors go once the client and its return address are known good.
struct ReturnTo<'a> {
    sts: &'a Sts,
    tenant: &'a Tenant,
    redirect_uri: &'a Url,
    state: Option<&'a str>,
}

impl ReturnTo<'_> {
    /// A redirect back to the client with `error`.
    fn error(&self, error: &str, description: &str) -> Response {
        error_redirect(self.sts, self.tenant, self.redirect_uri, self.state, error, description)
    }
}

/// An authorization request whose parameters are valid.
struct CheckedRequest {
    request: AuthRequest,
    /// `prompt=login`: a session may not answer.
    prompt_login: bool,
    /// `prompt=none`: no page may be shown.
    prompt_none: bool,
    /// A session older than this many seconds may not answer.
    max_age: Option<u64>,
}

/// The client the request names and its registered return address (as sent and
/// parsed), or the page that says why the request cannot go back to a client.
async fn known_client<'p>(
    sts: &Sts,
    tenant: &Tenant,
    p: &'p AuthorizeParams,
) -> Result<Result<(OAuthClient, &'p str, Url), Response>, StsError> {
    let Some(client_id) = p.client_id.as_deref() else {
        return Ok(Err(bad_client_page(
            tenant,
            "The request does not name an application (client_id).",
        )));
    };
    let client = match sts.store.client(&tenant.id, client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => {
            return Ok(Err(bad_client_page(
                tenant,
                "The application is not registered with this organisation.",
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(redirect_raw) = p.redirect_uri.as_deref() else {
        return Ok(Err(bad_client_page(
            tenant,
            "The request does not say where to return to (redirect_uri).",
        )));
    };
    if !super::redirect::is_registered(&client.redirect_uris, redirect_raw) {
        tracing::warn!(tenant = %tenant.name, client = %client.client_id, "authorization request with an unregistered redirect_uri");
        return Ok(Err(bad_client_page(
            tenant,
            "The return address (redirect_uri) is not registered for this application.",
        )));
    }
    let Ok(redirect_uri) = Url::parse(redirect_raw) else {
        return Ok(Err(bad_client_page(
            tenant,
            "The registered return address is not a valid URL.",
        )));
    };
    if !client.allows_grant(GRANT_CODE) {
        return Ok(Err(bad_client_page(
            tenant,
            "This application may not use the authorization code flow.",
        )));
    }
    Ok(Ok((client, redirect_raw, redirect_uri)))
}

/// The request's parameters checked in order (the first problem is the error
/// sent back): lengths, unsupported features, response type and mode, scope,
/// PKCE, prompt and max_age.
fn checked_request(
    client: &OAuthClient,
    redirect_raw: &str,
    p: &AuthorizeParams,
) -> Result<CheckedRequest, OAuthError> {
    let fail = |error: &'static str, description: &str| Err(OAuthError::bad_request(error, description));
    if p.state.as_deref().is_some_and(|s| s.len() > MAX_PARAM_LEN)
        || p.nonce.as_deref().is_some_and(|n| n.len() > MAX_PARAM_LEN)
    {
        return fail("invalid_request", "state or nonce is too long");
    }
    if p.request.is_some() {
        return fail("request_not_supported", "request objects are not supported");
    }
    if p.request_uri.is_some() {
        return fail("request_uri_not_supported", "request_uri is not supported");
    }
    if p.response_type.as_deref() != Some("code") {
        return fail("unsupported_response_type", "only response_type=code is supported");
    }
    if p.response_mode.as_deref().is_some_and(|m| m != "query") {
        return fail("invalid_request", "only response_mode=query is supported");
    }
    let scope = validate_scope(p.scope.as_deref().unwrap_or(""), client)?;
    if !has_scope(&scope, "openid") {
        return fail("invalid_scope", "the openid scope is required");
    }
    let Some(challenge) = p.code_challenge.clone() else {
        return fail(
            "invalid_request",
            "PKCE is required: send code_challenge with code_challenge_method=S256",
        );
    };
    if p.code_challenge_method.as_deref() != Some("S256") {
        return fail("invalid_request", "only code_challenge_method=S256 is supported");
    }
    if challenge.len() != 43
        || !challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return fail("invalid_request", "code_challenge must be a base64url SHA-256 digest");
    }
    let prompts: Vec<&str> = p
        .prompt
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return fail("invalid_request", "prompt=none cannot be combined with other values");
    }
    let max_age = match p.max_age.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return fail("invalid_request", "max_age must be a number of seconds"),
    };
    Ok(CheckedRequest {
        request: AuthRequest {
            client_id: client.client_id.clone(),
            client_name: client.name.clone(),
            redirect_uri: redirect_raw.to_owned(),
            scope,
            state: p.state.clone(),
            nonce: p.nonce.clone(),
            code_challenge: challenge,
        },
        prompt_login: prompts.contains(&"login"),
        prompt_none: prompts.contains(&"none"),
        max_age,
    })
}

/// The browser's session and its user, if they may answer the request: not
/// asked to log in again, the session young enough for `max_age`, the user
/// still there and enabled.
async fn reusable_session(
    sts: &Sts,
    tenant: &Tenant,
    headers: &HeaderMap,
    checked: &CheckedRequest,
) -> Result<Option<(Session, User)>, StsError> {
    if checked.prompt_login {
        return Ok(None);
    }
    let now = sts.now();
    let session = sts
        .current_session(tenant, headers)
        .await?
        .filter(|s| match checked.max_age {
            Some(age) => now.secs() - s.auth_time.secs() <= i64::try_from(age).unwrap_or(i64::MAX),
            None => true,
        });
    let Some(session) = session else {
        return Ok(None);
    };
    match sts.store.user(&tenant.id, &session.user_id).await {
        Ok(user) if user.enabled => Ok(Some((session, user))),
        Ok(_) | Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Answers from a signed-in user's session: a code at once unless MFA is owed
/// (by the tenant or an access policy); then, unless `prompt=none` forbids a
/// page, the sign-in resumes at the MFA step.
async fn answer_from_session(
    back: &ReturnTo<'_>,
    checked: CheckedRequest,
    user: &User,
    session: &Session,
    headers: &HeaderMap,
    ip: ClientIp,
) -> Result<Response, StsError> {
    let (sts, tenant) = (back.sts, back.tenant);
    let mfa_owed = sts.mfa_needed(tenant, user).await? && session.mfa_at.is_none();
    let mut policy_mfa = false;
    if !mfa_owed {
        let issued = sts
            .complete_authorization(
                tenant,
                &checked.request,
                user,
                Authenticated {
                    session_id: Some(&session.id),
                    auth_time: session.auth_time,
                    amr: &session.amr,
                    ip,
                    single_sign_on: true,
                    decided: None,
                },
            )
            .await?;
        match issued {
            Issued::Redirect(location) => return Ok(see_other(&location, [])),
            Issued::StepUp(_) => policy_mfa = true,
        }
    }
    if checked.prompt_none {
        return Ok(back.error("interaction_required", "multi-factor authentication is required"));
    }
    sts.resume_with_session(
        tenant,
        Purpose::Authorize(checked.request),
        user,
        session,
        headers,
        policy_mfa,
    )
    .await
}

/// How the user of an authorization request was authenticated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Authenticated<'a> {
    /// Their STS session.
    pub session_id: Option<&'a str>,
    /// When they authenticated.
    pub auth_time: UnixTime,
    /// How (`pwd`, `otp`, `mfa`).
    pub amr: &'a str,
    /// From where.
    pub ip: ClientIp,
    /// Single sign-on (a session answered) rather than the sign-in pages
    /// (which log their own decision).
    pub single_sign_on: bool,
    /// The conditional access decision the same request has just made for
    /// this user and client (the sign-in pages, right after the password),
    /// used instead of evaluating the policies again.
    pub decided: Option<&'a AccessVerdict>,
}

impl Authenticated<'_> {
    fn mfa(&self) -> bool {
        self.amr.split(' ').any(|m| m == "mfa")
    }
}

/// The answer to an authorization request whose user is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Issued {
    /// Back to the client: with a code, or with `access_denied` and why.
    Redirect(String),
    /// A policy demands a second factor the session lacks.
    StepUp(String),
}

impl Sts {
    /// Answers an authorization request whose user is known (a completed sign-in
    /// or single sign-on): the URL to send the browser back to the client with,
    /// carrying a new code; or `access_denied` when the client is a published
    /// app's and the app does not admit the user (the front door's decision,
    /// [`Sts::app_admits`]) or a conditional access policy blocks the sign-in
    /// (every client); or a step-up when a policy demands a second factor the
    /// session lacks. No code is issued to a refused user.
    pub(crate) async fn complete_authorization(
        &self,
        tenant: &Tenant,
        request: &AuthRequest,
        user: &User,
        how: Authenticated<'_>,
    ) -> Result<Issued, StsError> {
        let redirect_uri =
            Url::parse(&request.redirect_uri).map_err(|e| StsError::internal(format!("redirect uri: {e}")))?;
        let deny = |description: &str| {
            Issued::Redirect(error_location(
                self,
                tenant,
                &redirect_uri,
                request.state.as_deref(),
                "access_denied",
                description,
            ))
        };
        if let Some(denial) = self.app_refuses(tenant, &request.client_id, user).await? {
            tracing::info!(
                tenant = %tenant.name,
                client = %request.client_id,
                user = %user.id,
                reason = %denial,
                "authorization refused: the app does not admit the user"
            );
            return Ok(deny(&denial.to_string()));
        }
        let verdict = match how.decided {
            Some(decided) => decided.clone(),
            None => {
                self.evaluate_access(AccessRequest {
                    tenant,
                    username: &user.username,
                    user: Some(user),
                    client_id: Some(&request.client_id),
                    app: None,
                    ip: how.ip,
                    client_kind: postern_policy::ClientKind::Browser,
                    risk: None,
                })
                .await?
            }
        };
        if how.single_sign_on {
            let outcome = Sts::outcome_of(&verdict, how.mfa());
            self.log_decision(
                tenant,
                user,
                Some(&request.client_id),
                how.ip,
                outcome,
                "single sign-on",
                &verdict,
            )
            .await?;
        }
        if verdict.decision.blocked() {
            let reason = verdict.decision.reason().unwrap_or("blocked by an access policy");
            tracing::info!(tenant = %tenant.name, client = %request.client_id, user = %user.id, reason, "authorization refused by conditional access");
            return Ok(deny(reason));
        }
        if verdict.decision.requires_mfa() && !how.mfa() {
            let reason = verdict
                .decision
                .reason()
                .unwrap_or("multi-factor authentication is required");
            if how.single_sign_on {
                return Ok(Issued::StepUp(reason.to_owned()));
            }
            return Ok(deny(reason));
        }
        self.issue_code(tenant, request, user, how.session_id, how.auth_time, how.amr)
            .await
            .map(Issued::Redirect)
    }

    /// Why the app whose client is `client_id` refuses `user` (of `tenant`,
    /// just read by this request), if the client is an app's and it does.
    async fn app_refuses(&self, tenant: &Tenant, client_id: &str, user: &User) -> Result<Option<Denial>, StsError> {
        let Some(app) = self.store.app_of_client(&tenant.id, client_id).await? else {
            return Ok(None);
        };
        // The baseline here; the policies are evaluated for every client next.
        Ok(match self.admission_of(&app, user, None).await? {
            Admission::Allowed { .. } | Admission::StepUp(_) => None,
            Admission::Denied(denial) => Some(denial),
        })
    }

    /// Issues an authorization code and returns the URL to send the browser to.
    async fn issue_code(
        &self,
        tenant: &Tenant,
        request: &AuthRequest,
        user: &User,
        session_id: Option<&str>,
        auth_time: UnixTime,
        amr: &str,
    ) -> Result<String, StsError> {
        let now = self.now();
        let code = postern_keyring::random_token()?;
        self.store
            .create_auth_code(
                &postern_keyring::digest(code.expose()),
                &AuthCode {
                    tenant_id: tenant.id.clone(),
                    client_id: request.client_id.clone(),
                    user_id: user.id.clone(),
                    session_id: session_id.map(str::to_owned),
                    redirect_uri: request.redirect_uri.clone(),
                    scope: request.scope.clone(),
                    nonce: request.nonce.clone(),
                    code_challenge: request.code_challenge.clone(),
                    auth_time,
                    amr: amr.to_owned(),
                    family_id: uuid::Uuid::new_v4().to_string(),
                    expires_at: now + self.config.auth_code_ttl,
                },
                now,
            )
            .await?;
        let mut url =
            Url::parse(&request.redirect_uri).map_err(|e| StsError::internal(format!("redirect uri: {e}")))?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("code", code.expose());
            if let Some(s) = &request.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", &self.issuer(&tenant.name));
        }
        Ok(url.into())
    }
}
