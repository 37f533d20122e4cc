//! Checking a password: smart lockout first, then either the cloud hash or
//! pass-through authentication (PTA-5). Every password path of the service goes
//! through [`Sts::check_password`], so lockout (PTA-9) protects both.
//!
//! Which way a password goes: an existing cloud account uses its cloud password;
//! otherwise, a username in a domain set to pass-through authentication is
//! checked on-prem by an agent; anything else is checked against the cloud (and,
//! for an unknown account, against a dummy hash, so it takes as long).
//!
//! For pass-through authentication the password is encrypted here, once per
//! registered agent key (RSA-OAEP-SHA256, the request and tenant bound in as the
//! label), before it is handed to the relay; the clear password never leaves
//! this function, and nothing derived from it is stored (SEC-7). On success the
//! account is created or updated just in time from the attributes the agent
//! returned, groups included.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use postern_keyring::SecretString;
use postern_proto::ComponentKind;
use postern_proto::relay::{AccountAttributes, AgentCiphertext, ValidationOutcome, ValidationRequest, oaep_label};
use postern_relay::{Deadlines, RelayError};
use postern_store::{DomainAuthMode, LockoutContext, StoreError, Tenant, User, UserSource};

use crate::Sts;
use crate::client_ip::ClientIp;
use crate::error::StsError;
use crate::lockout::{Attempt, AttemptOutcome, LockoutDecision};
use crate::password::Ticket;

/// What a password check concluded.
#[derive(Debug)]
pub enum PasswordVerdict {
    /// The password is right; the account (created or updated for directory
    /// accounts) is enabled.
    Valid(User),
    /// Wrong username or password. `locked_now` when this failure locked the
    /// account.
    WrongCredentials {
        /// Whether this failure tripped smart lockout.
        locked_now: bool,
    },
    /// Refused by smart lockout without checking the password.
    LockedOut,
    /// Another check for the same account is running on this instance.
    Busy,
    /// The password is right but the account is disabled here.
    Disabled(User),
    /// The directory refused for a reason other than the password.
    Directory(DirectoryProblem),
    /// The password could not be checked (no agent, no answer, directory down).
    Unavailable(String),
    /// Too many sign-ins of the tenant are waiting on its agents (SEC-9): the
    /// password was not checked; try again shortly.
    TooManySignins,
    /// Password hashing is at capacity (the pool and its queue are full, or
    /// the wait ran out): the password was not checked and the attempt does
    /// not count; try again in a moment.
    HashingBusy,
}

/// Why the agents gave no conclusive answer.
#[derive(Debug)]
enum NoAnswer {
    /// No agent, no answer, directory down: the reason, for the sign-in log.
    Unavailable(String),
    /// The tenant's cap on sign-ins waiting on agents is reached.
    TooManySignins,
}

/// Why the on-prem directory refused a right password (or a password it will not
/// check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryProblem {
    /// The password has expired.
    PasswordExpired,
    /// The password must be changed first.
    MustChangePassword,
    /// The account is disabled in the directory.
    AccountDisabled,
    /// The account has expired in the directory.
    AccountExpired,
    /// The directory locked the account.
    AccountLocked,
}

impl DirectoryProblem {
    /// What to tell the user.
    pub fn message(self) -> &'static str {
        match self {
            DirectoryProblem::PasswordExpired => {
                "Your password has expired. Change it on your organisation's network, then sign in again."
            }
            DirectoryProblem::MustChangePassword => {
                "You must change your password before you can sign in. Change it on your organisation's network, then sign in again."
            }
            DirectoryProblem::AccountDisabled | DirectoryProblem::AccountExpired => {
                "Your account is disabled. Contact your administrator."
            }
            DirectoryProblem::AccountLocked => {
                "Your account is locked in your organisation's directory. Try again later or contact your administrator."
            }
        }
    }
}

/// How long pass-through authentication may take.
#[derive(Clone, Copy, Debug)]
pub struct PtaTiming {
    /// Wait this long for one agent before asking another.
    pub attempt: Duration,
    /// Give up after this long.
    pub overall: Duration,
}

impl Default for PtaTiming {
    fn default() -> Self {
        Self {
            attempt: Duration::from_secs(3),
            overall: Duration::from_secs(10),
        }
    }
}

