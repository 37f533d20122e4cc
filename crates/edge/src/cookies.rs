//! The front door's cookies: sealed with AES-256-GCM under a key ring kept in the
//! store (each key sealed by the KEK), so any instance opens what another sealed
//! and keys rotate without signing anyone out: the newest key seals, every key not
//! retired longer than a session lifetime ago still opens.
//!
//! A sealed value is `v1.{kid}.{base64url(nonce ‖ ciphertext ‖ tag)}`; the
//! additional data names the cookie's purpose and app, so a cookie of one app (or
//! a sign-in flow cookie) never opens as another's session.

use std::sync::RwLock;
use std::time::Duration;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::COOKIE;
use postern_keyring::Keyring;
use postern_store::Store;
use postern_time::UnixTime;
use zeroize::Zeroizing;

use crate::EdgeError;

/// Names of the front door's cookies for apps published over plain HTTP.
pub(crate) const COOKIE_PREFIX: &str = "__postern_";

/// Names of the front door's cookies for HTTPS apps: the browser accepts a
/// `__Host-` cookie only with `Secure`, `Path=/` and no `Domain`, so no other
/// host (a sibling subdomain of another tenant included) can plant one.
pub(crate) const HOST_COOKIE_PREFIX: &str = "__Host-postern_";

/// Whether a cookie is one of the front door's (never forwarded). Compared
/// without regard to case: browsers match the `__Host-` prefix that way.
pub(crate) fn is_own_cookie(name: &str) -> bool {
    [COOKIE_PREFIX, HOST_COOKIE_PREFIX].iter().any(|prefix| {
        name.get(..prefix.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
    })
}

/// Longest cookie value accepted for opening (a browser keeps 4 KiB a cookie).
const MAX_SEALED_LEN: usize = 4096;

/// How often a key is replaced by a new one.
pub(crate) const ROTATE_AFTER: Duration = Duration::from_secs(30 * 86_400);

pub(crate) struct CookieKey {
    kid: String,
    key: LessSafeKey,
    created_at: UnixTime,
}

/// The key ring.
pub(crate) struct CookieKeys {
    store: Store,
    keyring: std::sync::Arc<Keyring>,
    /// Newest first.
    keys: RwLock<Vec<CookieKey>>,
    /// Keys retired longer ago than this are dropped.
    keep_retired: Duration,
}

fn context(kid: &str) -> String {
    format!("cookie-key:{kid}")
}

impl CookieKeys {
    /// Loads the ring, making the first key if there is none.
    pub(crate) async fn load(
        store: Store,
        keyring: std::sync::Arc<Keyring>,
        keep_retired: Duration,
        now: UnixTime,
    ) -> Result<Self, EdgeError> {
        let ring = Self {
            store,
            keyring,
            keys: RwLock::new(Vec::new()),
            keep_retired,
        };
        ring.refresh(now).await?;
        if ring.newest_created().is_none() {
            ring.rotate(now, false).await?;
        }
        Ok(ring)
    }

    /// Rereads the ring from the store (keys another instance made or retired).
    pub(crate) async fn refresh(&self, now: UnixTime) -> Result<(), EdgeError> {
        let records = self.store.cookie_keys(now - self.keep_retired).await?;
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            let raw = self.keyring.open(&context(&record.kid), &record.key_sealed)?;
            let unbound = UnboundKey::new(&AES_256_GCM, &raw)
                .map_err(|_| EdgeError::Internal(format!("cookie key {} is not an AES-256 key", record.kid)))?;
            keys.push(CookieKey {
                kid: record.kid,
                key: LessSafeKey::new(unbound),
                created_at: record.created_at,
            });
        }
        if let Ok(mut held) = self.keys.write() {
            *held = keys;
        }
        Ok(())
    }

    /// Makes a new key the one that seals. The old ones keep opening, unless
    /// `revoke_older`: then they are deleted and every session and sign-in flow
    /// sealed with them stops opening (on other instances at their next refresh).
    pub(crate) async fn rotate(&self, now: UnixTime, revoke_older: bool) -> Result<String, EdgeError> {
        let kid = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let raw = Zeroizing::new(postern_keyring::random_bytes::<32>()?);
        let sealed = self.keyring.seal(&context(&kid), raw.as_slice())?;
        self.store.rotate_cookie_key(&kid, &sealed, now, revoke_older).await?;
        self.refresh(now).await?;
        if revoke_older {
            tracing::warn!(kid = %kid, "front-door cookie key rotated; older keys revoked: every app session ends");
        } else {
            tracing::info!(kid = %kid, "front-door cookie key rotated");
        }
        Ok(kid)
    }

    /// When the sealing key was made.
    pub(crate) fn newest_created(&self) -> Option<UnixTime> {
        self.keys.read().ok()?.first().map(|k| k.created_at)
    }

    /// Seals `plaintext` for `purpose` with the newest key.
    pub(crate) fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, EdgeError> {
        let keys = self
            .keys
            .read()
            .map_err(|_| EdgeError::Internal("cookie key ring poisoned".into()))?;
        let key = keys
            .first()
            .ok_or_else(|| EdgeError::Internal("no cookie key".into()))?;
        let nonce_bytes = postern_keyring::random_bytes::<NONCE_LEN>()?;
        let mut in_out = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(purpose.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| EdgeError::Internal("sealing a cookie failed".into()))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + in_out.len());
        blob.extend_from_slice(&nonce_bytes);
        blob.extend_from_slice(&in_out);
        Ok(format!("v1.{}.{}", key.kid, URL_SAFE_NO_PAD.encode(blob)))
    }

    /// Opens a value sealed for `purpose`; `None` when it is malformed, sealed
    /// for something else, tampered with, or its key is gone.
    pub(crate) fn open(&self, purpose: &str, sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
        open_with(&self.keys.read().ok()?, purpose, sealed)
    }
}

