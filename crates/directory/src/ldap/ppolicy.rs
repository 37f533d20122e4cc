//! The LDAP password-policy control (draft-behera-ldap-password-policy), as OpenLDAP's
//! `ppolicy` overlay speaks it.
//!
//! The agent sends the request control (no value) with every user bind. Without it,
//! OpenLDAP answers a locked or expired account with a bare result 49, like a wrong
//! password. The response value is:
//!
//! ```text
//! PasswordPolicyResponseValue ::= SEQUENCE {
//!     warning [0] CHOICE {
//!         timeBeforeExpiration [0] INTEGER (0 .. maxInt),
//!         graceAuthNsRemaining [1] INTEGER (0 .. maxInt) } OPTIONAL,
//!     error   [1] ENUMERATED { passwordExpired (0), accountLocked (1),
//!         changeAfterReset (2), ... } OPTIONAL }
//! ```
//!
//! | response | [`Outcome`](crate::Outcome) |
//! |---|---|
//! | error `passwordExpired` (0) | `PasswordExpired` |
//! | error `accountLocked` (1) | `AccountLocked` |
//! | error `changeAfterReset` (2) | `MustChangePassword` (the bind itself succeeds) |
//! | other errors (3–8 concern password *changes*) | by the bind's result code |
//! | warning `timeBeforeExpiration` | `Success` with [`PasswordWarning::ExpiresIn`](crate::PasswordWarning) |
//! | warning `graceAuthNsRemaining` | `Success` with [`PasswordWarning::GraceLoginsRemaining`](crate::PasswordWarning) |
//!
//! The decoder is written for this one small structure: definite lengths only, every
//! length checked against what is left, unknown elements skipped.

use std::time::Duration;

use ldap3::controls::RawControl;

use crate::PasswordWarning;

/// OID of the password-policy request and response controls.
pub(crate) const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The request control: no value, not critical (a server without the overlay ignores
/// it).
pub(crate) fn request_control() -> RawControl {
    RawControl {
        ctype: PPOLICY_OID.to_owned(),
        crit: false,
        val: None,
    }
}

/// The `error` field of a password-policy response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordPolicyError {
    /// `passwordExpired (0)`.
    PasswordExpired,
    /// `accountLocked (1)`.
    AccountLocked,
    /// `changeAfterReset (2)`: an administrator reset the password; it must be changed.
    ChangeAfterReset,
    /// Any other value (3–8 concern password changes, not binds).
    Other(u32),
}

/// A decoded password-policy response control.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PasswordPolicyResponse {
    /// The warning, if the server sent one.
    pub warning: Option<PasswordWarning>,
    /// The error, if the server sent one.
    pub error: Option<PasswordPolicyError>,
}

impl PasswordPolicyResponse {
    /// Decodes the control's value (BER). `None` when it is not a well-formed
    /// response: the caller then judges by the result code alone.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let (tag, body, rest) = element(value)?;
        if tag != SEQUENCE || !rest.is_empty() {
            return None;
        }
        let mut response = PasswordPolicyResponse::default();
        let mut cursor = body;
        while !cursor.is_empty() {
            let (tag, content, rest) = element(cursor)?;
            cursor = rest;
            match tag {
                WARNING => {
                    let (choice, number, tail) = element(content)?;
                    if !tail.is_empty() {
                        return None;
                    }
                    let n = unsigned(number)?;
                    response.warning = match choice {
                        TIME_BEFORE_EXPIRATION => Some(PasswordWarning::ExpiresIn(Duration::from_secs(u64::from(n)))),
                        GRACE_AUTHNS_REMAINING => Some(PasswordWarning::GraceLoginsRemaining(n)),
                        _ => return None,
                    };
                }
                ERROR => {
                    response.error = Some(match unsigned(content)? {
                        0 => PasswordPolicyError::PasswordExpired,
                        1 => PasswordPolicyError::AccountLocked,
                        2 => PasswordPolicyError::ChangeAfterReset,
                        n => PasswordPolicyError::Other(n),
                    });
                }
                _ => {}
            }
        }
        Some(response)
    }

    /// Finds and decodes the response among a result's controls.
    pub(crate) fn from_controls(controls: &[ldap3::controls::Control]) -> Option<Self> {
        controls
            .iter()
            .find(|c| c.1.ctype == PPOLICY_OID)
            .and_then(|c| c.1.val.as_deref())
            .and_then(Self::decode)
    }
}

const SEQUENCE: u8 = 0x30;
const WARNING: u8 = 0xa0;
const ERROR: u8 = 0x81;
const TIME_BEFORE_EXPIRATION: u8 = 0x80;
const GRACE_AUTHNS_REMAINING: u8 = 0x81;

/// Splits one BER element (single-byte tag, definite length) off `input`:
/// `(tag, content, rest)`.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags do not occur in this structure
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None; // indefinite length, absurd size or truncated
        }
        let (digits, rest) = input.split_at(count);
        input = rest;
        digits.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    let (content, rest) = input.split_at(len);
    Some((tag, content, rest))
}

