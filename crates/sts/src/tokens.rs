//! Tokens the STS issues: ID tokens (OIDC Core §2) and JWT access tokens
//! (RFC 9068, `typ: at+jwt`), both RS256; and the one place that verifies access
//! tokens for the resources the service itself protects (admin API, userinfo).
//!
//! Verification takes `now` from the service's clock, not the library's, so tests
//! control expiry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

use crate::Sts;
use crate::error::StsError;

/// `typ` header of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";
/// `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Audience of access tokens for the admin API.
pub const ADMIN_API_AUDIENCE: &str = "urn:postern:admin-api";
/// Scope that asks for an admin API token.
pub const ADMIN_SCOPE: &str = "postern:admin";
/// `typ` header of agents' queue credentials.
pub const QUEUE_CREDENTIAL_TYP: &str = "queue+jwt";
/// Audience of agents' queue credentials.
pub const RELAY_AUDIENCE: &str = "urn:postern:relay";
/// Tolerance for tokens issued by a peer instance with a slightly fast clock.
const IAT_SKEW_SECS: i64 = 60;

/// The protected header of the tokens the STS signs.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'a str,
    kid: &'a str,
}

/// One string or several, as the `aud` claim allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `aud` is among the audiences.
    pub fn contains(&self, aud: &str) -> bool {
        match self {
            Audience::One(a) => a == aud,
            Audience::Many(all) => all.iter().any(|a| a == aud),
        }
    }
}

/// Claims of an ID token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer: the tenant's issuer URL.
    pub iss: String,
    /// Subject: the user ID.
    pub sub: String,
    /// The client ID.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user authenticated.
    pub auth_time: i64,
    /// The client's nonce.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authentication methods (RFC 8176): `pwd`, `otp`, `mfa`.
    pub amr: Vec<String>,
    /// Session ID at the STS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Tenant ID.
    pub tid: String,
    /// Authorized party.
    pub azp: String,
    /// Display name (scope `profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Sign-in name (scope `profile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    /// Email (scope `email`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the email was verified (scope `email`); the service does not verify
    /// addresses, so this is false when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// Claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the tenant's issuer URL.
    pub iss: String,
    /// Subject: the user ID.
    pub sub: String,
    /// Resources the token is for.
    pub aud: Audience,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Unique token ID.
    pub jti: String,
    /// Client it was issued to.
    pub client_id: String,
    /// Granted scope, space-separated.
    pub scope: String,
    /// Tenant ID.
    pub tid: String,
    /// When the user authenticated.
    pub auth_time: i64,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// Session ID at the STS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

impl AccessClaims {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope.split(' ').any(|s| s == scope)
    }
}

/// Claims of an agent's queue credential (PTA-4): good for one agent and one
/// tenant's queue only.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueueClaims {
    /// The service (its public URL).
    pub iss: String,
    /// The agent's component ID.
    pub sub: String,
    /// [`RELAY_AUDIENCE`].
    pub aud: String,
    /// The tenant whose queue it opens.
    pub tid: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
}

/// Why an access token was refused. Each is a 401 `invalid_token` to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or not one of ours (wrong `alg`, unknown key).
    #[error("malformed or unknown token")]
    Malformed,
    /// A token of another kind (its `typ` header): e.g. an ID token presented
    /// as an access token or as a backend's identity assertion.
    #[error("token is of another kind (typ)")]
    WrongType,
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// Issued by another tenant or another service.
    #[error("token was issued for another tenant")]
    WrongIssuer,
    /// Meant for another resource.
    #[error("token is meant for another audience")]
    WrongAudience,
    /// Past its expiry.
    #[error("token has expired")]
    Expired,
    /// Issued in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// An ID token whose nonce is not the one its sign-in asked for (replayed).
    #[error("token was issued for another sign-in (nonce mismatch)")]
    WrongNonce,
}

impl Sts {
    /// Signs `claims` with the active key: a compact JWS (RFC 7515 §7.1) with
    /// `alg`, `typ` and `kid` in its header.
    pub(crate) async fn sign<T: Serialize>(&self, claims: &T, typ: &str, now: UnixTime) -> Result<String, StsError> {
        let key = self.keys.active(now).await?;
        let header = JwsHeader {
            alg: "RS256",
            typ,
            kid: &key.kid,
        };
        let encode = |json: serde_json::Result<Vec<u8>>| {
            json.map(|bytes| URL_SAFE_NO_PAD.encode(bytes))
                .map_err(|e| StsError::internal(format!("encoding a token: {e}")))
        };
        let mut token = encode(serde_json::to_vec(&header))?;
        token.push('.');
        token.push_str(&encode(serde_json::to_vec(claims))?);
        let signature = key.sign(token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(token)
    }

    /// Checks a JWT's header (RS256, `typ`, a published `kid`) and signature, and
    /// decodes its claims. Claims are checked by the caller.
    pub(crate) async fn verify_signed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
    ) -> Result<Result<T, TokenError>, StsError> {
        let kid = match signed_header_kid(token, typ) {
            Ok(kid) => kid,
            Err(e) => return Ok(Err(e)),
        };
        let Some(key) = self.keys.verifying_key(&kid, self.now()).await? else {
            return Ok(Err(TokenError::Malformed));
        };
        Ok(decode_signed(token, &key))
    }

