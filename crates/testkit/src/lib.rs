//! Test harness: starts the real service in-process on loopback with a temporary store and a controlled clock.
//!
//! ```text
//! let svc = TestService::builder().postgres().start().await?;
//! let tenant = svc.bootstrap().await?;            // first-run setup, through the web pages
//! let browser = Browser::new();
//! let landed = browser.sign_in(&authorize_url, &tenant.admin_login(&svc)).await?;
//! ```
//!
//! Everything here talks to the service over real HTTP on 127.0.0.1; nothing is
//! mocked. Time is a [`ManualClock`] unless a test asks for the system clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod browser;
mod pkce;
pub mod wait;

use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use postern_service::RunningService;
use postern_service::config::{AbuseLimits, Config, Limits};
use postern_store::testing::TestDatabase;
use postern_store::{Backend, Store, Tenant, User};
use postern_sts::{Sts, StsConfig};
use postern_time::{Clock, ManualClock, SharedClock, SystemClock, UnixTime};

pub use browser::{Browser, Form, Login, Page};
pub use pkce::Pkce;
pub use wait::{eventually, eventually_async, hold_for, poll_pause, quiet_for, wait_until};

/// Password of the administrator created by [`TestService::bootstrap`].
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Adjusts the control endpoint's settings before the service starts.
type ControlTuning = Box<dyn FnOnce(&mut postern_service::config::ControlSettings) + Send>;

/// Builds a [`TestService`].
pub struct TestServiceBuilder {
    backend: Backend,
    manual_clock: bool,
    trust_loopback_proxy: bool,
    apps_domain: Option<String>,
    tune: Box<dyn FnOnce(&mut StsConfig) + Send>,
    limits: Option<Limits>,
    abuse_limits: Option<AbuseLimits>,
    export: Option<postern_export::ExportSettings>,
    control: Option<ControlTuning>,
    metrics: bool,
    /// Where the data directory is made (a fresh temporary directory under
    /// it); the system's temporary directory when `None`.
    data_parent: Option<std::path::PathBuf>,
    /// A database of the test's own (e.g. a PostgreSQL server it restarts)
    /// instead of a fresh schema of the shared one.
    database_url: Option<String>,
    /// Set by [`TestCluster::instance`]: the shared database, KEK, NATS prefix
    /// and clock.
    member: Option<Member>,
}

/// What the instances of a [`TestCluster`] share.
#[derive(Clone)]
struct Member {
    database_url: String,
    kek: postern_keyring::SecretString,
    cluster: postern_cluster::ClusterSettings,
    clock: Arc<ManualClock>,
}

