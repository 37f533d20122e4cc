//! What the demo makes in the service, through the same store and STS calls
//! as first-run setup and the admin API: the organisation with its
//! administrator, its domain set to pass-through authentication, the
//! directory's users named ahead of their first sign-in, and the two apps.
//! Each step finds what an earlier run made before making anything.

use anyhow::{Context, bail};
use postern_keyring::SecretString;
use postern_store::{
    App, AppSpec, DomainAuthMode, ExternalScheme, Preauth, PrincipalKind, Store, StoreError, Tenant, UserSource,
};
use postern_sts::{NewTenantRequest, Sts};
use zeroize::Zeroizing;

use super::record::{DemoRecord, UserRecord};

/// Who the audit log names for what the demo does.
const ACTOR: &str = "postern demo";
/// The directory group that may use the pre-authenticated app.
pub(crate) const WIKI_GROUP: &str = "staff";
/// Identity headers the pre-authenticated app sends its backend: all of them.
const IDENTITY_HEADERS: [&str; 4] = ["user", "email", "groups", "assertion"];
/// How long a backend may take to answer (the admin API's default).
const BACKEND_TIMEOUT_SECS: i64 = 85;

/// One of the demo's apps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DemoApp {
    /// Its name in the organisation.
    pub(crate) name: &'static str,
    /// The first label of its host, under the demo's domain.
    pub(crate) label: &'static str,
    /// Whether users sign in before reaching it.
    pub(crate) preauth: Preauth,
}

/// The app behind a sign-in.
pub(crate) const WIKI: DemoApp = DemoApp {
    name: "Wiki",
    label: "wiki",
    preauth: Preauth::Sts,
};

/// The app anyone may reach.
pub(crate) const PUBLIC: DemoApp = DemoApp {
    name: "Public",
    label: "public",
    preauth: Preauth::Passthrough,
};

impl DemoApp {
    /// Its host and port, e.g. `wiki.demo.localhost:9443`.
    pub(crate) fn host(&self, domain: &str, port: u16) -> String {
        format!("{}.{domain}:{port}", self.label)
    }

    /// Its external URL.
    pub(crate) fn url(&self, domain: &str, port: u16) -> String {
        format!("https://{}/", self.host(domain, port))
    }
}

/// What [`provision`] found or made.
#[derive(Debug)]
pub(crate) struct Provisioned {
    /// The organisation.
    pub(crate) tenant: Tenant,
    /// The pre-authenticated app.
    pub(crate) wiki: App,
    /// The passthrough app.
    pub(crate) public: App,
}

/// Where the apps are published and where their backends listen.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Addresses {
    /// The service's HTTPS port (the apps' too).
    pub(crate) public_port: u16,
    /// The pre-authenticated app's backend.
    pub(crate) wiki_backend: std::net::SocketAddr,
    /// The passthrough app's backend.
    pub(crate) public_backend: std::net::SocketAddr,
}

/// Finds or makes everything of `record` in the service.
pub(crate) async fn provision(sts: &Sts, record: &DemoRecord, at: Addresses) -> anyhow::Result<Provisioned> {
    let store = sts.store();
    let tenant = ensure_tenant(sts, record).await?;
    store
        .set_domain_auth_mode(&tenant.id, &record.domain, DomainAuthMode::Passthrough)
        .await
        .context("setting the demo domain to pass-through authentication")?;
    for user in &record.users {
        ensure_directory_user(sts, &tenant, user).await?;
    }
    let wiki = ensure_app(
        sts,
        &tenant,
        &spec(sts, &tenant, record, WIKI, at.public_port, at.wiki_backend).await?,
    )
    .await?;
    let public = ensure_app(
        sts,
        &tenant,
        &spec(sts, &tenant, record, PUBLIC, at.public_port, at.public_backend).await?,
    )
    .await?;
    let staff = directory_group(store, &tenant, WIKI_GROUP).await?;
    store
        .assign_app(&tenant.id, &wiki.id, PrincipalKind::Group, &staff)
        .await
        .context("assigning the wiki to the staff group")?;
    Ok(Provisioned { tenant, wiki, public })
}

