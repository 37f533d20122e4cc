//! A public OAuth client of one tenant's issuer at the service: refresh and
//! revocation here, the device authorization grant in [`crate::device`].
//! Generic over the client ID and scope, so `postern admin login`, `postern
//! connector register` and `postern agent register` share it.

use std::time::Duration;

use postern_keyring::SecretString;
use serde::Deserialize;
use url::Url;

use crate::error::ClientError;
use crate::http;

/// A tenant's issuer at the service, `{server}/t/{tenant}`, where its OAuth
/// endpoints live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    server: Url,
    tenant: String,
}

impl Issuer {
    /// The issuer of `tenant` at `server` (an `http(s)` URL).
    pub fn new(server: &str, tenant: &str) -> Result<Self, ClientError> {
        let server = http::parse_server(server)?;
        let tenant = tenant.trim();
        if tenant.is_empty() || !tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ClientError::InvalidUrl(format!("{tenant:?} is not a tenant name")));
        }
        Ok(Self {
            server,
            tenant: tenant.to_owned(),
        })
    }

    /// The service's URL.
    pub fn server(&self) -> &Url {
        &self.server
    }

    /// The tenant's short name.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The URL of endpoint `name` (`token`, `device_authorization`, ...).
    pub fn endpoint(&self, name: &str) -> Result<Url, ClientError> {
        http::join(&self.server, &["t", &self.tenant, name])
    }
}

/// Tokens from the token endpoint. `Debug` masks them.
#[derive(Clone, Debug, Deserialize)]
pub struct TokenSet {
    /// The access token (a JWT).
    pub access_token: SecretString,
    /// A refresh token, when `offline_access` was granted.
    #[serde(default)]
    pub refresh_token: Option<SecretString>,
    /// Seconds the access token is valid for.
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    /// The scope granted.
    #[serde(default)]
    pub scope: String,
    /// `Bearer`.
    pub token_type: String,
}

fn default_expires_in() -> u64 {
    // RFC 6749 makes expires_in optional; assume a short life so it refreshes.
    60
}

impl TokenSet {
    /// How long the access token stays valid.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.expires_in)
    }
}

/// An OAuth error response (RFC 6749 §5.2).
#[derive(Deserialize)]
struct OAuthErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// A public client (no secret) of a tenant's issuer.
#[derive(Clone, Debug)]
pub struct PublicClient {
    pub(crate) http: reqwest::Client,
    pub(crate) issuer: Issuer,
    pub(crate) client_id: String,
}

impl PublicClient {
    /// A client `client_id` of `issuer`, each request limited to `timeout`.
    pub fn new(issuer: Issuer, client_id: &str, timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self {
            http: http::client(timeout)?,
            issuer,
            client_id: client_id.to_owned(),
        })
    }

    /// The issuer this client talks to.
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// POSTs `form` (plus `client_id`) to endpoint `name`; an OAuth error
    /// answer becomes [`ClientError::OAuth`].
    pub(crate) async fn post_form(&self, name: &str, form: &[(&str, &str)]) -> Result<reqwest::Response, ClientError> {
        let url = self.issuer.endpoint(name)?;
        let mut fields = vec![("client_id", self.client_id.as_str())];
        fields.extend_from_slice(form);
        let response = http::send(self.http.post(url.clone()).form(&fields), &url).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        match serde_json::from_slice::<OAuthErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::OAuth {
                status,
                error: body.error,
                description: body.error_description,
            }),
            Err(_) => Err(ClientError::InvalidResponse(format!("{url} answered HTTP {status}"))),
        }
    }

    /// Exchanges a refresh token for new tokens (it rotates: use the new
    /// refresh token from now on). `invalid_grant` means sign in again.
    pub async fn refresh(&self, refresh_token: &SecretString) -> Result<TokenSet, ClientError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
        ];
        let response = self.post_form("token", &form).await?;
        http::json(response, &self.issuer.endpoint("token")?).await
    }

    /// Revokes a refresh token and its whole family (RFC 7009), at sign-out.
    pub async fn revoke(&self, refresh_token: &SecretString) -> Result<(), ClientError> {
        let form = [("token", refresh_token.expose()), ("token_type_hint", "refresh_token")];
        self.post_form("revoke", &form).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuer_endpoints() {
        let issuer = Issuer::new("https://postern.example/", "acme").unwrap();
        assert_eq!(
            issuer.endpoint("token").unwrap().as_str(),
            "https://postern.example/t/acme/token"
        );
        assert!(Issuer::new("https://postern.example", "a/b").is_err());
        assert!(Issuer::new("https://postern.example", "").is_err());
    }

    #[test]
    fn token_sets_hide_their_tokens() {
        let t: TokenSet = serde_json::from_str(
            r#"{"access_token":"at-secret","refresh_token":"rt-secret","expires_in":600,"token_type":"Bearer","scope":"openid"}"#,
        )
        .unwrap();
        let debug = format!("{t:?}");
        assert!(!debug.contains("at-secret") && !debug.contains("rt-secret"), "{debug}");
        assert_eq!(t.lifetime(), Duration::from_secs(600));
    }
}
