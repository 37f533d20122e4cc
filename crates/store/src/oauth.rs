//! OAuth grants in flight: authorization codes, refresh tokens and device codes.
//! All are looked up by the SHA-256 digest of the secret the client holds.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// An authorization code issued at the end of a sign-in.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuthCode {
    /// Tenant.
    pub tenant_id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// Signed-in user.
    pub user_id: String,
    /// Session it was issued in.
    pub session_id: Option<String>,
    /// Redirect URI of the authorization request; must match at the token endpoint.
    pub redirect_uri: String,
    /// Granted scope.
    pub scope: String,
    /// The client's nonce, echoed in the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: String,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// Authentication methods used.
    pub amr: String,
    /// Refresh-token family created when this code is redeemed; revoked if the code
    /// is replayed.
    pub family_id: String,
    /// When it stops being redeemable.
    pub expires_at: UnixTime,
}

/// What became of an attempt to redeem an authorization code.
#[derive(Debug)]
pub enum CodeRedemption {
    /// First use: the code's grant.
    Redeemed(Box<AuthCode>),
    /// The code was already used: the tokens issued from it have been revoked.
    Replayed,
    /// No such code in this tenant.
    Unknown,
}

/// A refresh token's grant.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct RefreshToken {
    /// Rotation family: all tokens descending from one sign-in.
    pub family_id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Client it was issued to.
    pub client_id: String,
    /// User.
    pub user_id: String,
    /// Session it belongs to, if any.
    pub session_id: Option<String>,
    /// Granted scope.
    pub scope: String,
    /// When the user authenticated.
    pub auth_time: UnixTime,
    /// Authentication methods used.
    pub amr: String,
    /// When this token expires.
    pub expires_at: UnixTime,
    /// When the whole family expires, however often it rotates.
    pub family_expires_at: UnixTime,
}

/// What became of an attempt to rotate a refresh token.
#[derive(Debug)]
pub enum RefreshRotation {
    /// The old token's grant; the new token is now valid in its place.
    Rotated(RefreshToken),
    /// The token was already used: the whole family has been revoked.
    Reused,
    /// Unknown, expired, revoked, or issued to another client.
    Invalid,
}

/// What a presented refresh token is, before anything is done with it.
#[derive(Debug)]
pub enum RefreshLookup {
    /// Unused, unrevoked and unexpired: its grant. Nothing was changed; rotate it
    /// with [`Store::rotate_refresh_token`] once every other check has passed.
    Usable(RefreshToken),
    /// The token was already used: the whole family has been revoked.
    Reused,
    /// Unknown, expired, revoked, or issued to another client.
    Invalid,
}

/// State of a device authorization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for the user.
    Pending,
    /// The user approved; tokens not yet collected.
    Approved,
    /// The user refused.
    Denied,
    /// Tokens were collected.
    Consumed,
}

impl TryFrom<String> for DeviceStatus {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Self, StoreError> {
        match s.as_str() {
            "pending" => Ok(DeviceStatus::Pending),
            "approved" => Ok(DeviceStatus::Approved),
            "denied" => Ok(DeviceStatus::Denied),
            "consumed" => Ok(DeviceStatus::Consumed),
            other => Err(StoreError::Corrupt(format!("device status {other:?}"))),
        }
    }
}

/// A device authorization request (RFC 8628).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct DeviceCode {
    /// Digest of the device code (the client's handle).
    pub device_code_digest: Vec<u8>,
    /// Tenant.
    pub tenant_id: String,
    /// Client that asked.
    pub client_id: String,
    /// Requested scope.
    pub scope: String,
    /// Where it stands.
    #[sqlx(try_from = "String")]
    pub status: DeviceStatus,
    /// User who approved.
    pub user_id: Option<String>,
    /// When that user authenticated.
    pub auth_time: Option<UnixTime>,
    /// Authentication methods used.
    pub amr: Option<String>,
    /// Minimum seconds between polls.
    pub interval_secs: i64,
    /// Last poll.
    pub last_poll_at: Option<UnixTime>,
    /// The component a registration asks for (`None` for a command-line sign-in).
    pub component_name: Option<String>,
    /// The address the request came from, as the service saw it.
    pub requested_from: String,
    /// When it was requested.
    pub created_at: UnixTime,
    /// When it expires.
    pub expires_at: UnixTime,
}

