//! Creating tenants: validation of names, the first global administrator, the
//! built-in clients (the `postern` command line and the admin console), and the
//! audit entry.

use postern_keyring::SecretString;
use postern_store::{NewAuditEntry, NewOAuthClient, NewTenant, NewUser, StoreError, Tenant, TenantSettings, User};
use zeroize::Zeroizing;

use crate::Sts;
use crate::error::StsError;
use crate::mfa;
use crate::password::{PasswordRejected, check_new_password};
use crate::tokens::ADMIN_SCOPE;

/// Client ID of the `postern` command line (a public client using the device flow).
pub const CLI_CLIENT_ID: &str = "postern-cli";

/// Client ID of the admin console at `/admin` (a public client using the
/// authorization code flow with PKCE, redirecting only to
/// [`Sts::console_redirect_uri`]).
pub const CONSOLE_CLIENT_ID: &str = "postern-console";

/// Everything needed to create a tenant with its first administrator.
pub struct NewTenantRequest {
    /// Short immutable name (URL and issuer).
    pub name: String,
    /// Name shown to users.
    pub display_name: String,
    /// The first verified domain.
    pub domain: String,
    /// The administrator's sign-in name, `someone@domain`.
    pub admin_username: String,
    /// The administrator's password.
    pub admin_password: SecretString,
    /// Whether this is the operator's tenant (first run only).
    pub is_system: bool,
    /// A TOTP seed the administrator already enrolled, with the step of the code
    /// that proved it.
    pub admin_totp: Option<(Zeroizing<Vec<u8>>, i64)>,
}

/// Why a tenant was not created.
#[derive(Debug, thiserror::Error)]
pub enum TenantCreateError {
    /// The request is invalid; every problem is listed, for the person who
    /// filled it in to correct.
    #[error("invalid request: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<InvalidField>),
    /// The name or domain is taken.
    #[error("{0}")]
    Conflict(String),
    /// The setup code was used or expired in the meantime.
    #[error("the setup code is no longer valid")]
    SetupCodeUsed,
    /// The service failed.
    #[error(transparent)]
    Sts(#[from] StsError),
}

/// A field of a new tenant or user that breaks the rules: the request must be
/// corrected, and the message says how.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    /// The tenant name is not 3 to 32 lowercase letters, digits or dashes
    /// starting with a letter ([`validate_tenant_name`]).
    #[error("The tenant name must be 3 to 32 lowercase letters, digits or dashes, starting with a letter.")]
    TenantName,
    /// The display name is empty or longer than 100 characters.
    #[error("The display name must be 1 to 100 characters.")]
    DisplayName,
    /// The named domain is not a valid lowercase DNS name ([`validate_domain`]).
    #[error("{0:?} is not a valid lowercase domain name.")]
    Domain(String),
    /// The username is not `local@domain` for the named domain
    /// ([`validate_username`]).
    #[error("The username must look like name@{domain}.")]
    Username {
        /// The domain the username must be in.
        domain: String,
    },
    /// The administrator's password breaks the password policy.
    #[error(transparent)]
    Password(#[from] PasswordRejected),
}

/// Checks a tenant name: 3–32 characters, lowercase letters, digits and dashes,
/// starting with a letter and not ending with a dash.
pub fn validate_tenant_name(name: &str) -> Result<(), InvalidField> {
    let ok_len = (3..=32).contains(&name.len());
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let ok_ends = name.starts_with(|c: char| c.is_ascii_lowercase()) && !name.ends_with('-');
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(InvalidField::TenantName)
    }
}

/// Checks a DNS domain name.
pub fn validate_domain(domain: &str) -> Result<(), InvalidField> {
    let labels: Vec<&str> = domain.split('.').collect();
    let ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidField::Domain(domain.to_owned()))
    }
}

/// Checks that `username` is `local@domain` with a plausible local part.
pub fn validate_username(username: &str, domain: &str) -> Result<(), InvalidField> {
    match username.rsplit_once('@') {
        Some((local, d))
            if d == domain
                && !local.is_empty()
                && local.len() <= 64
                && local
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._+-'".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(InvalidField::Username {
            domain: domain.to_owned(),
        }),
    }
}