/// Encrypts `password` to one agent key (SPKI DER) under `label`.
fn encrypt_to(spki_der: &[u8], password: &SecretString, label: &[u8]) -> Result<String, StsError> {
    let key = PublicEncryptingKey::from_der(spki_der).map_err(|_| StsError::internal("agent key unreadable"))?;
    let key = OaepPublicEncryptingKey::new(key).map_err(|_| StsError::internal("agent key unusable for OAEP"))?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let ct = key
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            password.expose().as_bytes(),
            &mut out,
            Some(label),
        )
        .map_err(|_| StsError::internal("encryption to an agent failed (password too long for the key?)"))?;
    Ok(STANDARD.encode(ct))
}

/// The outcome of a pass-through sign-in as `postern_pta_requests_total`
/// names it: the directory's answer, or why none came.
fn pta_outcome(answer: &Result<postern_relay::AgentAnswer, RelayError>) -> &'static str {
    match answer {
        Ok(a) => a.result.outcome.as_str(),
        Err(RelayError::NoAgents) => "no_agents",
        Err(RelayError::Timeout(_)) => "timeout",
        Err(RelayError::DirectoryUnreachable) => "directory_unreachable",
        Err(RelayError::Busy) => "busy",
        Err(RelayError::TenantBusy) => "tenant_busy",
        Err(RelayError::Unavailable(_)) => "unavailable",
    }
}

impl Sts {
    /// Checks `password` for `username` (normalized) of `tenant`, behind smart
    /// lockout, by the cloud hash or through an on-prem agent.
    pub async fn check_password(
        &self,
        tenant: &Tenant,
        username: &str,
        password: &SecretString,
        ip: ClientIp,
    ) -> Result<PasswordVerdict, StsError> {
        let (user, lockout) = self.account_with_lockout(tenant, username, ip).await?;
        self.check_password_of(tenant, username, user, lockout, password, ip)
            .await
    }

    /// The account named `username` (normalized), if any, and its smart-lockout
    /// context from `ip`, in one read: what [`Sts::check_password_of`] needs.
    pub(crate) async fn account_with_lockout(
        &self,
        tenant: &Tenant,
        username: &str,
        ip: ClientIp,
    ) -> Result<(Option<User>, LockoutContext), StsError> {
        Ok(self
            .store
            .user_with_lockout_context(&tenant.id, username, &ip.network())
            .await?)
    }

