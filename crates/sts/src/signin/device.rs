//! Approving a device (RFC 8628 §3.3) and saying what is approved (SEC-14). The
//! user enters the code the device shows, signs in (or is already signed in),
//! and sees a page that names the request: a command-line sign-in as them, or a
//! connector or agent registration by name, for which organisation, requested
//! from which address, when, and with which code. A registration gives the host
//! a certificate for the organisation, so approving one takes a fresh proof:
//! the password (through smart lockout, like any sign-in) and the
//! authenticator code, unless this same flow has just checked them. A browser
//! session alone never approves a registration in one click.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use postern_proto::ComponentKind;
use postern_store::{DeviceCode, NewAuditEntry, SigninOutcome, StoreError, Tenant, User};
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

use super::flow::{Flow, Purpose};
use super::{
    BUSY, LOCKED, SigninForm, Step, TOO_MANY_SIGNINS, UNAVAILABLE, WRONG_CREDENTIALS, expired, see_other, signin_url,
};
use crate::Sts;
use crate::authenticate::PasswordVerdict;
use crate::client_ip::ClientIp;
use crate::conditional::AccessRequest;
use crate::error::StsError;
use crate::pages::{Field, Page};
use crate::password::MAX_PASSWORD_LEN;

/// What a device asks for, as the approval page names it. Recorded by the
/// device authorization endpoint; shown, never trusted as proof of anything.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct DeviceRequest {
    /// The kind a registration is for; `None` for a command-line sign-in.
    pub registration: Option<ComponentKind>,
    /// The component a registration is for.
    pub component_name: Option<String>,
    /// The address the request came from.
    pub requested_from: String,
    /// When it was requested (Unix seconds).
    pub requested_at: i64,
    /// The code the device shows, as it shows it.
    pub user_code: String,
}

impl DeviceRequest {
    fn from_device_code(device: &DeviceCode, user_code: &str) -> Self {
        Self {
            registration: crate::registration::registration_kind(&device.scope),
            component_name: device.component_name.clone(),
            requested_from: device.requested_from.clone(),
            requested_at: device.created_at.secs(),
            user_code: user_code.to_owned(),
        }
    }

    /// "requested from ADDRESS at TIME, code CODE".
    fn provenance(&self) -> String {
        let from = if self.requested_from.is_empty() {
            "an unknown address"
        } else {
            &self.requested_from
        };
        format!(
            "requested from {from} at {}, code {}",
            utc_minute(UnixTime::from_secs(self.requested_at)),
            self.user_code
        )
    }
}

/// A proof an approval still needs from the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Proof {
    /// The account's password, again.
    Password,
    /// A code from the authenticator app.
    Totp,
}

/// `2025-06-01 14:05 UTC`.
fn utc_minute(t: UnixTime) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(t.secs())
        .ok()
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| format!("{} (Unix time)", t.secs()))
}

/// What approving `flow`'s request still needs from `user`: nothing for a
/// command-line sign-in; for a registration, the password unless this flow
/// checked it, and the authenticator code (if the user has one) unless this
/// flow checked a second factor. A flow resumed from a session has checked
/// neither.
pub(super) fn approval_needs(flow: &Flow, user: &User) -> Vec<Proof> {
    let registration = matches!(&flow.purpose, Purpose::Device { request, .. } if request.registration.is_some());
    let mut needs = Vec::new();
    if registration && !flow.proved("pwd") {
        needs.push(Proof::Password);
    }
    if registration && user.totp_sealed.is_some() && !flow.proved("mfa") {
        needs.push(Proof::Totp);
    }
    needs
}

/// The "Sign in …" sentence's end on the first pages of a device flow.
pub(super) fn sign_in_target(client_name: &str, request: &DeviceRequest) -> String {
    match request.registration {
        Some(kind) => format!("to approve a {kind} registration"),
        None => format!("to approve {client_name} on your device"),
    }
}

