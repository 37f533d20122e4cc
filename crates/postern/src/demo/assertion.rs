//! How the sample app checks who the front door says the user is: the
//! `X-Postern-Assertion` JWT, verified against the organisation's JWKS the way
//! `docs/security.md` ("What a backend must check in the assertion") asks of
//! any backend: the signature with the key its `kid` names (the set fetched
//! again for an unknown `kid`), `alg` RS256 only, `typ`
//! `postern-assertion+jwt`, `iss`, `aud` `urn:postern:app:<app id>`, `exp`
//! and `iat` with a minute of clock skew, and `tid`.

use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use postern_time::{SharedClock, UnixTime};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The `typ` of an assertion.
const ASSERTION_TYP: &str = "postern-assertion+jwt";
/// Clock skew allowed either way.
const SKEW_SECS: i64 = 60;
/// The JWKS is fetched again for an unknown `kid` at most this often (seconds).
const REFETCH_AFTER_SECS: i64 = 5;

/// The claims of a verified assertion.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Identity {
    /// Issuer.
    pub(crate) iss: String,
    /// The stable user ID: what a backend keys users on.
    pub(crate) sub: String,
    /// Audience.
    pub(crate) aud: String,
    /// Expiry (Unix seconds).
    pub(crate) exp: i64,
    /// Issued at (Unix seconds).
    pub(crate) iat: i64,
    /// The organisation's ID.
    pub(crate) tid: String,
    /// Sign-in name.
    pub(crate) preferred_username: String,
    /// E-mail, if known.
    #[serde(default)]
    pub(crate) email: Option<String>,
    /// Group names.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
}

/// What one backend expects of its assertions.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    /// `{public_url}/t/{tenant}`.
    pub(crate) issuer: String,
    /// `urn:postern:app:<app id>`.
    pub(crate) audience: String,
    /// The organisation's ID.
    pub(crate) tenant_id: String,
}

/// The key set, and when it was fetched.
struct Keys {
    set: JwkSet,
    fetched: Option<UnixTime>,
}

/// Verifies assertions for one app.
pub(crate) struct Verifier {
    http: reqwest::Client,
    expected: Expected,
    clock: SharedClock,
    keys: Mutex<Keys>,
}

impl Verifier {
    /// A verifier fetching the JWKS over HTTPS, trusting `ca_pem` (the demo's
    /// self-signed certificate) for it.
    pub(crate) fn new(expected: Expected, ca_pem: &str, clock: SharedClock) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes())?])
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            expected,
            clock,
            keys: Mutex::new(Keys {
                set: JwkSet { keys: Vec::new() },
                fetched: None,
            }),
        })
    }

    /// The JWKS URL.
    pub(crate) fn jwks_url(&self) -> String {
        format!("{}/jwks.json", self.expected.issuer)
    }

    /// What this verifier expects.
    pub(crate) fn expected(&self) -> &Expected {
        &self.expected
    }

    /// The identity in `token`, or which check failed.
    pub(crate) async fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if header.alg != Algorithm::RS256 {
            return Err(format!("alg is {:?}, not RS256", header.alg));
        }
        if header.typ.as_deref() != Some(ASSERTION_TYP) {
            return Err(format!("typ is {:?}, not {ASSERTION_TYP}", header.typ));
        }
        let kid = header.kid.ok_or("the header names no kid")?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        // Issuer, audience and times are checked below, against the demo's clock.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let identity = jsonwebtoken::decode::<Identity>(token, &key, &validation)
            .map_err(|e| format!("signature or claims: {e}"))?
            .claims;
        self.check_claims(&identity, self.clock.now())?;
        Ok(identity)
    }

    fn check_claims(&self, identity: &Identity, now: UnixTime) -> Result<(), String> {
        let expected = &self.expected;
        if identity.iss != expected.issuer {
            return Err(format!("iss is {}, not {}", identity.iss, expected.issuer));
        }
        if identity.aud != expected.audience {
            return Err(format!("aud is {}, not {}", identity.aud, expected.audience));
        }
        if identity.tid != expected.tenant_id {
            return Err("tid names another organisation".into());
        }
        if identity.exp + SKEW_SECS <= now.secs() {
            return Err("expired".into());
        }
        if identity.iat > now.secs() + SKEW_SECS {
            return Err("issued in the future".into());
        }
        Ok(())
    }

    /// The key named `kid`, from the cached set or, if it is not there, from
    /// a fresh fetch (keys rotate).
    async fn key(&self, kid: &str) -> Result<DecodingKey, String> {
        let mut keys = self.keys.lock().await;
        let now = self.clock.now();
        let may_fetch = keys
            .fetched
            .is_none_or(|at| now.secs() - at.secs() >= REFETCH_AFTER_SECS);
        if keys.set.find(kid).is_none() && may_fetch {
            keys.set = self.fetch().await?;
            keys.fetched = Some(now);
        }
        let jwk = keys
            .set
            .find(kid)
            .ok_or_else(|| format!("no key {kid} in {}", self.jwks_url()))?;
        DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))
    }

    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = self.jwks_url();
        let failed = |e: reqwest::Error| format!("fetching {url}: {e}");
        self.http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?
            .json::<JwkSet>()
            .await
            .map_err(failed)
    }
}