/// A device authorization request to store (RFC 8628 §3.1), with what the
/// approval page shows about it.
#[derive(Clone, Debug)]
pub struct NewDeviceCode<'a> {
    /// Digest of the device code (the client's handle).
    pub device_code_digest: &'a [u8],
    /// Digest of the user code (what the user types).
    pub user_code_digest: &'a [u8],
    /// Tenant.
    pub tenant_id: &'a str,
    /// Client that asks.
    pub client_id: &'a str,
    /// Requested scope.
    pub scope: &'a str,
    /// The component a registration asks for, if it is one.
    pub component_name: Option<&'a str>,
    /// The address the request came from.
    pub requested_from: &'a str,
    /// Minimum seconds between polls.
    pub interval_secs: i64,
    /// When it expires.
    pub expires_at: UnixTime,
}

macro_rules! code_columns {
    () => {
        "tenant_id, client_id, user_id, session_id, redirect_uri, scope, nonce, \
     code_challenge, auth_time, amr, family_id, expires_at"
    };
}
macro_rules! refresh_columns {
    () => {
        "family_id, tenant_id, client_id, user_id, session_id, scope, \
     auth_time, amr, expires_at, family_expires_at"
    };
}
macro_rules! device_columns {
    () => {
        "device_code_digest, tenant_id, client_id, scope, status, user_id, \
     auth_time, amr, interval_secs, last_poll_at, component_name, requested_from, \
     created_at, expires_at"
    };
}

impl Store {
    // ---- authorization codes -------------------------------------------------

