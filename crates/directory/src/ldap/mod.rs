//! The LDAP / Active Directory back end.
//!
//! One sign-in:
//! 1. refuse unusable credentials unasked (empty password, NUL, too long);
//! 2. search the account with the user filter on a pooled service-bound connection,
//!    asking for the attributes the answer needs; anything but exactly one entry is
//!    `WrongCredentials` (an unknown user looks like a wrong password);
//! 3. bind as the entry's DN with the password, with the password-policy control for
//!    OpenLDAP, on a connection used for nothing but user binds: never the search
//!    pool's (a bind changes a connection's identity), reused for the next user
//!    bind (a bind, failed or not, replaces whatever identity the connection had;
//!    no other operation ever runs on it), so a sign-in costs no TCP or TLS
//!    handshake;
//! 4. map the answer: AD sub-codes ([`ad_codes`]), the ppolicy response ([`ppolicy`]),
//!    transport failures and deadlines to `DirectoryUnreachable`;
//! 5. on success, collect groups (`memberOf`, else a member search) and return the
//!    account.

mod ad_codes;
pub(crate) mod attributes;
mod config;
mod connection;
mod filter;
mod ppolicy;
mod search_pool;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use postern_keyring::SecretString;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

pub use ad_codes::ad_bind_code;
pub use attributes::{AttributeNames, ad_guid_to_uuid, first_rdn_value};
pub use config::{AD_USER_FILTER, ConfigError, Flavor, LdapConfig, OPENLDAP_GROUP_FILTER, OPENLDAP_USER_FILTER};
pub use ppolicy::{PasswordPolicyError, PasswordPolicyResponse};
pub use search_pool::PoolStats;

use self::attributes::Entry;
use self::config::Settings;
use self::connection::{Connector, Unreachable};
use self::search_pool::{MAX_IDLE, Search, SearchPool};
use crate::credentials::admissible;
use crate::{AccountInfo, Directory, Outcome};

/// Most groups collected for one account by a member search.
const MAX_GROUPS: i32 = 1000;

/// Checks passwords against an LDAP directory (Active Directory or OpenLDAP).
pub struct LdapDirectory {
    settings: Settings,
    connector: Arc<Connector>,
    pool: SearchPool,
    binds: Semaphore,
    /// Idle user-bind connections (at most `max_concurrent_binds`: each was in use
    /// under a permit), with when each went idle.
    idle_binds: Mutex<Vec<(ldap3::Ldap, Instant)>>,
}

impl std::fmt::Debug for LdapDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapDirectory")
            .field("settings", &self.settings)
            .field("pool", &self.pool.stats())
            .finish()
    }
}

impl LdapDirectory {
    /// Validates `config` (reading its CA file) and builds the back end. No connection
    /// is opened until the first sign-in.
    pub fn new(config: &LdapConfig) -> Result<Self, ConfigError> {
        let settings = config.validate()?;
        let connector = Arc::new(Connector::new(
            settings.urls.clone(),
            settings.starttls,
            settings.tls.clone(),
            settings.connect_timeout,
            settings.operation_timeout,
        ));
        let pool = SearchPool::new(connector.clone(), settings.service.clone(), settings.pool_size);
        let binds = Semaphore::new(settings.max_concurrent_binds);
        Ok(Self {
            settings,
            connector,
            pool,
            binds,
            idle_binds: Mutex::new(Vec::new()),
        })
    }

    /// Connection counts of the search pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Finds the one entry `username` names, or says why not.
    async fn find_account(&self, username: &str) -> Result<Option<Entry>, Unreachable> {
        let Some(account) = filter::account_name(username, self.settings.netbios_domain.as_deref()) else {
            return Ok(None);
        };
        let filter = self.settings.user_filter.render(&[
            ("username", username),
            ("account", account),
            ("user", filter::local_part(account)),
        ]);
        let attributes = self.settings.attributes.requested();
        let mut entries = self
            .pool
            .search(&Search {
                base: &self.settings.base_dn,
                filter: &filter,
                attributes: &attributes,
                size_limit: 2,
            })
            .await?;
        if entries.len() != 1 {
            // At INFO, so that a wrong filter shows without DEBUG; the name
            // helps the operator find the account, and no password is near.
            tracing::info!(
                username,
                matches = entries.len(),
                "refused: the user filter matches {} accounts, not exactly one",
                entries.len()
            );
            return Ok(None);
        }
        Ok(entries.pop())
    }