/// The approval page: what is asked, by whom, for which organisation, from
/// where; and, for a registration, the proofs still owed.
pub(super) fn confirm_page(
    base: impl Fn(&str) -> Page,
    action: String,
    flow: &Flow,
    who: &str,
    tenant: &Tenant,
) -> Page {
    let (client_name, request) = match &flow.purpose {
        Purpose::Device {
            client_name, request, ..
        } => (client_name.clone(), request.clone()),
        Purpose::Authorize(r) => (r.client_name.clone(), DeviceRequest::default()),
    };
    let organisation = format!("{} ({})", tenant.display_name, tenant.name);
    let Some(kind) = request.registration else {
        return base("Approve sign-in on a device")
            .para(format!(
                "{client_name} on another device asks to sign in as {who} to organisation {organisation} ({}).",
                request.provenance()
            ))
            .para("Only approve if you started this yourself just now, on a device you trust.")
            .form(action, "Approve")
            .button("deny", "Deny");
    };
    let name = request.component_name.clone().unwrap_or_default();
    let grants = match kind {
        ComponentKind::Connector => "carry requests to this organisation's published apps",
        ComponentKind::Agent => "check the passwords of this organisation's users",
    };
    let mut page = base(&format!("Approve a {kind} registration"))
        .para(format!(
            "Register a {kind} named {name} for organisation {organisation} ({}).",
            request.provenance()
        ))
        .para(format!(
            "The host that asks receives a certificate that lets it {grants}. Only approve if you are installing \
             it yourself, right now, and its address and code match."
        ));
    if !flow.approval_needs.is_empty() {
        page = page.para(match flow.approval_needs.as_slice() {
            [Proof::Password] => "To approve, enter your password again.",
            [Proof::Totp] => "To approve, enter a code from your authenticator app.",
            _ => "To approve, enter your password again and a code from your authenticator app.",
        });
    }
    page = page.form(action, "Approve registration");
    for (i, proof) in flow.approval_needs.iter().enumerate() {
        let field = match proof {
            Proof::Password => Field::new("password", "Password", "password").autocomplete("current-password"),
            Proof::Totp => Field::new("code", "Authenticator code", "text")
                .autocomplete("one-time-code")
                .numeric(),
        };
        page = page.field(if i == 0 { field.focus() } else { field });
    }
    page.button("deny", "Deny")
}

