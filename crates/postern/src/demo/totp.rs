//! The demo administrator's authenticator: the `otpauth://` URI an
//! authenticator app takes, and the code of a given moment (RFC 6238: SHA-1,
//! six digits, 30-second steps, as the STS checks them).

use anyhow::Context;
use postern_time::UnixTime;

/// The issuer authenticator apps show, as the STS names it at enrolment.
const ISSUER: &str = "Postern (Postern demo)";
/// Seconds in one TOTP step.
const STEP_SECS: i64 = 30;

fn totp(secret_base32: &str, account: &str) -> anyhow::Result<totp_rs::Totp> {
    let secret = totp_rs::Secret::try_from_base32(secret_base32)
        .map_err(|e| anyhow::anyhow!("the administrator's TOTP secret in demo.json: {e}"))?;
    totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .with_issuer(Some(ISSUER))
        .with_account_name(account)
        .build()
        .map_err(|e| anyhow::anyhow!("the administrator's TOTP secret in demo.json: {e}"))
}

/// The code for `now`, and how many seconds it stays good.
pub(crate) fn code_at(secret_base32: &str, account: &str, now: UnixTime) -> anyhow::Result<(String, i64)> {
    let at = u64::try_from(now.secs()).context("the clock is before 1970")?;
    let code = totp(secret_base32, account)?.generate(at).to_string();
    Ok((code, STEP_SECS - now.secs().rem_euclid(STEP_SECS)))
}

/// The `otpauth://totp/…` URI (a QR code of it is what authenticator apps scan).
pub(crate) fn otpauth_uri(secret_base32: &str, account: &str) -> anyhow::Result<String> {
    totp(secret_base32, account)?
        .to_url()
        .map_err(|e| anyhow::anyhow!("the otpauth URI: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_rfc_6238() {
        // RFC 6238 appendix B, SHA-1: the secret "12345678901234567890".
        let secret = totp_rs::Secret::from(b"12345678901234567890".to_vec()).to_base32();
        let (code, left) = code_at(&secret, "admin@demo.localhost", UnixTime::from_secs(59)).unwrap();
        assert_eq!((code.as_str(), left), ("287082", 1));
        let uri = otpauth_uri(&secret, "admin@demo.localhost").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/") && uri.contains(&format!("secret={secret}")),
            "{uri}"
        );
    }
}
