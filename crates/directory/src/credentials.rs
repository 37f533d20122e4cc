//! What the agent refuses to send to any directory.
//!
//! Checked before any network call or hash: an empty password is an anonymous *success*
//! to Active Directory's simple bind, a NUL byte cuts C strings short in some servers,
//! and an unbounded password is a cheap way to make the agent work.

use postern_keyring::SecretString;

/// Longest password the agent passes on (bytes of UTF-8); longer ones are wrong
/// credentials.
pub const MAX_PASSWORD_BYTES: usize = 256;

/// Longest username the agent looks up (bytes of UTF-8).
pub const MAX_USERNAME_BYTES: usize = 256;

/// Why a pair of credentials is refused unasked; for debug logs only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    EmptyUsername,
    LongUsername,
    ControlCharInUsername,
    EmptyPassword,
    LongPassword,
    NulInPassword,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::EmptyUsername => "empty username",
            Refusal::LongUsername => "username too long",
            Refusal::ControlCharInUsername => "control character in username",
            Refusal::EmptyPassword => "empty password",
            Refusal::LongPassword => "password too long",
            Refusal::NulInPassword => "NUL byte in password",
        }
    }
}

/// Checks that `username` and `password` may be sent to a directory at all.
pub(crate) fn admissible(username: &str, password: &SecretString) -> Result<(), Refusal> {
    if username.trim().is_empty() {
        return Err(Refusal::EmptyUsername);
    }
    if username.len() > MAX_USERNAME_BYTES {
        return Err(Refusal::LongUsername);
    }
    if username.chars().any(char::is_control) {
        return Err(Refusal::ControlCharInUsername);
    }
    let password = password.expose();
    if password.is_empty() {
        return Err(Refusal::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Refusal::LongPassword);
    }
    if password.contains('\0') {
        return Err(Refusal::NulInPassword);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(user: &str, pw: &str) -> Result<(), Refusal> {
        admissible(user, &SecretString::from(pw))
    }

    #[test]
    fn ordinary_credentials_pass() {
        assert_eq!(check("alice", "Secr3t!Pass"), Ok(()));
        assert_eq!(check("EXAMPLE\\alice", "pässwörd with spaces"), Ok(()));
        assert_eq!(check("alice", &"x".repeat(MAX_PASSWORD_BYTES)), Ok(()));
    }

    #[test]
    fn refusals() {
        assert_eq!(check("alice", ""), Err(Refusal::EmptyPassword));
        assert_eq!(check("alice", "a\0b"), Err(Refusal::NulInPassword));
        assert_eq!(
            check("alice", &"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(Refusal::LongPassword)
        );
        // 129 two-byte characters: under 256 characters, over 256 bytes.
        assert_eq!(check("alice", &"é".repeat(129)), Err(Refusal::LongPassword));
        assert_eq!(check("", "pw"), Err(Refusal::EmptyUsername));
        assert_eq!(check("   ", "pw"), Err(Refusal::EmptyUsername));
        assert_eq!(check("al\nice", "pw"), Err(Refusal::ControlCharInUsername));
        assert_eq!(check("al\0ice", "pw"), Err(Refusal::ControlCharInUsername));
        assert_eq!(
            check(&"u".repeat(MAX_USERNAME_BYTES + 1), "pw"),
            Err(Refusal::LongUsername)
        );
    }
}