    /// [`Sts::check_password`] for the account `user` that this request has
    /// just found by `username` (or none such) and its smart-lockout context
    /// read with it ([`Sts::account_with_lockout`]), neither read again.
    pub(crate) async fn check_password_of(
        &self,
        tenant: &Tenant,
        username: &str,
        user: Option<User>,
        lockout: LockoutContext,
        password: &SecretString,
        ip: ClientIp,
    ) -> Result<PasswordVerdict, StsError> {
        let passthrough = match &user {
            Some(u) if u.source == UserSource::Cloud => false,
            _ => self.domain_is_passthrough(tenant, username).await?,
        };
        // A cloud check takes its place in the hashing queue first: a full pool
        // refuses before lockout or the database is touched.
        let ticket = if passthrough {
            None
        } else {
            match self.hasher.admit() {
                Ok(ticket) => Some(ticket),
                Err(_) => return Ok(PasswordVerdict::HashingBusy),
            }
        };
        let attempt = match self
            .check_lockout(tenant, username, user.as_ref(), ip, Some(lockout))
            .await?
        {
            LockoutDecision::Proceed(a) => *a,
            LockoutDecision::Locked { .. } => return Ok(PasswordVerdict::LockedOut),
            LockoutDecision::Busy => return Ok(PasswordVerdict::Busy),
        };
        if let Some(ticket) = ticket {
            return self
                .check_cloud_password(tenant, user, password, ip, ticket, attempt)
                .await;
        }
        match self.ask_agents(tenant, username, password).await? {
            Ok((ValidationOutcome::Success, Some(account))) => {
                let user = self
                    .provision_directory_user(tenant, username, &account, user.as_ref(), &attempt)
                    .await?;
                self.record_attempt(tenant, attempt, AttemptOutcome::Success { user_id: &user.id, ip })
                    .await?;
                Ok(if user.enabled {
                    PasswordVerdict::Valid(user)
                } else {
                    PasswordVerdict::Disabled(user)
                })
            }
            Ok((ValidationOutcome::Success, None)) => {
                self.record_attempt(tenant, attempt, AttemptOutcome::Inconclusive)
                    .await?;
                Ok(PasswordVerdict::Unavailable(
                    "the agent returned no account attributes".into(),
                ))
            }
            Ok((ValidationOutcome::WrongCredentials, _)) => {
                let locked = self
                    .record_attempt(tenant, attempt, AttemptOutcome::Failure { password })
                    .await?;
                Ok(PasswordVerdict::WrongCredentials {
                    locked_now: locked.is_some(),
                })
            }
            Ok((outcome, _)) => {
                self.record_attempt(tenant, attempt, AttemptOutcome::Inconclusive)
                    .await?;
                Ok(match outcome {
                    ValidationOutcome::PasswordExpired => PasswordVerdict::Directory(DirectoryProblem::PasswordExpired),
                    ValidationOutcome::MustChangePassword => {
                        PasswordVerdict::Directory(DirectoryProblem::MustChangePassword)
                    }
                    ValidationOutcome::AccountDisabled => PasswordVerdict::Directory(DirectoryProblem::AccountDisabled),
                    ValidationOutcome::AccountExpired => PasswordVerdict::Directory(DirectoryProblem::AccountExpired),
                    ValidationOutcome::AccountLocked => PasswordVerdict::Directory(DirectoryProblem::AccountLocked),
                    _ => PasswordVerdict::Unavailable("the directory is unreachable".into()),
                })
            }
            Err(no_answer) => {
                self.record_attempt(tenant, attempt, AttemptOutcome::Inconclusive)
                    .await?;
                Ok(match no_answer {
                    NoAnswer::Unavailable(reason) => PasswordVerdict::Unavailable(reason),
                    NoAnswer::TooManySignins => PasswordVerdict::TooManySignins,
                })
            }
        }
    }

    /// Checks a cloud password (or, for an unknown account, a dummy hash) in
    /// the hashing pool. A refusal by the pool gives the lockout reservation
    /// back; a match against a hash with outdated parameters replaces it.
    async fn check_cloud_password(
        &self,
        tenant: &Tenant,
        user: Option<User>,
        password: &SecretString,
        ip: ClientIp,
        ticket: Ticket<'_>,
        attempt: Attempt,
    ) -> Result<PasswordVerdict, StsError> {
        let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let verification = match ticket.verify(password, hash).await? {
            Ok(v) => v,
            Err(_) => {
                self.record_attempt(tenant, attempt, AttemptOutcome::Inconclusive)
                    .await?;
                return Ok(PasswordVerdict::HashingBusy);
            }
        };
        let Some(user) = user.filter(|_| verification.matched) else {
            let locked = self
                .record_attempt(tenant, attempt, AttemptOutcome::Failure { password })
                .await?;
            return Ok(PasswordVerdict::WrongCredentials {
                locked_now: locked.is_some(),
            });
        };
        if let (Some(fresh), Some(old)) = (&verification.rehashed, user.password_hash.as_deref()) {
            self.replace_outdated_hash(tenant, &user, old, fresh).await;
        }
        self.record_attempt(tenant, attempt, AttemptOutcome::Success { user_id: &user.id, ip })
            .await?;
        Ok(if user.enabled {
            PasswordVerdict::Valid(user)
        } else {
            PasswordVerdict::Disabled(user)
        })
    }

    /// Stores `fresh` in place of `old` unless the password changed meanwhile
    /// (a reset is never undone by a sign-in with the old password). Failing
    /// is not the sign-in's problem: the next one tries again.
    async fn replace_outdated_hash(&self, tenant: &Tenant, user: &User, old: &str, fresh: &str) {
        match self
            .store
            .replace_password_hash(&tenant.id, &user.id, old, fresh, self.now())
            .await
        {
            Ok(true) => {
                tracing::info!(tenant = %tenant.name, user = %user.id, "password rehashed with the current parameters")
            }
            Ok(false) => {
                tracing::debug!(tenant = %tenant.name, user = %user.id, "password changed during sign-in; not rehashed")
            }
            Err(e) => tracing::warn!(tenant = %tenant.name, user = %user.id, error = %e, "password not rehashed"),
        }
    }