/// A non-negative BER INTEGER/ENUMERATED that fits in a `u32`.
fn unsigned(content: &[u8]) -> Option<u32> {
    if content.is_empty() || content.len() > 5 || content[0] & 0x80 != 0 {
        return None;
    }
    let value = content.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    u32::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from slapd 2.5 (ppolicy overlay) answering binds on this machine.
    const LOCKED: &[u8] = &[0x30, 0x03, 0x81, 0x01, 0x01];
    const EXPIRED: &[u8] = &[0x30, 0x03, 0x81, 0x01, 0x00];
    const RESET: &[u8] = &[0x30, 0x03, 0x81, 0x01, 0x02];
    const EMPTY: &[u8] = &[0x30, 0x00];

    #[test]
    fn errors_decode() {
        let d = |v| PasswordPolicyResponse::decode(v).unwrap().error;
        assert_eq!(d(LOCKED), Some(PasswordPolicyError::AccountLocked));
        assert_eq!(d(EXPIRED), Some(PasswordPolicyError::PasswordExpired));
        assert_eq!(d(RESET), Some(PasswordPolicyError::ChangeAfterReset));
        assert_eq!(d(&[0x30, 0x03, 0x81, 0x01, 0x08]), Some(PasswordPolicyError::Other(8)));
        assert_eq!(
            PasswordPolicyResponse::decode(EMPTY),
            Some(PasswordPolicyResponse::default())
        );
    }

    #[test]
    fn warnings_decode() {
        // timeBeforeExpiration 3600 s
        let v = [0x30, 0x06, 0xa0, 0x04, 0x80, 0x02, 0x0e, 0x10];
        assert_eq!(
            PasswordPolicyResponse::decode(&v).unwrap().warning,
            Some(PasswordWarning::ExpiresIn(Duration::from_secs(3600)))
        );
        // graceAuthNsRemaining 2, together with an error
        let v = [0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x02, 0x81, 0x01, 0x00];
        let r = PasswordPolicyResponse::decode(&v).unwrap();
        assert_eq!(r.warning, Some(PasswordWarning::GraceLoginsRemaining(2)));
        assert_eq!(r.error, Some(PasswordPolicyError::PasswordExpired));
        // long-form length
        let v = [0x30, 0x81, 0x03, 0x81, 0x01, 0x01];
        assert_eq!(
            PasswordPolicyResponse::decode(&v).unwrap().error,
            Some(PasswordPolicyError::AccountLocked)
        );
    }

    #[test]
    fn malformed_values_are_none() {
        for v in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x81, 0x01, 0x01],             // length past the end
            &[0x31, 0x03, 0x81, 0x01, 0x01],             // not a SEQUENCE
            &[0x30, 0x03, 0x81, 0x01, 0x01, 0x00],       // trailing bytes
            &[0x30, 0x02, 0x81, 0x00],                   // empty integer
            &[0x30, 0x03, 0x81, 0x01, 0xff],             // negative
            &[0x30, 0x80, 0x81, 0x01, 0x01, 0, 0],       // indefinite length
            &[0x30, 0x05, 0xa0, 0x03, 0x82, 0x01, 0x01], // unknown warning choice
            &[0x30, 0x08, 0x81, 0x06, 1, 2, 3, 4, 5, 6], // integer too large
            &[0x3f, 0x01, 0x00],                         // multi-byte tag
        ] {
            assert_eq!(PasswordPolicyResponse::decode(v), None, "{v:02x?}");
        }
    }

    #[test]
    fn unknown_elements_are_skipped() {
        let v = [0x30, 0x06, 0x82, 0x01, 0x07, 0x81, 0x01, 0x01];
        assert_eq!(
            PasswordPolicyResponse::decode(&v).unwrap().error,
            Some(PasswordPolicyError::AccountLocked)
        );
    }

    /// Stands in for a fuzz target: every prefix and many pseudo-random mutations of
    /// valid values decode or fail without panicking.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let seeds: [&[u8]; 4] = [
            LOCKED,
            &[0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x02, 0x81, 0x01, 0x00],
            RESET,
            EMPTY,
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for seed in seeds {
            for cut in 0..=seed.len() {
                let _ = PasswordPolicyResponse::decode(&seed[..cut]);
            }
            for _ in 0..20_000 {
                let mut v = seed.to_vec();
                let flips = 1 + next() % 3;
                for _ in 0..flips {
                    let i = (next() % v.len() as u64) as usize;
                    v[i] = next() as u8;
                }
                let _ = PasswordPolicyResponse::decode(&v);
            }
        }
        for _ in 0..20_000 {
            let len = (next() % 16) as usize;
            let v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = PasswordPolicyResponse::decode(&v);
        }
    }
}