/// A key of the ring that opens (and seals) nothing but the values sealed
/// with `raw` under `kid`: for the fuzz targets, which have no store.
pub(crate) fn fixed_key(kid: &str, raw: &[u8; 32]) -> Option<CookieKey> {
    Some(CookieKey {
        kid: kid.to_owned(),
        key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).ok()?),
        created_at: UnixTime::from_secs(0),
    })
}

/// Opens `sealed` with whichever of `keys` it names (see [`CookieKeys::open`]).
pub(crate) fn open_with(keys: &[CookieKey], purpose: &str, sealed: &str) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() > MAX_SEALED_LEN {
        return None;
    }
    let mut parts = sealed.splitn(3, '.');
    let (Some("v1"), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let blob = URL_SAFE_NO_PAD.decode(body).ok()?;
    if blob.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let key = keys.iter().find(|k| k.kid == kid)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let plain_len = key
        .key
        .open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut in_out)
        .ok()?
        .len();
    in_out.truncate(plain_len);
    Some(in_out)
}

/// The value of the cookie `name` in the request's `Cookie` headers.
pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    postern_proto::headers::request_cookie(headers, name)
}

/// Removes every front-door cookie from the `Cookie` headers (joined into one
/// header, as HTTP/1.1 backends expect), keeping the app's own cookies.
pub(crate) fn strip_own_cookies(headers: &mut HeaderMap) {
    let kept: Vec<String> = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_own_cookie(pair.split('=').next().unwrap_or(pair).trim()))
        .map(str::to_owned)
        .collect();
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(value) = http::HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(COOKIE, value);
    }
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, `Secure` over HTTPS, scoped to
/// `path` on the request's host (no `Domain`). `max_age` zero deletes.
pub(crate) fn set_cookie(name: &str, value: &str, path: &str, secure: bool, max_age: Option<Duration>) -> String {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    cookie
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn own_cookies_are_stripped_and_the_rest_joined() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; __postern_s_x=secret"));
        h.append(COOKIE, HeaderValue::from_static("__postern_flow_x=f;b=2"));
        assert_eq!(read_cookie(&h, "__postern_s_x"), Some("secret"));
        assert_eq!(read_cookie(&h, "b"), Some("2"));
        strip_own_cookies(&mut h);
        let all: Vec<_> = h.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec![HeaderValue::from_static("a=1; b=2")]);

        let mut renamed = HeaderMap::new();
        renamed.append(
            COOKIE,
            HeaderValue::from_static("__Host-postern_s_x=s; a=1; __HOST-POSTERN_f_y=f; __Host-other=2"),
        );
        strip_own_cookies(&mut renamed);
        assert_eq!(renamed[COOKIE], "a=1; __Host-other=2");

        let mut only_ours = HeaderMap::new();
        only_ours.insert(COOKIE, HeaderValue::from_static("__postern_s_x=secret"));
        strip_own_cookies(&mut only_ours);
        assert!(only_ours.get(COOKIE).is_none());
    }

    #[test]
    fn set_cookie_attributes() {
        let c = set_cookie("__postern_s", "v", "/docs/", true, None);
        assert_eq!(c, "__postern_s=v; Path=/docs/; HttpOnly; SameSite=Lax; Secure");
        let d = set_cookie("__postern_s", "", "/", false, Some(Duration::ZERO));
        assert_eq!(d, "__postern_s=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    }
}
