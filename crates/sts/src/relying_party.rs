//! The service's own relying parties: the front door of published apps signs
//! users in at the tenant's issuer like any OpenID Connect client (authorization
//! code with PKCE, `state`, `nonce`), but completes the sign-in in-process: no
//! HTTP call from the service to itself, and no token signed only to be
//! verified by the same process. The code gets the token endpoint's checks
//! (single use, redirect URI, PKCE, the client, the user still enabled) and the
//! claims a relying party's (the nonce); issuer, audience and expiry hold by
//! construction. It also signs the identity assertion a backend receives
//! (BEY-3), and verifies one as a backend must.
//!
//! An assertion is a token no user can mint: its own `typ`
//! ([`ASSERTION_TYP`], RFC 8725 §3.11) and an audience no OAuth client can be
//! issued a token for ([`assertion_audience`]). An ID or access token obtained
//! by running the code flow against an app's (public) client therefore never
//! verifies as the app's assertion, and an assertion never verifies as either.

use std::time::Duration;

use postern_store::{StoreError, Tenant};
use serde::{Deserialize, Serialize};

use crate::Sts;
use crate::error::StsError;
use crate::tokens::{ID_TOKEN_TYP, IdClaims, TokenError};

/// `typ` header of identity assertions to backends (RFC 8725 §3.11): no other
/// token the service signs has it.
pub const ASSERTION_TYP: &str = "postern-assertion+jwt";
/// Prefix of an assertion's audience; the app's ID follows.
pub const ASSERTION_AUDIENCE_PREFIX: &str = "urn:postern:app:";
/// Tolerance for tokens issued by a peer instance with a slightly fast clock.
const IAT_SKEW_SECS: i64 = 60;

/// Who an identity assertion speaks for.
#[derive(Clone, Debug)]
pub struct AssertionSubject<'a> {
    /// User ID (`sub`).
    pub user_id: &'a str,
    /// Sign-in name.
    pub username: &'a str,
    /// Email, if known.
    pub email: Option<&'a str>,
    /// Group names.
    pub groups: &'a [String],
}

/// The audience of assertions for the app `app_id`: `urn:postern:app:<app id>`.
/// Client IDs are never URNs of this form, so no token issued to a client has it.
pub fn assertion_audience(app_id: &str) -> String {
    format!("{ASSERTION_AUDIENCE_PREFIX}{app_id}")
}

/// Claims of the identity assertion a backend receives: a JWT with `typ`
/// [`ASSERTION_TYP`], signed with the tenant issuer's keys (verify it against the
/// issuer's JWKS), audience [`assertion_audience`] of the app, valid for minutes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// Issuer: the tenant's issuer URL.
    pub iss: String,
    /// Subject: the user ID.
    pub sub: String,
    /// `urn:postern:app:<app id>`, see [`assertion_audience`].
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Tenant ID.
    pub tid: String,
    /// Sign-in name.
    pub preferred_username: String,
    /// Email, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Group names.
    pub groups: Vec<String>,
}

/// The answer the sign-in brought back to the app's callback.
#[derive(Clone, Copy, Debug)]
pub struct InProcessAnswer<'a> {
    /// The authorization code.
    pub code: &'a str,
    /// The callback URL the code was issued for.
    pub redirect_uri: &'a str,
    /// The PKCE verifier of this sign-in.
    pub verifier: &'a str,
    /// The nonce this sign-in asked for.
    pub nonce: &'a str,
}

/// Why a sign-in completed in-process was refused: the user's sign-in is over,
/// and they must start again from the app. No variant holds a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignInRefused {
    /// The app's OIDC client was deleted while the user was signing in.
    #[error("the app's sign-in client no longer exists")]
    ClientGone,
    /// The code failed the token endpoint's checks (spent, expired, another
    /// redirect URI or verifier, the user disabled); the token endpoint's
    /// description of why.
    #[error("{0}")]
    Code(String),
    /// The code was issued for another sign-in's nonce.
    #[error("{}", TokenError::WrongNonce)]
    WrongNonce,
}

/// A sign-in completed in-process: the ID token's claims and the user.
#[derive(Debug)]
pub struct InProcessSignIn {
    /// What the ID token would say.
    pub claims: IdClaims,
    /// The signed-in user, as read while redeeming the code.
    pub user: postern_store::User,
}

impl Sts {
    /// The authorization endpoint of a tenant.
    pub fn authorize_endpoint(&self, tenant_name: &str) -> String {
        format!("{}/authorize", self.issuer(tenant_name))
    }

    /// The end-session (logout) endpoint of a tenant.
    pub fn end_session_endpoint(&self, tenant_name: &str) -> String {
        format!("{}/logout", self.issuer(tenant_name))
    }

