//! Store records turned into wire views: the one place that decides what of a
//! record leaves the service. Password hashes, sealed TOTP seeds and secret
//! digests stay behind; only whether they exist is shown.

use postern_store::{AuditEntry, Domain, Group, OAuthClient, SigninEvent, Tenant, User};

use crate::wire::{
    AuditView, ClientType, ClientView, DOMAIN_TXT_PREFIX, DomainView, GroupView, SigninView, TenantView, UserView,
};

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
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

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        TenantView {
            id: t.id.clone(),
            name: t.name.clone(),
            display_name: t.display_name.clone(),
            is_system: t.is_system,
            lockout_threshold: t.lockout_threshold,
            lockout_seconds: t.lockout_seconds,
            require_mfa: t.require_mfa,
            created_at: t.created_at,
        }
    }
}

impl From<&Domain> for DomainView {
    fn from(d: &Domain) -> Self {
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

impl From<&Group> for GroupView {
    fn from(g: &Group) -> Self {
        GroupView {
            id: g.id.clone(),
            name: g.name.clone(),
            description: g.description.clone(),
            source: g.source,
            created_at: g.created_at,
        }
    }
}

impl From<&OAuthClient> for ClientView {
    fn from(c: &OAuthClient) -> Self {
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
            created_at: c.created_at,
        }
    }
}

impl From<&SigninEvent> for SigninView {
    fn from(e: &SigninEvent) -> Self {
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

impl From<&AuditEntry> for AuditView {
    fn from(e: &AuditEntry) -> Self {
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

/// Converts a list of records.
pub(crate) fn all<'a, R: 'a, V: From<&'a R>>(records: &'a [R]) -> Vec<V> {
    records.iter().map(V::from).collect()
}
