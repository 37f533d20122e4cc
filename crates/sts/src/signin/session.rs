//! Single sign-on sessions at the STS: created when a sign-in completes, read by
//! later authorization requests of the same tenant, ended by logout.

use axum::http::{HeaderMap, HeaderValue};
use postern_store::{Session, StoreError, Tenant};
use postern_time::UnixTime;

use crate::Sts;
use crate::cookies;
use crate::error::StsError;

impl Sts {
    /// The live session the request's cookie names in this tenant.
    pub(crate) async fn current_session(
        &self,
        tenant: &Tenant,
        headers: &HeaderMap,
    ) -> Result<Option<Session>, StsError> {
        let Some(value) = cookies::get(headers, cookies::SSO) else {
            return Ok(None);
        };
        match self
            .store
            .session_by_cookie(&postern_keyring::digest(&value), &tenant.id, self.now())
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a session and returns it with the cookie that carries it.
    pub(crate) async fn start_session(
        &self,
        tenant: &Tenant,
        user_id: &str,
        auth_time: UnixTime,
        mfa_at: Option<UnixTime>,
        amr: &str,
    ) -> Result<(Session, HeaderValue), StsError> {
        let value = postern_keyring::random_token()?;
        let now = self.now();
        let session = self
            .store
            .create_session(
                &postern_keyring::digest(value.expose()),
                &tenant.id,
                user_id,
                auth_time,
                mfa_at,
                amr,
                now,
                now + self.config.session_ttl,
            )
            .await?;
        let cookie = cookies::set(
            cookies::SSO,
            value.expose(),
            &cookies::tenant_path(&tenant.name),
            Some(self.config.session_ttl),
            self.secure_cookies(),
        );
        Ok((session, cookie))
    }

    /// A `Set-Cookie` that removes the tenant's session cookie.
    pub(crate) fn clear_session_cookie(&self, tenant: &Tenant) -> HeaderValue {
        cookies::set(
            cookies::SSO,
            "",
            &cookies::tenant_path(&tenant.name),
            Some(std::time::Duration::ZERO),
            self.secure_cookies(),
        )
    }
}
