//! The sign-in pages: username, then password (behind smart lockout), then MFA
//! (TOTP, a recovery code, or enrolment on first need), then back to the client or
//! on to approving a device. Every page works without JavaScript; every form
//! carries the flow's CSRF token and only works in the browser that started the
//! flow. Messages never tell whether an account exists.

mod device;
pub(crate) mod flow;
mod session;

use std::sync::Arc;

use axum::Extension;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use postern_keyring::SecretString;
use postern_store::{SigninEvent, SigninOutcome, StoreError, Tenant, User};
use serde::Deserialize;

use crate::Sts;
use crate::authenticate::{DirectoryProblem, PasswordVerdict};
use crate::client_ip::ClientIp;
use crate::conditional::{AccessRequest, AccessVerdict, detail_with};
use crate::error::{BUSY_HASHING, HASHING_RETRY_AFTER_SECS, StsError, retry_after};
use crate::mfa;
use crate::pages::{Field, Page};
use crate::password::MAX_PASSWORD_LEN;
pub(crate) use device::{device_entry, device_entry_submit};
use flow::{Flow, Purpose, Stage};

/// Wrong MFA codes allowed in one flow before it is abandoned.
const MAX_MFA_FAILURES: u32 = 5;
/// Longest sign-in name accepted.
const MAX_USERNAME_LEN: usize = 256;

const WRONG_CREDENTIALS: &str =
    "Your account or password is incorrect. If you don't remember your password, ask your administrator to reset it.";
const LOCKED: &str = "Your account is temporarily locked to prevent unauthorized use. Try again later.";
const BUSY: &str = "Another sign-in for this account is being checked. Try again in a moment.";
const UNAVAILABLE: &str = "We can't check your password right now: your organisation's sign-in service is unavailable. Try again in a few minutes.";
const TOO_MANY_SIGNINS: &str =
    "Too many sign-ins are in progress for your organisation right now. Try again in a moment.";
const EXPIRED: &str =
    "This sign-in page has expired or was opened in another browser. Go back to the application and start again.";

#[derive(Deserialize)]
pub(crate) struct FlowQuery {
    #[serde(default)]
    flow: String,
}

/// A post from any sign-in page.
#[derive(Deserialize)]
pub(crate) struct SigninForm {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    username: String,
    /// The name the password page was shown for, while the flow is stored at
    /// the username stage (the username's post is not saved: see
    /// [`Step::username`]).
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    code: String,
}

/// A 303 to `location` with extra cookies.
pub(crate) fn see_other(location: &str, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    let mut response = Redirect::to(location).into_response();
    *response.status_mut() = StatusCode::SEE_OTHER;
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    crate::pages::harden(&mut response);
    response
}