/// The organisation and its administrator, made as first-run setup makes them
/// (with the TOTP seed of the record already enrolled).
async fn ensure_tenant(sts: &Sts, record: &DemoRecord) -> anyhow::Result<Tenant> {
    let store = sts.store();
    match store.tenant_by_name(&record.tenant).await {
        Ok(t) => return Ok(t),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let seed = totp_rs::Secret::try_from_base32(record.admin.totp_secret.expose())
        .map_err(|e| anyhow::anyhow!("demo.json: the administrator's TOTP secret: {e}"))?;
    let request = NewTenantRequest {
        name: record.tenant.clone(),
        display_name: "Postern demo".into(),
        domain: record.domain.clone(),
        admin_username: record.admin.username.clone(),
        admin_password: SecretString::from(record.admin.password.expose()),
        is_system: !store.has_tenants().await?,
        // Step 0: the code of this very moment is still good for the first sign-in.
        admin_totp: Some((Zeroizing::new(seed.as_bytes().to_vec()), 0)),
    };
    let (tenant, _, _) = sts
        .create_tenant(request, ACTOR)
        .await
        .context("creating the demo organisation")?;
    Ok(tenant)
}

/// A directory user named before their first sign-in, so the app can be
/// assigned to their group now. The directory's stable ID is not known yet:
/// the first sign-in finds the account by name and records it.
async fn ensure_directory_user(sts: &Sts, tenant: &Tenant, user: &UserRecord) -> anyhow::Result<()> {
    let store = sts.store();
    match store.user_by_username(&tenant.id, &user.username).await {
        Ok(u) if u.source == UserSource::Directory => return Ok(()),
        Ok(_) => bail!(
            "{} is a cloud account in the demo organisation; remove the demo's state directory to start over",
            user.username
        ),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let now = sts.now();
    let pending_id = postern_store::pending_external_id(&user.username);
    let made = store
        .upsert_directory_user(&tenant.id, &pending_id, &user.username, &user.display_name, None, now)
        .await
        .with_context(|| format!("naming {}", user.username))?;
    store
        .set_directory_groups(&tenant.id, &made.id, &user.groups, now)
        .await
        .with_context(|| format!("the groups of {}", user.username))?;
    Ok(())
}

/// The ID of the directory group `name`.
async fn directory_group(store: &Store, tenant: &Tenant, name: &str) -> anyhow::Result<String> {
    store
        .groups(&tenant.id)
        .await?
        .into_iter()
        .find(|g| g.name == name && g.source == UserSource::Directory)
        .map(|g| g.id)
        .with_context(|| format!("the directory group {name} is missing"))
}

/// What `app` is published with.
async fn spec(
    sts: &Sts,
    tenant: &Tenant,
    record: &DemoRecord,
    app: DemoApp,
    public_port: u16,
    backend: std::net::SocketAddr,
) -> anyhow::Result<AppSpec> {
    let group = sts.store().default_connector_group(&tenant.id, sts.now()).await?;
    let identity_headers = match app.preauth {
        Preauth::Sts => IDENTITY_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
        Preauth::Passthrough => Vec::new(),
    };
    Ok(AppSpec {
        name: app.name.to_owned(),
        external_scheme: ExternalScheme::Https,
        external_host: app.host(&record.domain, public_port),
        path_prefix: "/".into(),
        internal_url: format!("http://{backend}/"),
        preauth: app.preauth,
        connector_group_id: group.id,
        backend_timeout_secs: BACKEND_TIMEOUT_SECS,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: false,
        identity_headers,
        limits: Default::default(),
    })
}

/// The app named as `spec`, made or brought up to date (its port or its
/// backend's may differ from the last run's).
async fn ensure_app(sts: &Sts, tenant: &Tenant, spec: &AppSpec) -> anyhow::Result<App> {
    let store = sts.store();
    let existing = store.apps(&tenant.id).await?.into_iter().find(|a| a.name == spec.name);
    let now = sts.now();
    let app = match existing {
        Some(app) if app.external_host == spec.external_host && app.internal_url == spec.internal_url => app,
        Some(app) => store.update_app(&tenant.id, &app.id, spec, now).await?,
        None => {
            let client_id = uuid::Uuid::new_v4().to_string();
            store.create_app(&tenant.id, spec, &client_id, now).await?
        }
    };
    Ok(app)
}
