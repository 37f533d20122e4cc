//! What a directory answered about a pair of credentials.

use std::fmt;
use std::time::Duration;

/// The answer of a [`Directory`](crate::Directory) to one sign-in.
///
/// All but [`Outcome::DirectoryUnreachable`] are the directory's verdict and final for
/// this sign-in. `DirectoryUnreachable` means the directory could not be asked (down,
/// timed out, TLS failure, agent misconfigured); the STS may offer the request to
/// another agent (PTA-6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The password is right and the account may sign in.
    Success(AccountInfo),
    /// Wrong password, unknown user, or a username or password the agent refuses
    /// to send at all. The three are not told apart, so usernames cannot be probed.
    WrongCredentials,
    /// The password was right but has expired (AD 532, OpenLDAP `passwordExpired`).
    PasswordExpired,
    /// The account is disabled or may not sign in now or from here (AD 533, 530, 531).
    AccountDisabled,
    /// The account is locked after too many bad passwords (AD 775, OpenLDAP
    /// `accountLocked`).
    AccountLocked,
    /// The password was right but must be changed before use (AD 773, OpenLDAP
    /// `changeAfterReset`).
    MustChangePassword,
    /// The account itself has expired (AD 701, `accountExpires` in the past). Kept
    /// apart from [`Outcome::AccountDisabled`] so the user can be told to ask for an
    /// extension; callers that need fewer kinds may treat the two alike.
    AccountExpired,
    /// The directory could not be asked. The text says why, for logs; it never holds a
    /// password.
    DirectoryUnreachable(String),
}

impl Outcome {
    /// A short, stable name for logs and metrics (`success`, `wrong_credentials`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Success(_) => "success",
            Outcome::WrongCredentials => "wrong_credentials",
            Outcome::PasswordExpired => "password_expired",
            Outcome::AccountDisabled => "account_disabled",
            Outcome::AccountLocked => "account_locked",
            Outcome::MustChangePassword => "must_change_password",
            Outcome::AccountExpired => "account_expired",
            Outcome::DirectoryUnreachable(_) => "directory_unreachable",
        }
    }

    /// Whether another agent may be asked instead (only when the directory could not
    /// be asked at all).
    pub fn may_retry_elsewhere(&self) -> bool {
        matches!(self, Outcome::DirectoryUnreachable(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success(info) => write!(f, "success ({})", info.upn),
            Outcome::DirectoryUnreachable(why) => write!(f, "directory unreachable: {why}"),
            other => f.write_str(other.kind()),
        }
    }
}

/// What the directory says about an account that signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account's sign-in name as the directory spells it: AD `userPrincipalName`,
    /// OpenLDAP `uid`, the local file's username.
    pub upn: String,
    /// A name for people (AD `displayName`, OpenLDAP `cn`); the `upn` when the entry has
    /// none.
    pub display_name: String,
    /// The e-mail address, when the entry has one.
    pub mail: Option<String>,
    /// Group *names*: the value of the first RDN of each `memberOf` DN (`CN=Sales,OU=…`
    /// gives `Sales`), or the `cn` of each group a member search found. AD does not list
    /// the primary group (`Domain Users`) in `memberOf`, so it is not here.
    pub groups: Vec<String>,
    /// An identifier that survives renames: AD `objectGUID` and OpenLDAP `entryUUID` as
    /// a lower-case UUID string; for the local file, a UUIDv5 of the username.
    pub stable_id: String,
    /// The entry's distinguished name; `None` for the local file.
    pub dn: Option<String>,
    /// A warning the directory attached to the successful bind (OpenLDAP ppolicy).
    pub password_warning: Option<PasswordWarning>,
}

/// A warning that came with a successful sign-in: the user should change the password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordWarning {
    /// The password expires after this long.
    ExpiresIn(Duration),
    /// The password has expired; this many grace sign-ins are left.
    GraceLoginsRemaining(u32),
}
