//! Registration credentials (SEC-14): what the device flow hands a host when an
//! administrator approves a connector or agent registration. Not an admin
//! token: its own audience ([`REGISTRATION_AUDIENCE`]), one kind (its scope), the
//! component name the approval page showed, minutes of life and no refresh
//! token. Only `POST /v1/register` accepts it, and only for that kind and name;
//! the admin API and userinfo refuse it.

use std::time::Duration;

use postern_proto::ComponentKind;
use postern_store::{Tenant, User};
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

use crate::Sts;
use crate::error::StsError;
use crate::oidc::TokenResponse;
use crate::tokens::{ACCESS_TOKEN_TYP, Audience, TokenError, unverified_issuer};

/// Audience of registration credentials: the enrolment endpoint.
pub const REGISTRATION_AUDIENCE: &str = "urn:postern:register";
/// Scope of a device-flow request to register a connector.
pub const REGISTER_CONNECTOR_SCOPE: &str = "postern:register:connector";
/// Scope of a device-flow request to register an agent.
pub const REGISTER_AGENT_SCOPE: &str = "postern:register:agent";
/// Prefix every registration scope starts with.
const REGISTER_SCOPE_PREFIX: &str = "postern:register:";
/// Lifetime of a registration credential: enough to send one CSR.
pub const REGISTRATION_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Tolerance for credentials issued by a peer instance with a slightly fast clock.
const IAT_SKEW_SECS: i64 = 60;

/// The scope a host asks for to register a component of `kind`.
pub fn registration_scope(kind: ComponentKind) -> &'static str {
    match kind {
        ComponentKind::Connector => REGISTER_CONNECTOR_SCOPE,
        ComponentKind::Agent => REGISTER_AGENT_SCOPE,
    }
}

/// The kind a whole requested scope registers, if it is exactly one
/// registration scope.
pub fn registration_kind(scope: &str) -> Option<ComponentKind> {
    match scope.trim() {
        REGISTER_CONNECTOR_SCOPE => Some(ComponentKind::Connector),
        REGISTER_AGENT_SCOPE => Some(ComponentKind::Agent),
        _ => None,
    }
}

/// Whether one scope value is a registration scope (granted only through the
/// device flow, alone, never to an authorization request or a refresh).
pub(crate) fn is_registration_scope(scope: &str) -> bool {
    scope.starts_with(REGISTER_SCOPE_PREFIX)
}

/// Claims of a registration credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegistrationClaims {
    /// Issuer: the tenant's issuer URL.
    pub iss: String,
    /// Subject: the approving administrator's user ID.
    pub sub: String,
    /// [`REGISTRATION_AUDIENCE`].
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique token ID.
    pub jti: String,
    /// Client it was issued to (the command line).
    pub client_id: String,
    /// Exactly one registration scope.
    pub scope: String,
    /// Tenant ID.
    pub tid: String,
    /// When the administrator authenticated.
    pub auth_time: i64,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// The component name the approval page showed.
    #[serde(default)]
    pub component_name: String,
}

impl RegistrationClaims {
    /// The kind of component this credential registers.
    pub fn kind(&self) -> Option<ComponentKind> {
        registration_kind(&self.scope)
    }
}

/// An approved registration to issue a credential for.
pub(crate) struct ApprovedRegistration<'a> {
    pub tenant: &'a Tenant,
    pub client_id: &'a str,
    pub user: &'a User,
    pub kind: ComponentKind,
    pub component_name: &'a str,
    pub auth_time: UnixTime,
    pub amr: &'a str,
}

