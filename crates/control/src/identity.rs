//! Who is calling the mTLS endpoint. The TLS layer has already verified the
//! client certificate against the Connectors and Agents CAs (with the service
//! clock); here every request is checked against the store as well (SEC-5,
//! BEY-6): the certificate's serial must be its component's current one (or the
//! one just replaced, during the renewal grace period), and the component,
//! tenant and kind in the certificate must match the store. Removing a component
//! therefore refuses its very next request.
//!
//! Each call's reported version is recorded too, and a component older than
//! the minimum is refused (see `updates`); the updater's calls are exempt.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use postern_pki::{CaKind, cert_info};
use postern_proto::ComponentKind;
use postern_store::{Component, SerialStatus};
use postern_sts::ClientIp;
use rustls_pki_types::CertificateDer;

use crate::Control;
use crate::error::ControlError;
use crate::updates::{Reported, observe};

/// How often `last_seen` is written for a busy component.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The end-entity client certificate of the TLS connection a request came on.
/// The listener inserts it into every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Arc<CertificateDer<'static>>);

/// The verified identity of a calling component, handed to handlers.
#[derive(Clone, Debug)]
pub struct ComponentIdentity {
    /// Its tenant.
    pub tenant_id: String,
    /// Connector or agent.
    pub kind: ComponentKind,
    /// Its ID.
    pub component_id: String,
    /// Serial of the certificate presented.
    pub serial: String,
    /// Whether that is the current certificate or the one just replaced.
    pub status: SerialStatus,
    /// The component as stored.
    pub component: Component,
}

/// Checks a request's client certificate against the store and attaches the
/// [`ComponentIdentity`], or refuses the request.
pub(crate) async fn identify(State(control): State<Arc<Control>>, mut request: Request, next: Next) -> Response {
    let peer = request.extensions().get::<PeerCertificate>().cloned();
    let ip = request
        .extensions()
        .get::<ClientIp>()
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let is_updater = postern_proto::updates::is_updater_path(request.uri().path());
    let reported = Reported::from_headers(request.headers());
    let resolved = match resolve(&control, peer, &ip, is_updater).await {
        Ok(identity) => observe(&control, &identity, &reported, &ip, is_updater)
            .await
            .map(|()| identity),
        Err(e) => Err(e),
    };
    match resolved {
        Ok(identity) => {
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    }
}

async fn resolve(
    control: &Control,
    peer: Option<PeerCertificate>,
    ip: &str,
    is_updater: bool,
) -> Result<ComponentIdentity, ControlError> {
    let Some(peer) = peer else {
        return Err(ControlError::Unauthenticated(
            "a client certificate is required; register the component first".into(),
        ));
    };
    let info = cert_info(peer.0.as_ref())
        .map_err(|e| ControlError::Unauthenticated(format!("the client certificate is unreadable: {e}")))?;
    let Some(binding) = info.component.clone() else {
        return Err(ControlError::Unauthenticated(
            "the client certificate names no component".into(),
        ));
    };
    // The certificate must come from the CA of its kind (the TLS layer accepts both).
    let expected_issuer = CaKind::for_component(binding.kind).common_name();
    if info.issuer_cn.as_deref() != Some(expected_issuer.as_str()) {
        return Err(ControlError::Unauthenticated(
            "the client certificate comes from the wrong CA".into(),
        ));
    }
    let now = control.now();
    if info.not_after <= now {
        return Err(ControlError::Revoked(
            "the certificate has expired; the component was removed and must be registered again".into(),
        ));
    }
    let revoked = || {
        ControlError::Revoked(format!(
            "this {} is no longer registered (removed, re-registered or renewed); register it again",
            binding.kind
        ))
    };
    let (component, status) = control
        .store
        .component_by_serial(&info.serial, now)
        .await?
        .ok_or_else(revoked)?;
    if component.tenant_id != binding.tenant_id
        || component.id != binding.component_id
        || component.kind != binding.kind
    {
        tracing::warn!(serial = %info.serial, "client certificate does not match its stored component");
        return Err(revoked());
    }
    let seen_long_ago = component.last_seen_at.is_none_or(|seen| now.since(seen) >= TOUCH_EVERY);
    // The updater's calls say nothing about whether the component runs.
    if seen_long_ago && !is_updater {
        control.store.touch_component(&component.id, ip, None, now).await?;
    }
    Ok(ComponentIdentity {
        tenant_id: component.tenant_id.clone(),
        kind: component.kind,
        component_id: component.id.clone(),
        serial: info.serial,
        status,
        component,
    })
}

/// Refuses a request whose path names another tenant than the caller's
/// certificate (SEC-6).
pub(crate) fn require_tenant(identity: &ComponentIdentity, tenant_in_path: &str) -> Result<(), ControlError> {
    if identity.tenant_id == tenant_in_path {
        Ok(())
    } else {
        tracing::warn!(
            component = %identity.component_id,
            "component addressed another tenant's endpoint; refused"
        );
        Err(ControlError::Forbidden(
            "this certificate belongs to another tenant".into(),
        ))
    }
}

/// Refuses a caller of the wrong kind.
pub(crate) fn require_kind(identity: &ComponentIdentity, kind: ComponentKind) -> Result<(), ControlError> {
    if identity.kind == kind {
        Ok(())
    } else {
        Err(ControlError::Forbidden(format!("only a {kind} may call this")))
    }
}