/// A tenant request that passed validation, with the password already hashed.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ValidatedTenant {
    name: String,
    display_name: String,
    domain: String,
    username: String,
    password_hash: String,
    is_system: bool,
}

impl ValidatedTenant {
    /// The tenant's short name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The administrator's sign-in name.
    pub fn username(&self) -> &str {
        &self.username
    }
}

impl Sts {
    /// Validates a tenant request (reporting every problem) and hashes the
    /// administrator's password.
    pub async fn validate_tenant(&self, request: &NewTenantRequest) -> Result<ValidatedTenant, TenantCreateError> {
        let name = request.name.trim().to_lowercase();
        let domain = request.domain.trim().to_lowercase();
        let username = postern_store::normalize_username(&request.admin_username);
        let display_name = request.display_name.trim().to_owned();
        let mut problems = Vec::new();
        if let Err(e) = validate_tenant_name(&name) {
            problems.push(e);
        }
        if display_name.is_empty() || display_name.len() > 100 {
            problems.push(InvalidField::DisplayName);
        }
        if let Err(e) = validate_domain(&domain) {
            problems.push(e);
        }
        if let Err(e) = validate_username(&username, &domain) {
            problems.push(e);
        }
        if let Err(e) = check_new_password(&request.admin_password, &username) {
            problems.push(e.into());
        }
        if !problems.is_empty() {
            return Err(TenantCreateError::Invalid(problems));
        }
        let password_hash = self.hasher.hash(&request.admin_password).await?;
        Ok(ValidatedTenant {
            name,
            display_name,
            domain,
            username,
            password_hash,
            is_system: request.is_system,
        })
    }

    /// Creates a tenant with its first global administrator and the built-in CLI
    /// client.
    pub async fn create_tenant(
        &self,
        request: NewTenantRequest,
        actor: &str,
    ) -> Result<(Tenant, User, Vec<String>), TenantCreateError> {
        let validated = self.validate_tenant(&request).await?;
        self.create_validated_tenant(validated, request.admin_totp, None, actor)
            .await
    }