    /// Stores an authorization code.
    pub async fn create_auth_code(&self, code_digest: &[u8], code: &AuthCode, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO auth_codes (code_digest, tenant_id, client_id, user_id, session_id, \
             redirect_uri, scope, nonce, code_challenge, auth_time, amr, family_id, created_at, \
             expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL)",
        )
        .bind(code_digest)
        .bind(&code.tenant_id)
        .bind(&code.client_id)
        .bind(&code.user_id)
        .bind(&code.session_id)
        .bind(&code.redirect_uri)
        .bind(&code.scope)
        .bind(&code.nonce)
        .bind(&code.code_challenge)
        .bind(code.auth_time)
        .bind(&code.amr)
        .bind(&code.family_id)
        .bind(now)
        .bind(code.expires_at)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// Redeems a code exactly once. A second attempt revokes every refresh token
    /// issued from the first (RFC 6749 §4.1.2). A code's first use is one
    /// statement (claimed and read together); only a code that could not be
    /// claimed is read again, to tell a replay from an unknown code.
    pub async fn redeem_auth_code(
        &self,
        tenant_id: &str,
        code_digest: &[u8],
        now: UnixTime,
    ) -> Result<CodeRedemption, StoreError> {
        let claimed = sqlx::query_as::<_, AuthCode>(concat!(
            "UPDATE auth_codes SET used_at = $1 \
             WHERE code_digest = $2 AND tenant_id = $3 AND used_at IS NULL RETURNING ",
            code_columns!()
        ))
        .bind(now)
        .bind(code_digest)
        .bind(tenant_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        if let Some(code) = claimed {
            return Ok(CodeRedemption::Redeemed(Box::new(code)));
        }
        let used = sqlx::query_as::<_, AuthCode>(concat!(
            "SELECT ",
            code_columns!(),
            " FROM auth_codes WHERE code_digest = $1 AND tenant_id = $2"
        ))
        .bind(code_digest)
        .bind(tenant_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        match used {
            Some(code) => {
                self.revoke_refresh_family(&code.family_id, now).await?;
                Ok(CodeRedemption::Replayed)
            }
            None => Ok(CodeRedemption::Unknown),
        }
    }

    // ---- refresh tokens ------------------------------------------------------

    /// Stores a refresh token.
    pub async fn create_refresh_token(
        &self,
        token_digest: &[u8],
        token: &RefreshToken,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_digest, family_id, tenant_id, client_id, user_id, \
             session_id, scope, auth_time, amr, created_at, expires_at, family_expires_at, used_at, \
             revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL)",
        )
        .bind(token_digest)
        .bind(&token.family_id)
        .bind(&token.tenant_id)
        .bind(&token.client_id)
        .bind(&token.user_id)
        .bind(&token.session_id)
        .bind(&token.scope)
        .bind(token.auth_time)
        .bind(&token.amr)
        .bind(now)
        .bind(token.expires_at)
        .bind(token.family_expires_at)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// Looks a presented refresh token up without using it, so the caller can
    /// check the request (scope, user, ...) before the token is spent: a refused
    /// request leaves it usable. A token already used is reuse: its family is
    /// revoked here, as [`Store::rotate_refresh_token`] would.
    pub async fn refresh_token_for_use(
        &self,
        tenant_id: &str,
        client_id: &str,
        digest: &[u8],
        now: UnixTime,
    ) -> Result<RefreshLookup, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            #[sqlx(flatten)]
            token: RefreshToken,
            used_at: Option<UnixTime>,
            revoked_at: Option<UnixTime>,
        }
        let row = sqlx::query_as::<_, Row>(concat!(
            "SELECT ",
            refresh_columns!(),
            ", used_at, revoked_at FROM refresh_tokens WHERE token_digest = $1 AND tenant_id = $2 \
             AND client_id = $3"
        ))
        .bind(digest)
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        let Some(row) = row else {
            return Ok(RefreshLookup::Invalid);
        };
        if row.used_at.is_some() {
            self.revoke_refresh_family(&row.token.family_id, now).await?;
            return Ok(RefreshLookup::Reused);
        }
        let live = row.revoked_at.is_none() && row.token.expires_at > now && row.token.family_expires_at > now;
        Ok(if live {
            RefreshLookup::Usable(row.token)
        } else {
            RefreshLookup::Invalid
        })
    }

    /// Uses a refresh token once, in exchange for `new_digest` with expiry
    /// `new_expires_at` in the same family. A token used twice revokes its family.
    pub async fn rotate_refresh_token(
        &self,
        tenant_id: &str,
        client_id: &str,
        old_digest: &[u8],
        new_digest: &[u8],
        new_expires_at: UnixTime,
        now: UnixTime,
    ) -> Result<RefreshRotation, StoreError> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_digest = $2 AND tenant_id = $3 \
             AND client_id = $4 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
             AND family_expires_at > $1",
        )
        .bind(now)
        .bind(old_digest)
        .bind(tenant_id)
        .bind(client_id)
        .execute(&mut *tx)
        .await
        .db()?;
        let old = sqlx::query_as::<_, RefreshToken>(concat!(
            "SELECT ",
            refresh_columns!(),
            " FROM refresh_tokens WHERE token_digest = $1 AND tenant_id = $2 \
             AND client_id = $3"
        ))
        .bind(old_digest)
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await
        .db()?;
        let Some(old) = old else {
            return Ok(RefreshRotation::Invalid);
        };
        if claimed.rows_affected() != 1 {
            let used: Option<UnixTime> =
                sqlx::query_scalar("SELECT used_at FROM refresh_tokens WHERE token_digest = $1")
                    .bind(old_digest)
                    .fetch_one(&mut *tx)
                    .await
                    .db()?;
            tx.commit().await.db()?;
            if used.is_some() {
                self.revoke_refresh_family(&old.family_id, now).await?;
                return Ok(RefreshRotation::Reused);
            }
            return Ok(RefreshRotation::Invalid);
        }
        let next = RefreshToken {
            expires_at: new_expires_at.min(old.family_expires_at),
            ..old.clone()
        };
        sqlx::query(
            "INSERT INTO refresh_tokens (token_digest, family_id, tenant_id, client_id, user_id, \
             session_id, scope, auth_time, amr, created_at, expires_at, family_expires_at, used_at, \
             revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL)",
        )
        .bind(new_digest)
        .bind(&next.family_id)
        .bind(&next.tenant_id)
        .bind(&next.client_id)
        .bind(&next.user_id)
        .bind(&next.session_id)
        .bind(&next.scope)
        .bind(next.auth_time)
        .bind(&next.amr)
        .bind(now)
        .bind(next.expires_at)
        .bind(next.family_expires_at)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()?;
        Ok(RefreshRotation::Rotated(old))
    }

    /// Revokes every token of a refresh family.
    pub async fn revoke_refresh_family(&self, family_id: &str, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(family_id)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Revokes the family of the refresh token with this digest (RFC 7009), if
    /// it was issued to `client_id`.
    pub async fn revoke_refresh_token(
        &self,
        tenant_id: &str,
        client_id: &str,
        token_digest: &[u8],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let family: Option<String> = sqlx::query_scalar(
            "SELECT family_id FROM refresh_tokens WHERE token_digest = $1 AND tenant_id = $2 AND client_id = $3",
        )
        .bind(token_digest)
        .bind(tenant_id)
        .bind(client_id)
        .fetch_optional(&self.db)
        .await
        .db()?;
        if let Some(family) = family {
            self.revoke_refresh_family(&family, now).await?;
        }
        Ok(())
    }

    // ---- device codes --------------------------------------------------------

    /// Stores a device authorization request.
    pub async fn create_device_code(&self, code: &NewDeviceCode<'_>, now: UnixTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO device_codes (device_code_digest, user_code_digest, tenant_id, client_id, \
             scope, status, user_id, auth_time, amr, interval_secs, last_poll_at, component_name, \
             requested_from, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', NULL, NULL, NULL, $6, NULL, $7, $8, $9, $10)",
        )
        .bind(code.device_code_digest)
        .bind(code.user_code_digest)
        .bind(code.tenant_id)
        .bind(code.client_id)
        .bind(code.scope)
        .bind(code.interval_secs)
        .bind(code.component_name)
        .bind(code.requested_from)
        .bind(now)
        .bind(code.expires_at)
        .execute(&self.db)
        .await
        .db()?;
        Ok(())
    }

    /// The pending, unexpired request a user code names in this tenant.
    pub async fn device_code_by_user_code(
        &self,
        tenant_id: &str,
        user_code_digest: &[u8],
        now: UnixTime,
    ) -> Result<DeviceCode, StoreError> {
        sqlx::query_as::<_, DeviceCode>(concat!(
            "SELECT ",
            device_columns!(),
            " FROM device_codes WHERE user_code_digest = $1 AND tenant_id = $2 \
             AND status = 'pending' AND expires_at > $3"
        ))
        .bind(user_code_digest)
        .bind(tenant_id)
        .bind(now)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// The request with this device code digest in this tenant.
    pub async fn device_code(&self, tenant_id: &str, device_code_digest: &[u8]) -> Result<DeviceCode, StoreError> {
        sqlx::query_as::<_, DeviceCode>(concat!(
            "SELECT ",
            device_columns!(),
            " FROM device_codes WHERE device_code_digest = $1 AND tenant_id = $2"
        ))
        .bind(device_code_digest)
        .bind(tenant_id)
        .fetch_one(&self.db)
        .await
        .db()
    }

    /// Records the user's decision on a pending request. Returns false if it was no
    /// longer pending.
    pub async fn decide_device_code(
        &self,
        device_code_digest: &[u8],
        approved_by: Option<(&str, UnixTime, &str)>,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = match approved_by {
            Some((user_id, auth_time, amr)) => sqlx::query(
                "UPDATE device_codes SET status = 'approved', user_id = $1, auth_time = $2, amr = $3 \
                 WHERE device_code_digest = $4 AND status = 'pending' AND expires_at > $5",
            )
            .bind(user_id)
            .bind(auth_time)
            .bind(amr)
            .bind(device_code_digest)
            .bind(now),
            None => sqlx::query(
                "UPDATE device_codes SET status = 'denied' \
                 WHERE device_code_digest = $1 AND status = 'pending' AND expires_at > $2",
            )
            .bind(device_code_digest)
            .bind(now),
        }
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a poll and updates the interval (after a `slow_down`).
    pub async fn record_device_poll(
        &self,
        device_code_digest: &[u8],
        interval_secs: i64,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE device_codes SET last_poll_at = $1, interval_secs = $2 WHERE device_code_digest = $3")
            .bind(now)
            .bind(interval_secs)
            .bind(device_code_digest)
            .execute(&self.db)
            .await
            .db()?;
        Ok(())
    }

    /// Moves an approved request to consumed, exactly once.
    pub async fn consume_device_code(&self, device_code_digest: &[u8]) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE device_codes SET status = 'consumed' WHERE device_code_digest = $1 AND status = 'approved'",
        )
        .bind(device_code_digest)
        .execute(&self.db)
        .await
        .db()?;
        Ok(done.rows_affected() == 1)
    }
}
