//! A whole installation of real processes for the page-level rows: the release
//! `postern` binary as `serve`, `agent run` (against the benchmark's directory)
//! and `connector run`, with a small backend app in this process. Each runs as
//! it would on its own host, so CPU and memory are measured per process from
//! `/proc`.
//!
//! The service's database is prepared first by the same code in this process
//! (first-run setup through the web pages, the pass-through domain, an app with
//! pre-authentication at `http://wiki.acme.test:{port}/`, and the agent's and
//! connector's registrations), on the ports the binary then listens on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_directory::LdapConfig;
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_service::RunningService;
use postern_service::config::Config;
use postern_store::{AppSpec, DomainAuthMode, ExternalScheme, Preauth};
use postern_time::{Clock, SharedClock, SystemClock};
use postern_uplink::{Credential, RegisterOptions, StateDir, register};

use crate::proxy::children::{Child, free_port, loopback};

/// The app's host (the service's port is appended).
pub const APP_HOST: &str = "wiki.acme.test";
/// The agent's RSA key size: what `postern agent register` uses by default.
const AGENT_RSA_BITS: u32 = 3072;
/// How long the processes get to come up.
const START_WITHIN: Duration = Duration::from_secs(30);

/// The agent's back end for the benchmark's slapd: users found by their mail
/// address (their sign-in name) with it as the UPN, over `pool_size`
/// connections.
pub fn slapd_agent_config(slapd: &postern_directory::testing::Slapd, pool_size: usize) -> LdapConfig {
    let mut config = slapd.config();
    config.user_filter = Some("(&(objectClass=inetOrgPerson)(mail={username}))".into());
    config.attributes.upn = Some("mail".into());
    config.pool_size = Some(pool_size);
    config
}

/// The running processes; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Installation {
    /// `postern serve`.
    pub serve: Child,
    /// `postern agent run`.
    pub agent: Child,
    /// `postern connector run`.
    pub connector: Child,
    /// The service's public listener.
    pub addr: SocketAddr,
    /// `http://wiki.acme.test:{port}/`.
    pub app_url: String,
    /// The backend task when the installation runs its own.
    backend: Option<tokio::task::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl Drop for Installation {
    fn drop(&mut self) {
        if let Some(backend) = &self.backend {
            backend.abort();
        }
    }
}

/// The app an installation publishes, for [`Installation::start_app`].
pub struct AppSide {
    /// The app's backend, run by the caller.
    pub backend: SocketAddr,
    /// The app's pre-authentication.
    pub preauth: Preauth,
    /// More environment for `serve` (`POSTERN_*` settings).
    pub serve_env: Vec<(&'static str, String)>,
}

/// What the directory needs for the installation.
pub struct DirectorySide<'a> {
    /// The users' domain (set to pass-through authentication).
    pub domain: &'a str,
    /// The agent's back end.
    pub config: &'a LdapConfig,
    /// The directory users who sign in: named and assigned to the app before
    /// their first sign-in, as an administrator would.
    pub users: &'a [String],
}

impl Installation {
    /// Prepares the database, then starts `serve`, `agent` and `connector` from
    /// the binary at `postern`; the app (pre-authentication at the STS) is a
    /// small page served from this process.
    pub async fn start(postern: &Path, directory: &DirectorySide<'_>) -> anyhow::Result<Self> {
        let (backend, task) = start_backend().await?;
        let app = AppSide {
            backend,
            preauth: Preauth::Sts,
            serve_env: Vec::new(),
        };
        match Self::start_app(postern, directory, &app).await {
            Ok(mut installation) => {
                installation.backend = Some(task);
                Ok(installation)
            }
            Err(e) => {
                task.abort();
                Err(e)
            }
        }
    }