    /// Cloud passwords this instance has verified so far (argon2, unknown
    /// accounts' dummy checks included); pass-through checks are counted by the
    /// agents. Smart lockout bounds both.
    pub fn password_verifications(&self) -> u64 {
        self.hasher.verifications()
    }

    async fn domain_is_passthrough(&self, tenant: &Tenant, username: &str) -> Result<bool, StsError> {
        let Some((_, domain)) = username.rsplit_once('@') else {
            return Ok(false);
        };
        let key = (tenant.id.clone(), domain.to_owned());
        let generation = self.store.routing_generation();
        if let Some(known) = self.passthrough_domains.get(&key, generation) {
            return Ok(known);
        }
        let passthrough = match self.store.domain(&tenant.id, domain).await {
            Ok(d) => d.verified && d.auth_mode == DomainAuthMode::Passthrough,
            Err(StoreError::NotFound) => false,
            Err(e) => return Err(e.into()),
        };
        self.passthrough_domains.put(key, passthrough, generation);
        Ok(passthrough)
    }

    /// The tenant's agents (current certificates or not), from the cache when fresh.
    async fn tenant_agents(&self, tenant: &Tenant) -> Result<Arc<Vec<postern_store::Component>>, StsError> {
        let generation = self.store.routing_generation();
        if let Some(agents) = self.agents.get(&tenant.id, generation) {
            return Ok(agents);
        }
        let agents = Arc::new(self.store.components(&tenant.id, ComponentKind::Agent).await?);
        self.agents.put(tenant.id.clone(), agents.clone(), generation);
        Ok(agents)
    }