/// Adds `Set-Cookie` headers to a response.
pub(crate) fn with_cookies(mut response: Response, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn signin_url(sts: &Sts, tenant: &Tenant, flow_id: &str) -> String {
    format!("{}/signin?flow={flow_id}", sts.issuer(&tenant.name))
}

fn expired(tenant: &Tenant) -> Response {
    Page::error(StatusCode::BAD_REQUEST, "Sign-in expired", EXPIRED)
        .context(&tenant.display_name)
        .into_response()
}

/// The page for the flow's current stage.
fn stage_page(sts: &Sts, tenant: &Tenant, flow_id: &str, flow: &Flow, error: Option<String>) -> Result<Page, StsError> {
    let target = match &flow.purpose {
        Purpose::Authorize(r) => format!("to continue to {}", r.client_name),
        Purpose::Device {
            client_name, request, ..
        } => device::sign_in_target(client_name, request),
    };
    let action = format!("{}/signin", sts.issuer(&tenant.name));
    let base = |title: &str| {
        Page::new(title)
            .context(&tenant.display_name)
            .with_error(error.clone())
            .hidden("flow", flow_id)
            .hidden("csrf", &flow.csrf)
    };
    let who = flow.username.clone().unwrap_or_default();
    Ok(match flow.stage {
        Stage::Username => base("Sign in")
            .para(format!("Sign in {target}."))
            .form(action, "Next")
            .field(Field::new("username", "Username", "email").autocomplete("username").value(who).focus()),
        Stage::Password => base("Enter your password")
            .hidden("account", &who)
            .para(who)
            .form(action, "Sign in")
            .field(Field::new("password", "Password", "password").autocomplete("current-password").focus())
            .button("back", "Use another account"),
        Stage::Totp => base("Verify your identity")
            .para("Enter the 6-digit code from your authenticator app.")
            .form(action, "Verify")
            .field(Field::new("code", "Code", "text").autocomplete("one-time-code").numeric().focus())
            .button("recovery", "Use a recovery code"),
        Stage::Recovery => base("Use a recovery code")
            .para("Enter one of the recovery codes you saved when you set up your authenticator. Each works once.")
            .form(action, "Verify")
            .field(Field::new("code", "Recovery code", "text").focus())
            .button("totp", "Use my authenticator app"),
        Stage::Enrol => {
            let user_id = flow.user_id.clone().unwrap_or_default();
            let sealed = flow.pending_seed.clone().unwrap_or_default();
            let seed = mfa::open_pending_seed(sts, &user_id, &sealed)?;
            let material = mfa::enrolment(&seed, &format!("Postern ({})", tenant.display_name), &who)?;
            base("Set up your authenticator")
                .para("Your organisation requires a second step when you sign in. Scan this code with an authenticator app (or type the key below), then enter the 6-digit code it shows.")
                .svg(material.qr_svg)
                .codes(vec![material.secret_base32])
                .form(action, "Verify and continue")
                .field(Field::new("code", "Code", "text").autocomplete("one-time-code").numeric().focus())
        }
        Stage::Enrolled => base("Authenticator set up")
            .para("Your authenticator app is set up. You saw your recovery codes once; if you did not save them, ask your administrator to reset your MFA.")
            .form(action, "Continue"),
        Stage::DeviceConfirm => device::confirm_page(base, action, flow, &who, tenant),
    })
}

/// `GET /t/{tenant}/signin?flow=`: shows the flow's current page.
pub(crate) async fn show(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    Query(q): Query<FlowQuery>,
    headers: HeaderMap,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let Some(flow) = sts.load_flow(&tenant, &q.flow, &headers).await? else {
        return Ok(expired(&tenant));
    };
    Ok(stage_page(&sts, &tenant, &q.flow, &flow, None)?.into_response())
}

/// Starts a sign-in flow and answers with its first page at once (rather than
/// a redirect to `GET /signin?flow=`, which would read the flow back).
pub(crate) async fn start_page(
    sts: &Sts,
    tenant: &Tenant,
    purpose: Purpose,
    headers: &HeaderMap,
) -> Result<Response, StsError> {
    let (flow_id, cookie, flow) = sts.start_flow_with(tenant, purpose, headers, |_| {}).await?;
    Ok(with_cookies(
        stage_page(sts, tenant, &flow_id, &flow, None)?.into_response(),
        cookie,
    ))
}

/// `POST /t/{tenant}/signin`: advances the flow.
pub(crate) async fn submit(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let Some(mut flow) = sts.load_flow(&tenant, &form.flow, &headers).await? else {
        return Ok(expired(&tenant));
    };
    if !postern_keyring::constant_time_eq(form.csrf.as_bytes(), flow.csrf.as_bytes()) {
        tracing::warn!(tenant = %tenant.name, "sign-in form with a wrong CSRF token refused");
        return Ok(Page::error(StatusCode::FORBIDDEN, "Request refused", EXPIRED)
            .context(&tenant.display_name)
            .into_response());
    }
    let step = Step {
        sts: &sts,
        tenant: &tenant,
        flow_id: &form.flow,
        ip,
        wants_html: wants_html(&headers),
    };
    match flow.stage {
        Stage::Username if !form.account.is_empty() => step.named_password(&mut flow, &form).await,
        Stage::Username => step.username(&mut flow, &form).await,
        Stage::Password => step.password(&mut flow, &form).await,
        Stage::Totp | Stage::Recovery => step.second_factor(&mut flow, &form).await,
        Stage::Enrol => step.enrol(&mut flow, &form).await,
        Stage::Enrolled => step.complete(&mut flow).await,
        Stage::DeviceConfirm => step.device_decision(&mut flow, &form).await,
    }
}

/// One post's context.
struct Step<'a> {
    sts: &'a Sts,
    tenant: &'a Tenant,
    flow_id: &'a str,
    ip: ClientIp,
    /// A browser (it asks for HTML) rather than an API client.
    wants_html: bool,
}

