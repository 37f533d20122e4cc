//! Enrolment (CON-1, PTA-2, PTA-3): `POST /v1/register`, the one call without a
//! client certificate. The bearer credential is either a registration
//! credential (what the device flow yields when an administrator approves this
//! registration: one kind, one component name, minutes of life; the admin must
//! still hold the role the kind needs) or a registration token minted through
//! the admin API. An administrator's access token is refused: the registering
//! host never holds one (SEC-14). When the request names a tenant, a credential
//! of another tenant is refused rather than enrolling there. The service
//! verifies the CSR, builds the certificate itself (subject = tenant ID,
//! component ID bound in) and records the component. The private key never
//! leaves the host: only the CSR (public key) arrives here.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use postern_pki::ClientCertRequest;
use postern_proto::registration::{REGISTRATION_TOKEN_PREFIX, RegisterRequest, RegisterResponse};
use postern_proto::{ComponentKind, PROTOCOL_VERSION, check_protocol};
use postern_store::{NewAuditEntry, NewComponent, Role, StoreError, Tenant};
use postern_sts::TokenError;
use serde_json::json;

use crate::Control;
use crate::error::ControlError;

/// Longest host name accepted.
const MAX_NAME_LEN: usize = 128;
/// Longest version string accepted.
const MAX_VERSION_LEN: usize = 64;

/// Who registers: a tenant and an actor string for the audit log.
struct Registrar {
    tenant: Tenant,
    actor: String,
    group: Option<String>,
    /// A single-use approval to spend once everything else is checked: its
    /// token ID and expiry.
    single_use: Option<(String, postern_time::UnixTime)>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// "a connector", "an agent".
fn with_article(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Connector => "a connector",
        ComponentKind::Agent => "an agent",
    }
}

/// Refuses a credential of `actual` when the request meant another tenant.
fn check_tenant(request: &RegisterRequest, actual: &Tenant, credential: &str) -> Result<(), ControlError> {
    match &request.tenant {
        Some(meant) if *meant != actual.name => Err(ControlError::Forbidden(format!(
            "this {credential} belongs to organisation {:?}, not {meant:?} (--tenant {meant}): nothing was \
             registered; use a {credential} of {meant:?}, or leave out --tenant to register with {:?}",
            actual.name, actual.name
        ))),
        _ => Ok(()),
    }
}

/// Whether the user `id` of `tenant` is enabled and may register a `kind`.
async fn may_register(control: &Control, tenant: &Tenant, id: &str, kind: ComponentKind) -> Result<bool, ControlError> {
    match control.store.user(&tenant.id, id).await {
        Ok(u) if u.enabled => {
            let needed = Role::to_register(kind);
            Ok(control
                .store
                .user_roles(&u.id)
                .await?
                .iter()
                .any(|r| r.satisfies(needed)))
        }
        Ok(_) | Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn authenticate(control: &Control, token: &str, request: &RegisterRequest) -> Result<Registrar, ControlError> {
    if token.starts_with(REGISTRATION_TOKEN_PREFIX) {
        registration_token(control, token, request).await
    } else {
        approved_registration(control, token, request).await
    }
}

/// A registration token minted through the admin API (`ptr_…`).
async fn registration_token(
    control: &Control,
    token: &str,
    request: &RegisterRequest,
) -> Result<Registrar, ControlError> {
    let kind = request.kind;
    let digest = postern_keyring::digest(token);
    let unusable = || ControlError::Unauthenticated("the registration token is unknown, used up or expired".into());
    // The tenant first, without using the token: a request for another tenant
    // leaves it intact.
    let tenant_id = control
        .store
        .registration_token_tenant(&digest, control.now())
        .await?
        .ok_or_else(unusable)?;
    check_tenant(request, &control.store.tenant(&tenant_id).await?, "registration token")?;
    let grant = control
        .store
        .consume_registration_token(&digest, control.now())
        .await?
        .ok_or_else(unusable)?;
    if grant.kind != kind {
        return Err(ControlError::Forbidden(format!(
            "this registration token is for a {}, not a {kind}",
            grant.kind
        )));
    }
    let tenant = control.store.tenant(&grant.tenant_id).await?;
    // A token carries its creator's authority: it stops working when the
    // creator is disabled, deleted or loses the role.
    let creator_ok = match grant.created_by.strip_prefix("user:") {
        Some(id) => may_register(control, &tenant, id, kind).await?,
        None => false,
    };
    if !creator_ok {
        return Err(ControlError::Forbidden(format!(
            "the administrator who created this registration token may no longer register a {kind}"
        )));
    }
    let prefix: String = token.chars().take(REGISTRATION_TOKEN_PREFIX.len() + 6).collect();
    Ok(Registrar {
        tenant,
        actor: format!("token:{prefix}… (minted by {})", grant.created_by),
        group: grant.group_id,
        single_use: None,
    })
}

/// A registration credential from the device flow: the kind and the component
/// name must be the ones the administrator approved, and the administrator
/// must still hold the role.
async fn approved_registration(
    control: &Control,
    token: &str,
    request: &RegisterRequest,
) -> Result<Registrar, ControlError> {
    let kind = request.kind;
    let (tenant, claims) = control.sts.verify_registration_token(token).await?.map_err(|e| {
        ControlError::Unauthenticated(match e {
            TokenError::WrongAudience => "this credential is not a registration approval (an administrator's \
                 access token is not accepted here): run the registration again and approve it in the browser, \
                 or use a registration token"
                .to_owned(),
            e => format!("the registration approval was refused: {e}; run the registration again"),
        })
    })?;
    check_tenant(request, &tenant, "registration approval")?;
    if claims.kind() != Some(kind) {
        let approved = claims.kind().map_or("another component", with_article);
        return Err(ControlError::Forbidden(format!(
            "this approval is for registering {approved}, not {}",
            with_article(kind)
        )));
    }
    if claims.component_name != request.name {
        return Err(ControlError::Forbidden(format!(
            "this approval is for a {kind} named {:?}, not {:?}",
            claims.component_name, request.name
        )));
    }
    if !may_register(control, &tenant, &claims.sub, kind).await? {
        let needed = Role::to_register(kind);
        tracing::warn!(tenant = %tenant.name, user = %claims.sub, %kind, "registration refused: role missing");
        return Err(ControlError::Forbidden(format!(
            "the approving account may not register a {kind}: it needs the {} role or global administrator",
            needed.as_str()
        )));
    }
    Ok(Registrar {
        tenant,
        actor: format!("user:{}", claims.sub),
        group: None,
        single_use: Some((claims.jti.clone(), postern_time::UnixTime::from_secs(claims.exp))),
    })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ControlError> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ControlError::BadRequest(format!(
            "{field} must be 1 to {max} printable characters"
        )));
    }
    Ok(())
}