    /// Like [`Installation::start`], with the app in front of the caller's
    /// backend and the given pre-authentication and settings of `serve`.
    pub async fn start_app(postern: &Path, directory: &DirectorySide<'_>, app: &AppSide) -> anyhow::Result<Self> {
        anyhow::ensure!(
            postern.is_file(),
            "no postern binary at {}: build it first with `cargo build --release -p postern`",
            postern.display()
        );
        let dir = tempfile::Builder::new().prefix("postern-bench-pages-").tempdir()?;
        let port = free_port()?;
        let control_port = free_port()?;
        let addr = loopback(port);
        prepare(dir.path(), addr, loopback(control_port), app, directory).await?;
        let serve = spawn_serve(postern, dir.path(), addr, loopback(control_port), &app.serve_env).await?;
        let agent_toml = dir.path().join("agent.toml");
        write_private(&agent_toml, &agent_toml_text(directory.config)?)?;
        let mut agent_cmd = Command::new(postern);
        agent_cmd
            .args(["agent", "run", "--allow-root", "--state-dir"])
            .arg(dir.path().join("agent"))
            .arg("--config")
            .arg(&agent_toml);
        let agent = Child::spawn("postern agent", agent_cmd, &dir.path().join("agent.log"))?;
        let mut connector_cmd = Command::new(postern);
        connector_cmd
            .args(["connector", "run", "--allow-root", "--state-dir"])
            .arg(dir.path().join("connector"));
        let connector = Child::spawn("postern connector", connector_cmd, &dir.path().join("connector.log"))?;
        Ok(Self {
            serve,
            agent,
            connector,
            addr,
            app_url: format!("http://{APP_HOST}:{port}/"),
            backend: None,
            dir,
        })
    }

    /// The app's host and port as a client names them (`Host`), from
    /// [`Installation::app_url`].
    pub fn app_authority(&self) -> &str {
        self.app_url.trim_start_matches("http://").trim_end_matches('/')
    }

    /// The processes' IDs by name.
    pub fn pids(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("serve", self.serve.id()),
            ("agent", self.agent.id()),
            ("connector", self.connector.id()),
        ]
    }

    /// An error naming the first process that exited, with its log's end.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.serve.check_alive()?;
        self.agent.check_alive()?;
        self.connector.check_alive()
    }

    /// Where the processes log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Setup, the domain, the app and the registrations, by the service's own code
/// on the ports the binary will use.
async fn prepare(
    dir: &Path,
    addr: SocketAddr,
    control: SocketAddr,
    app: &AppSide,
    directory: &DirectorySide<'_>,
) -> anyhow::Result<()> {
    let mut config = Config::local(dir.join("data"));
    config.listen = addr;
    config.control.listen = control;
    let clock: SharedClock = Arc::new(SystemClock);
    let mut service = RunningService::start(config, clock)
        .await
        .context("preparing the database")?;
    let setup = service
        .take_setup_code()
        .context("no setup code: not a fresh data dir")?;
    postern_testkit::setup_through_web(&setup.url, SystemClock.now()).await?;
    let store = service.store().clone();
    let now = SystemClock.now();
    let tenant = store.tenant_by_name("acme").await?;
    let admin = store.user_by_username(&tenant.id, "admin@acme.test").await?;
    store.add_domain(&tenant.id, directory.domain, "bench", now).await?;
    store.verify_domain(&tenant.id, directory.domain).await?;
    store
        .set_domain_auth_mode(&tenant.id, directory.domain, DomainAuthMode::Passthrough)
        .await?;
    let group = store.default_connector_group(&tenant.id, now).await?;
    let spec = AppSpec {
        name: "Wiki".into(),
        external_scheme: ExternalScheme::Http,
        external_host: format!("{APP_HOST}:{}", addr.port()),
        path_prefix: "/".into(),
        internal_url: format!("http://{}/", app.backend),
        preauth: app.preauth,
        connector_group_id: group.id.clone(),
        backend_timeout_secs: 30,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: false,
        identity_headers: Vec::new(),
        limits: postern_store::AppLimits::default(),
    };
    let app = store.create_app(&tenant.id, &spec, "bench-wiki", now).await?;
    for username in directory.users {
        // Found by name at the first sign-in, which records the directory's ID.
        let user = store
            .upsert_directory_user(
                &tenant.id,
                &format!("pending:{username}"),
                username,
                username,
                None,
                now,
            )
            .await?;
        store
            .assign_app(&tenant.id, &app.id, postern_store::PrincipalKind::User, &user.id)
            .await?;
    }
    for (kind, name, key_alg) in [
        (ComponentKind::Agent, "agent", KeyAlg::Rsa(AGENT_RSA_BITS)),
        (
            ComponentKind::Connector,
            "connector",
            KeyAlg::recommended(ComponentKind::Connector),
        ),
    ] {
        let token = service
            .sts()
            .mint_registration_token_for_tests(&tenant, &admin, kind, &format!("bench-{name}"))
            .await?;
        register(
            &RegisterOptions {
                server_url: format!("http://{addr}"),
                kind,
                credential: Credential::AccessToken(SecretString::from(token.as_str())),
                name: format!("bench-{name}"),
                version: "bench".into(),
                group: None,
                tenant: None,
                key_alg,
                server_ca_pem: None,
            },
            &StateDir::new(dir.join(name)),
        )
        .await
        .with_context(|| format!("registering the {name}"))?;
    }
    service.shutdown().await;
    Ok(())
}

