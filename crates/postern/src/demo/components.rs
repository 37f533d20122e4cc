//! The demo's connector and agent. Each registers once, with a single-use
//! registration token the demo mints in the store (as `postern admin
//! registration-tokens create` does), and keeps its key and certificate in the
//! state directory; a later run reuses the registration while the service
//! still knows the component at the same control endpoint. Both then run in
//! this process on the code of `postern connector run` and `postern agent run`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_proto::registration::REGISTRATION_TOKEN_PREFIX;
use postern_store::{StoreError, Tenant};
use postern_sts::Sts;
use postern_time::{SharedClock, SystemClock};
use postern_uplink::{Credential, Enrolment, RegisterOptions, StateDir};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::component::Shutdown;

/// How long the demo's registration token lives (it is used at once).
const TOKEN_TTL: Duration = Duration::from_secs(300);

/// Where a component registers: the service's public URL, its certificate,
/// and the control endpoint the component must use.
pub(crate) struct Service<'a> {
    /// The STS (and through it the store).
    pub(crate) sts: &'a Sts,
    /// The organisation.
    pub(crate) tenant: &'a Tenant,
    /// Its administrator, on whose authority the demo mints registration tokens.
    pub(crate) admin_id: &'a str,
    /// `https://localhost:PORT`.
    pub(crate) url: &'a str,
    /// The self-signed certificate of that URL (PEM).
    pub(crate) certificate_pem: &'a str,
    /// The control endpoint's URL as the service hands it out.
    pub(crate) control_url: &'a str,
}

/// A component's registration: reused, or made now.
#[derive(Debug)]
pub(crate) struct Registration {
    /// What the component knows about itself.
    pub(crate) enrolment: Enrolment,
    /// Whether it was made in this run.
    pub(crate) new: bool,
    /// Whether it replaces one the service no longer takes (another control
    /// endpoint, or the component removed).
    pub(crate) replaced: bool,
}

/// The registration in `state`, if the service still knows it at the same
/// control endpoint; otherwise a fresh one (the stale one removed first).
pub(crate) async fn ensure_registered(
    service: &Service<'_>,
    kind: ComponentKind,
    state: &StateDir,
) -> anyhow::Result<Registration> {
    let mut replaced = false;
    if state.is_registered() {
        let (_, _, enrolment) = state.load()?;
        if still_valid(service, &enrolment).await? {
            return Ok(Registration {
                enrolment,
                new: false,
                replaced,
            });
        }
        forget(service, state, &enrolment).await?;
        replaced = true;
    }
    let token = mint_token(service, kind).await?;
    let options = RegisterOptions {
        server_url: service.url.to_owned(),
        kind,
        credential: Credential::RegistrationToken(token),
        name: format!("demo-{kind}"),
        version: postern_uplink::reported_version(),
        group: None,
        tenant: Some(service.tenant.name.clone()),
        key_alg: KeyAlg::recommended(kind),
        server_ca_pem: Some(service.certificate_pem.to_owned()),
    };
    let enrolment = postern_uplink::register(&options, state)
        .await
        .with_context(|| format!("registering the demo {kind}"))?;
    Ok(Registration {
        enrolment,
        new: true,
        replaced,
    })
}