/// The NATS server of the tests: `POSTERN_TEST_NATS`, else
/// `nats://127.0.0.1:4222` (JetStream enabled; `scripts/test` starts it).
pub fn test_nats_url() -> String {
    std::env::var("POSTERN_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// Several service instances in one test, as behind a load balancer: one
/// PostgreSQL schema, one KEK, one clock, and NATS subjects and streams under
/// a prefix of their own (the tests share one NATS server). Call
/// [`TestCluster::remove_from_nats`] at the end.
pub struct TestCluster {
    member: Member,
    _db: TestDatabase,
}

impl TestCluster {
    /// A fresh schema and prefix.
    pub async fn new() -> Result<Self> {
        use base64::Engine as _;
        let db = TestDatabase::new(Backend::Postgres).await?;
        let key = postern_keyring::random_bytes::<32>()?;
        let kek = format!("1:{}", base64::engine::general_purpose::STANDARD.encode(key));
        let token = postern_keyring::random_token()?;
        let prefix: String = token
            .expose()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect();
        Ok(Self {
            member: Member {
                database_url: db.url.clone(),
                kek: postern_keyring::SecretString::from(kek.as_str()),
                cluster: postern_cluster::ClusterSettings {
                    nats_url: test_nats_url(),
                    prefix: format!("t{prefix}"),
                    peer_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                    peer_advertise: None,
                },
                clock: ManualClock::starting_now(),
            },
            _db: db,
        })
    }

    /// The prefix of this cluster's NATS subjects and streams.
    pub fn prefix(&self) -> &str {
        &self.member.cluster.prefix
    }

    /// The shared database's URL.
    pub fn database_url(&self) -> &str {
        &self.member.database_url
    }

    /// The shared KEK (`POSTERN_KEK` of a `postern serve` process of this cluster).
    pub fn kek(&self) -> &postern_keyring::SecretString {
        &self.member.kek
    }

    /// A builder for one more instance of this cluster.
    pub fn instance(&self) -> TestServiceBuilder {
        let mut builder = TestService::builder();
        builder.backend = Backend::Postgres;
        builder.member = Some(self.member.clone());
        builder
    }

    /// Deletes this cluster's stream from NATS (the subjects need nothing).
    pub async fn remove_from_nats(&self) {
        if let Ok(client) = async_nats::connect(test_nats_url()).await {
            let js = async_nats::jetstream::new(client);
            let stream = format!("{}_PTA", self.prefix().replace('-', "_"));
            let _ = js.delete_stream(stream).await;
        }
    }
}

impl TestServiceBuilder {
    /// Use PostgreSQL (a fresh schema) instead of SQLite.
    pub fn postgres(mut self) -> Self {
        self.backend = Backend::Postgres;
        self
    }

    /// Use the given backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Use the system clock (for tests that drive a separate process in real time).
    pub fn system_clock(mut self) -> Self {
        self.manual_clock = false;
        self
    }

    /// Treat 127.0.0.1 as a trusted proxy, so tests can pose as other client
    /// addresses with `X-Forwarded-For`.
    pub fn trust_loopback_proxy(mut self) -> Self {
        self.trust_loopback_proxy = true;
        self
    }

    /// Sets the operator's app domain (`{app}-{tenant}.{domain}` app hosts).
    pub fn apps_domain(mut self, domain: &str) -> Self {
        self.apps_domain = Some(domain.to_owned());
        self
    }

    /// Adjusts the STS's lifetimes and knobs.
    pub fn tune(mut self, f: impl FnOnce(&mut StsConfig) + Send + 'static) -> Self {
        self.tune = Box::new(f);
        self
    }

    /// Sets the listener's limits (connection deadlines, sizes). Their
    /// `abuse` part is replaced by [`TestServiceBuilder::abuse_limits`]'s.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Sets the abuse limits (rate limits, connections per client, the body
    /// limit of apps, sign-ins waiting per tenant). Without this they are off:
    /// every test's clients come from one loopback address, and most tests are
    /// not about floods.
    pub fn abuse_limits(mut self, abuse: AbuseLimits) -> Self {
        self.abuse_limits = Some(abuse);
        self
    }

    /// Exports sign-in and audit events to the receivers in `settings`.
    pub fn export(mut self, settings: postern_export::ExportSettings) -> Self {
        self.export = Some(settings);
        self
    }

    /// Adjusts the control endpoint's settings (e.g. the minimum component
    /// version).
    pub fn control(mut self, f: impl FnOnce(&mut postern_service::config::ControlSettings) + Send + 'static) -> Self {
        self.control = Some(Box::new(f));
        self
    }

    /// Serves Prometheus metrics on an ephemeral loopback port of their own
    /// ([`TestService::metrics_addr`]).
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Makes the data directory (with the SQLite database) under `parent`, e.g.
    /// a small file system a test fills up.
    pub fn data_under(mut self, parent: impl Into<std::path::PathBuf>) -> Self {
        self.data_parent = Some(parent.into());
        self
    }

    /// Uses the database at `url` (a server of the test's own, which it may
    /// stop and start) instead of a fresh schema of the shared PostgreSQL.
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// Starts the service on 127.0.0.1 with an ephemeral port.
    pub async fn start(self) -> Result<TestService> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let data = match &self.data_parent {
            Some(parent) => tempfile::tempdir_in(parent)?,
            None => tempfile::tempdir()?,
        };
        let db = match (&self.member, &self.database_url) {
            (Some(_), _) | (None, Some(_)) => None,
            (None, None) => Some(TestDatabase::new(self.backend).await?),
        };
        let mut config = Config::local(data.path().to_path_buf());
        if let Some(db) = &db {
            config.database_url = db.url.clone();
        }
        if let Some(url) = &self.database_url {
            config.database_url = url.clone();
        }
        if let Some(member) = &self.member {
            config.database_url = member.database_url.clone();
            config.kek = Some(member.kek.clone());
            config.cluster = Some(member.cluster.clone());
        }
        if let Some(limits) = self.limits {
            config.limits = limits;
        }
        config.limits.abuse = self.abuse_limits.unwrap_or_else(AbuseLimits::off);
        if self.trust_loopback_proxy {
            config.trusted_proxies = vec!["127.0.0.1/32".parse()?];
        }
        config.apps_domain = self.apps_domain;
        if let Some(export) = self.export {
            config.export = export;
        }
        if let Some(control) = self.control {
            control(&mut config.control);
        }
        if self.metrics {
            config.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        let manual = match &self.member {
            Some(member) => member.clock.clone(),
            None => ManualClock::starting_now(),
        };
        let clock: SharedClock = if self.manual_clock {
            manual.clone()
        } else {
            Arc::new(SystemClock)
        };
        let mut service = RunningService::start_with(config, clock.clone(), self.tune).await?;
        let setup_url = service.take_setup_code().map(|s| s.url);
        Ok(TestService {
            service: Some(service),
            clock: manual,
            uses_manual_clock: self.manual_clock,
            setup_url,
            _db: db,
            data,
        })
    }
}

/// A running service for one test.
pub struct TestService {
    service: Option<RunningService>,
    clock: Arc<ManualClock>,
    uses_manual_clock: bool,
    setup_url: Option<String>,
    _db: Option<TestDatabase>,
    data: tempfile::TempDir,
}

/// A tenant created for a test, with its administrator's credentials.
#[derive(Clone, Debug)]
pub struct TenantFixture {
    /// The tenant.
    pub tenant: Tenant,
    /// The global administrator.
    pub admin: User,
    /// The administrator's password.
    pub admin_password: String,
    /// The administrator's TOTP secret (base32), as shown at enrolment.
    pub admin_totp_secret: String,
    /// Recovery codes shown at setup.
    pub recovery_codes: Vec<String>,
}

impl TestService {
    /// A builder with SQLite, a manual clock and default lifetimes.
    pub fn builder() -> TestServiceBuilder {
        TestServiceBuilder {
            backend: Backend::Sqlite,
            manual_clock: true,
            trust_loopback_proxy: false,
            apps_domain: None,
            tune: Box::new(|_| {}),
            limits: None,
            abuse_limits: None,
            export: None,
            control: None,
            metrics: false,
            data_parent: None,
            database_url: None,
            member: None,
        }
    }

    /// Starts a service with the defaults.
    pub async fn start() -> Result<TestService> {
        Self::builder().start().await
    }

    fn running(&self) -> &RunningService {
        self.service.as_ref().expect("service is running until dropped")
    }

    /// The metrics listener's address (started with
    /// [`TestServiceBuilder::metrics`]).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.running().metrics_addr()
    }

    /// The address of the public listener.
    pub fn local_addr_for_tests(&self) -> std::net::SocketAddr {
        self.running().local_addr()
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        self.running().public_url().as_str().trim_end_matches('/').to_owned()
    }

    /// The issuer URL of a tenant.
    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/t/{tenant}", self.url())
    }

    /// The control plane (CAs, enrolment, the mTLS endpoint).
    pub fn control(&self) -> &Arc<postern_control::Control> {
        self.running().control()
    }

    /// The front door of published apps.
    pub fn edge(&self) -> &Arc<postern_edge::Edge> {
        self.running().edge()
    }

    /// The address of the mTLS control listener.
    pub fn control_addr(&self) -> std::net::SocketAddr {
        self.running().control_addr()
    }

    /// A shared handle on the service clock, for components under test (so the
    /// component and the service agree on time).
    pub fn shared_clock(&self) -> SharedClock {
        if self.uses_manual_clock {
            self.clock.clone()
        } else {
            Arc::new(SystemClock)
        }
    }

    /// An admin-API access token for `user`, signed by the STS without a sign-in
    /// (the sign-in pages are tested elsewhere).
    pub async fn admin_token(&self, tenant: &Tenant, user: &User) -> Result<String> {
        Ok(self
            .sts()
            .mint_access_token_for_tests(tenant, user, "openid postern:admin")
            .await?)
    }

    /// A registration credential for `user` of `tenant`, as if they had approved
    /// registering a `kind` named `component_name` in the device flow (the
    /// approval pages are tested elsewhere). Registration refuses admin tokens.
    pub async fn registration_token(
        &self,
        tenant: &Tenant,
        user: &User,
        kind: postern_proto::ComponentKind,
        component_name: &str,
    ) -> Result<String> {
        Ok(self
            .sts()
            .mint_registration_token_for_tests(tenant, user, kind, component_name)
            .await?)
    }

    /// The STS.
    pub fn sts(&self) -> &Arc<Sts> {
        self.running().sts()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        self.running().store()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// The controlled clock (only meaningful unless built with `system_clock`).
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The service's current time.
    pub fn now(&self) -> UnixTime {
        if self.uses_manual_clock {
            self.clock.now()
        } else {
            SystemClock.now()
        }
    }

    /// Moves the service clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        assert!(self.uses_manual_clock, "advance() needs the manual clock");
        self.clock.advance(by);
    }

    /// The first-run setup URL printed at start.
    pub fn setup_url(&self) -> Option<&str> {
        self.setup_url.as_deref()
    }

    /// Runs first-run setup through the web pages, creating tenant `acme` with
    /// domain `acme.test` and administrator `admin@acme.test`.
    pub async fn bootstrap(&self) -> Result<TenantFixture> {
        let url = self
            .setup_url()
            .context("no setup URL: a tenant exists already")?
            .to_owned();
        let done = setup_through_web(&url, self.now()).await?;
        let tenant = self.store().tenant_by_name("acme").await?;
        let admin = self.store().user_by_username(&tenant.id, "admin@acme.test").await?;
        // The step used at enrolment is spent; move past it so the next sign-in
        // can use a fresh code.
        if self.uses_manual_clock {
            self.advance(std::time::Duration::from_secs(30));
        }
        Ok(TenantFixture {
            tenant,
            admin,
            admin_password: ADMIN_PASSWORD.into(),
            admin_totp_secret: done.totp_secret,
            recovery_codes: done.recovery_codes,
        })
    }

    /// Creates a cloud user with a password (no roles, no MFA) directly through the
    /// STS's password hasher and the store.
    pub async fn create_user(&self, tenant: &Tenant, username: &str, password: &str) -> Result<User> {
        let hash = self.sts().hasher().hash(&password.into()).await?;
        let user = postern_store::NewUser::cloud(username, username, Some(hash));
        Ok(self.store().create_user(&tenant.id, user, self.now()).await?)
    }

    /// Registers an OAuth client directly in the store. With `secret`, a
    /// confidential client.
    pub async fn create_client(
        &self,
        tenant: &Tenant,
        client_id: &str,
        secret: Option<&str>,
        redirect_uris: &[&str],
        grant_types: &[&str],
    ) -> Result<()> {
        self.store()
            .create_client(
                &tenant.id,
                &postern_store::NewOAuthClient {
                    client_id: client_id.into(),
                    name: format!("Test app {client_id}"),
                    secret_digest: secret.map(postern_keyring::digest),
                    redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
                    post_logout_redirect_uris: redirect_uris.iter().map(|s| format!("{s}/bye")).collect(),
                    grant_types: grant_types.iter().map(|s| s.to_string()).collect(),
                    scopes: vec![],
                    builtin: false,
                },
                self.now(),
            )
            .await?;
        Ok(())
    }

    /// This instance's membership among several ([`TestCluster`]).
    pub fn cluster(&self) -> Option<&postern_cluster::Cluster> {
        self.running().cluster()
    }

    /// Stops the service (draining) and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.service.take() {
            s.shutdown().await;
        }
    }
}

