//! Which tenant an app's external host belongs to (SEC-12: one origin, one
//! tenant).
//!
//! A tenant may publish an app on a host name when
//! - the name is one of its verified domains or lies below one, or
//! - the operator configured an app domain (`apps.example.com`) and the name is
//!   `{app}-{tenant}.apps.example.com` for this tenant: one label below the app
//!   domain, ending in a dash and the tenant's short name (one wildcard
//!   certificate serves them all);
//!
//! and never when it is the service's own host, an IP address, or a name another
//! tenant already publishes on. Names below the app domain are claimable only by
//! the naming rule, even when a tenant has verified a parent domain of it.
//!
//! Hosts are compared without their port: browsers share cookies across the
//! ports of a host, so two tenants on one name would share an origin in all but
//! name. The first app a tenant publishes on a name claims it in `app_hosts` (in
//! the same transaction as the app); the claim goes with the tenant's last app on
//! it. Domains of different tenants never overlap (see `Store::add_domain` and
//! `Store::verify_domain`), so the verified-domain rule alone already keeps names
//! apart; the claim is what decides the app-domain names (tenant short names may
//! contain dashes) and apps published before these rules.

use std::net::IpAddr;

use postern_time::UnixTime;

use crate::error::SqlxResultExt;
use crate::{App, Store, StoreError};

/// The installation's rules for app hosts, from the service's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostRules {
    /// The operator's app domain, e.g. `apps.example.com`: tenant `acme` may
    /// publish `wiki-acme.apps.example.com`.
    pub apps_domain: Option<String>,
    /// Host names of the service itself (its public URL, its control endpoint):
    /// never an app host, whatever the port.
    pub reserved_hosts: Vec<String>,
}

/// Why a tenant may not publish on a host. The message is fit for the tenant's
/// administrator: it never names another tenant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostRefusal {
    /// The service's own host name.
    #[error("{host} is the address of this service itself, not an app host")]
    Reserved {
        /// The host name.
        host: String,
    },
    /// An IP address: nobody can prove it is theirs.
    #[error("{host} is an IP address; apps are published under a domain name of the organisation")]
    IpAddress {
        /// The host name.
        host: String,
    },
    /// Not under a verified domain of the tenant (nor an app-domain name).
    #[error("{host} is not under a verified domain of this organisation{hint}")]
    NotVerified {
        /// The host name.
        host: String,
        /// What would work instead.
        hint: String,
    },
    /// Under the operator's app domain, but not named `{app}-{tenant}`.
    #[error(
        "{host} is under the app domain {apps_domain}, where this organisation may publish only names like {example}"
    )]
    AppsDomainName {
        /// The host name.
        host: String,
        /// The operator's app domain.
        apps_domain: String,
        /// A name that would work.
        example: String,
    },
    /// An app-domain name that also reads as another tenant's (`x-foo-bar` for
    /// tenant `bar` when a tenant `foo-bar` exists).
    #[error("{host} reads as an address of another organisation; choose another app name")]
    Confusable {
        /// The host name.
        host: String,
    },
    /// Another tenant publishes on this host.
    #[error("{host} is used by another organisation")]
    ClaimedElsewhere {
        /// The host name.
        host: String,
    },
}

/// Why a host is the tenant's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostBasis {
    /// Under this verified domain of the tenant.
    VerifiedDomain(String),
    /// An `{app}-{tenant}` name under the operator's app domain; the app part.
    AppsDomain(String),
}

/// The name part of a normalised host (`name` or `name:port`, `[v6]:port`).
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether `name` is `domain` or lies below it.
fn is_at_or_below(name: &str, domain: &str) -> bool {
    name == domain || name.strip_suffix(domain).is_some_and(|head| head.ends_with('.'))
}