    /// Completes a sign-in of the service's own client `client_id` in this
    /// process: spends the code with the token endpoint's checks (single use,
    /// redirect URI, PKCE, the client, the user still enabled), then returns
    /// the claims its ID token would carry, checked as a relying party checks
    /// them (the nonce of this sign-in), with the user. Nothing is signed and no
    /// access or refresh token is issued: the claims never leave the process,
    /// and what an ID token's signature proves to a relying party elsewhere
    /// (that the STS issued them, for this client) the redemption itself proves
    /// here. The inner error says why the sign-in was refused.
    pub async fn complete_sign_in_in_process(
        &self,
        tenant: &Tenant,
        client_id: &str,
        answer: &InProcessAnswer<'_>,
    ) -> Result<Result<InProcessSignIn, SignInRefused>, StsError> {
        let client = match self.store.client(&tenant.id, client_id).await {
            Ok(c) => c,
            Err(StoreError::NotFound) => return Ok(Err(SignInRefused::ClientGone)),
            Err(e) => return Err(e.into()),
        };
        let spent =
            crate::oidc::token::spend_code(self, tenant, &client, answer.code, answer.redirect_uri, answer.verifier)
                .await;
        let (code, user) = match spent {
            Ok(spent) => spent,
            Err(e) if e.status.is_server_error() => return Err(StsError::internal(e.description)),
            Err(e) => return Ok(Err(SignInRefused::Code(e.description))),
        };
        if code.nonce.as_deref() != Some(answer.nonce) {
            return Ok(Err(SignInRefused::WrongNonce));
        }
        let grant = crate::oidc::Grant {
            tenant,
            client: &client,
            user: &user,
            scope: &code.scope,
            auth_time: code.auth_time,
            amr: &code.amr,
            session_id: code.session_id.as_deref(),
            nonce: code.nonce.as_deref(),
        };
        let claims = self.id_claims(&grant, self.now());
        Ok(Ok(InProcessSignIn { claims, user }))
    }

    /// Verifies an ID token as the relying party `client_id` of `tenant_name`:
    /// signature by a published key, `typ`, issuer, audience, expiry, issue time
    /// and the nonce of the sign-in that asked for it.
    pub async fn verify_id_token(
        &self,
        tenant_name: &str,
        token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Result<IdClaims, TokenError>, StsError> {
        let now = self.now().secs();
        let claims: IdClaims = match self.verify_signed(token, ID_TOKEN_TYP).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if claims.iss != self.issuer(tenant_name) {
            return Ok(Err(TokenError::WrongIssuer));
        }
        if claims.aud != client_id {
            return Ok(Err(TokenError::WrongAudience));
        }
        if claims.exp <= now {
            return Ok(Err(TokenError::Expired));
        }
        if claims.iat > now + IAT_SKEW_SECS {
            return Ok(Err(TokenError::NotYetValid));
        }
        if claims.nonce.as_deref() != Some(nonce) {
            return Ok(Err(TokenError::WrongNonce));
        }
        Ok(Ok(claims))
    }

    /// Signs an identity assertion for a backend of the app `app_id`, valid for
    /// `ttl`.
    pub async fn sign_assertion(
        &self,
        tenant: &Tenant,
        app_id: &str,
        subject: &AssertionSubject<'_>,
        ttl: Duration,
    ) -> Result<String, StsError> {
        let now = self.now();
        let claims = AssertionClaims {
            iss: self.issuer(&tenant.name),
            sub: subject.user_id.to_owned(),
            aud: assertion_audience(app_id),
            exp: (now + ttl).secs(),
            iat: now.secs(),
            tid: tenant.id.clone(),
            preferred_username: subject.username.to_owned(),
            email: subject.email.map(str::to_owned),
            groups: subject.groups.to_vec(),
        };
        self.sign(&claims, ASSERTION_TYP, now).await
    }

    /// Verifies an identity assertion as the backend of app `app_id` of tenant
    /// `tenant` must (see `docs/security.md`): RS256 with a key the issuer
    /// publishes, `typ` [`ASSERTION_TYP`], issuer, audience
    /// [`assertion_audience`], expiry and issue time, and the tenant ID.
    pub async fn verify_assertion(
        &self,
        tenant: &Tenant,
        token: &str,
        app_id: &str,
    ) -> Result<Result<AssertionClaims, TokenError>, StsError> {
        let now = self.now().secs();
        let claims: AssertionClaims = match self.verify_signed(token, ASSERTION_TYP).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if claims.iss != self.issuer(&tenant.name) || claims.tid != tenant.id {
            return Ok(Err(TokenError::WrongIssuer));
        }
        if claims.aud != assertion_audience(app_id) {
            return Ok(Err(TokenError::WrongAudience));
        }
        if claims.exp <= now {
            return Ok(Err(TokenError::Expired));
        }
        if claims.iat > now + IAT_SKEW_SECS {
            return Ok(Err(TokenError::NotYetValid));
        }
        Ok(Ok(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_front_door_shows_them() {
        assert_eq!(
            SignInRefused::ClientGone.to_string(),
            "the app's sign-in client no longer exists"
        );
        assert_eq!(
            SignInRefused::WrongNonce.to_string(),
            TokenError::WrongNonce.to_string()
        );
        assert_eq!(
            SignInRefused::Code("the code was already used".into()).to_string(),
            "the code was already used"
        );
    }
}