impl Step<'_> {
    /// The user's answer on the approval page. Approving a registration first
    /// takes the proofs it still needs; a wrong one leaves the request pending.
    pub(super) async fn device_decision(&self, flow: &mut Flow, form: &SigninForm) -> Result<Response, StsError> {
        let Purpose::Device {
            device_code_digest,
            client_name,
            request,
        } = flow.purpose.clone()
        else {
            return Ok(expired(self.tenant));
        };
        let Some(user) = self.current_user(flow).await? else {
            self.sts.end_flow(self.flow_id).await?;
            return Ok(expired(self.tenant));
        };
        let approve = form.action != "deny";
        if approve && let Some(refused) = self.reprove(flow, &user, form).await? {
            return Ok(refused);
        }
        let digest = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &device_code_digest)
            .map_err(|_| StsError::internal("device digest encoding"))?;
        let now = self.sts.now();
        let amr = flow.amr.join(" ");
        let approved_by = approve.then(|| (user.id.as_str(), flow.auth_time.unwrap_or(now), amr.as_str()));
        let decided = self.sts.store.decide_device_code(&digest, approved_by, now).await?;
        self.sts.end_flow(self.flow_id).await?;
        let page = match (decided, approve, request.registration) {
            (false, _, _) => Page::error(
                StatusCode::GONE,
                "Request expired",
                "This device request has expired or was already answered. Start again on your device.",
            ),
            (true, false, _) => Page::new("Request denied").para("Nothing was approved. You can close this window."),
            (true, true, None) => {
                tracing::info!(tenant = %self.tenant.name, user = %user.id, client = %client_name, "device sign-in approved");
                Page::new("Device approved").para(format!(
                    "{client_name} is now signed in. You can close this window and return to your device."
                ))
            }
            (true, true, Some(kind)) => self.registration_approved(&user, kind, &request).await?,
        };
        Ok(page.context(&self.tenant.display_name).into_response())
    }

    /// Records an approved registration in the audit log; the page that says so.
    async fn registration_approved(
        &self,
        user: &User,
        kind: ComponentKind,
        request: &DeviceRequest,
    ) -> Result<Page, StsError> {
        let name = request.component_name.clone().unwrap_or_default();
        tracing::info!(tenant = %self.tenant.name, user = %user.id, %kind, component = %name,
            from = %request.requested_from, "registration approved");
        self.sts
            .store
            .append_audit(
                &NewAuditEntry {
                    tenant_id: Some(self.tenant.id.clone()),
                    actor: format!("user:{}", user.id),
                    action: format!("{kind}.approve_registration"),
                    target: format!("{kind}-name:{name}"),
                    detail: serde_json::json!({
                        "name": name,
                        "requested_from": request.requested_from,
                        "approved_from": self.ip.to_string(),
                    }),
                },
                self.sts.now(),
            )
            .await?;
        Ok(Page::new("Registration approved").para(format!(
            "The {kind} {name} may now register with organisation {}. You can close this window.",
            self.tenant.display_name
        )))
    }

    /// Checks the proofs the approval still needs. `Some(page)` when one is
    /// missing or wrong.
    async fn reprove(&self, flow: &mut Flow, user: &User, form: &SigninForm) -> Result<Option<Response>, StsError> {
        if flow.approval_needs.contains(&Proof::Password)
            && let Some(refused) = self.recheck_password(flow, user, form).await?
        {
            return Ok(Some(refused));
        }
        if flow.approval_needs.contains(&Proof::Totp) {
            let code = form.code.trim();
            if code.is_empty() {
                return self
                    .again(flow, "Enter the code from your authenticator app.")
                    .map(Some);
            }
            if !self.sts.verify_totp(user, code).await? {
                return self.mfa_failed(flow, user).await.map(Some);
            }
        }
        Ok(None)
    }

    /// The password again, through smart lockout as at sign-in. `Some(page)`
    /// when it is missing or not accepted.
    async fn recheck_password(
        &self,
        flow: &Flow,
        user: &User,
        form: &SigninForm,
    ) -> Result<Option<Response>, StsError> {
        if form.password.is_empty() || form.password.expose().len() > MAX_PASSWORD_LEN {
            return self
                .again(flow, "Enter your password to approve this registration.")
                .map(Some);
        }
        let username = flow.username.clone().unwrap_or_else(|| user.username.clone());
        let verdict = self
            .sts
            .check_password(self.tenant, &username, &form.password, self.ip)
            .await?;
        let (outcome, message) = match verdict {
            PasswordVerdict::Valid(u) if u.id == user.id => return Ok(None),
            PasswordVerdict::Valid(_) => (SigninOutcome::BadCredentials, WRONG_CREDENTIALS),
            PasswordVerdict::WrongCredentials { locked_now } => (
                SigninOutcome::BadCredentials,
                if locked_now { LOCKED } else { WRONG_CREDENTIALS },
            ),
            PasswordVerdict::LockedOut => (SigninOutcome::LockedOut, LOCKED),
            PasswordVerdict::Busy => return self.again(flow, BUSY).map(Some),
            PasswordVerdict::HashingBusy => return self.hashing_busy(flow).map(Some),
            PasswordVerdict::Disabled(_) => (
                SigninOutcome::Disabled,
                "Your account is disabled. Contact your administrator.",
            ),
            PasswordVerdict::Directory(problem) => (SigninOutcome::Interrupted, problem.message()),
            PasswordVerdict::Unavailable(_) => (SigninOutcome::Interrupted, UNAVAILABLE),
            PasswordVerdict::TooManySignins => (SigninOutcome::Interrupted, TOO_MANY_SIGNINS),
        };
        self.log(flow, Some(user), outcome, "password again, to approve a registration")
            .await?;
        self.again(flow, message).map(Some)
    }
}

// ---- device verification entry (RFC 8628 §3.3) --------------------------------

#[derive(Deserialize)]
pub(crate) struct DeviceEntryQuery {
    #[serde(default)]
    user_code: String,
}

#[derive(Deserialize)]
pub(crate) struct DeviceEntryForm {
    #[serde(default)]
    user_code: String,
}

/// `GET /t/{tenant}/device`: asks for the code shown on the device.
pub(crate) async fn device_entry(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    Query(q): Query<DeviceEntryQuery>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    Ok(device_entry_page(&sts, &tenant, &q.user_code, None).into_response())
}