/// A DNS label fragment: lowercase letters, digits and inner dashes.
fn is_label_fragment(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl HostRules {
    /// The reserved host names, lowercased and without ports.
    pub fn new(apps_domain: Option<String>, reserved_hosts: impl IntoIterator<Item = String>) -> Self {
        let mut reserved: Vec<String> = reserved_hosts
            .into_iter()
            .map(|h| host_name(&h.to_ascii_lowercase()).trim_end_matches('.').to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        reserved.sort();
        reserved.dedup();
        Self {
            apps_domain: apps_domain.map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase()),
            reserved_hosts: reserved,
        }
    }

    /// The rule alone, without the store: whether tenant `tenant_name` with
    /// these verified domains may publish on `host` (normalised, port allowed).
    pub fn check(&self, host: &str, tenant_name: &str, verified: &[String]) -> Result<HostBasis, HostRefusal> {
        let name = host_name(host).trim_end_matches('.');
        let owned = || name.to_owned();
        if self.reserved_hosts.iter().any(|r| r == name) {
            return Err(HostRefusal::Reserved { host: owned() });
        }
        if name.starts_with('[') || name.parse::<IpAddr>().is_ok() {
            return Err(HostRefusal::IpAddress { host: owned() });
        }
        if let Some(apps_domain) = &self.apps_domain
            && is_at_or_below(name, apps_domain)
        {
            let example = format!("wiki-{tenant_name}.{apps_domain}");
            let refusal = || HostRefusal::AppsDomainName {
                host: owned(),
                apps_domain: apps_domain.clone(),
                example: example.clone(),
            };
            let label = name
                .strip_suffix(apps_domain.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .ok_or_else(refusal)?;
            let app = label
                .strip_suffix(tenant_name)
                .and_then(|head| head.strip_suffix('-'))
                .filter(|app| !label.contains('.') && is_label_fragment(app))
                .ok_or_else(refusal)?;
            return Ok(HostBasis::AppsDomain(app.to_owned()));
        }
        if let Some(domain) = verified.iter().find(|d| is_at_or_below(name, d)) {
            return Ok(HostBasis::VerifiedDomain(domain.clone()));
        }
        let mut hint = String::new();
        if !verified.is_empty() {
            hint.push_str(&format!(" (verified: {})", verified.join(", ")));
        }
        if let Some(apps_domain) = &self.apps_domain {
            hint.push_str(&format!("; or use a name like wiki-{tenant_name}.{apps_domain}"));
        }
        Err(HostRefusal::NotVerified { host: owned(), hint })
    }
}

/// An app whose host breaks the rules, and why.
#[derive(Clone, Debug)]
pub struct HostViolation {
    /// The app.
    pub app: App,
    /// Why its tenant may not publish there.
    pub refusal: HostRefusal,
}

impl Store {
    /// Whether tenant `tenant_id` may publish on `host` now: the rules, then
    /// confusable app-domain names, then claims by other tenants. `Ok(None)`
    /// means yes.
    pub async fn host_refusal(
        &self,
        rules: &HostRules,
        tenant_id: &str,
        host: &str,
    ) -> Result<Option<HostRefusal>, StoreError> {
        let tenant = self.tenant(tenant_id).await?;
        let verified: Vec<String> = self
            .domains(tenant_id)
            .await?
            .into_iter()
            .filter(|d| d.verified)
            .map(|d| d.name)
            .collect();
        let name = host_name(host).trim_end_matches('.').to_owned();
        match rules.check(host, &tenant.name, &verified) {
            Err(refusal) => return Ok(Some(refusal)),
            Ok(HostBasis::AppsDomain(app)) => {
                // `x-foo` + `-bar`: does a tenant `foo-bar` exist?
                for (i, _) in app.match_indices('-') {
                    let other = format!("{}-{}", &app[i + 1..], tenant.name);
                    match self.tenant_by_name(&other).await {
                        Ok(_) => return Ok(Some(HostRefusal::Confusable { host: name })),
                        Err(StoreError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(HostBasis::VerifiedDomain(_)) => {}
        }
        match self.host_owner(&name).await? {
            Some(owner) if owner != tenant_id => Ok(Some(HostRefusal::ClaimedElsewhere { host: name })),
            _ => Ok(None),
        }
    }

    /// The tenant that claimed a host name, if any.
    pub async fn host_owner(&self, host_name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT tenant_id FROM app_hosts WHERE host = $1")
            .bind(host_name)
            .fetch_optional(&self.db)
            .await
            .db()
    }

    /// Claims the host of every app that has none, the oldest app of a host
    /// first, so that apps published before host claims existed keep working for
    /// the tenant that was there first. Idempotent; run at start.
    pub async fn claim_hosts_of_existing_apps(&self) -> Result<(), StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT external_host, tenant_id, created_at FROM apps ORDER BY created_at, id")
                .fetch_all(&self.db)
                .await
                .db()?;
        for (host, tenant_id, created_at) in rows {
            let name = host_name(&host).trim_end_matches('.').to_owned();
            claim_host(&self.db, &name, &tenant_id, UnixTime::from_secs(created_at)).await?;
        }
        Ok(())
    }

    /// Every app, of every tenant (`None`) or of one, whose host its tenant may
    /// not publish on: reported at start, shown by `GET /api/v1/apps`, and not
    /// served by the front door.
    pub async fn host_violations(
        &self,
        rules: &HostRules,
        tenant_id: Option<&str>,
    ) -> Result<Vec<HostViolation>, StoreError> {
        let apps = match tenant_id {
            Some(t) => self.apps(t).await?,
            None => self.all_apps().await?,
        };
        let mut found = Vec::new();
        for app in apps {
            if let Some(refusal) = self.host_refusal(rules, &app.tenant_id, &app.external_host).await? {
                found.push(HostViolation { app, refusal });
            }
        }
        Ok(found)
    }
}

/// Claims `host_name` for `tenant_id` unless some tenant already has it.
async fn claim_host<'e, E>(executor: E, host_name: &str, tenant_id: &str, now: UnixTime) -> Result<(), StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO app_hosts (host, tenant_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (host) DO NOTHING",
    )
    .bind(host_name)
    .bind(tenant_id)
    .bind(now)
    .execute(executor)
    .await
    .db()?;
    Ok(())
}

/// Claims the name of `host` for `tenant_id` inside `tx`; a conflict when
/// another tenant holds it (the caller's transaction then rolls back).
pub(crate) async fn claim_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    host: &str,
    tenant_id: &str,
    now: UnixTime,
) -> Result<(), StoreError> {
    let name = host_name(host).trim_end_matches('.');
    claim_host(&mut **tx, name, tenant_id, now).await?;
    let owner: String = sqlx::query_scalar("SELECT tenant_id FROM app_hosts WHERE host = $1")
        .bind(name)
        .fetch_one(&mut **tx)
        .await
        .db()?;
    if owner == tenant_id {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!("{name} is used by another organisation")))
    }
}