    /// Creates a validated tenant. With `admin_totp` (a seed the administrator
    /// already proved), enrols it and returns fresh recovery codes. With
    /// `setup_code`, consumes the first-run code in the same transaction.
    pub async fn create_validated_tenant(
        &self,
        v: ValidatedTenant,
        admin_totp: Option<(Zeroizing<Vec<u8>>, i64)>,
        setup_code: Option<&[u8]>,
        actor: &str,
    ) -> Result<(Tenant, User, Vec<String>), TenantCreateError> {
        let mut admin = NewUser::cloud(&v.username, &v.username, Some(v.password_hash.clone()));
        let mut codes = Vec::new();
        if let Some((seed, _step)) = &admin_totp {
            admin.totp_sealed = Some(
                self.keyring
                    .seal(&mfa::seed_context(&admin.id), seed)
                    .map_err(StsError::from)?,
            );
            codes = mfa::new_recovery_codes()?;
            admin.recovery_code_digests = codes.iter().map(|c| mfa::recovery_digest(c)).collect();
        }
        let new_tenant = NewTenant {
            name: v.name.clone(),
            display_name: v.display_name.clone(),
            is_system: v.is_system,
            settings: TenantSettings::default(),
        };
        let now = self.now();
        let (tenant, user) = self
            .store
            .create_tenant_with_admin(new_tenant, &v.domain, admin, setup_code, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(msg) => TenantCreateError::Conflict(msg),
                StoreError::NotFound if setup_code.is_some() => TenantCreateError::SetupCodeUsed,
                other => TenantCreateError::Sts(other.into()),
            })?;
        if let Some((_, step)) = admin_totp {
            self.store
                .advance_totp_step(&user.id, step)
                .await
                .map_err(StsError::from)?;
        }
        self.store
            .create_client(
                &tenant.id,
                &NewOAuthClient {
                    client_id: CLI_CLIENT_ID.into(),
                    name: "Postern command line".into(),
                    secret_digest: None,
                    redirect_uris: vec![],
                    post_logout_redirect_uris: vec![],
                    grant_types: vec![
                        "urn:ietf:params:oauth:grant-type:device_code".into(),
                        "refresh_token".into(),
                    ],
                    scopes: vec![ADMIN_SCOPE.into()],
                    builtin: true,
                },
                now,
            )
            .await
            .map_err(StsError::from)?;
        self.store
            .create_client(&tenant.id, &self.console_client(), now)
            .await
            .map_err(StsError::from)?;
        self.store
            .append_audit(
                &NewAuditEntry {
                    tenant_id: Some(tenant.id.clone()),
                    actor: actor.to_owned(),
                    action: "tenant.create".into(),
                    target: format!("tenant:{}", tenant.id),
                    detail: serde_json::json!({
                        "name": tenant.name,
                        "domain": v.domain,
                        "admin": user.username,
                        "system": tenant.is_system,
                    }),
                },
                now,
            )
            .await
            .map_err(StsError::from)?;
        tracing::info!(tenant = %tenant.name, admin = %user.username, "tenant created");
        Ok((tenant, user, codes))
    }

    /// Where the admin console receives authorization codes:
    /// `{public_url}/admin/callback`.
    pub fn console_redirect_uri(&self) -> String {
        format!("{}/admin/callback", self.base)
    }

    /// The built-in client of the admin console.
    fn console_client(&self) -> NewOAuthClient {
        NewOAuthClient {
            client_id: CONSOLE_CLIENT_ID.into(),
            name: "Postern admin console".into(),
            secret_digest: None,
            redirect_uris: vec![self.console_redirect_uri()],
            post_logout_redirect_uris: vec![],
            grant_types: vec![crate::oidc::GRANT_CODE.into()],
            scopes: vec![ADMIN_SCOPE.into()],
            builtin: true,
        }
    }

    /// Makes sure the tenant named `tenant_name` has the admin console's
    /// built-in client (tenants created before the console existed get it on
    /// first use; idempotent, and safe when several instances race). Returns
    /// the tenant, `StsError` not-found for an unknown name, and an internal
    /// error when the client exists with another redirect URI (the public URL
    /// changed since it was made).
    pub async fn ensure_console_client(&self, tenant_name: &str) -> Result<Tenant, StsError> {
        let tenant = self.tenant_named(tenant_name).await?;
        let existing = match self.store.client(&tenant.id, CONSOLE_CLIENT_ID).await {
            Ok(client) => Some(client),
            Err(StoreError::NotFound) => {
                match self
                    .store
                    .create_client(&tenant.id, &self.console_client(), self.now())
                    .await
                {
                    Ok(_) => None,
                    Err(StoreError::Conflict(_)) => Some(self.store.client(&tenant.id, CONSOLE_CLIENT_ID).await?),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(client) = existing
            && !client.redirect_uris.contains(&self.console_redirect_uri())
        {
            return Err(StsError::internal(format!(
                "the admin console's client of tenant {} redirects to {:?}, not {} (the public URL changed)",
                tenant.name,
                client.redirect_uris,
                self.console_redirect_uri()
            )));
        }
        Ok(tenant)
    }

    /// The tenant named in a request path.
    pub(crate) async fn tenant_named(&self, name: &str) -> Result<Tenant, StsError> {
        if validate_tenant_name(name).is_err() {
            return Err(StsError::Store(StoreError::NotFound));
        }
        Ok(self.store.tenant_by_name(name).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["acme", "a-1", "contoso-eu"] {
            assert!(validate_tenant_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "ab", "Acme", "1acme", "acme-", "a_b", "a/b", &"x".repeat(33)] {
            assert!(validate_tenant_name(bad).is_err(), "{bad}");
        }
        assert!(validate_domain("acme.test").is_ok());
        for bad in ["acme", "-a.test", "a..test", "ACME.test", "a b.test"] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
        assert!(validate_username("jo.doe@acme.test", "acme.test").is_ok());
        assert_eq!(
            validate_username("jo@other.test", "acme.test"),
            Err(InvalidField::Username {
                domain: "acme.test".into()
            })
        );
        assert_eq!(
            InvalidField::Username {
                domain: "acme.test".into()
            }
            .to_string(),
            "The username must look like name@acme.test."
        );
        assert_eq!(
            validate_domain("acme").map_err(|e| e.to_string()),
            Err("\"acme\" is not a valid lowercase domain name.".into())
        );
        assert!(validate_username("@acme.test", "acme.test").is_err());
        assert!(validate_username("a<b@acme.test", "acme.test").is_err());
    }
}