impl Sts {
    /// Issues the credential for an approved registration: no ID token, no
    /// refresh token.
    pub(crate) async fn issue_registration_token(
        &self,
        approved: &ApprovedRegistration<'_>,
    ) -> Result<TokenResponse, StsError> {
        let now = self.now();
        let scope = registration_scope(approved.kind).to_owned();
        let claims = RegistrationClaims {
            iss: self.issuer(&approved.tenant.name),
            sub: approved.user.id.clone(),
            aud: Audience::One(REGISTRATION_AUDIENCE.to_owned()),
            exp: (now + REGISTRATION_TOKEN_TTL).secs(),
            iat: now.secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: approved.client_id.to_owned(),
            scope: scope.clone(),
            tid: approved.tenant.id.clone(),
            auth_time: approved.auth_time.secs(),
            amr: approved
                .amr
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            component_name: approved.component_name.to_owned(),
        };
        Ok(TokenResponse {
            access_token: self.sign(&claims, ACCESS_TOKEN_TYP, now).await?,
            token_type: "Bearer",
            expires_in: REGISTRATION_TOKEN_TTL.as_secs(),
            scope,
            id_token: None,
            refresh_token: None,
        })
    }

    /// Verifies a registration credential: finds the tenant from its issuer, then
    /// checks signature, `typ`, issuer, audience ([`REGISTRATION_AUDIENCE`]),
    /// expiry, tenant ID, a single registration scope and a component name. An
    /// admin access token fails with [`TokenError::WrongAudience`].
    pub async fn verify_registration_token(
        &self,
        token: &str,
    ) -> Result<Result<(Tenant, RegistrationClaims), TokenError>, StsError> {
        let Some(tenant_name) =
            unverified_issuer(token).and_then(|iss| iss.strip_prefix(&format!("{}/t/", self.base)).map(str::to_owned))
        else {
            return Ok(Err(TokenError::WrongIssuer));
        };
        let tenant = match self.tenant_named(&tenant_name).await {
            Ok(t) => t,
            Err(e) if e.is_not_found() => return Ok(Err(TokenError::WrongIssuer)),
            Err(e) => return Err(e),
        };
        let claims: RegistrationClaims = match self.verify_signed(token, ACCESS_TOKEN_TYP).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        Ok(check_claims(claims, &tenant, &self.issuer(&tenant.name), self.now()).map(|c| (tenant, c)))
    }
}

/// The claim checks of [`Sts::verify_registration_token`], after the signature.
fn check_claims(
    claims: RegistrationClaims,
    tenant: &Tenant,
    issuer: &str,
    now: UnixTime,
) -> Result<RegistrationClaims, TokenError> {
    if claims.iss != issuer || claims.tid != tenant.id {
        return Err(TokenError::WrongIssuer);
    }
    let audience_ok = claims.aud == Audience::One(REGISTRATION_AUDIENCE.to_owned());
    if !audience_ok || claims.kind().is_none() || claims.component_name.is_empty() {
        return Err(TokenError::WrongAudience);
    }
    if claims.exp <= now.secs() {
        return Err(TokenError::Expired);
    }
    if claims.iat > now.secs() + IAT_SKEW_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(feature = "testing")]
impl Sts {
    /// Test support: issues a registration credential for `user` of `tenant` as
    /// if they had approved the registration of `kind` named `component_name`,
    /// without any sign-in. Only compiled with the `testing` feature; the service
    /// never enables it.
    pub async fn mint_registration_token_for_tests(
        &self,
        tenant: &Tenant,
        user: &User,
        kind: ComponentKind,
        component_name: &str,
    ) -> Result<String, StsError> {
        let approved = ApprovedRegistration {
            tenant,
            client_id: crate::CLI_CLIENT_ID,
            user,
            kind,
            component_name,
            auth_time: self.now(),
            amr: "pwd otp mfa",
        };
        Ok(self.issue_registration_token(&approved).await?.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_name_one_kind() {
        for kind in [ComponentKind::Connector, ComponentKind::Agent] {
            assert_eq!(registration_kind(registration_scope(kind)), Some(kind));
            assert!(is_registration_scope(registration_scope(kind)));
        }
        assert_eq!(registration_kind("openid postern:register:agent"), None);
        assert_eq!(registration_kind("postern:admin"), None);
        assert!(!is_registration_scope("postern:admin"));
    }
}
