//! Postern's rows: the release `postern` binary as `serve`, `agent` and
//! `connector` processes ([`Installation`]), an app published in front of one
//! of the benchmark's backends. Each process runs as it would on its own host,
//! so the CPU each spends per request is read from `/proc`, apart from the
//! load generator's and the backend's. Every byte crosses real sockets: user →
//! the service's public listener → the mutual-TLS tunnel the connector dialled
//! → the connector → the backend.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use postern_directory::LdapConfig;
use postern_directory::testing::{SLAPD_PASSWORD, Slapd};
use postern_store::Preauth;

use super::probe::{self, Target};
use crate::pta::installation::{APP_HOST, AppSide, DirectorySide, Installation, slapd_agent_config};
use crate::pta::pages::sign_in_to;

/// Longest wait for the app to answer through the connector after start-up.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// The directory user who signs in for the pre-authenticated row.
const USER: &str = "alice@example.com";
/// The users' domain in the benchmark's directory.
const DOMAIN: &str = "example.com";

/// The directory the installations' agents sign users in against: a fresh
/// slapd, stopped when dropped.
pub struct Directory {
    config: LdapConfig,
    users: Vec<String>,
    _slapd: Slapd,
}

impl Directory {
    /// Starts slapd with its test users.
    pub async fn start() -> anyhow::Result<Self> {
        let slapd = Slapd::start().await.context("starting slapd for the agent")?;
        let config = slapd_agent_config(&slapd, 1);
        Ok(Self {
            config,
            users: vec![USER.to_owned()],
            _slapd: slapd,
        })
    }

    fn side(&self) -> DirectorySide<'_> {
        DirectorySide {
            domain: DOMAIN,
            config: &self.config,
            users: &self.users,
        }
    }
}

/// What shows that an installation's app answers through the connector.
#[derive(Clone, Copy, Debug)]
pub enum Ready {
    /// A 200 with a body of this many bytes.
    Page(usize),
    /// The first event of a server-sent-events stream.
    Events,
}

/// One installation of the binary in front of a backend, ready for load.
pub struct Postern {
    installation: Installation,
    target: Target,
}

impl Postern {
    /// The app with pre-authentication `passthrough` in front of `backend`,
    /// once it answers through the connector as `ready` says.
    pub async fn passthrough(
        binary: &Path,
        directory: &Directory,
        backend: SocketAddr,
        ready: Ready,
    ) -> anyhow::Result<Self> {
        let installation = start(binary, directory, backend, Preauth::Passthrough).await?;
        let target = Target::new(installation.addr, installation.app_authority());
        Self::ready(installation, target, ready).await
    }

    /// The app with pre-authentication at the STS in front of `backend`, and a
    /// session: a directory user signed in through the pages (agent and
    /// directory on the way), whose cookie every request then carries.
    pub async fn signed_in(
        binary: &Path,
        directory: &Directory,
        backend: SocketAddr,
        len: usize,
    ) -> anyhow::Result<Self> {
        let mut installation = start(binary, directory, backend, Preauth::Sts).await?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .resolve(APP_HOST, installation.addr)
            .timeout(Duration::from_secs(30))
            .build()?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        let signed_in = loop {
            installation.check_alive()?;
            match sign_in_to(&client, &installation.app_url, USER, SLAPD_PASSWORD).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "no sign-in went through within {READY_WITHIN:?} (logs in {})",
                        installation.dir().display()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        };
        let cookie = signed_in
            .cookie
            .context("signed in, but the app set no session cookie")?;
        let target = Target {
            cookie: Some(cookie),
            ..Target::new(installation.addr, installation.app_authority())
        };
        Self::ready(installation, target, Ready::Page(len)).await
    }

    async fn ready(mut installation: Installation, target: Target, ready: Ready) -> anyhow::Result<Self> {
        installation.check_alive()?;
        let answered = match ready {
            Ready::Page(len) => probe::wait_ok(&target, len, READY_WITHIN).await.map(|_| ()),
            Ready::Events => wait_for_events(&target).await,
        };
        answered.with_context(|| format!("the app through Postern (logs in {})", installation.dir().display()))?;
        Ok(Self { installation, target })
    }

    /// Where the row's requests go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The processes whose CPU a row reports: `serve` and the connector.
    pub fn measured_pids(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("serve", self.installation.serve.id()),
            ("connector", self.installation.connector.id()),
        ]
    }

    /// An error naming the first process that exited, with its log's end.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.installation.check_alive()
    }
}

async fn start(
    binary: &Path,
    directory: &Directory,
    backend: SocketAddr,
    preauth: Preauth,
) -> anyhow::Result<Installation> {
    let app = AppSide {
        backend,
        preauth,
        serve_env: Vec::new(),
    };
    Installation::start_app(binary, &directory.side(), &app).await
}

/// Retries [`probe::first_event`] until an event arrives or [`READY_WITHIN`]
/// has passed.
async fn wait_for_events(target: &Target) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        match probe::first_event(target.addr, &target.host, Duration::from_secs(5)).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
