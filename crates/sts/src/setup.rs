//! First-run setup. While no tenant exists, `postern serve` prints a one-time setup
//! URL (valid for `setup_code_ttl`). Its page creates the operator's tenant and its
//! global administrator, who enrols TOTP before anything is created. The code is
//! consumed in the same transaction that creates the tenant, so it works once.
//!
//! Between the two steps, the pending request (password already hashed, TOTP seed,
//! setup code) travels in a hidden field sealed under the KEK; the browser can
//! neither read nor alter it.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_keyring::SecretString;
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Sts;
use crate::error::StsError;
use crate::mfa;
use crate::pages::{Field, Page};
use crate::tenants::{NewTenantRequest, TenantCreateError, ValidatedTenant};

const SEAL_CONTEXT: &str = "setup-pending";

/// A freshly made first-run code and the URL that uses it.
pub struct SetupCode {
    /// The code itself (shown once, on the console).
    pub code: SecretString,
    /// The URL to open.
    pub url: String,
    /// When it stops working.
    pub expires_at: UnixTime,
}

impl std::fmt::Debug for SetupCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupCode")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Pending {
    tenant: ValidatedTenant,
    seed: String,
    code: String,
    expires_at: UnixTime,
}

#[derive(Deserialize)]
pub(crate) struct SetupQuery {
    #[serde(default)]
    code: String,
}

#[derive(Deserialize)]
pub(crate) struct SetupForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    pending: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: SecretString,
    #[serde(default)]
    password_again: SecretString,
    #[serde(default)]
    totp: String,
}

impl Sts {
    /// While no tenant exists, makes a new one-time setup code; `None` once setup
    /// is done.
    pub async fn ensure_setup_code(&self) -> Result<Option<SetupCode>, StsError> {
        if self.store.has_tenants().await? {
            return Ok(None);
        }
        let code = postern_keyring::random_token()?;
        let now = self.now();
        let expires_at = now + self.config.setup_code_ttl;
        self.store
            .create_setup_code(&postern_keyring::digest(code.expose()), now, expires_at)
            .await?;
        let url = format!("{}/setup?code={}", self.base, code.expose());
        Ok(Some(SetupCode { code, url, expires_at }))
    }

    async fn setup_code_usable(&self, code: &str) -> Result<bool, StsError> {
        if code.is_empty() || code.len() > 64 || self.store.has_tenants().await? {
            return Ok(false);
        }
        Ok(self
            .store
            .setup_code_valid(&postern_keyring::digest(code), self.now())
            .await?)
    }
}

fn unusable() -> Response {
    Page::error(
        StatusCode::NOT_FOUND,
        "Setup link not valid",
        "This setup link has expired, was already used, or setup is complete. If no organisation exists yet, restart `postern serve` to print a new link.",
    )
    .into_response()
}

fn details_page(code: &str, form: Option<&SetupForm>, errors: Vec<String>) -> Page {
    let v = |f: fn(&SetupForm) -> &String| form.map(|x| f(x).clone()).unwrap_or_default();
    let mut page = Page::new("Set up Postern")
        .context("First run")
        .para("Create the operator organisation and its first global administrator. You will set up an authenticator app for the administrator next.")
        .form("/setup", "Next")
        .hidden("code", code)
        .field(Field::new("display_name", "Organisation name", "text").value(v(|f| &f.display_name)).focus())
        .field(Field::new("name", "Short name (used in URLs, e.g. acme)", "text").value(v(|f| &f.name)))
        .field(Field::new("domain", "Your domain (e.g. acme.com)", "text").value(v(|f| &f.domain)))
        .field(Field::new("username", "Administrator username (e.g. admin@acme.com)", "email").autocomplete("username").value(v(|f| &f.username)))
        .field(Field::new("password", "Administrator password (12 characters or more)", "password").autocomplete("new-password"))
        .field(Field::new("password_again", "Password again", "password").autocomplete("new-password"));
    if !errors.is_empty() {
        page = page.with_error(Some(errors.join(" ")));
    }
    page
}

fn totp_page(pending_sealed: &str, pending: &Pending, error: Option<&str>) -> Result<Page, StsError> {
    let seed = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&pending.seed)
            .map_err(|_| StsError::internal("pending seed encoding"))?,
    );
    let material = mfa::enrolment(
        &seed,
        &format!("Postern ({})", pending.tenant.name()),
        pending.tenant.username(),
    )?;
    Ok(Page::new("Set up the administrator's authenticator")
        .context("First run")
        .with_error(error.map(str::to_owned))
        .para("Administrators always sign in with a second step. Scan this code with an authenticator app (or type the key), then enter the 6-digit code it shows.")
        .svg(material.qr_svg)
        .codes(vec![material.secret_base32])
        .form("/setup", "Create organisation")
        .hidden("pending", pending_sealed)
        .field(Field::new("totp", "Code", "text").autocomplete("one-time-code").numeric().focus()))
}

