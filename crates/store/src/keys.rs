//! The STS's token-signing keys. Private halves arrive already sealed.

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{Store, StoreError};

/// A token-signing key.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKeyRecord {
    /// Key ID (`kid`).
    pub kid: String,
    /// JWS algorithm, e.g. `RS256`.
    pub alg: String,
    /// Private key, sealed with the KEK (context `signing-key:<kid>`).
    pub private_sealed: Vec<u8>,
    /// Public key as a JWK (JSON).
    pub public_jwk: String,
    /// When it was made.
    pub created_at: UnixTime,
    /// When it stopped signing; `None` for the active key.
    pub retired_at: Option<UnixTime>,
    /// Until when a retired key stays in the JWKS (the longest lifetime of a token
    /// it signed).
    pub publish_until: Option<UnixTime>,
}

impl std::fmt::Debug for SigningKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

macro_rules! key_columns {
    () => {
        "kid, alg, private_sealed, public_jwk, created_at, retired_at, publish_until"
    };
}

impl Store {
    /// Adds `key` as the active signing key and retires the previous active key,
    /// keeping it published until `publish_old_until`.
    pub async fn rotate_signing_key(
        &self,
        key: &SigningKeyRecord,
        publish_old_until: UnixTime,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1, publish_until = $2 WHERE retired_at IS NULL")
            .bind(now)
            .bind(publish_old_until)
            .execute(&mut *tx)
            .await
            .db()?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_sealed, public_jwk, created_at, retired_at, \
             publish_until) VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_sealed)
        .bind(&key.public_jwk)
        .bind(now)
        .execute(&mut *tx)
        .await
        .db()?;
        tx.commit().await.db()
    }

    /// The key that signs now, if any. With several (after a race between
    /// instances), the newest wins.
    pub async fn active_signing_key(&self) -> Result<Option<SigningKeyRecord>, StoreError> {
        sqlx::query_as::<_, SigningKeyRecord>(concat!(
            "SELECT ",
            key_columns!(),
            " FROM signing_keys WHERE retired_at IS NULL \
             ORDER BY created_at DESC, kid LIMIT 1"
        ))
        .fetch_optional(&self.db)
        .await
        .db()
    }

    /// Keys to publish in the JWKS at `now`: the active ones and retired ones still
    /// within their publication period.
    pub async fn published_signing_keys(&self, now: UnixTime) -> Result<Vec<SigningKeyRecord>, StoreError> {
        sqlx::query_as::<_, SigningKeyRecord>(concat!(
            "SELECT ",
            key_columns!(),
            " FROM signing_keys WHERE retired_at IS NULL OR publish_until > $1 \
             ORDER BY created_at DESC, kid"
        ))
        .bind(now)
        .fetch_all(&self.db)
        .await
        .db()
    }
}