/// What first-run setup showed.
#[derive(Debug, Clone)]
pub struct SetupDone {
    /// The administrator's TOTP secret (base32).
    pub totp_secret: String,
    /// The recovery codes.
    pub recovery_codes: Vec<String>,
}

/// Walks the first-run setup pages at `setup_url` like a browser, creating tenant
/// `acme` (domain `acme.test`) with administrator `admin@acme.test` /
/// [`ADMIN_PASSWORD`]; TOTP codes are computed for `now`.
pub async fn setup_through_web(setup_url: &str, now: UnixTime) -> Result<SetupDone> {
    let browser = Browser::new();
    let page = browser.get(setup_url).await?;
    let form = page.form()?;
    let page = browser
        .submit(
            &form,
            &[
                ("display_name", "Acme Corp"),
                ("name", "acme"),
                ("domain", "acme.test"),
                ("username", "admin@acme.test"),
                ("password", ADMIN_PASSWORD),
                ("password_again", ADMIN_PASSWORD),
            ],
        )
        .await?;
    let secret = page
        .codes()
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("no TOTP secret on the page:\n{}", page.body))?;
    let code = totp_code(&secret, now)?;
    let done = browser.submit(&page.form()?, &[("totp", &code)]).await?;
    if done.title() != "Your organisation is ready" {
        bail!("setup did not finish: {} {:?}", done.title(), done.error());
    }
    Ok(SetupDone {
        totp_secret: secret,
        recovery_codes: done.codes(),
    })
}

/// The TOTP code for a base32 secret (spaces allowed) at `now`.
pub fn totp_code(secret_base32: &str, now: UnixTime) -> Result<String> {
    let compact: String = secret_base32.chars().filter(|c| !c.is_whitespace()).collect();
    let secret = totp_rs::Secret::try_from_base32(&compact).map_err(|e| anyhow!("bad secret: {e:?}"))?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_ref().to_vec())
        .build()
        .map_err(|e| anyhow!("totp: {e}"))?;
    Ok(totp.generate(u64::try_from(now.secs())?).to_string())
}