    /// Encrypts the password to every current agent key of the tenant and asks the
    /// agents through the relay. The inner error says why nothing conclusive came
    /// back (no secret in it).
    async fn ask_agents(
        &self,
        tenant: &Tenant,
        username: &str,
        password: &SecretString,
    ) -> Result<Result<(ValidationOutcome, Option<AccountAttributes>), NoAnswer>, StsError> {
        let Some(relay) = self.relay.get() else {
            return Ok(Err(NoAnswer::Unavailable(
                "pass-through authentication is not available on this service".into(),
            )));
        };
        let now = self.now();
        let all_agents = self.tenant_agents(tenant).await?;
        let agents: Vec<_> = all_agents.iter().filter(|a| a.not_after > now).collect();
        if agents.is_empty() {
            return Ok(Err(NoAnswer::Unavailable(
                "no authentication agent is registered".into(),
            )));
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let label = oaep_label(&tenant.id, &request_id);
        let mut ciphertexts = Vec::with_capacity(agents.len());
        for agent in &agents {
            ciphertexts.push(AgentCiphertext {
                key_id: agent.key_id.clone(),
                ciphertext: encrypt_to(&agent.public_key, password, &label)?,
            });
        }
        let timing = self.config.pta;
        let deadline_ms = (now.secs().saturating_mul(1000))
            .saturating_add(i64::try_from(timing.overall.as_millis()).unwrap_or(i64::MAX));
        let request = ValidationRequest {
            request_id: request_id.clone(),
            tenant_id: tenant.id.clone(),
            username: username.to_owned(),
            deadline_ms,
            ciphertexts,
            // The relay sets it when every agent has declined as busy.
            wait_if_busy: false,
        };
        let deadlines = Deadlines {
            attempt: timing.attempt,
            overall: timing.overall,
        };
        let asked = std::time::Instant::now();
        let answer = relay
            .validate_capped(request, deadlines, self.pending_signins_cap(tenant))
            .await;
        postern_metrics::record::pta_request(&tenant.id, pta_outcome(&answer), asked.elapsed());
        Ok(match answer {
            Ok(a) => {
                if a.offered_to.len() > 1 {
                    tracing::info!(tenant = %tenant.name, request = %request_id, agents = a.offered_to.len(), "sign-in answered after failover");
                }
                Ok((a.result.outcome, a.result.account))
            }
            Err(
                e @ (RelayError::NoAgents
                | RelayError::Timeout(_)
                | RelayError::DirectoryUnreachable
                | RelayError::Busy
                | RelayError::Unavailable(_)),
            ) => {
                tracing::warn!(tenant = %tenant.name, request = %request_id, error = %e, "pass-through sign-in not answered");
                Err(NoAnswer::Unavailable(e.to_string()))
            }
            Err(RelayError::TenantBusy) => {
                tracing::warn!(tenant = %tenant.name, request = %request_id, "too many sign-ins of the tenant waiting on agents; refused");
                Err(NoAnswer::TooManySignins)
            }
        })
    }

    /// How many of the tenant's sign-ins may wait on its agents at once: its
    /// own cap, else the installation's.
    fn pending_signins_cap(&self, tenant: &Tenant) -> Option<usize> {
        match tenant.limits.max_pending_signins {
            Some(own) => usize::try_from(own).ok().filter(|n| *n > 0),
            None => self.config.pending_signins_per_tenant,
        }
    }

    /// Creates or updates the directory account the agent described, and its
    /// directory groups. The account's name is its UPN when that lies in a
    /// pass-through domain of the tenant, else the name the user typed: an agent
    /// can never name an account outside the domains it serves.
    async fn provision_directory_user(
        &self,
        tenant: &Tenant,
        typed: &str,
        account: &AccountAttributes,
        known: Option<&User>,
        attempt: &Attempt,
    ) -> Result<User, StsError> {
        let now = self.now();
        let upn = postern_store::normalize_username(&account.upn);
        let username = if upn.contains('@') && self.domain_is_passthrough(tenant, &upn).await? {
            upn
        } else {
            postern_store::normalize_username(typed)
        };
        // The account as read at the start of this sign-in, if nothing about it
        // changed: the common case of a returning user, without another query.
        let unchanged = known.filter(|u| {
            u.source == UserSource::Directory
                && u.tenant_id == tenant.id
                && u.external_id.as_deref() == Some(account.stable_id.as_str())
                && u.username == username
                && u.display_name == account.display_name
                && u.email.as_deref() == account.mail.as_deref()
        });
        let user = match unchanged {
            Some(u) => u.clone(),
            None => {
                self.store
                    .upsert_directory_user(
                        &tenant.id,
                        &account.stable_id,
                        &username,
                        &account.display_name,
                        account.mail.as_deref(),
                        now,
                    )
                    .await?
            }
        };
        // The groups read with the lockout counters, when this is the user they
        // were read for: one query fewer for a returning user.
        match attempt.directory_groups_of(&user.id) {
            Some(current) => {
                self.store
                    .set_directory_groups_known(&tenant.id, &user.id, &account.groups, current.to_vec(), now)
                    .await?
            }
            None => {
                self.store
                    .set_directory_groups(&tenant.id, &user.id, &account.groups, now)
                    .await?
            }
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rsa::{OaepPrivateDecryptingKey, PrivateDecryptingKey};

    #[test]
    fn encryption_is_bound_to_its_label() {
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).unwrap();
        let private = OaepPrivateDecryptingKey::new(PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).unwrap()).unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            &PrivateDecryptingKey::from_pkcs8(pkcs8.as_ref()).unwrap().public_key(),
        )
        .unwrap();
        let password = SecretString::from("hunter2-but-longer");
        let label = oaep_label("t1", "r1");
        let ct = STANDARD
            .decode(encrypt_to(spki.as_ref(), &password, &label).unwrap())
            .unwrap();
        let mut out = vec![0u8; private.min_output_size()];
        let pt = private
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, Some(&label))
            .unwrap();
        assert_eq!(pt, password.expose().as_bytes());
        let mut out = vec![0u8; private.min_output_size()];
        assert!(
            private
                .decrypt(&OAEP_SHA256_MGF1SHA256, &ct, &mut out, Some(&oaep_label("t1", "r2")))
                .is_err(),
            "another request's label does not open it"
        );
        assert!(!ct.windows(8).any(|w| w == b"hunter2-"));
    }
}