fn device_entry_page(sts: &Sts, tenant: &Tenant, code: &str, error: Option<&str>) -> Page {
    Page::new("Sign in on a device")
        .context(&tenant.display_name)
        .para("Enter the code your device shows.")
        .with_error(error.map(str::to_owned))
        .form(format!("{}/device", sts.issuer(&tenant.name)), "Continue")
        .field(
            Field::new("user_code", "Code", "text")
                .value(code.chars().take(16).collect::<String>())
                .focus(),
        )
}

/// `POST /t/{tenant}/device`: finds the device request and starts a sign-in flow
/// for it. The code is not trusted as proof of anything: the user must still sign
/// in and then explicitly approve the request the page names.
pub(crate) async fn device_entry_submit(
    State(sts): State<Arc<Sts>>,
    Path(tenant): Path<String>,
    ip: Option<Extension<ClientIp>>,
    headers: HeaderMap,
    Form(form): Form<DeviceEntryForm>,
) -> Result<Response, StsError> {
    let tenant = sts.tenant_named(&tenant).await?;
    let normalized = crate::oidc::device::normalize_user_code(&form.user_code);
    let found = match sts
        .store
        .device_code_by_user_code(&tenant.id, &postern_keyring::digest(&normalized), sts.now())
        .await
    {
        Ok(d) => Some(d),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(device) = found else {
        return Ok(device_entry_page(
            &sts,
            &tenant,
            &form.user_code,
            Some("That code is not valid or has expired. Check the code on your device."),
        )
        .status(StatusCode::BAD_REQUEST)
        .into_response());
    };
    let client_name = match sts.store.client(&tenant.id, &device.client_id).await {
        Ok(c) => c.name,
        Err(StoreError::NotFound) => device.client_id.clone(),
        Err(e) => return Err(e.into()),
    };
    let shown_code = match normalized.split_at_checked(4) {
        Some((a, b)) => format!("{a}-{b}"),
        None => normalized.clone(),
    };
    let purpose = Purpose::Device {
        device_code_digest: base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &device.device_code_digest,
        ),
        client_name,
        request: DeviceRequest::from_device_code(&device, &shown_code),
    };
    if let Some(session) = sts.current_session(&tenant, &headers).await?
        && let Ok(user) = sts.store.user(&tenant.id, &session.user_id).await
        && user.enabled
    {
        let ip = crate::oidc::authorize::client_ip(ip);
        let verdict = sts
            .evaluate_access(AccessRequest {
                tenant: &tenant,
                username: &user.username,
                user: Some(&user),
                client_id: Some(&device.client_id),
                app: None,
                ip,
                client_kind: postern_policy::ClientKind::DeviceFlow,
                risk: None,
            })
            .await?;
        let outcome = Sts::outcome_of(&verdict, session.mfa_at.is_some());
        sts.log_decision(
            &tenant,
            &user,
            Some(&device.client_id),
            ip,
            outcome,
            "device approval",
            &verdict,
        )
        .await?;
        if verdict.decision.blocked() {
            let reason = verdict.decision.reason().unwrap_or("blocked by an access policy");
            return Ok(Page::error(
                StatusCode::FORBIDDEN,
                "Access blocked",
                &format!("Your organisation's access policies do not allow this sign-in: it was {reason}."),
            )
            .context(&tenant.display_name)
            .into_response());
        }
        return sts
            .resume_with_session(
                &tenant,
                purpose,
                &user,
                &session,
                &headers,
                verdict.decision.requires_mfa(),
            )
            .await;
    }
    let (flow_id, cookie) = sts.start_flow(&tenant, purpose, &headers, |_| {}).await?;
    Ok(see_other(&signin_url(&sts, &tenant, &flow_id), cookie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provenance_names_address_time_and_code() {
        let request = DeviceRequest {
            registration: Some(ComponentKind::Connector),
            component_name: Some("gw-1".into()),
            requested_from: "203.0.113.9".into(),
            requested_at: 1_750_000_000,
            user_code: "BCDF-GHJK".into(),
        };
        assert_eq!(
            request.provenance(),
            "requested from 203.0.113.9 at 2025-06-15 15:06 UTC, code BCDF-GHJK"
        );
        let unknown = DeviceRequest {
            requested_from: String::new(),
            ..request
        };
        assert!(unknown.provenance().starts_with("requested from an unknown address"));
    }
}
