//! The security token service: OpenID Connect provider, sign-in pages, MFA and smart lockout.
//!
//! Every tenant has its own issuer, `{public_url}/t/{tenant}`, with the standard
//! endpoints below it (discovery, JWKS, authorize, token, userinfo, device
//! authorization, revocation, end-session) and the sign-in pages. Tokens are RS256
//! JWTs signed with installation-wide keys that rotate; access tokens name the
//! tenant's issuer, so a token of one tenant is refused by every other.
//!
//! State lives in the store, not in memory, so any number of instances can serve
//! behind a load balancer: sign-in flows, codes, sessions and lockout counters are
//! rows; only caches and the wrong-password memory of smart lockout are per process.
#![warn(missing_docs)]

mod access;
mod authenticate;
mod conditional;

pub mod client_ip;
mod cookies;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod keys;
pub mod lockout;
mod mfa;
mod oidc;
pub mod password;
pub mod registration;
pub mod relying_party;
mod risk;
mod setup;
mod signin;
mod tenants;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use postern_keyring::Keyring;
// The page shell of the sign-in pages, as `crate::pages` inside the STS.
use postern_pages as pages;
use postern_store::Store;
use postern_store::cache::{ReadCache, TIME_TO_LIVE};
use postern_time::{SharedClock, UnixTime};
use url::Url;

pub use access::{Admission, Denial, Presence};
pub use authenticate::{DirectoryProblem, PasswordVerdict, PtaTiming};
pub use client_ip::ClientIp;
pub use conditional::{AccessRequest, AccessVerdict};
pub use error::{OAuthError, StsError};
pub use keys::{Jwks, PublicJwk};
pub use password::{HashingBusy, HashingSettings, PasswordHasher, PasswordRejected};
pub use postern_policy::{ClientKind, RiskLevel};
pub use registration::{REGISTRATION_AUDIENCE, RegistrationClaims, registration_scope};
pub use risk::{RiskConfig, check_geoip_database};
pub use setup::SetupCode;
pub use tenants::{
    CLI_CLIENT_ID, CONSOLE_CLIENT_ID, InvalidField, NewTenantRequest, TenantCreateError, ValidatedTenant,
    validate_domain, validate_tenant_name, validate_username,
};
pub use tokens::{ADMIN_API_AUDIENCE, ADMIN_SCOPE, AccessClaims, TokenError};

/// Lifetimes and knobs of the STS.
#[derive(Clone, Debug)]
pub struct StsConfig {
    /// The URL browsers and clients reach the service at (no trailing slash).
    pub public_url: Url,
    /// Lifetime of access tokens.
    pub access_token_ttl: Duration,
    /// Lifetime of ID tokens.
    pub id_token_ttl: Duration,
    /// Lifetime of one refresh token (it rotates on each use).
    pub refresh_token_ttl: Duration,
    /// Lifetime of a refresh-token family, however often it rotates.
    pub refresh_family_ttl: Duration,
    /// Lifetime of a browser session at the STS.
    pub session_ttl: Duration,
    /// Time a user has to finish a sign-in.
    pub flow_ttl: Duration,
    /// Lifetime of authorization codes.
    pub auth_code_ttl: Duration,
    /// Lifetime of device codes.
    pub device_code_ttl: Duration,
    /// Minimum interval between device-code polls.
    pub device_poll_interval: Duration,
    /// Age at which the token-signing key is replaced.
    pub signing_key_rotation: Duration,
    /// Lifetime of the first-run setup code.
    pub setup_code_ttl: Duration,
    /// argon2id's parameters and the pool that runs them within the memory
    /// budget.
    pub passwords: password::HashingSettings,
    /// Deadlines of pass-through authentication.
    pub pta: PtaTiming,
    /// Lifetime of an agent's queue credential.
    pub queue_credential_ttl: Duration,
    /// Where sign-in risk signals come from, and their thresholds.
    pub risk: RiskConfig,
    /// Sign-ins of one tenant that may wait on its agents at once, unless the
    /// tenant has its own cap (SEC-9); `None`: only the relay's overall cap.
    pub pending_signins_per_tenant: Option<usize>,
}

impl StsConfig {
    /// Defaults for a service reachable at `public_url`.
    pub fn new(public_url: Url) -> Self {
        Self {
            public_url,
            access_token_ttl: Duration::from_secs(10 * 60),
            id_token_ttl: Duration::from_secs(10 * 60),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            refresh_family_ttl: Duration::from_secs(90 * 24 * 3600),
            session_ttl: Duration::from_secs(12 * 3600),
            flow_ttl: Duration::from_secs(15 * 60),
            auth_code_ttl: Duration::from_secs(60),
            device_code_ttl: Duration::from_secs(10 * 60),
            device_poll_interval: Duration::from_secs(5),
            signing_key_rotation: Duration::from_secs(90 * 24 * 3600),
            setup_code_ttl: Duration::from_secs(3600),
            passwords: password::HashingSettings::default(),
            pta: PtaTiming::default(),
            queue_credential_ttl: Duration::from_secs(3600),
            risk: RiskConfig::default(),
            pending_signins_per_tenant: Some(500),
        }
    }