    /// Binds as `dn` on a user-bind connection and reads the answer. A bind that
    /// fails in transport on a reused connection (the server may have closed it
    /// while idle) is tried once more on a fresh one.
    async fn bind_as_user(&self, dn: &str, password: &SecretString) -> Result<Outcome, Unreachable> {
        let _permit = tokio::time::timeout(self.settings.operation_timeout, self.binds.acquire())
            .await
            .map_err(|_| {
                Unreachable(format!(
                    "all {} user binds stayed busy for {:?}",
                    self.settings.max_concurrent_binds, self.settings.operation_timeout
                ))
            })?
            .map_err(|_| Unreachable("bind limiter closed".into()))?;
        // ldap3 wants a &str; this copy is zeroed when dropped (ldap3's own encoding
        // buffer is not ours to clear).
        let secret = Zeroizing::new(password.expose().to_owned());
        let mut retried = false;
        let result = loop {
            let (mut ldap, reused) = match self.take_idle_bind() {
                Some(ldap) => (ldap, true),
                None => (self.connector.open().await?, false),
            };
            if self.settings.password_policy_control {
                ldap.with_controls(ppolicy::request_control());
            }
            match self
                .connector
                .deadline("user bind", ldap.simple_bind(dn, &secret))
                .await
            {
                Ok(result) => {
                    // busy, unavailable, other: the connection may be unusable.
                    if !matches!(result.rc, 51 | 52 | 80) {
                        self.put_back_bind(ldap);
                    }
                    break result;
                }
                Err(e) if reused && !retried => {
                    tracing::debug!(error = %e.0, "user bind on a reused connection failed; retrying on a fresh one");
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        };
        drop(secret);
        let policy = PasswordPolicyResponse::from_controls(&result.ctrls);
        Ok(bind_outcome(self.settings.flavor, result.rc, &result.text, policy))
    }

    fn take_idle_bind(&self) -> Option<ldap3::Ldap> {
        let mut idle = self.idle_binds.lock().ok()?;
        while let Some((mut ldap, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE && !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put_back_bind(&self, mut ldap: ldap3::Ldap) {
        if ldap.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle_binds.lock() {
            // Bounded: only a holder of one of the `binds` permits puts one back.
            if idle.len() < self.settings.max_concurrent_binds {
                idle.push((ldap, Instant::now()));
            }
        }
    }

    /// The account's groups: the group attribute's DNs as names, else the member search.
    async fn groups(&self, entry: &Entry) -> Result<Vec<String>, Unreachable> {
        let from_attribute: Vec<String> = entry
            .texts(&self.settings.attributes.groups)
            .iter()
            .filter_map(|dn| first_rdn_value(dn))
            .collect();
        if !from_attribute.is_empty() {
            return Ok(from_attribute);
        }
        let Some(template) = &self.settings.group_filter else {
            return Ok(Vec::new());
        };
        let filter = template.render(&[("dn", &entry.dn)]);
        let groups = self
            .pool
            .search(&Search {
                base: &self.settings.group_base_dn,
                filter: &filter,
                attributes: &["cn"],
                size_limit: MAX_GROUPS,
            })
            .await?;
        Ok(groups
            .iter()
            .filter_map(|g| g.text("cn").or_else(|| first_rdn_value(&g.dn)))
            .collect())
    }

    async fn account_info(&self, entry: &Entry, username: &str, outcome: Outcome) -> Result<Outcome, Unreachable> {
        let Outcome::Success(mut info) = outcome else {
            return Ok(outcome);
        };
        let attrs = &self.settings.attributes;
        let Some(stable_id) = entry.stable_id(attrs) else {
            return Err(Unreachable(format!(
                "entry {:?} has no usable {} attribute (stable id)",
                entry.dn, attrs.stable_id
            )));
        };
        info.upn = entry.text(&attrs.upn).unwrap_or_else(|| username.to_owned());
        info.display_name = entry.text(&attrs.display_name).unwrap_or_else(|| info.upn.clone());
        info.mail = entry.text(&attrs.mail);
        info.stable_id = stable_id;
        info.dn = Some(entry.dn.clone());
        // Fail closed: group-based policies must not see an incomplete list.
        info.groups = self.groups(entry).await?;
        Ok(Outcome::Success(info))
    }

    async fn try_validate(&self, username: &str, password: &SecretString) -> Result<Outcome, Unreachable> {
        let Some(entry) = self.find_account(username).await? else {
            return Ok(Outcome::WrongCredentials);
        };
        let outcome = self.bind_as_user(&entry.dn, password).await?;
        self.account_info(&entry, username, outcome).await
    }
}

#[async_trait]
impl Directory for LdapDirectory {
    async fn validate(&self, username: &str, password: &SecretString) -> Outcome {
        if let Err(refusal) = admissible(username, password) {
            tracing::debug!(username, reason = refusal.reason(), "credentials refused unasked");
            return Outcome::WrongCredentials;
        }
        let deadline = self.settings.sign_in_timeout;
        let outcome = match tokio::time::timeout(deadline, self.try_validate(username, password)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(Unreachable(why))) => Outcome::DirectoryUnreachable(why),
            Err(_) => Outcome::DirectoryUnreachable(format!("no answer from the directory within {deadline:?}")),
        };
        if let Outcome::DirectoryUnreachable(why) = &outcome {
            // Usernames stay at debug level; the operator needs the cause.
            tracing::warn!(why = %why, "directory unreachable");
        }
        match &outcome {
            Outcome::Success(_) => tracing::debug!(username, outcome = outcome.kind(), "directory answered"),
            Outcome::DirectoryUnreachable(_) => {}
            _ => tracing::info!(username, outcome = outcome.kind(), "directory refused the sign-in"),
        }
        outcome
    }
}

/// The outcome of a user bind from its result code, diagnostic text and
/// password-policy response.
fn bind_outcome(flavor: Flavor, rc: u32, text: &str, policy: Option<PasswordPolicyResponse>) -> Outcome {
    match policy.and_then(|p| p.error) {
        Some(PasswordPolicyError::PasswordExpired) => return Outcome::PasswordExpired,
        Some(PasswordPolicyError::AccountLocked) => return Outcome::AccountLocked,
        Some(PasswordPolicyError::ChangeAfterReset) => return Outcome::MustChangePassword,
        Some(PasswordPolicyError::Other(_)) | None => {}
    }
    match rc {
        0 => Outcome::Success(AccountInfo {
            upn: String::new(),
            display_name: String::new(),
            mail: None,
            groups: Vec::new(),
            stable_id: String::new(),
            dn: None,
            password_warning: policy.and_then(|p| p.warning),
        }),
        49 if flavor == Flavor::ActiveDirectory => ad_codes::outcome_for(text),
        49 => Outcome::WrongCredentials,
        // inappropriateAuthentication: e.g. an account without a password.
        48 => Outcome::WrongCredentials,
        // strongerAuthRequired (AD's LDAP signing policy), confidentialityRequired.
        8 | 13 => Outcome::DirectoryUnreachable(
            "the directory refuses simple binds on this connection: use ldaps:// or starttls".into(),
        ),
        other => Outcome::DirectoryUnreachable(format!("user bind answered result {other}: {text}")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::PasswordWarning;

    #[test]
    fn debug_never_shows_the_service_password() {
        let directory = LdapDirectory::new(&config::tests::ad()).unwrap();
        let debug = format!("{directory:?}");
        assert!(debug.contains("svc") && !debug.contains("svc-Secret-42"), "{debug}");
        let outcome = Outcome::DirectoryUnreachable("x".into());
        assert!(!format!("{outcome} {outcome:?}").contains("svc-Secret-42"));
    }

    #[test]
    fn ppolicy_errors_win_over_result_codes() {
        let policy = |error| {
            Some(PasswordPolicyResponse {
                warning: None,
                error: Some(error),
            })
        };
        let ol = Flavor::OpenLdap;
        assert_eq!(
            bind_outcome(ol, 49, "", policy(PasswordPolicyError::AccountLocked)),
            Outcome::AccountLocked
        );
        assert_eq!(
            bind_outcome(ol, 49, "", policy(PasswordPolicyError::PasswordExpired)),
            Outcome::PasswordExpired
        );
        // slapd lets the bind succeed, restricted, after an administrator's reset.
        assert_eq!(
            bind_outcome(ol, 0, "", policy(PasswordPolicyError::ChangeAfterReset)),
            Outcome::MustChangePassword
        );
        assert_eq!(
            bind_outcome(ol, 49, "", policy(PasswordPolicyError::Other(5))),
            Outcome::WrongCredentials
        );
        assert_eq!(bind_outcome(ol, 49, "", None), Outcome::WrongCredentials);
    }

    #[test]
    fn result_codes() {
        let ad = Flavor::ActiveDirectory;
        let text = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1";
        assert_eq!(bind_outcome(ad, 49, text, None), Outcome::AccountDisabled);
        // Without the AD flavor the same text is not interpreted.
        assert_eq!(
            bind_outcome(Flavor::OpenLdap, 49, text, None),
            Outcome::WrongCredentials
        );
        assert!(bind_outcome(ad, 13, "", None).may_retry_elsewhere());
        assert!(bind_outcome(ad, 8, "", None).may_retry_elsewhere());
        assert!(bind_outcome(ad, 51, "busy", None).may_retry_elsewhere());
        let warned = bind_outcome(
            Flavor::OpenLdap,
            0,
            "",
            Some(PasswordPolicyResponse {
                warning: Some(PasswordWarning::ExpiresIn(Duration::from_secs(60))),
                error: None,
            }),
        );
        let Outcome::Success(info) = warned else {
            panic!("{warned:?}")
        };
        assert_eq!(
            info.password_warning,
            Some(PasswordWarning::ExpiresIn(Duration::from_secs(60)))
        );
    }
}
