//! Multi-factor authentication: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, one
//! step of skew) with a code accepted at most once, and single-use recovery codes.
//! Seeds are sealed under the KEK, bound to the user they belong to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use postern_store::User;
use postern_time::UnixTime;
use totp_rs::{Builder, Totp};
use zeroize::Zeroizing;

use crate::Sts;
use crate::error::StsError;

/// Bytes in a TOTP seed (160 bits, as RFC 4226 recommends).
pub const SEED_LEN: usize = 20;
/// Recovery codes issued at enrolment.
pub const RECOVERY_CODES: usize = 10;
const RECOVERY_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";

/// The sealing context of a user's TOTP seed.
pub(crate) fn seed_context(user_id: &str) -> String {
    format!("totp:{user_id}")
}

/// A fresh random seed.
pub(crate) fn new_seed() -> Result<Zeroizing<Vec<u8>>, StsError> {
    Ok(Zeroizing::new(postern_keyring::random_bytes::<SEED_LEN>()?.to_vec()))
}

fn totp(seed: &[u8], issuer: &str, account: &str) -> Result<Totp, StsError> {
    Builder::new()
        .with_secret(seed.to_vec())
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .map_err(|e| StsError::internal(format!("totp: {e}")))
}

/// What a user needs to add the seed to an authenticator app.
pub(crate) struct Enrolment {
    /// The seed in base32, for typing in.
    pub secret_base32: String,
    /// An inline SVG QR code of the `otpauth://` URL.
    pub qr_svg: String,
}

/// The enrolment material for `seed`.
pub(crate) fn enrolment(seed: &[u8], issuer: &str, account: &str) -> Result<Enrolment, StsError> {
    let t = totp(seed, issuer, account)?;
    let url = Zeroizing::new(t.to_url().map_err(|e| StsError::internal(format!("totp url: {e}")))?);
    let qr = qrcode::QrCode::new(url.as_bytes()).map_err(|e| StsError::internal(format!("qr: {e}")))?;
    let svg = qr
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    Ok(Enrolment {
        secret_base32: base32_groups(&t.secret().to_base32()),
        qr_svg: svg,
    })
}

fn base32_groups(s: &str) -> String {
    s.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TOTP step `code` matches for `seed` at `now`, if any.
pub(crate) fn matching_step(seed: &[u8], code: &str, now: UnixTime) -> Result<Option<i64>, StsError> {
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let t = totp(seed, "x", "x")?;
    let time = u64::try_from(now.secs()).unwrap_or(0);
    Ok(t.check(&code, time).and_then(|step| i64::try_from(step).ok()))
}

/// Fresh recovery codes: ten `xxxxx-xxxxx` codes of ~49 bits each.
pub(crate) fn new_recovery_codes() -> Result<Vec<String>, StsError> {
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let bytes = postern_keyring::random_bytes::<10>()?;
        let chars: String = bytes
            .iter()
            .map(|b| RECOVERY_ALPHABET[usize::from(*b) % RECOVERY_ALPHABET.len()] as char)
            .collect();
        codes.push(format!("{}-{}", &chars[..5], &chars[5..]));
    }
    Ok(codes)
}

/// The digest a recovery code is stored and looked up by (case, spaces and dashes
/// ignored).
pub(crate) fn recovery_digest(code: &str) -> Vec<u8> {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    postern_keyring::digest(&normal)
}

/// A pending enrolment's seed, sealed into the sign-in flow.
pub(crate) fn seal_pending_seed(sts: &Sts, user_id: &str, seed: &[u8]) -> Result<String, StsError> {
    Ok(URL_SAFE_NO_PAD.encode(sts.keyring.seal(&format!("totp-pending:{user_id}"), seed)?))
}

/// Opens a pending enrolment's seed.
pub(crate) fn open_pending_seed(sts: &Sts, user_id: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, StsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(sealed)
        .map_err(|_| StsError::internal("pending seed encoding"))?;
    Ok(sts.keyring.open(&format!("totp-pending:{user_id}"), &bytes)?)
}

impl Sts {
    /// Checks a TOTP code for an enrolled user and consumes its step, so the same
    /// code is never accepted twice.
    pub(crate) async fn verify_totp(&self, user: &User, code: &str) -> Result<bool, StsError> {
        let Some(sealed) = &user.totp_sealed else {
            return Ok(false);
        };
        let seed = self.keyring.open(&seed_context(&user.id), sealed)?;
        match matching_step(&seed, code, self.now())? {
            Some(step) => Ok(self.store.advance_totp_step(&user.id, step).await?),
            None => Ok(false),
        }
    }

    /// Uses one of the user's recovery codes.
    pub(crate) async fn use_recovery_code(&self, user: &User, code: &str) -> Result<bool, StsError> {
        Ok(self
            .store
            .use_recovery_code(&user.id, &recovery_digest(code), self.now())
            .await?)
    }

    /// Completes enrolment: stores the sealed seed and fresh recovery codes, and
    /// returns the codes to show once.
    pub(crate) async fn complete_totp_enrolment(
        &self,
        user: &User,
        seed: &[u8],
        step: i64,
    ) -> Result<Vec<String>, StsError> {
        let sealed = self.keyring.seal(&seed_context(&user.id), seed)?;
        let codes = new_recovery_codes()?;
        let digests: Vec<Vec<u8>> = codes.iter().map(|c| recovery_digest(c)).collect();
        self.store
            .enroll_totp(&user.id, &sealed, step, &digests, self.now())
            .await?;
        Ok(codes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_their_step_only() {
        let seed = [7u8; SEED_LEN];
        let t = totp(&seed, "i", "a").unwrap();
        let now = UnixTime::from_secs(1_700_000_010);
        let code = t.generate(now.secs() as u64).to_string();
        assert_eq!(matching_step(&seed, &code, now).unwrap(), Some(now.secs() / 30));
        // One step of skew either way, not more.
        let later = UnixTime::from_secs(now.secs() + 30);
        assert!(matching_step(&seed, &code, later).unwrap().is_some());
        let much_later = UnixTime::from_secs(now.secs() + 90);
        assert!(matching_step(&seed, &code, much_later).unwrap().is_none());
        assert!(matching_step(&seed, "12345", now).unwrap().is_none());
        assert!(matching_step(&seed, "abcdef", now).unwrap().is_none());
    }

    #[test]
    fn recovery_codes_are_unique_and_normalized() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let set: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(set.len(), RECOVERY_CODES);
        let c = &codes[0];
        assert_eq!(c.len(), 11);
        assert_eq!(recovery_digest(c), recovery_digest(&c.to_uppercase().replace('-', " ")));
    }

    #[test]
    fn enrolment_material() {
        let e = enrolment(&[1u8; SEED_LEN], "Postern (Acme)", "alice@acme.test").unwrap();
        assert!(e.qr_svg.starts_with("<?xml") || e.qr_svg.contains("<svg"));
        assert_eq!(e.secret_base32.replace(' ', "").len(), 32);
    }
}