    /// The longest lifetime of a signed token (how long a retired key stays
    /// published).
    pub fn longest_token_ttl(&self) -> Duration {
        self.access_token_ttl.max(self.id_token_ttl)
    }
}

/// The security token service.
pub struct Sts {
    store: Store,
    keyring: Arc<Keyring>,
    clock: SharedClock,
    config: StsConfig,
    keys: keys::SigningKeys,
    lockout: Arc<lockout::SmartLockout>,
    hasher: PasswordHasher,
    base: String,
    relay: std::sync::OnceLock<Arc<dyn postern_relay::SignInRelay>>,
    /// Whether a domain of a tenant signs in through agents, by (tenant, domain).
    passthrough_domains: ReadCache<(String, String), bool>,
    /// The current agents of a tenant, by tenant.
    agents: ReadCache<String, Arc<Vec<postern_store::Component>>>,
    /// Conditional access policies and named locations, by tenant.
    access_rules: ReadCache<String, Arc<conditional::TenantRules>>,
    /// Risk signals' files and recent failures.
    risk: risk::RiskAssessor,
}

impl std::fmt::Debug for Sts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sts")
            .field("public_url", &self.base)
            .finish_non_exhaustive()
    }
}

impl Sts {
    /// Builds the STS and makes sure a token-signing key exists (rotating it if it
    /// is older than the configured age).
    pub async fn new(
        store: Store,
        keyring: Arc<Keyring>,
        clock: SharedClock,
        config: StsConfig,
    ) -> Result<Arc<Self>, StsError> {
        let base = config.public_url.as_str().trim_end_matches('/').to_owned();
        let sts = Arc::new(Self {
            risk: risk::RiskAssessor::new(config.risk.clone()),
            keys: keys::SigningKeys::new(store.clone(), keyring.clone()),
            lockout: Arc::new(lockout::SmartLockout::new()?),
            hasher: PasswordHasher::new(config.passwords)?,
            store,
            keyring,
            clock: clock.clone(),
            config,
            base,
            relay: std::sync::OnceLock::new(),
            passthrough_domains: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            agents: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
            access_rules: ReadCache::with_clock(TIME_TO_LIVE, clock.clone()),
        });
        sts.maintain_signing_keys().await?;
        Ok(sts)
    }

    /// The HTTP routes of the STS (issuers under `/t/{tenant}`, first-run setup).
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/t/{tenant}/.well-known/openid-configuration",
                get(oidc::discovery::configuration),
            )
            .route("/t/{tenant}/jwks.json", get(oidc::discovery::jwks))
            .route(
                "/t/{tenant}/authorize",
                get(oidc::authorize::authorize).post(oidc::authorize::authorize_form),
            )
            .route("/t/{tenant}/token", post(oidc::token::token))
            .route(
                "/t/{tenant}/userinfo",
                get(oidc::userinfo::userinfo).post(oidc::userinfo::userinfo),
            )
            .route(
                "/t/{tenant}/device_authorization",
                post(oidc::device::device_authorization),
            )
            .route("/t/{tenant}/revoke", post(oidc::token::revoke))
            .route(
                "/t/{tenant}/logout",
                get(oidc::logout::logout).post(oidc::logout::logout_confirm),
            )
            .route(
                "/t/{tenant}/device",
                get(signin::device_entry).post(signin::device_entry_submit),
            )
            .route("/t/{tenant}/signin", get(signin::show).post(signin::submit))
            .route("/setup", get(setup::show).post(setup::submit))
            .with_state(self.clone())
    }

    /// Connects the relay to on-prem agents (pass-through authentication). Without
    /// it, passwords of pass-through domains cannot be checked.
    pub fn attach_relay(&self, relay: Arc<dyn postern_relay::SignInRelay>) {
        let _ = self.relay.set(relay);
    }

    /// The current time from the service clock.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The service clock, for the caches and timers of the parts built on the STS.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password hasher (bounded, off the async runtime).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// The configuration.
    pub fn config(&self) -> &StsConfig {
        &self.config
    }

    /// The issuer URL of a tenant.
    pub fn issuer(&self, tenant_name: &str) -> String {
        format!("{}/t/{}", self.base, tenant_name)
    }

    /// Whether cookies must carry `Secure` (the service is reached over HTTPS).
    pub(crate) fn secure_cookies(&self) -> bool {
        self.config.public_url.scheme() == "https"
    }

    /// Creates the first signing key, or rotates the active one when it is older
    /// than `signing_key_rotation`. Run at start and periodically.
    pub async fn maintain_signing_keys(&self) -> Result<(), StsError> {
        self.keys
            .ensure(
                self.config.signing_key_rotation,
                self.config.longest_token_ttl(),
                self.now(),
            )
            .await
    }

    /// Replaces the signing key now; the old one stays published until every token
    /// it signed has expired. Returns the new key ID.
    pub async fn rotate_signing_key(&self) -> Result<String, StsError> {
        let now = self.now();
        self.keys.rotate(now + self.config.longest_token_ttl(), now).await
    }

    /// The published keys (JWKS) at this moment.
    pub async fn jwks(&self) -> Result<Jwks, StsError> {
        self.keys.jwks(self.now()).await
    }

    /// Drops cached keys so the next use reads the store.
    pub async fn forget_cached_keys(&self) {
        self.keys.invalidate().await;
    }
}