/// Whether the client asks for pages: its `Accept` names `text/html`, as every
/// browser's navigation does. Anything else posting the sign-in form (a script,
/// `curl`) is an API client: where a browser is shown a page, it gets a status
/// and a JSON error it can act on.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

impl Step<'_> {
    /// The password was not checked because hashing is at capacity: 503 with
    /// `Retry-After`. A browser gets the password page again, saying to try
    /// again in a few seconds; an API client gets `temporarily_unavailable`.
    fn hashing_busy(&self, flow: &Flow) -> Result<Response, StsError> {
        let response = if self.wants_html {
            stage_page(self.sts, self.tenant, self.flow_id, flow, Some(BUSY_HASHING.to_owned()))?
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .into_response()
        } else {
            let body = serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": "password checks are at capacity; retry after the Retry-After delay",
                "retry_after": HASHING_RETRY_AFTER_SECS,
            });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        };
        Ok(retry_after(response, HASHING_RETRY_AFTER_SECS))
    }

    fn again(&self, flow: &Flow, error: &str) -> Result<Response, StsError> {
        Ok(
            stage_page(self.sts, self.tenant, self.flow_id, flow, Some(error.to_owned()))?
                .status(StatusCode::OK)
                .into_response(),
        )
    }

    async fn advance(&self, flow: &Flow) -> Result<Response, StsError> {
        self.sts.save_flow(self.flow_id, flow).await?;
        Ok(see_other(&signin_url(self.sts, self.tenant, self.flow_id), []))
    }

    async fn log(
        &self,
        flow: &Flow,
        user: Option<&User>,
        outcome: SigninOutcome,
        detail: &str,
    ) -> Result<(), StsError> {
        let client_id = Some(flow.client().0);
        if outcome == SigninOutcome::BadCredentials {
            self.sts.risk.failure_logged(&self.tenant.id);
        }
        self.sts
            .store
            .log_signin(&SigninEvent {
                id: String::new(),
                tenant_id: self.tenant.id.clone(),
                at: self.sts.now(),
                username: flow.username.clone().unwrap_or_default(),
                user_id: user.map(|u| u.id.clone()),
                client_id,
                ip: self.ip.to_string(),
                outcome,
                detail: detail.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Logs with the conditional access decision (policies and risk) in the detail.
    async fn log_access(
        &self,
        flow: &Flow,
        user: Option<&User>,
        outcome: SigninOutcome,
        note: &str,
        verdict: &AccessVerdict,
    ) -> Result<(), StsError> {
        self.log(flow, user, outcome, &detail_with(note, verdict)).await
    }

    /// The tenant's policies for this flow's sign-in as `user` (the account
    /// the name belongs to, if any).
    async fn evaluate(&self, flow: &Flow, username: &str, user: Option<&User>) -> Result<AccessVerdict, StsError> {
        let (client_id, client_kind) = flow.client();
        self.sts
            .evaluate_access(AccessRequest {
                tenant: self.tenant,
                username,
                user,
                client_id: Some(&client_id),
                app: None,
                ip: self.ip,
                client_kind,
                risk: flow.risk.clone(),
            })
            .await
    }

    /// Ends the flow refused by a policy: logged, and a page saying why.
    async fn refuse(
        &self,
        flow: &Flow,
        user: Option<&User>,
        note: &str,
        verdict: &AccessVerdict,
    ) -> Result<Response, StsError> {
        self.log_access(flow, user, SigninOutcome::Blocked, note, verdict)
            .await?;
        self.sts.end_flow(self.flow_id).await?;
        let reason = verdict.decision.reason().unwrap_or("blocked by an access policy");
        tracing::info!(tenant = %self.tenant.name, reason, "sign-in blocked by conditional access");
        Ok(Page::error(
            StatusCode::FORBIDDEN,
            "Access blocked",
            &format!("Your organisation's access policies do not allow this sign-in: it was {reason}. Contact your administrator if you think this is wrong."),
        )
        .context(&self.tenant.display_name)
        .into_response())
    }

    /// The username step answers with the password page at once and saves
    /// nothing: the page carries the name (`account`), and the flow, still at
    /// the username stage, takes it with the password ([`Step::named_password`]).
    /// A reload posting the username again shows the same page.
    async fn username(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        if !self.take_username(flow, &form.username) {
            return self.again(flow, "Enter your username, for example name@example.com.");
        }
        Ok(stage_page(self.sts, self.tenant, self.flow_id, flow, None)?.into_response())
    }

    /// The password page's post while the flow is at the username stage: the
    /// name it carries is taken as if posted on the username page (the same
    /// checks), then the password is checked. A flow stored at the password
    /// stage (its name fixed, e.g. a step-up of a signed-in user) never gets
    /// here: its own name is used and `account` is ignored.
    async fn named_password(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        if !self.take_username(flow, &form.account) {
            return self.again(flow, "Enter your username, for example name@example.com.");
        }
        self.password(flow, form).await
    }

    /// Sets the flow's name and moves it to the password stage, in memory;
    /// false for a name that cannot be one.
    fn take_username(&self, flow: &mut Flow, typed: &str) -> bool {
        let name = postern_store::normalize_username(typed);
        if name.is_empty() || name.len() > MAX_USERNAME_LEN || name.chars().any(char::is_control) {
            return false;
        }
        flow.username = Some(name);
        flow.stage = Stage::Password;
        true
    }

    async fn password(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        if form.action == "back" {
            flow.username = None;
            flow.stage = Stage::Username;
            return self.advance(flow).await;
        }
        let username = flow.username.clone().unwrap_or_default();
        if form.password.is_empty() || form.password.expose().len() > MAX_PASSWORD_LEN {
            return self.again(flow, "Enter your password.");
        }
        // Policies first: a blocked network, user or app never reaches a
        // password check (argon2) or an agent.
        // The account and its lockout counters in one read; the counters are
        // used only if the policies let the password be checked.
        let (claimed, lockout) = self.sts.account_with_lockout(self.tenant, &username, self.ip).await?;
        flow.risk = None;
        let before = self.evaluate(flow, &username, claimed.as_ref()).await?;
        if before.decision.blocked() {
            return self
                .refuse(flow, claimed.as_ref(), "before the password was checked", &before)
                .await;
        }
        flow.risk = Some(before.risk.clone());
        let verdict = self
            .sts
            .check_password_of(
                self.tenant,
                &username,
                claimed.clone(),
                lockout,
                &form.password,
                self.ip,
            )
            .await?;
        let user = match verdict {
            PasswordVerdict::Valid(user) => user,
            PasswordVerdict::LockedOut => {
                self.log_access(flow, None, SigninOutcome::LockedOut, "smart lockout", &before)
                    .await?;
                return self.again(flow, LOCKED);
            }
            PasswordVerdict::Busy => return self.again(flow, BUSY),
            PasswordVerdict::WrongCredentials { locked_now } => {
                self.log_access(
                    flow,
                    None,
                    SigninOutcome::BadCredentials,
                    "wrong username or password",
                    &before,
                )
                .await?;
                return self.again(flow, if locked_now { LOCKED } else { WRONG_CREDENTIALS });
            }
            PasswordVerdict::Disabled(user) => {
                self.log(flow, Some(&user), SigninOutcome::Disabled, "account disabled")
                    .await?;
                return self.again(flow, "Your account is disabled. Contact your administrator.");
            }
            PasswordVerdict::Directory(problem) => {
                let outcome = match problem {
                    DirectoryProblem::AccountDisabled | DirectoryProblem::AccountExpired => SigninOutcome::Disabled,
                    DirectoryProblem::AccountLocked => SigninOutcome::LockedOut,
                    DirectoryProblem::PasswordExpired | DirectoryProblem::MustChangePassword => {
                        SigninOutcome::Interrupted
                    }
                };
                self.log(flow, None, outcome, &format!("directory: {problem:?}"))
                    .await?;
                return self.again(flow, problem.message());
            }
            PasswordVerdict::Unavailable(reason) => {
                self.log(flow, None, SigninOutcome::Interrupted, &reason).await?;
                return self.again(flow, UNAVAILABLE);
            }
            PasswordVerdict::TooManySignins => {
                self.log(flow, None, SigninOutcome::Interrupted, "too many sign-ins in progress")
                    .await?;
                return self.again(flow, TOO_MANY_SIGNINS);
            }
            // Not logged: a flood of refusals must not become a flood of writes
            // (the pool logs refusals, at most every few seconds).
            PasswordVerdict::HashingBusy => return self.hashing_busy(flow),
        };
        // Again as the authenticated user, with groups just refreshed from
        // the directory, at the risk assessed before the password.
        let after = self.evaluate(flow, &username, Some(&user)).await?;
        if after.decision.blocked() {
            return self
                .refuse(flow, Some(&user), "after the password was checked", &after)
                .await;
        }
        flow.policy_mfa = after.decision.requires_mfa();
        flow.access = Some(after.log_record());
        flow.user_id = Some(user.id.clone());
        flow.auth_time = Some(self.sts.now());
        flow.add_amr(&["pwd"]);
        self.after_password(flow, &user, &after).await
    }

    /// Decides the second step: MFA if required (by the fixed rule or a
    /// policy), else done.
    /// `decided` is the decision just made for this user (reused when the
    /// sign-in completes in this same request).
    async fn after_password(
        &self,
        flow: &mut Flow,
        user: &User,
        decided: &AccessVerdict,
    ) -> Result<Response, StsError> {
        if !flow.policy_mfa && !self.sts.mfa_needed(self.tenant, user).await? {
            return self.complete_as(flow, user, Some(decided)).await;
        }
        if user.totp_sealed.is_some() {
            flow.stage = Stage::Totp;
        } else {
            let seed = mfa::new_seed()?;
            flow.pending_seed = Some(mfa::seal_pending_seed(self.sts, &user.id, &seed)?);
            flow.stage = Stage::Enrol;
        }
        self.advance(flow).await
    }

    async fn current_user(&self, flow: &Flow) -> Result<Option<User>, StsError> {
        let Some(id) = &flow.user_id else {
            return Ok(None);
        };
        match self.sts.store.user(&self.tenant.id, id).await {
            Ok(u) if u.enabled => Ok(Some(u)),
            Ok(_) | Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn mfa_failed(&self, flow: &mut Flow, user: &User) -> Result<Response, StsError> {
        flow.mfa_failures += 1;
        self.log(flow, Some(user), SigninOutcome::MfaFailed, "wrong verification code")
            .await?;
        if flow.mfa_failures >= MAX_MFA_FAILURES {
            self.sts.end_flow(self.flow_id).await?;
            return Ok(Page::error(
                StatusCode::FORBIDDEN,
                "Too many wrong codes",
                "This sign-in was stopped after too many wrong codes. Go back to the application and start again.",
            )
            .context(&self.tenant.display_name)
            .into_response());
        }
        self.sts.save_flow(self.flow_id, flow).await?;
        self.again(
            flow,
            "That code is not right. Authenticator codes change every 30 seconds and work once.",
        )
    }

    async fn second_factor(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        match form.action.as_str() {
            "recovery" => {
                flow.stage = Stage::Recovery;
                return self.advance(flow).await;
            }
            "totp" => {
                flow.stage = Stage::Totp;
                return self.advance(flow).await;
            }
            _ => {}
        }
        let Some(user) = self.current_user(flow).await? else {
            self.sts.end_flow(self.flow_id).await?;
            return Ok(expired(self.tenant));
        };
        let ok = if flow.stage == Stage::Totp {
            self.sts.verify_totp(&user, &form.code).await?
        } else {
            self.sts.use_recovery_code(&user, &form.code).await?
        };
        if !ok {
            return self.mfa_failed(flow, &user).await;
        }
        if flow.stage == Stage::Totp {
            flow.add_amr(&["otp", "mfa"]);
        } else {
            flow.add_amr(&["mfa"]);
            let left = self.sts.store.recovery_codes_left(&user.id).await?;
            tracing::info!(tenant = %self.tenant.name, user = %user.id, left, "recovery code used");
        }
        self.complete_as(flow, &user, None).await
    }

    async fn enrol(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        let Some(user) = self.current_user(flow).await? else {
            self.sts.end_flow(self.flow_id).await?;
            return Ok(expired(self.tenant));
        };
        let sealed = flow.pending_seed.clone().unwrap_or_default();
        let seed = mfa::open_pending_seed(self.sts, &user.id, &sealed)?;
        let Some(step) = mfa::matching_step(&seed, &form.code, self.sts.now())? else {
            return self.mfa_failed(flow, &user).await;
        };
        let codes = self.sts.complete_totp_enrolment(&user, &seed, step).await?;
        flow.pending_seed = None;
        flow.add_amr(&["otp", "mfa"]);
        flow.stage = Stage::Enrolled;
        self.sts.save_flow(self.flow_id, flow).await?;
        self.sts
            .store
            .append_audit(
                &postern_store::NewAuditEntry {
                    tenant_id: Some(self.tenant.id.clone()),
                    actor: format!("user:{}", user.id),
                    action: "mfa.enrol".into(),
                    target: format!("user:{}", user.id),
                    detail: serde_json::json!({ "method": "totp" }),
                },
                self.sts.now(),
            )
            .await?;
        let page = Page::new("Save your recovery codes")
            .context(&self.tenant.display_name)
            .para("If you lose your phone, each of these codes lets you sign in once. Save them somewhere safe now: they will not be shown again.")
            .codes(codes)
            .form(format!("{}/signin", self.sts.issuer(&self.tenant.name)), "I have saved these codes")
            .hidden("flow", self.flow_id)
            .hidden("csrf", &flow.csrf);
        Ok(page.into_response())
    }

    /// The flow's user (read again: the step is a page of its own) is fully
    /// authenticated: [`Step::complete_as`].
    async fn complete(&self, flow: &mut Flow) -> Result<Response, StsError> {
        let Some(user) = self.current_user(flow).await? else {
            self.sts.end_flow(self.flow_id).await?;
            return Ok(expired(self.tenant));
        };
        self.complete_as(flow, &user, None).await
    }

    /// `user`, read (enabled) by this same request, is fully authenticated:
    /// record the session, then hand over to the flow's purpose. `decided` is
    /// the conditional access decision this request has just made for the
    /// user and the flow's client, if it made one (not made again).
    async fn complete_as(
        &self,
        flow: &mut Flow,
        user: &User,
        decided: Option<&AccessVerdict>,
    ) -> Result<Response, StsError> {
        let now = self.sts.now();
        let amr = flow.amr.join(" ");
        let mfa_at = flow.amr.iter().any(|a| a == "mfa").then_some(now);
        let mut cookies = Vec::new();
        let session = match &flow.session_id {
            Some(id) => {
                let s = self.sts.store.session(&self.tenant.id, id, now).await?;
                if mfa_at.is_some() {
                    self.sts.store.mark_session_mfa(id, &amr, now).await?;
                }
                s
            }
            None => {
                let (s, cookie) = self
                    .sts
                    .start_session(self.tenant, &user.id, flow.auth_time.unwrap_or(now), mfa_at, &amr)
                    .await?;
                cookies.push(cookie);
                s
            }
        };
        let detail = match &flow.access {
            Some(access) => serde_json::json!({ "note": amr, "access": access }).to_string(),
            None => amr.clone(),
        };
        self.log(flow, Some(user), SigninOutcome::Success, &detail).await?;
        match flow.purpose.clone() {
            Purpose::Authorize(request) => {
                self.sts.end_flow(self.flow_id).await?;
                let auth_time = flow.auth_time.unwrap_or(session.auth_time);
                let issued = self
                    .sts
                    .complete_authorization(
                        self.tenant,
                        &request,
                        user,
                        crate::oidc::authorize::Authenticated {
                            session_id: Some(&session.id),
                            auth_time,
                            amr: &amr,
                            ip: self.ip,
                            single_sign_on: false,
                            decided,
                        },
                    )
                    .await?;
                match issued {
                    crate::oidc::authorize::Issued::Redirect(location) => Ok(see_other(&location, cookies)),
                    // The sign-in pages are not single sign-on: a policy's
                    // second factor was asked for above, so this is a denial.
                    crate::oidc::authorize::Issued::StepUp(reason) => Ok(with_cookies(
                        Page::error(StatusCode::FORBIDDEN, "Access blocked", &reason)
                            .context(&self.tenant.display_name)
                            .into_response(),
                        cookies,
                    )),
                }
            }
            Purpose::Device { .. } => {
                flow.stage = Stage::DeviceConfirm;
                flow.approval_needs = device::approval_needs(flow, user);
                flow.session_id = Some(session.id);
                self.sts.save_flow(self.flow_id, flow).await?;
                Ok(see_other(&signin_url(self.sts, self.tenant, self.flow_id), cookies))
            }
        }
    }
}

impl Sts {
    /// Whether `user` must complete MFA: the tenant requires it, the user requires
    /// it, the user has enrolled TOTP, or the user holds an administrative role.
    pub(crate) async fn mfa_needed(&self, tenant: &Tenant, user: &User) -> Result<bool, StsError> {
        Ok(tenant.require_mfa
            || user.mfa_required
            || user.totp_sealed.is_some()
            || !self.store.user_roles(&user.id).await?.is_empty())
    }

    /// Continues a flow for a user already signed in (SSO session) who still owes a
    /// second factor, or who only has to confirm a device.
    pub(crate) async fn resume_with_session(
        &self,
        tenant: &Tenant,
        purpose: Purpose,
        user: &User,
        session: &postern_store::Session,
        headers: &HeaderMap,
        policy_mfa: bool,
    ) -> Result<Response, StsError> {
        let mfa_owed = (policy_mfa || self.mfa_needed(tenant, user).await?) && session.mfa_at.is_none();
        let device = matches!(purpose, Purpose::Device { .. });
        let mut seed_to_seal = None;
        if mfa_owed && user.totp_sealed.is_none() {
            seed_to_seal = Some(mfa::seal_pending_seed(self, &user.id, &mfa::new_seed()?)?);
        }
        let (flow_id, cookie) = self
            .start_flow(tenant, purpose, headers, |f| {
                f.username = Some(user.username.clone());
                f.user_id = Some(user.id.clone());
                f.auth_time = Some(session.auth_time);
                f.amr = session
                    .amr
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                f.session_id = Some(session.id.clone());
                f.stage = match (mfa_owed, user.totp_sealed.is_some(), device) {
                    (true, true, _) => Stage::Totp,
                    (true, false, _) => Stage::Enrol,
                    (false, _, _) => Stage::DeviceConfirm,
                };
                f.pending_seed = seed_to_seal;
                f.policy_mfa = policy_mfa;
                f.approval_needs = device::approval_needs(f, user);
            })
            .await?;
        Ok(see_other(&signin_url(self, tenant, &flow_id), cookie))
    }
}
