//! The OpenID Connect / OAuth 2.0 protocol endpoints and what they share: scope
//! rules, PKCE, and issuing a token response.

pub(crate) mod authorize;
pub(crate) mod device;
pub(crate) mod discovery;
pub(crate) mod logout;
mod redirect;
pub(crate) mod token;
pub(crate) mod userinfo;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_store::{OAuthClient, RefreshToken, Tenant, User};
use postern_time::UnixTime;
use serde::Serialize;

use crate::Sts;
use crate::error::{OAuthError, StsError};
use crate::tokens::{
    ACCESS_TOKEN_TYP, ADMIN_API_AUDIENCE, ADMIN_SCOPE, AccessClaims, Audience, ID_TOKEN_TYP, IdClaims,
};

/// Scopes every client may ask for.
pub(crate) const STANDARD_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Grant type names.
pub(crate) const GRANT_CODE: &str = "authorization_code";
pub(crate) const GRANT_REFRESH: &str = "refresh_token";
pub(crate) const GRANT_DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Checks a requested scope against what the client may have; returns it
/// normalized (deduplicated, in request order). Registration scopes are never
/// granted here, whatever the client's configuration says: only the device
/// authorization endpoint grants them, alone (see [`crate::registration`]).
pub(crate) fn validate_scope(requested: &str, client: &OAuthClient) -> Result<String, OAuthError> {
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if crate::registration::is_registration_scope(s) {
            return Err(OAuthError::bad_request(
                "invalid_scope",
                format!("scope {s:?} is only granted alone, to a device-flow registration"),
            ));
        }
        let allowed = STANDARD_SCOPES.contains(&s) || client.scopes.iter().any(|c| c == s);
        if !allowed {
            return Err(OAuthError::bad_request(
                "invalid_scope",
                format!("scope {s:?} is not allowed for this client"),
            ));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

/// Whether `scope` (space-separated) contains `wanted`.
pub(crate) fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split(' ').any(|s| s == wanted)
}

/// Checks a PKCE `code_verifier` against the S256 `code_challenge` (RFC 7636 §4.6).
pub(crate) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !well_formed {
        return false;
    }
    let computed = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ));
    postern_keyring::constant_time_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Authentication methods as stored (space-separated) as a list.
