//! Connector configuration (CON-2, CON-3: the apps of the connector's group)
//! and certificate renewal (CON-4) over the mTLS endpoint, and `whoami` for any
//! component.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use postern_pki::ClientCertRequest;
use postern_proto::control::{
    AppRef, ConfigVersion, ConnectorConfig, ConnectorConfigRequest, ConnectorTiming, GroupRef, WhoAmI,
};
use postern_proto::{ComponentKind, PROTOCOL_VERSION, check_protocol};
use postern_store::NewAuditEntry;
use serde::Deserialize;
use serde_json::json;

use crate::Control;
use crate::error::ControlError;
use crate::identity::{ComponentIdentity, require_kind, require_tenant};

/// How often a waiting watch re-reads the store (changes made through other
/// instances are not signalled in this process).
const WATCH_POLL: Duration = Duration::from_secs(5);
/// Default backend timeout handed to connectors (seconds).
const BACKEND_TIMEOUT_SECS: u64 = 85;

/// `GET /v1/whoami`.
pub(crate) async fn whoami(Extension(identity): Extension<ComponentIdentity>) -> Json<WhoAmI> {
    Json(WhoAmI {
        tenant_id: identity.tenant_id,
        kind: identity.kind,
        component_id: identity.component_id,
        serial: identity.serial,
    })
}

async fn group_of(
    control: &Control,
    identity: &ComponentIdentity,
) -> Result<postern_store::ConnectorGroup, ControlError> {
    match &identity.component.group_id {
        Some(id) => Ok(control.store.connector_group(&identity.tenant_id, id).await?),
        None => Ok(control
            .store
            .default_connector_group(&identity.tenant_id, control.now())
            .await?),
    }
}

/// The apps a connector group serves, as its connectors need them: where to
/// forward and how.
async fn apps_of(control: &Control, tenant_id: &str, group_id: &str) -> Result<Vec<AppRef>, ControlError> {
    let apps = control.store.apps_of_group(tenant_id, group_id).await?;
    Ok(apps
        .into_iter()
        .map(|a| AppRef {
            id: a.id,
            internal_url: a.internal_url,
            validate_backend_tls: a.validate_backend_tls,
            // The admin API keeps it within 1..=3600.
            backend_timeout_secs: u64::try_from(a.backend_timeout_secs).unwrap_or(BACKEND_TIMEOUT_SECS),
        })
        .collect())
}

/// `POST /v1/t/{tenant}/connector/config`: the configuration, and a renewed
/// certificate when the request carries a CSR and renewal is due.
pub(crate) async fn config(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    Json(request): Json<ConnectorConfigRequest>,
) -> Result<Json<ConnectorConfig>, ControlError> {
    check_protocol(request.protocol)?;
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Connector)?;
    if request.version.is_empty() || request.version.len() > 64 {
        return Err(ControlError::BadRequest("version must be 1 to 64 characters".into()));
    }
    let now = control.now();
    let c = &identity.component;
    if c.version != request.version {
        control
            .store
            .touch_component(
                &c.id,
                c.last_seen_ip.as_deref().unwrap_or(""),
                Some(&request.version),
                now,
            )
            .await?;
    }
    let due = postern_pki::renewal_due(ComponentKind::Connector, c.cert_issued_at, c.not_after, now);
    let mut renewed = None;
    if let Some(csr) = &request.csr_pem {
        if !due {
            return Err(ControlError::Conflict(
                "certificate renewal is not due yet; send no CSR".into(),
            ));
        }
        if identity.status != postern_store::SerialStatus::Current {
            return Err(ControlError::Conflict("renew with the current certificate".into()));
        }
        let issued = control
            .authorities
            .for_component(ComponentKind::Connector)
            .issue_client(
                csr.as_bytes(),
                &ClientCertRequest::new(ComponentKind::Connector, &identity.tenant_id, &identity.component_id),
                now,
            )?;
        let record = crate::cert_record(&issued);
        let grace_until = now + control.config.renewal_grace;
        if !control
            .store
            .replace_certificate(&c.id, &identity.serial, &record, Some(grace_until), now)
            .await?
        {
            return Err(ControlError::Conflict(
                "the certificate was renewed meanwhile; use the new one".into(),
            ));
        }
        control
            .store
            .append_audit(
                &NewAuditEntry {
                    tenant_id: Some(identity.tenant_id.clone()),
                    actor: format!("connector:{}", c.id),
                    action: "connector.renew".into(),
                    target: format!("connector:{}", c.id),
                    detail: json!({ "old_serial": identity.serial, "serial": issued.serial, "not_after": issued.not_after.secs() }),
                },
                now,
            )
            .await?;
        tracing::info!(connector = %c.id, serial = %issued.serial, "connector certificate renewed");
        renewed = Some(issued.cert_pem);
    }
    let group = group_of(&control, &identity).await?;
    let apps = apps_of(&control, &identity.tenant_id, &group.id).await?;
    Ok(Json(ConnectorConfig {
        protocol: PROTOCOL_VERSION,
        config_version: group.config_version,
        component_id: identity.component_id.clone(),
        group: GroupRef {
            id: group.id,
            name: group.name,
        },
        apps,
        timing: ConnectorTiming {
            refresh_secs: control.config.connector_refresh.as_secs(),
            backend_timeout_secs: BACKEND_TIMEOUT_SECS,
        },
        renew_requested: due && renewed.is_none(),
        renewed_certificate_pem: renewed,
    }))
}

/// Query of the configuration watch.
#[derive(Deserialize)]
pub(crate) struct WatchQuery {
    version: i64,
}

/// `GET /v1/t/{tenant}/connector/config/watch?version=N`: answers as soon as the
/// connector's configuration version differs from `N`, or after the watch timeout
/// with the unchanged version. This is the change notification of CON-3; the
/// connector also refreshes periodically.
pub(crate) async fn watch(
    State(control): State<Arc<Control>>,
    Path(tenant): Path<String>,
    Extension(identity): Extension<ComponentIdentity>,
    Query(q): Query<WatchQuery>,
) -> Result<Json<ConfigVersion>, ControlError> {
    require_tenant(&identity, &tenant)?;
    require_kind(&identity, ComponentKind::Connector)?;
    let deadline = tokio::time::Instant::now() + control.config.watch_timeout;
    let changes = control.store.config_changes();
    loop {
        // Register interest before reading, so a change between the read and the
        // wait is not missed.
        let notified = changes.notified();
        let component = control
            .store
            .component(&identity.tenant_id, &identity.component_id)
            .await?;
        let group = match &component.group_id {
            Some(id) => control.store.connector_group(&identity.tenant_id, id).await?,
            None => {
                control
                    .store
                    .default_connector_group(&identity.tenant_id, control.now())
                    .await?
            }
        };
        if group.config_version != q.version {
            return Ok(Json(ConfigVersion {
                config_version: group.config_version,
            }));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(ConfigVersion {
                config_version: group.config_version,
            }));
        }
        let wait = (deadline - now).min(WATCH_POLL);
        tokio::select! {
            _ = tokio::time::timeout(wait, notified) => {}
            // Shutting down: "no change" now, so the watch does not hold the
            // listener's drain; the connector asks again elsewhere.
            () = control.going_away() => {
                return Ok(Json(ConfigVersion {
                    config_version: group.config_version,
                }));
            }
        }
    }
}