/// `GET /setup?code=`.
pub(crate) async fn show(State(sts): State<Arc<Sts>>, Query(q): Query<SetupQuery>) -> Result<Response, StsError> {
    if !sts.setup_code_usable(&q.code).await? {
        return Ok(unusable());
    }
    Ok(details_page(&q.code, None, Vec::new()).into_response())
}

/// `POST /setup`: the details step, then the TOTP step.
pub(crate) async fn submit(State(sts): State<Arc<Sts>>, Form(form): Form<SetupForm>) -> Result<Response, StsError> {
    if form.pending.is_empty() {
        details(&sts, form).await
    } else {
        confirm(&sts, form).await
    }
}

async fn details(sts: &Sts, form: SetupForm) -> Result<Response, StsError> {
    if !sts.setup_code_usable(&form.code).await? {
        return Ok(unusable());
    }
    if form.password != form.password_again {
        return Ok(
            details_page(&form.code, Some(&form), vec!["The passwords do not match.".into()])
                .status(StatusCode::BAD_REQUEST)
                .into_response(),
        );
    }
    let request = NewTenantRequest {
        name: form.name.clone(),
        display_name: form.display_name.clone(),
        domain: form.domain.clone(),
        admin_username: form.username.clone(),
        admin_password: form.password.clone(),
        is_system: true,
        admin_totp: None,
    };
    let validated = match sts.validate_tenant(&request).await {
        Ok(v) => v,
        Err(TenantCreateError::Invalid(problems)) => {
            let problems = problems.iter().map(ToString::to_string).collect();
            return Ok(details_page(&form.code, Some(&form), problems)
                .status(StatusCode::BAD_REQUEST)
                .into_response());
        }
        Err(other) => return Err(StsError::internal(other.to_string())),
    };
    let seed = mfa::new_seed()?;
    let pending = Pending {
        tenant: validated,
        seed: URL_SAFE_NO_PAD.encode(seed.as_slice()),
        code: form.code.clone(),
        expires_at: sts.now() + sts.config.flow_ttl,
    };
    let json = Zeroizing::new(serde_json::to_vec(&pending).map_err(|e| StsError::internal(e.to_string()))?);
    let sealed = URL_SAFE_NO_PAD.encode(sts.keyring.seal(SEAL_CONTEXT, &json)?);
    Ok(totp_page(&sealed, &pending, None)?.into_response())
}

async fn confirm(sts: &Sts, form: SetupForm) -> Result<Response, StsError> {
    let opened = URL_SAFE_NO_PAD
        .decode(&form.pending)
        .ok()
        .and_then(|bytes| sts.keyring.open(SEAL_CONTEXT, &bytes).ok())
        .and_then(|json| serde_json::from_slice::<Pending>(&json).ok());
    let Some(pending) = opened.filter(|p| p.expires_at > sts.now()) else {
        return Ok(unusable());
    };
    if !sts.setup_code_usable(&pending.code).await? {
        return Ok(unusable());
    }
    let seed = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(&pending.seed)
            .map_err(|_| StsError::internal("pending seed encoding"))?,
    );
    let Some(step) = mfa::matching_step(&seed, &form.totp, sts.now())? else {
        return Ok(totp_page(
            &form.pending,
            &pending,
            Some("That code is not right. Check the time on your phone and try the next code."),
        )?
        .status(StatusCode::BAD_REQUEST)
        .into_response());
    };
    let code_digest = postern_keyring::digest(&pending.code);
    let result = sts
        .create_validated_tenant(pending.tenant, Some((seed, step)), Some(&code_digest), "setup")
        .await;
    let (tenant, user, codes) = match result {
        Ok(created) => created,
        Err(TenantCreateError::SetupCodeUsed) => return Ok(unusable()),
        Err(TenantCreateError::Conflict(msg)) => {
            return Ok(Page::error(StatusCode::CONFLICT, "Could not create the organisation", &msg).into_response());
        }
        Err(TenantCreateError::Invalid(p)) => {
            let problems: Vec<String> = p.iter().map(ToString::to_string).collect();
            return Err(StsError::internal(problems.join("; ")));
        }
        Err(TenantCreateError::Sts(e)) => return Err(e),
    };
    let issuer = sts.issuer(&tenant.name);
    Ok(Page::new("Your organisation is ready")
        .context(&tenant.display_name)
        .para(format!("{} is the global administrator of {}.", user.username, tenant.display_name))
        .para("Save these recovery codes now. Each lets the administrator sign in once without the authenticator app; they will not be shown again.")
        .codes(codes)
        .para(format!(
            "Next: on your workstation run `postern admin login --server {} --tenant {}`.",
            sts.base, tenant.name
        ))
        .para(format!("OpenID Connect issuer of this organisation: {issuer}"))
        .into_response())
}
