//! Cloud passwords: argon2id hashes, computed off the async runtime and bounded in
//! concurrency so a flood of sign-ins cannot starve the service of CPU or memory.
//! Unknown accounts are checked against a dummy hash so they take as long as known
//! ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use postern_keyring::SecretString;
use tokio::sync::{OnceCell, Semaphore};

use crate::error::StsError;

/// Shortest password accepted for a cloud account.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted anywhere (bytes); longer input is refused unread.
pub const MAX_PASSWORD_LEN: usize = 256;

/// Hashes and checks passwords with bounded parallelism.
#[derive(Debug)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    dummy: OnceCell<String>,
    verifications: AtomicU64,
}

impl PasswordHasher {
    /// A hasher running at most `concurrency` hashes at once.
    pub fn new(concurrency: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: OnceCell::new(),
            verifications: AtomicU64::new(0),
        }
    }

    /// Passwords verified so far (dummy verifications of unknown accounts
    /// included): what smart lockout bounds.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// The argon2id hash (PHC string) of `password`.
    pub async fn hash(&self, password: &SecretString) -> Result<String, StsError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StsError::internal("hasher closed"))?;
        let password = password.clone();
        let salt = postern_keyring::random_bytes::<16>()?;
        tokio::task::spawn_blocking(move || {
            Argon2::default()
                .hash_password_with_salt(password.expose().as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| StsError::internal(format!("hashing failed: {e}")))
        })
        .await
        .map_err(|e| StsError::internal(e.to_string()))?
    }

    /// Whether `password` matches `hash`. With no hash (unknown account, or an
    /// account without a cloud password) it still spends the same effort, then
    /// answers false.
    pub async fn verify(&self, password: &SecretString, hash: Option<&str>) -> Result<bool, StsError> {
        let (hash, real) = match hash {
            Some(h) => (h.to_owned(), true),
            None => (self.dummy_hash().await?, false),
        };
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StsError::internal("hasher closed"))?;
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let password = password.clone();
        let matched = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| StsError::internal(format!("stored hash: {e}")))?;
            Ok::<_, StsError>(
                Argon2::default()
                    .verify_password(password.expose().as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| StsError::internal(e.to_string()))??;
        Ok(matched && real)
    }

    async fn dummy_hash(&self) -> Result<String, StsError> {
        self.dummy
            .get_or_try_init(|| async {
                let random = postern_keyring::random_token()?;
                self.hash(&random).await
            })
            .await
            .cloned()
    }
}

/// Checks a new cloud password against the policy; the message says what to fix.
pub fn check_new_password(password: &SecretString, username: &str) -> Result<(), String> {
    let p = password.expose();
    if p.chars().count() < MIN_PASSWORD_LEN {
        return Err(format!(
            "The password must be at least {MIN_PASSWORD_LEN} characters long."
        ));
    }
    if p.len() > MAX_PASSWORD_LEN {
        return Err(format!("The password must be at most {MAX_PASSWORD_LEN} bytes long."));
    }
    let local = username.split('@').next().unwrap_or(username);
    if !local.is_empty() && p.to_lowercase().contains(&local.to_lowercase()) {
        return Err("The password must not contain the username.".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_accounts_fail() {
        let hasher = PasswordHasher::new(2);
        let pw = SecretString::from("correct horse battery");
        let hash = hasher.hash(&pw).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(!hash.contains("correct"));
        assert!(hasher.verify(&pw, Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&SecretString::from("wrong"), Some(&hash)).await.unwrap());
        assert!(!hasher.verify(&pw, None).await.unwrap());
        assert!(hasher.verify(&pw, Some("not a hash")).await.is_err());
    }

    #[test]
    fn policy() {
        assert!(check_new_password(&"short".into(), "a@b").is_err());
        assert!(check_new_password(&"aliceAlice12345".into(), "alice@x.test").is_err());
        assert!(check_new_password(&"x".repeat(300).as_str().into(), "a@b").is_err());
        assert!(check_new_password(&"a long enough pass".into(), "bob@x.test").is_ok());
    }
}
