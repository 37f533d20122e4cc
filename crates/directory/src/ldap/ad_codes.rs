//! Active Directory's bind sub-codes.
//!
//! A failed simple bind to AD (and Samba AD) is result 49 `invalidCredentials` whose
//! diagnostic text carries the Windows error in hex:
//! `80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563`.
//!
//! | `data` | Windows meaning | [`Outcome`] |
//! |---|---|---|
//! | 525 | user not found | `WrongCredentials` (never reveal which) |
//! | 52e | wrong password (also: unknown user on Samba) | `WrongCredentials` |
//! | 530 | not permitted to sign in at this time (logon hours) | `AccountDisabled` |
//! | 531 | not permitted to sign in from this workstation | `AccountDisabled` |
//! | 532 | password expired | `PasswordExpired` |
//! | 533 | account disabled | `AccountDisabled` |
//! | 701 | account expired | `AccountExpired` |
//! | 773 | password must be changed (`pwdLastSet` = 0) | `MustChangePassword` |
//! | 775 | account locked out | `AccountLocked` |
//! | anything else, or no `data` | — | `WrongCredentials` |
//!
//! 530 and 531 are restrictions the sign-in page cannot lift; "disabled" is the nearest
//! outcome a user can act on (ask an administrator). AD reports 530/531/532/533/701/773
//! only when the password was right; 775 comes whatever the password.

use crate::Outcome;

/// The sub-code (`data XXX`) of an AD bind failure's diagnostic text, if it has one.
///
/// ```
/// let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 52e, v1db1";
/// assert_eq!(postern_directory::ad_bind_code(text), Some(0x52e));
/// assert_eq!(postern_directory::ad_bind_code("invalid credentials"), None);
/// ```
pub fn ad_bind_code(diagnostic: &str) -> Option<u32> {
    let start = diagnostic.find("data ")? + "data ".len();
    let rest = &diagnostic[start..];
    let end = rest.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len());
    if end == 0 || end > 8 {
        return None;
    }
    u32::from_str_radix(&rest[..end], 16).ok()
}

/// The outcome of an AD bind that failed with result 49 and this diagnostic text.
pub(crate) fn outcome_for(diagnostic: &str) -> Outcome {
    match ad_bind_code(diagnostic) {
        Some(0x530 | 0x531 | 0x533) => Outcome::AccountDisabled,
        Some(0x532) => Outcome::PasswordExpired,
        Some(0x701) => Outcome::AccountExpired,
        Some(0x773) => Outcome::MustChangePassword,
        Some(0x775) => Outcome::AccountLocked,
        // 525, 52e and anything unknown: say nothing more than "wrong".
        _ => Outcome::WrongCredentials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(code: &str) -> String {
        format!("80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {code}, v1db1")
    }

    #[test]
    fn every_code_maps() {
        let cases = [
            ("525", Outcome::WrongCredentials),
            ("52e", Outcome::WrongCredentials),
            ("52E", Outcome::WrongCredentials),
            ("530", Outcome::AccountDisabled),
            ("531", Outcome::AccountDisabled),
            ("532", Outcome::PasswordExpired),
            ("533", Outcome::AccountDisabled),
            ("701", Outcome::AccountExpired),
            ("773", Outcome::MustChangePassword),
            ("775", Outcome::AccountLocked),
            ("569", Outcome::WrongCredentials),
        ];
        for (code, outcome) in cases {
            assert_eq!(outcome_for(&text(code)), outcome, "data {code}");
        }
    }

    #[test]
    fn windows_server_text_parses() {
        let text = "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 775, v4563\0";
        assert_eq!(ad_bind_code(text), Some(0x775));
        assert_eq!(outcome_for(text), Outcome::AccountLocked);
    }

    #[test]
    fn malformed_text_is_wrong_credentials() {
        for text in [
            "",
            "invalid credentials",
            "data",
            "data ",
            "data , v1db1",
            "data xyz, v1db1",
            "data 123456789, v1",
            "AcceptSecurityContext error, data",
            "data -775",
        ] {
            assert_eq!(outcome_for(text), Outcome::WrongCredentials, "{text:?}");
        }
        assert_eq!(ad_bind_code("data 123456789"), None);
        assert_eq!(ad_bind_code("data 775"), Some(0x775));
    }
}