/// Whether `enrolment` still names a component of this organisation that the
/// service knows, at the control endpoint it serves now.
async fn still_valid(service: &Service<'_>, enrolment: &Enrolment) -> anyhow::Result<bool> {
    if enrolment.tenant_id != service.tenant.id || enrolment.control_url != service.control_url {
        return Ok(false);
    }
    match service
        .sts
        .store()
        .component(&service.tenant.id, &enrolment.component_id)
        .await
    {
        Ok(_) => Ok(true),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes a registration that cannot be reused: from the service (revoking
/// its certificate) and from the state directory.
async fn forget(service: &Service<'_>, state: &StateDir, enrolment: &Enrolment) -> anyhow::Result<()> {
    let store = service.sts.store();
    let now = service.sts.now();
    match store
        .delete_component(
            &service.tenant.id,
            &enrolment.component_id,
            "postern demo: registered again",
            now,
        )
        .await
    {
        Ok(_) | Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    state.forget()?;
    Ok(())
}

/// A registration token good for one `kind` registration in the demo
/// organisation, minted for its administrator (a token carries its creator's
/// authority); the store keeps its digest only.
async fn mint_token(service: &Service<'_>, kind: ComponentKind) -> anyhow::Result<SecretString> {
    let token = SecretString::new(format!(
        "{REGISTRATION_TOKEN_PREFIX}{}",
        postern_keyring::random_token()?.expose()
    ));
    let now = service.sts.now();
    service
        .sts
        .store()
        .create_registration_token(
            &postern_keyring::digest(token.expose()),
            &service.tenant.id,
            kind,
            None,
            &format!("user:{}", service.admin_id),
            1,
            now,
            now + TOKEN_TTL,
        )
        .await
        .context("minting a registration token")?;
    Ok(token)
}

/// The outcome of a component's task.
type Task = JoinHandle<anyhow::Result<()>>;

/// The connector and agent, running.
pub(crate) struct Running {
    connector: Option<Task>,
    agent: Option<Task>,
    agent_status: watch::Receiver<postern_agent::AgentStatus>,
}

impl Running {
    /// Starts both; each stops when `stop` turns true.
    pub(crate) fn start(
        connector_state: StateDir,
        agent_state: StateDir,
        agent_config: &std::path::Path,
        stop: &watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let loaded = postern_agent::AgentConfig::load(agent_config)?;
        let clock: SharedClock = Arc::new(SystemClock);
        let options = postern_agent::AgentOptions {
            max_in_flight: loaded.max_in_flight,
            ..postern_agent::AgentOptions::default()
        };
        let agent = postern_agent::Agent::new(agent_state, clock, loaded.directory)?.with_options(options);
        let agent_status = agent.status();
        let mut agent_stop = Shutdown::from_watch(stop.clone());
        let agent = tokio::spawn(async move {
            agent.run(async move { agent_stop.requested().await }).await?;
            Ok(())
        });
        let connector = tokio::spawn(crate::component::run_connector(
            connector_state,
            Shutdown::from_watch(stop.clone()),
        ));
        Ok(Self {
            connector: Some(connector),
            agent: Some(agent),
            agent_status,
        })
    }

    /// Waits until the agent reads its queue (sign-ins can reach it), or says
    /// why it stopped.
    pub(crate) async fn agent_connected(&mut self) -> anyhow::Result<()> {
        let status = self
            .agent_status
            .wait_for(|s| matches!(s.phase, postern_agent::Phase::Connected | postern_agent::Phase::Stopped))
            .await
            .context("the agent stopped")?
            .clone();
        if status.phase == postern_agent::Phase::Stopped {
            anyhow::bail!(
                "the agent stopped: {}",
                status.last_disconnect.as_deref().unwrap_or("no reason given")
            );
        }
        Ok(())
    }

    /// Completes when the connector or the agent ends on its own (they run
    /// until told to stop), saying which and why.
    pub(crate) async fn ended(&mut self) -> String {
        let (what, outcome) = match (self.connector.as_mut(), self.agent.as_mut()) {
            (Some(connector), Some(agent)) => tokio::select! {
                r = connector => { self.connector = None; ("connector", r) }
                r = agent => { self.agent = None; ("agent", r) }
            },
            _ => return std::future::pending().await,
        };
        match outcome {
            Ok(Ok(())) => format!("the demo {what} stopped"),
            Ok(Err(e)) => format!("the demo {what} stopped: {e:#}"),
            Err(e) => format!("the demo {what} failed: {e}"),
        }
    }

    /// Waits for both to drain after `stop` turned true, at most `grace`.
    pub(crate) async fn stop(self, grace: Duration) {
        let both = async {
            for (what, task) in [("connector", self.connector), ("agent", self.agent)] {
                let Some(task) = task else { continue };
                match task.await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "the demo {what} stopped with an error"),
                    Err(e) => tracing::warn!(error = %e, "the demo {what} task failed"),
                }
            }
        };
        if tokio::time::timeout(grace, both).await.is_err() {
            tracing::warn!("the demo connector or agent did not stop in time");
        }
    }
}
