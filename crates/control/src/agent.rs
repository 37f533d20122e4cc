//! Agent trust renewal (PTA-7). The agent asks every few hours whether to renew;
//! renewal is due 30 days before its certificate expires, and only one agent of a
//! tenant renews at a time (a lease in the store). The renewal is authenticated by
//! the current certificate alone (no admin), certifies a fresh key pair, stores
//! the new public key and invalidates the old certificate at once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use postern_pki::ClientCertRequest;
use postern_proto::control::{RenewRequest, RenewResponse, RenewalCheck};
use postern_proto::{ComponentKind, check_protocol};
use postern_store::{NewAuditEntry, SerialStatus};
use serde_json::json;

use crate::Control;
use crate::error::ControlError;
use crate::identity::{ComponentIdentity, require_kind, require_tenant};

/// How soon an agent should ask again when renewal is not due.
const CHECK_AGAIN_SECS: u64 = 4 * 3600;
/// How soon an agent should ask again while another agent of its tenant renews.
const WAIT_FOR_LEASE_SECS: u64 = 60;

/// `POST /v1/t/{tenant}/agent/renewal`: should this agent renew now?
pub(crate) async fn renewal_check(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
) -> Result<Json<RenewalCheck>, ControlError> {
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    let now = control.now();
    let c = &identity.component;
    if !postern_pki::renewal_due(ComponentKind::Agent, c.cert_issued_at, c.not_after, now) {
        return Ok(Json(RenewalCheck {
            renew: false,
            reason: format!("not due: the certificate is valid until {}", c.not_after.secs()),
            check_again_secs: CHECK_AGAIN_SECS,
        }));
    }
    let until = now + control.config.renewal_lease;
    if !control
        .store
        .acquire_renewal_lease(&identity.tenant_id, ComponentKind::Agent, &c.id, now, until)
        .await?
    {
        return Ok(Json(RenewalCheck {
            renew: false,
            reason: "another agent of this tenant is renewing; agents renew one at a time".into(),
            check_again_secs: WAIT_FOR_LEASE_SECS,
        }));
    }
    Ok(Json(RenewalCheck {
        renew: true,
        reason: "the certificate expires within 30 days".into(),
        check_again_secs: 0,
    }))
}

/// `POST /v1/t/{tenant}/agent/renew`: certifies the agent's new key.
pub(crate) async fn renew(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    Json(request): Json<RenewRequest>,
) -> Result<Json<RenewResponse>, ControlError> {
    check_protocol(request.protocol)?;
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Agent)?;
    if identity.status != SerialStatus::Current {
        return Err(ControlError::Conflict("renew with the current certificate".into()));
    }
    let now = control.now();
    let c = &identity.component;
    if !postern_pki::renewal_due(ComponentKind::Agent, c.cert_issued_at, c.not_after, now) {
        return Err(ControlError::Conflict("renewal is not due yet".into()));
    }
    // The lease is taken at the check; re-taking it here is idempotent for the
    // holder and refuses a second agent of the tenant.
    let until = now + control.config.renewal_lease;
    if !control
        .store
        .acquire_renewal_lease(&identity.tenant_id, ComponentKind::Agent, &c.id, now, until)
        .await?
    {
        return Err(ControlError::Conflict(
            "another agent of this tenant is renewing; ask again later".into(),
        ));
    }
    let result = async {
        let issued = control.authorities.for_component(ComponentKind::Agent).issue_client(
            request.csr_pem.as_bytes(),
            &ClientCertRequest::new(ComponentKind::Agent, &identity.tenant_id, &c.id),
            now,
        )?;
        if issued.public_key_spki_der == c.public_key {
            return Err(ControlError::BadCsr(
                "renewal needs a new key pair, not the current key".into(),
            ));
        }
        let record = crate::cert_record(&issued);
        // No grace period: the old key must stop working at once (PTA-7).
        if !control
            .store
            .replace_certificate(&c.id, &identity.serial, &record, None, now)
            .await?
        {
            return Err(ControlError::Conflict("the certificate changed meanwhile".into()));
        }
        control
            .store
            .append_audit(
                &NewAuditEntry {
                    tenant_id: Some(identity.tenant_id.clone()),
                    actor: format!("agent:{}", c.id),
                    action: "agent.renew".into(),
                    target: format!("agent:{}", c.id),
                    detail: json!({
                        "old_serial": identity.serial, "serial": issued.serial,
                        "old_key_id": c.key_id, "key_id": issued.key_id, "not_after": issued.not_after.secs(),
                    }),
                },
                now,
            )
            .await?;
        tracing::info!(agent = %c.id, serial = %issued.serial, "agent certificate renewed");
        Ok(Json(RenewResponse {
            certificate_pem: issued.cert_pem,
            not_after: issued.not_after.secs(),
        }))
    }
    .await;
    control
        .store
        .release_renewal_lease(&identity.tenant_id, ComponentKind::Agent, &c.id)
        .await?;
    result
}