/// `POST /v1/register`.
pub(crate) async fn register(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    Json(request): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ControlError> {
    check_protocol(request.protocol)?;
    let token = bearer(&headers).ok_or_else(|| {
        ControlError::Unauthenticated(
            "have an administrator approve the registration, or give a registration token".into(),
        )
    })?;
    let registrar = authenticate(&control, token, &request).await?;
    check_text("name", &request.name, MAX_NAME_LEN)?;
    check_text("version", &request.version, MAX_VERSION_LEN)?;
    let tenant = registrar.tenant;
    let now = control.now();

    let group = match request.kind {
        ComponentKind::Agent => {
            if request.group.is_some() {
                return Err(ControlError::BadRequest(
                    "agents do not belong to connector groups".into(),
                ));
            }
            None
        }
        ComponentKind::Connector => Some(match (&request.group, &registrar.group) {
            (Some(name), _) => control
                .store
                .connector_group_by_name(&tenant.id, name)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound => ControlError::BadRequest(format!("there is no connector group {name:?}")),
                    other => other.into(),
                })?,
            (None, Some(id)) => control.store.connector_group(&tenant.id, id).await?,
            (None, None) => control.store.default_connector_group(&tenant.id, now).await?,
        }),
    };

    let component_id = uuid::Uuid::new_v4().to_string();
    let ca = control.authorities.for_component(request.kind);
    let issued = ca.issue_client(
        request.csr_pem.as_bytes(),
        &ClientCertRequest::new(request.kind, &tenant.id, &component_id),
        now,
    )?;
    // An approval registers one component: spent only now, so a request
    // refused above (another tenant, a bad CSR) leaves it usable.
    if let Some((jti, expires_at)) = &registrar.single_use
        && !control.store.spend_credential(jti, *expires_at).await?
    {
        return Err(ControlError::Unauthenticated(
            "this registration approval was already used to register a component: run the registration again \
             and have it approved"
                .into(),
        ));
    }
    let component = control
        .store
        .register_component(
            &NewComponent {
                id: component_id.clone(),
                tenant_id: tenant.id.clone(),
                kind: request.kind,
                name: request.name.clone(),
                group_id: group.as_ref().map(|g| g.id.clone()),
                cert: crate::cert_record(&issued),
                version: request.version.clone(),
                registered_by: registrar.actor.clone(),
            },
            now,
        )
        .await?;
    control
        .store
        .append_audit(
            &NewAuditEntry {
                tenant_id: Some(tenant.id.clone()),
                actor: registrar.actor,
                action: format!("{}.register", request.kind),
                target: format!("{}:{}", request.kind, component.id),
                detail: json!({
                    "name": component.name,
                    "serial": issued.serial,
                    "key_id": issued.key_id,
                    "group": group.as_ref().map(|g| g.name.clone()),
                    "not_after": issued.not_after.secs(),
                }),
            },
            now,
        )
        .await?;
    tracing::info!(tenant = %tenant.name, kind = %request.kind, component = %component.id, "component registered");
    Ok(Json(RegisterResponse {
        protocol: PROTOCOL_VERSION,
        component_id,
        tenant_id: tenant.id.clone(),
        tenant: tenant.name.clone(),
        certificate_pem: issued.cert_pem,
        issuer_pem: ca.cert_pem().to_owned(),
        control_url: control.config.control_url.clone(),
        control_ca_pem: control.config.control_ca_pem.clone(),
        group: group.map(|g| g.name),
        not_after: issued.not_after.secs(),
    }))
}