    async fn verify_access(
        &self,
        tenant_name: &str,
        token: &str,
        audience: Option<&str>,
    ) -> Result<Result<AccessClaims, TokenError>, StsError> {
        let now = self.now();
        let claims: AccessClaims = match self.verify_signed(token, ACCESS_TOKEN_TYP).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if claims.iss != self.issuer(tenant_name) {
            return Ok(Err(TokenError::WrongIssuer));
        }
        if audience.is_some_and(|aud| !claims.aud.contains(aud)) {
            return Ok(Err(TokenError::WrongAudience));
        }
        if claims.exp <= now.secs() {
            return Ok(Err(TokenError::Expired));
        }
        if claims.iat > now.secs() + IAT_SKEW_SECS {
            return Ok(Err(TokenError::NotYetValid));
        }
        Ok(Ok(claims))
    }

    /// Verifies an access token for `audience` issued by `tenant_name`'s issuer:
    /// signature with a published key, `typ`, issuer, audience, expiry and issue
    /// time against the service clock. The outer error is the service's; the inner
    /// one is why the token is refused.
    pub async fn verify_access_token(
        &self,
        tenant_name: &str,
        token: &str,
        audience: &str,
    ) -> Result<Result<AccessClaims, TokenError>, StsError> {
        self.verify_access(tenant_name, token, Some(audience)).await
    }

    /// Verifies an access token of this tenant whatever client it was issued to
    /// (for userinfo).
    pub(crate) async fn verify_access_token_for_any_client(
        &self,
        tenant_name: &str,
        token: &str,
    ) -> Result<Result<AccessClaims, TokenError>, StsError> {
        self.verify_access(tenant_name, token, None).await
    }

    /// Verifies an ID token this tenant issued, expired or not (an `id_token_hint`
    /// at logout only has to prove who it was issued to).
    pub(crate) async fn verify_id_token_hint(
        &self,
        tenant_name: &str,
        token: &str,
    ) -> Result<Option<IdClaims>, StsError> {
        let claims: IdClaims = match self.verify_signed(token, ID_TOKEN_TYP).await? {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        Ok((claims.iss == self.issuer(tenant_name)).then_some(claims))
    }

    /// Issues a queue credential for `agent_id` of `tenant_id` (PTA-4), valid for
    /// `queue_credential_ttl`. Returns the credential and its expiry.
    pub async fn issue_queue_credential(
        &self,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<(String, UnixTime), StsError> {
        let now = self.now();
        let exp = now + self.config.queue_credential_ttl;
        let claims = QueueClaims {
            iss: self.base.clone(),
            sub: agent_id.to_owned(),
            aud: RELAY_AUDIENCE.to_owned(),
            tid: tenant_id.to_owned(),
            exp: exp.secs(),
            iat: now.secs(),
        };
        Ok((self.sign(&claims, QUEUE_CREDENTIAL_TYP, now).await?, exp))
    }

    /// Verifies a queue credential: signature, issuer, audience and expiry.
    pub async fn verify_queue_credential(&self, token: &str) -> Result<Result<QueueClaims, TokenError>, StsError> {
        let now = self.now();
        let claims: QueueClaims = match self.verify_signed(token, QUEUE_CREDENTIAL_TYP).await? {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if claims.iss != self.base {
            return Ok(Err(TokenError::WrongIssuer));
        }
        if claims.aud != RELAY_AUDIENCE {
            return Ok(Err(TokenError::WrongAudience));
        }
        if claims.exp <= now.secs() {
            return Ok(Err(TokenError::Expired));
        }
        Ok(Ok(claims))
    }

    /// Verifies a bearer token for the admin API: finds the tenant from the token's
    /// issuer, then checks signature, issuer, audience ([`ADMIN_API_AUDIENCE`]),
    /// expiry, scope ([`ADMIN_SCOPE`]) and that the tenant ID claim matches.
    pub async fn verify_admin_token(
        &self,
        token: &str,
    ) -> Result<Result<(postern_store::Tenant, AccessClaims), TokenError>, StsError> {
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
        let claims = match self
            .verify_access_token(&tenant.name, token, ADMIN_API_AUDIENCE)
            .await?
        {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if claims.tid != tenant.id {
            return Ok(Err(TokenError::WrongIssuer));
        }
        if !claims.has_scope(ADMIN_SCOPE) {
            return Ok(Err(TokenError::WrongAudience));
        }
        Ok(Ok((tenant, claims)))
    }
}

/// Checks a JWT's header before any key is looked up: RS256, `typ`, and a
/// `kid`, which it returns.
pub(crate) fn signed_header_kid(token: &str, typ: &str) -> Result<String, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenError::Malformed);
    }
    if header.typ.as_deref() != Some(typ) {
        return Err(TokenError::WrongType);
    }
    header.kid.ok_or(TokenError::Malformed)
}

/// Checks a JWT's RS256 signature with `key` and decodes its claims. Time,
/// issuer and audience are checked by the caller, against the service clock
/// and with errors that say which check failed.
pub(crate) fn decode_signed<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
) -> Result<T, TokenError> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    match jsonwebtoken::decode::<T>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        }),
    }
}

/// The `iss` claim of a JWT, read without verifying anything: only used to pick
/// which tenant's rules to verify it with.
pub(crate) fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    serde_json::from_slice::<Iss>(&bytes).ok().map(|i| i.iss)
}