/// Gives up the tenant's claim on the name of `host` inside `tx` when none of
/// its apps is left on that name.
pub(crate) async fn release_if_unused(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    host: &str,
    tenant_id: &str,
) -> Result<(), StoreError> {
    let name = host_name(host).trim_end_matches('.');
    let hosts: Vec<String> = sqlx::query_scalar("SELECT external_host FROM apps WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_all(&mut **tx)
        .await
        .db()?;
    if hosts.iter().any(|h| host_name(h).trim_end_matches('.') == name) {
        return Ok(());
    }
    sqlx::query("DELETE FROM app_hosts WHERE host = $1 AND tenant_id = $2")
        .bind(name)
        .bind(tenant_id)
        .execute(&mut **tx)
        .await
        .db()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> HostRules {
        HostRules::new(
            Some("apps.example.com".into()),
            ["login.example.com".to_owned(), "127.0.0.1:8080".to_owned()],
        )
    }

    fn verified() -> Vec<String> {
        vec!["acme.test".into(), "corp.acme.com".into()]
    }

    #[test]
    fn names_split_from_ports() {
        assert_eq!(host_name("wiki.acme.test:8443"), "wiki.acme.test");
        assert_eq!(host_name("wiki.acme.test"), "wiki.acme.test");
        assert_eq!(host_name("[::1]:8080"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
    }

    #[test]
    fn hosts_under_verified_domains_are_the_tenants() {
        let r = rules();
        for host in ["acme.test", "wiki.acme.test", "a.b.acme.test:8443", "x.corp.acme.com"] {
            assert!(r.check(host, "acme", &verified()).is_ok(), "{host}");
        }
        for host in [
            "evilacme.test",
            "acme.test.evil.com",
            "acme.com",
            "wiki.example.com",
            "test",
        ] {
            assert!(
                matches!(r.check(host, "acme", &verified()), Err(HostRefusal::NotVerified { .. })),
                "{host}"
            );
        }
    }

    #[test]
    fn the_app_domain_gives_each_tenant_its_names() {
        let r = rules();
        assert_eq!(
            r.check("wiki-acme.apps.example.com", "acme", &[]),
            Ok(HostBasis::AppsDomain("wiki".into()))
        );
        assert_eq!(
            r.check("my-wiki-acme.apps.example.com:443", "acme", &[]),
            Ok(HostBasis::AppsDomain("my-wiki".into()))
        );
        for host in [
            "apps.example.com",
            "acme.apps.example.com",
            "-acme.apps.example.com",
            "wiki-beta.apps.example.com",
            "wiki-acme.x.apps.example.com",
            "x.wiki-acme.apps.example.com",
            "wiki--acme.apps.example.com",
            "wikiacme.apps.example.com",
        ] {
            assert!(
                matches!(
                    r.check(host, "acme", &verified()),
                    Err(HostRefusal::AppsDomainName { .. })
                ),
                "{host}"
            );
        }
        // A verified parent of the app domain does not open it.
        let parent = vec!["example.com".to_owned()];
        assert!(matches!(
            r.check("wiki-beta.apps.example.com", "acme", &parent),
            Err(HostRefusal::AppsDomainName { .. })
        ));
        assert!(r.check("wiki.example.com", "acme", &parent).is_ok());
    }

    #[test]
    fn the_service_and_ip_addresses_are_never_app_hosts() {
        let r = rules();
        let mine = vec!["example.com".to_owned(), "127.0.0.1".to_owned()];
        for host in [
            "login.example.com",
            "login.example.com:8443",
            "127.0.0.1:8080",
            "127.0.0.1:9",
        ] {
            assert!(
                matches!(r.check(host, "acme", &mine), Err(HostRefusal::Reserved { .. })),
                "{host}"
            );
        }
        for host in ["10.1.2.3", "10.1.2.3:8443", "[::1]:8080", "[2001:db8::1]"] {
            assert!(
                matches!(r.check(host, "acme", &mine), Err(HostRefusal::IpAddress { .. })),
                "{host}"
            );
        }
    }

    #[test]
    fn refusals_say_what_would_work() {
        let message = rules()
            .check("wiki.example.org", "acme", &verified())
            .unwrap_err()
            .to_string();
        assert!(message.contains("acme.test, corp.acme.com"), "{message}");
        assert!(message.contains("wiki-acme.apps.example.com"), "{message}");
    }
}