/// `postern serve` on the prepared data dir, once it listens. Limits per
/// client address are off: the load comes from one address. `env` comes on top.
async fn spawn_serve(
    postern: &Path,
    dir: &Path,
    addr: SocketAddr,
    control: SocketAddr,
    env: &[(&'static str, String)],
) -> anyhow::Result<Child> {
    let mut command = Command::new(postern);
    command
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", &addr.to_string(), "--control-listen", &control.to_string()])
        .args(["--public-url", &format!("http://{addr}")])
        .env_remove("POSTERN_CONFIG")
        .env("POSTERN_LIMITS__CLIENT_REQUESTS_PER_SEC", "0")
        .env("POSTERN_LIMITS__TENANT_REQUESTS_PER_SEC", "0")
        .env("POSTERN_LIMITS__APP_REQUESTS_PER_SEC", "0")
        .env("POSTERN_LIMITS__CONNECTIONS_PER_CLIENT", "0")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut serve = Child::spawn("postern serve", command, &dir.join("serve.log"))?;
    serve.wait_for_port(addr, START_WITHIN).await?;
    Ok(serve)
}

/// The agent's configuration file for `config`.
fn agent_toml_text(config: &LdapConfig) -> anyhow::Result<String> {
    let mut ldap = toml::Table::new();
    ldap.insert("kind".into(), "ldap".into());
    ldap.insert("flavor".into(), toml::Value::try_from(config.flavor)?);
    ldap.insert("urls".into(), toml::Value::try_from(&config.urls)?);
    ldap.insert("starttls".into(), config.starttls.into());
    ldap.insert("allow_plaintext".into(), config.allow_plaintext.into());
    ldap.insert("base_dn".into(), config.base_dn.clone().into());
    if let Some(ca) = &config.ca_file {
        ldap.insert("ca_file".into(), ca.display().to_string().into());
    }
    if let Some(dn) = &config.bind_dn {
        ldap.insert("bind_dn".into(), dn.clone().into());
    }
    if let Some(pw) = &config.bind_password {
        ldap.insert("bind_password".into(), pw.expose().to_owned().into());
    }
    if let Some(filter) = &config.user_filter {
        ldap.insert("user_filter".into(), filter.clone().into());
    }
    if let Some(upn) = &config.attributes.upn {
        let mut attributes = toml::Table::new();
        attributes.insert("upn".into(), upn.clone().into());
        ldap.insert("attributes".into(), attributes.into());
    }
    if let Some(n) = config.pool_size {
        ldap.insert("pool_size".into(), i64::try_from(n)?.into());
    }
    let mut file = toml::Table::new();
    file.insert("directory".into(), ldap.into());
    Ok(toml::to_string(&file)?)
}

fn write_private(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// The app behind the connector: a small page for every request.
async fn start_backend() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind(loopback(0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"<!doctype html><title>Wiki</title><p>Signed in.</p>"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, task))
}
