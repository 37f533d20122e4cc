//! A sign-in flow: the server-side state of one browser's way through the sign-in
//! pages, stored as a row keyed by the digest of its ID. A flow is bound to the
//! browser that started it (the digest of its `postern_bind` cookie) and every form
//! post carries the flow's CSRF token, so neither a stolen flow ID nor a cross-site
//! form can drive someone else's sign-in.

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_store::{StoreError, Tenant};
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

use super::device::{DeviceRequest, Proof};
use crate::Sts;
use crate::cookies;
use crate::error::StsError;

/// A validated authorization request, waiting for the user to sign in.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuthRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: String,
}

/// What the sign-in is for.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Purpose {
    /// An OIDC authorization request; ends with a redirect to the client.
    Authorize(AuthRequest),
    /// Approving a device (RFC 8628); ends with a confirmation page.
    Device {
        device_code_digest: String,
        client_name: String,
        /// What the device asks for, as the approval page names it.
        #[serde(default)]
        request: DeviceRequest,
    },
}

/// Where the user is in the flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Stage {
    Username,
    Password,
    Totp,
    Recovery,
    Enrol,
    Enrolled,
    DeviceConfirm,
}

/// The stored state of a flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Flow {
    pub purpose: Purpose,
    /// Digest (base64url) of the browser-binding cookie.
    pub bind: String,
    /// CSRF token every form of this flow must carry.
    pub csrf: String,
    pub stage: Stage,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub auth_time: Option<UnixTime>,
    pub amr: Vec<String>,
    /// An existing SSO session being stepped up to MFA.
    pub session_id: Option<String>,
    pub mfa_failures: u32,
    /// A TOTP seed being enrolled, sealed.
    pub pending_seed: Option<String>,
    /// Authentication methods checked in this flow itself (not carried over
    /// from a session).
    #[serde(default)]
    pub proven: Vec<String>,
    /// What approving the device request still needs from the user.
    #[serde(default)]
    pub approval_needs: Vec<Proof>,
    /// A conditional access policy demands a second factor for this sign-in.
    #[serde(default)]
    pub policy_mfa: bool,
    /// The sign-in risk assessed before the password was checked (reused
    /// after it: a success makes the network familiar).
    #[serde(default)]
    pub risk: Option<postern_policy::RiskAssessment>,
    /// The decision made once the user was authenticated, as the sign-in log
    /// keeps it (logged again with the success).
    #[serde(default)]
    pub access: Option<serde_json::Value>,
}

impl Flow {
    /// The client signed in to, and how: a browser for an authorization
    /// request, the device flow (the command line) for a device approval.
    pub(crate) fn client(&self) -> (String, postern_policy::ClientKind) {
        match &self.purpose {
            Purpose::Authorize(r) => (r.client_id.clone(), postern_policy::ClientKind::Browser),
            Purpose::Device { .. } => (crate::CLI_CLIENT_ID.to_owned(), postern_policy::ClientKind::DeviceFlow),
        }
    }

    pub(crate) fn new(purpose: Purpose, bind: String, csrf: String) -> Self {
        Self {
            purpose,
            bind,
            csrf,
            stage: Stage::Username,
            username: None,
            user_id: None,
            auth_time: None,
            amr: Vec::new(),
            session_id: None,
            mfa_failures: 0,
            pending_seed: None,
            proven: Vec::new(),
            approval_needs: Vec::new(),
            policy_mfa: false,
            risk: None,
            access: None,
        }
    }

    /// Adds authentication methods just checked in this flow, keeping each once.
    pub(crate) fn add_amr(&mut self, methods: &[&str]) {
        for m in methods {
            if !self.amr.iter().any(|a| a == m) {
                self.amr.push((*m).to_owned());
            }
            if !self.proven.iter().any(|a| a == m) {
                self.proven.push((*m).to_owned());
            }
        }
    }

    /// Whether `method` was checked in this flow itself.
    pub(crate) fn proved(&self, method: &str) -> bool {
        self.proven.iter().any(|m| m == method)
    }
}

fn digest_b64(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(postern_keyring::digest(secret))
}

/// The browser-binding cookie of a request, or a new one to set.
pub(crate) fn browser_binding(sts: &Sts, headers: &HeaderMap) -> Result<(String, Option<HeaderValue>), StsError> {
    if let Some(existing) = cookies::get(headers, cookies::BIND)
        && existing.len() == 43
        && existing
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok((existing, None));
    }
    let fresh = postern_keyring::random_token()?;
    let cookie = cookies::set(cookies::BIND, fresh.expose(), "/", None, sts.secure_cookies());
    Ok((fresh.expose().to_owned(), Some(cookie)))
}

impl Sts {
    /// Stores a new flow bound to the requesting browser. Returns its ID and the
    /// binding cookie to set, if the browser had none.
    pub(crate) async fn start_flow(
        &self,
        tenant: &Tenant,
        purpose: Purpose,
        headers: &HeaderMap,
        prepare: impl FnOnce(&mut Flow),
    ) -> Result<(String, Option<HeaderValue>), StsError> {
        let (id, cookie, _) = self.start_flow_with(tenant, purpose, headers, prepare).await?;
        Ok((id, cookie))
    }

    /// [`Sts::start_flow`], also returning the flow as stored (to show its
    /// first page without reading it back).
    pub(crate) async fn start_flow_with(
        &self,
        tenant: &Tenant,
        purpose: Purpose,
        headers: &HeaderMap,
        prepare: impl FnOnce(&mut Flow),
    ) -> Result<(String, Option<HeaderValue>, Flow), StsError> {
        let (bind, set_cookie) = browser_binding(self, headers)?;
        let id = postern_keyring::random_token()?;
        let csrf = postern_keyring::random_token()?;
        let mut flow = Flow::new(purpose, digest_b64(&bind), csrf.expose().to_owned());
        prepare(&mut flow);
        let now = self.now();
        let data = serde_json::to_string(&flow).map_err(|e| StsError::internal(e.to_string()))?;
        self.store
            .create_flow(
                &postern_keyring::digest(id.expose()),
                &tenant.id,
                &data,
                now,
                now + self.config.flow_ttl,
            )
            .await?;
        Ok((id.expose().to_owned(), set_cookie, flow))
    }

    /// The flow with this ID, if it exists in this tenant, has not expired, and
    /// belongs to the requesting browser.
    pub(crate) async fn load_flow(
        &self,
        tenant: &Tenant,
        id: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Flow>, StsError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let record = match self
            .store
            .flow(&postern_keyring::digest(id), &tenant.id, self.now())
            .await
        {
            Ok(r) => r,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let flow: Flow = serde_json::from_str(&record.data).map_err(|e| StsError::internal(format!("flow: {e}")))?;
        let Some(bind) = cookies::get(headers, cookies::BIND) else {
            return Ok(None);
        };
        if !postern_keyring::constant_time_eq(digest_b64(&bind).as_bytes(), flow.bind.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(flow))
    }

    /// Saves a flow's new state.
    pub(crate) async fn save_flow(&self, id: &str, flow: &Flow) -> Result<(), StsError> {
        let data = serde_json::to_string(flow).map_err(|e| StsError::internal(e.to_string()))?;
        self.store.update_flow(&postern_keyring::digest(id), &data).await?;
        Ok(())
    }

    /// Ends a flow.
    pub(crate) async fn end_flow(&self, id: &str) -> Result<(), StsError> {
        self.store.delete_flow(&postern_keyring::digest(id)).await?;
        Ok(())
    }
}
