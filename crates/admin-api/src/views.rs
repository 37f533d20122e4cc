//! Store records turned into wire views: the one place that decides what of a
//! record leaves the service. Password hashes, sealed TOTP seeds, secret
//! digests and keys stay behind; only whether they exist is shown.

use std::time::Duration;

use postern_store::{
    App, AuditEntry, Component, ComponentKind, ConnectorGroup, Domain, Group, OAuthClient, SigninEvent, Tenant, User,
};
use postern_time::UnixTime;

use crate::wire::{
    AppView, AuditView, ClientType, ClientView, ComponentStatus, ComponentView, ConnectorGroupView, DOMAIN_TXT_PREFIX,
    DomainView, GroupRef, GroupView, SigninView, TenantView, UserView,
};

/// A store record's wire view (records are the store's, views the wire
/// crate's: the conversion lives here, where what may leave is decided).
pub(crate) trait View {
    /// The wire type.
    type Out;
    /// What of the record leaves the service.
    fn view(&self) -> Self::Out;
}

/// How long after its last call a component still counts as active.
pub(crate) const ACTIVE_WITHIN: Duration = Duration::from_secs(5 * 60);

impl View for User {
    type Out = UserView;
    fn view(&self) -> Self::Out {
        let u = self;
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            source: u.source,
            enabled: u.enabled,
            mfa_required: u.mfa_required,
            mfa_enrolled: u.totp_enrolled_at.is_some() && u.totp_sealed.is_some(),
            has_password: u.password_hash.is_some(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

impl View for Tenant {
    type Out = TenantView;
    fn view(&self) -> Self::Out {
        let t = self;
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            is_system: t.is_system,
            lockout_threshold: t.lockout_threshold,
            lockout_seconds: t.lockout_seconds,
            require_mfa: t.require_mfa,
            limits: crate::wire::TenantLimitsView {
                rate_limit_per_sec: t.limits.rate_limit_per_sec,
                rate_limit_burst: t.limits.rate_limit_burst,
                max_pending_signins: t.limits.max_pending_signins,
            },
            created_at: t.created_at,
        }
    }
}

impl View for Domain {
    type Out = DomainView;
    fn view(&self) -> Self::Out {
        let d = self;
        DomainView {
            name: d.name.clone(),
            verified: d.verified,
            auth_mode: d.auth_mode,
            created_at: d.created_at,
            dns_txt_record: (!d.verified && !d.verification_token.is_empty())
                .then(|| format!("{DOMAIN_TXT_PREFIX}{}", d.verification_token)),
        }
    }
}

impl View for Group {
    type Out = GroupView;
    fn view(&self) -> Self::Out {
        let g = self;
        GroupView {
            id: g.id.clone(),
            name: g.name.clone(),
            description: g.description.clone(),
            source: g.source,
            created_at: g.created_at,
        }
    }
}

impl View for OAuthClient {
    type Out = ClientView;
    fn view(&self) -> Self::Out {
        let c = self;
        ClientView {
            client_id: c.client_id.clone(),
            name: c.name.clone(),
            client_type: if c.is_confidential() {
                ClientType::Confidential
            } else {
                ClientType::Public
            },
            redirect_uris: c.redirect_uris.clone(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            grant_types: c.grant_types.clone(),
            scopes: c.scopes.clone(),
            builtin: c.builtin,
            app_id: None,
            created_at: c.created_at,
        }
    }
}

impl View for SigninEvent {
    type Out = SigninView;
    fn view(&self) -> Self::Out {
        let e = self;
        SigninView {
            id: e.id.clone(),
            at: e.at,
            username: e.username.clone(),
            user_id: e.user_id.clone(),
            client_id: e.client_id.clone(),
            ip: e.ip.clone(),
            outcome: e.outcome,
            detail: e.detail.clone(),
        }
    }
}

impl View for AuditEntry {
    type Out = AuditView;
    fn view(&self) -> Self::Out {
        let e = self;
        AuditView {
            seq: e.seq,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            // Details are stored as JSON text; an entry that somehow is not JSON
            // is still shown, as a string.
            detail: serde_json::from_str(&e.detail).unwrap_or_else(|_| serde_json::Value::String(e.detail.clone())),
        }
    }
}

impl View for ConnectorGroup {
    type Out = GroupRef;
    fn view(&self) -> Self::Out {
        let g = self;
        GroupRef {
            id: g.id.clone(),
            name: g.name.clone(),
        }
    }
}

/// A connector group with the number of its connectors.
pub(crate) fn connector_group(g: &ConnectorGroup, connector_count: usize) -> ConnectorGroupView {
    ConnectorGroupView {
        id: g.id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        is_default: g.is_default,
        config_version: g.config_version,
        connector_count,
        created_at: g.created_at,
    }
}

/// A published app with its connector group, named from `groups` (by ID
/// alone should it be missing).
pub(crate) fn app(a: &App, groups: &[ConnectorGroup]) -> AppView {
    let connector_group = groups
        .iter()
        .find(|g| g.id == a.connector_group_id)
        .map(View::view)
        .unwrap_or_else(|| GroupRef {
            id: a.connector_group_id.clone(),
            name: String::new(),
        });
    AppView {
        id: a.id.clone(),
        name: a.name.clone(),
        external_url: a.external_url(),
        internal_url: a.internal_url.clone(),
        preauth: a.preauth,
        connector_group,
        backend_timeout_secs: a.backend_timeout_secs,
        validate_backend_tls: a.validate_backend_tls,
        translate_headers: a.translate_headers,
        translate_links: a.translate_links,
        identity_headers: a.identity_headers.clone(),
        rate_limit_per_sec: a.limits.rate_limit_per_sec,
        rate_limit_burst: a.limits.rate_limit_burst,
        max_body_bytes: a.limits.max_body_bytes,
        client_id: a.client_id.clone(),
        redirect_uri: a.callback_url(),
        host_problem: None,
        created_at: a.created_at,
        updated_at: a.updated_at,
    }
}

/// A component as it stands at `now` (the service's clock), with its connector
/// group (connectors). Its public key stays behind; an agent's key ID is shown.
pub(crate) fn component(c: &Component, group: Option<&ConnectorGroup>, now: UnixTime) -> ComponentView {
    let active = c.last_seen_at.is_some_and(|seen| now.since(seen) <= ACTIVE_WITHIN);
    ComponentView {
        id: c.id.clone(),
        kind: c.kind,
        name: c.name.clone(),
        group: group.map(View::view),
        key_id: (c.kind == ComponentKind::Agent).then(|| c.key_id.clone()),
        version: c.version.clone(),
        status: if active {
            ComponentStatus::Active
        } else {
            ComponentStatus::Inactive
        },
        last_seen_at: c.last_seen_at,
        last_seen_ip: c.last_seen_ip.clone(),
        serial: c.serial.clone(),
        cert_issued_at: c.cert_issued_at,
        cert_not_after: c.not_after,
        renewal_due: postern_pki::renewal_due(c.kind, c.cert_issued_at, c.not_after, now),
        registered_at: c.registered_at,
        registered_by: c.registered_by.clone(),
    }
}

/// Converts a list of records.
pub(crate) fn all<R: View>(records: &[R]) -> Vec<R::Out> {
    records.iter().map(View::view).collect()
}

#[cfg(test)]
mod tests {
    use postern_pki::RENEW_BEFORE_EXPIRY;

    use super::*;

    fn component(kind: ComponentKind, last_seen_at: Option<UnixTime>) -> Component {
        Component {
            id: "c1".into(),
            tenant_id: "t1".into(),
            kind,
            name: "host".into(),
            group_id: None,
            serial: "0a".into(),
            previous_serial: None,
            previous_valid_until: None,
            public_key: vec![1, 2, 3],
            key_id: "k1".into(),
            cert_issued_at: UnixTime::from_secs(1_000),
            not_after: UnixTime::from_secs(1_000) + RENEW_BEFORE_EXPIRY * 4,
            version: "1.0".into(),
            registered_by: "user:u1".into(),
            registered_at: UnixTime::from_secs(1_000),
            last_seen_at,
            last_seen_ip: None,
        }
    }

    #[test]
    fn status_is_active_within_five_minutes_of_the_last_call() {
        let seen = UnixTime::from_secs(2_000);
        let c = component(ComponentKind::Connector, Some(seen));
        assert_eq!(super::component(&c, None, seen).status, ComponentStatus::Active);
        assert_eq!(
            super::component(&c, None, seen + ACTIVE_WITHIN).status,
            ComponentStatus::Active
        );
        assert_eq!(
            super::component(&c, None, seen + ACTIVE_WITHIN + Duration::from_secs(1)).status,
            ComponentStatus::Inactive
        );
        let never = component(ComponentKind::Connector, None);
        assert_eq!(super::component(&never, None, seen).status, ComponentStatus::Inactive);
    }

    #[test]
    fn agents_show_their_key_id_and_renewal_follows_pki() {
        let agent = component(ComponentKind::Agent, None);
        let view = super::component(&agent, None, UnixTime::from_secs(2_000));
        assert_eq!(view.key_id.as_deref(), Some("k1"));
        assert!(!view.renewal_due);
        let late = agent.not_after - RENEW_BEFORE_EXPIRY;
        assert!(super::component(&agent, None, late).renewal_due);
        let connector = component(ComponentKind::Connector, None);
        assert_eq!(
            super::component(&connector, None, UnixTime::from_secs(2_000)).key_id,
            None
        );
        assert!(!serde_json::to_string(&view).unwrap().contains("public_key"));
    }
}
