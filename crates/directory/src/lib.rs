//! Directory back ends of the pass-through-authentication agent: they check a user's
//! password against the on-premises directory and say what happened (PTA-5).
//!
//! The agent decrypts the password it was sent and asks one [`Directory`]:
//!
//! - [`LdapDirectory`] — Active Directory or OpenLDAP over LDAPS, StartTLS or (when
//!   explicitly allowed) plain LDAP. It finds the account with a search on a small pool
//!   of service-bound connections, then binds *as the user* on a fresh connection and
//!   maps the directory's answer: AD's `data XXX` sub-codes ([`ad_bind_code`]) and
//!   OpenLDAP's password-policy response control ([`PasswordPolicyResponse`]).
//! - [`LocalFileDirectory`] — a file of argon2id hashes, for demos and tests.
//!
//! Every answer is an [`Outcome`]. Only [`Outcome::DirectoryUnreachable`] says "ask
//! another agent"; the others are the directory's verdict on the credentials.
//!
//! Passwords arrive as [`SecretString`], are never logged and never appear in an error
//! message. Empty passwords, passwords with a NUL byte and passwords longer than
//! [`MAX_PASSWORD_BYTES`] are refused before any directory is asked: an empty simple
//! bind is an *anonymous success* to Active Directory.
//!
//! PAM is not a back end yet; it is meant to come as an optional cargo feature (`pam`)
//! with a third implementation of [`Directory`], so that hosts without LDAP can use the
//! system's accounts.
//!
//! The `testing` feature adds the `testing` module: a harness that starts a real OpenLDAP server
//! and a real Samba AD domain controller for integration tests.
#![warn(missing_docs)]

mod credentials;
mod ldap;
mod local_file;
mod outcome;
#[cfg(feature = "testing")]
pub mod testing;

pub use credentials::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
pub use ldap::{
    AD_USER_FILTER, AttributeNames, ConfigError, Flavor, LdapConfig, LdapDirectory, OPENLDAP_GROUP_FILTER,
    OPENLDAP_USER_FILTER, PasswordPolicyError, PasswordPolicyResponse, PoolStats, ad_bind_code, ad_guid_to_uuid,
    first_rdn_value,
};
pub use local_file::{LocalFileDirectory, LocalFileError, hash_password};
pub use outcome::{AccountInfo, Outcome, PasswordWarning};
pub use postern_keyring::SecretString;

/// A place that can check a username and password.
///
/// Implementations never fail: whatever goes wrong becomes an [`Outcome`], and every
/// network call they make has a deadline.
#[async_trait::async_trait]
pub trait Directory: Send + Sync {
    /// Checks `password` for `username` and says what the directory answered.
    async fn validate(&self, username: &str, password: &SecretString) -> Outcome;
}