fn split_amr(amr: &str) -> Vec<String> {
    amr.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// A successful token response (RFC 6749 §5.1, OIDC Core §3.1.3.3).
#[derive(Debug, Serialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// What the tokens are issued for.
pub(crate) struct Grant<'a> {
    pub tenant: &'a Tenant,
    pub client: &'a OAuthClient,
    pub user: &'a User,
    pub scope: &'a str,
    pub auth_time: UnixTime,
    pub amr: &'a str,
    pub session_id: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// What to do about a refresh token.
pub(crate) enum RefreshPlan {
    /// Issue none.
    None,
    /// Start a new family (first grant).
    NewFamily(String),
    /// Hand out a token already stored by rotation.
    Rotated(String),
}

impl Sts {
    /// Signs the access token (and ID token for `openid`) for a grant and, per
    /// `refresh`, issues a refresh token.
    pub(crate) async fn issue_tokens(&self, grant: Grant<'_>, refresh: RefreshPlan) -> Result<TokenResponse, StsError> {
        let now = self.now();
        let mut aud = vec![grant.client.client_id.clone()];
        if has_scope(grant.scope, ADMIN_SCOPE) {
            aud.push(ADMIN_API_AUDIENCE.to_owned());
        }
        let access_ttl = self.config.access_token_ttl;
        let access = AccessClaims {
            iss: self.issuer(&grant.tenant.name),
            sub: grant.user.id.clone(),
            aud: Audience::Many(aud),
            exp: (now + access_ttl).secs(),
            iat: now.secs(),
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: grant.client.client_id.clone(),
            scope: grant.scope.to_owned(),
            tid: grant.tenant.id.clone(),
            auth_time: grant.auth_time.secs(),
            amr: split_amr(grant.amr),
            sid: grant.session_id.map(str::to_owned),
        };
        let access_token = self.sign(&access, ACCESS_TOKEN_TYP, now).await?;
        let id_token = if has_scope(grant.scope, "openid") {
            Some(self.sign(&self.id_claims(&grant, now), ID_TOKEN_TYP, now).await?)
        } else {
            None
        };
        let refresh_token = match refresh {
            RefreshPlan::None => None,
            RefreshPlan::Rotated(token) => Some(token),
            RefreshPlan::NewFamily(family_id) => {
                let token = postern_keyring::random_token()?;
                self.store
                    .create_refresh_token(
                        &postern_keyring::digest(token.expose()),
                        &RefreshToken {
                            family_id,
                            tenant_id: grant.tenant.id.clone(),
                            client_id: grant.client.client_id.clone(),
                            user_id: grant.user.id.clone(),
                            session_id: grant.session_id.map(str::to_owned),
                            scope: grant.scope.to_owned(),
                            auth_time: grant.auth_time,
                            amr: grant.amr.to_owned(),
                            expires_at: now + self.config.refresh_token_ttl,
                            family_expires_at: now + self.config.refresh_family_ttl,
                        },
                        now,
                    )
                    .await?;
                Some(token.expose().to_owned())
            }
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: access_ttl.as_secs(),
            scope: grant.scope.to_owned(),
            id_token,
            refresh_token,
        })
    }

    /// The claims of the ID token for a grant, issued `now`.
    pub(crate) fn id_claims(&self, grant: &Grant<'_>, now: UnixTime) -> IdClaims {
        let profile = has_scope(grant.scope, "profile");
        let email = has_scope(grant.scope, "email");
        IdClaims {
            iss: self.issuer(&grant.tenant.name),
            sub: grant.user.id.clone(),
            aud: grant.client.client_id.clone(),
            exp: (now + self.config.id_token_ttl).secs(),
            iat: now.secs(),
            auth_time: grant.auth_time.secs(),
            nonce: grant.nonce.map(str::to_owned),
            amr: split_amr(grant.amr),
            sid: grant.session_id.map(str::to_owned),
            tid: grant.tenant.id.clone(),
            azp: grant.client.client_id.clone(),
            name: profile.then(|| grant.user.display_name.clone()),
            preferred_username: profile.then(|| grant.user.username.clone()),
            email: if email { grant.user.email.clone() } else { None },
            email_verified: (email && grant.user.email.is_some()).then_some(false),
        }
    }

    /// Whether a grant may carry a refresh token.
    pub(crate) fn wants_refresh(scope: &str, client: &OAuthClient) -> bool {
        has_scope(scope, "offline_access") && client.allows_grant(GRANT_REFRESH)
    }
}

#[cfg(feature = "testing")]
impl Sts {
    /// Test support: signs an access token for `user` of `tenant` as if the
    /// built-in CLI client had obtained it with `scope`, without any sign-in.
    /// Only compiled with the `testing` feature; the service never enables it.
    pub async fn mint_access_token_for_tests(
        &self,
        tenant: &Tenant,
        user: &User,
        scope: &str,
    ) -> Result<String, StsError> {
        let client = self.store.client(&tenant.id, crate::CLI_CLIENT_ID).await?;
        let tokens = self
            .issue_tokens(
                Grant {
                    tenant,
                    client: &client,
                    user,
                    scope,
                    auth_time: self.now(),
                    amr: "pwd mfa",
                    session_id: None,
                    nonce: None,
                },
                RefreshPlan::None,
            )
            .await?;
        Ok(tokens.access_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX", challenge));
        assert!(!pkce_matches("short", challenge));
        assert!(!pkce_matches(&format!("{verifier}!"), challenge));
    }

    #[test]
    fn scopes() {
        let client = OAuthClient {
            tenant_id: "t".into(),
            client_id: "c".into(),
            name: "c".into(),
            secret_digest: None,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec!["postern:admin".into()],
            builtin: false,
            created_at: UnixTime::from_secs(0),
        };
        assert_eq!(
            validate_scope("openid  profile openid", &client).unwrap(),
            "openid profile"
        );
        assert_eq!(
            validate_scope("openid postern:admin", &client).unwrap(),
            "openid postern:admin"
        );
        assert_eq!(
            validate_scope("openid admin", &client).unwrap_err().error,
            "invalid_scope"
        );
        let mut registering = client.clone();
        registering.scopes.push("postern:register:connector".into());
        assert_eq!(
            validate_scope("postern:register:connector", &registering)
                .unwrap_err()
                .error,
            "invalid_scope",
            "not even a client configured with it gets a registration scope here"
        );
    }
}
