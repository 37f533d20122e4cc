//! `postern connector …` and `postern agent …`: registration on the on-prem host
//! (an administrator approves this registration in the device flow, and the host
//! gets a credential good for registering this one component, never an admin
//! token; or a registration token for unattended installs), the runtime's
//! control loop, and status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use postern_client::{Issuer, PublicClient};
use postern_keyring::SecretString;
use postern_pki::KeyAlg;
use postern_proto::ComponentKind;
use postern_time::{SharedClock, SystemClock};
use postern_uplink::{ControlClient, Credential, RegisterOptions, StateDir, UplinkError};
use tokio::sync::watch;

/// The agent's configuration file unless `--config` names another.
const DEFAULT_AGENT_CONFIG: &str = "/etc/postern/agent.toml";
/// Longest wait for the administrator to approve the sign-in.
const SIGN_IN_WAIT: Duration = Duration::from_secs(600);

/// Subcommands of `postern connector` and `postern agent`.
#[derive(clap::Subcommand, Debug)]
pub enum ComponentCommand {
    /// Register this host with the service (once, by an administrator).
    Register(RegisterArgs),
    /// Run: keep the connection to the service, its configuration and certificate.
    Run(RunArgs),
    /// Show what is registered here and whether the service accepts it.
    Status(StateArgs),
}

/// Where the component keeps its key, certificate and state.
#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// State directory (default: `/var/lib/postern/KIND`, or
    /// `~/.local/state/postern/KIND` for a non-root user).
    #[arg(long, env = "POSTERN_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags of `register`.
#[derive(clap::Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    state: StateArgs,
    /// The service's public URL, e.g. `https://login.example.com`.
    #[arg(long, env = "POSTERN_SERVER")]
    server: String,
    /// Tenant short name: where the administrator approves the registration;
    /// with --token, a token of another tenant is refused instead of enrolling
    /// there.
    #[arg(long, env = "POSTERN_TENANT")]
    tenant: Option<String>,
    /// A registration token minted with `postern admin registration-tokens create`
    /// (unattended installs); without it, an administrator signs in.
    #[arg(long, env = "POSTERN_REGISTRATION_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Name of this host as the admin console shows it (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Connector group to join (connectors only).
    #[arg(long)]
    group: Option<String>,
    /// PEM file of extra trust anchors for the service's TLS certificate.
    #[arg(long)]
    server_ca: Option<PathBuf>,
    /// RSA key size for agents (2048, 3072 or 4096).
    #[arg(long, default_value_t = 3072)]
    rsa_bits: u32,
    /// Allow running as root (not recommended: run as an unprivileged user).
    #[arg(long)]
    allow_root: bool,
}

/// Flags of `run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Agent only: the TOML file naming the directory to check passwords against,
    /// `[directory] kind = "ldap"` (with the LDAP settings) or `kind = "local_file"`
    /// (with `path`); default `/etc/postern/agent.toml`. The LDAP service account's
    /// password may come from POSTERN_AGENT_BIND_PASSWORD instead.
    #[arg(long, env = "POSTERN_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Allow running as root (not recommended: SEC-11).
    #[arg(long)]
    allow_root: bool,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (plain HTTP, no
    /// authentication: keep it on loopback or a monitoring network), e.g.
    /// `127.0.0.1:9101`; default: none.
    #[arg(long, env = "POSTERN_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

fn effective_uid_is_root() -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's effective user.
        std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

fn refuse_root(kind: ComponentKind, allow_root: bool) -> anyhow::Result<()> {
    if effective_uid_is_root() && !allow_root {
        bail!(
            "refusing to run the {kind} as root: run it as an unprivileged user (e.g. `postern`) that owns \
             its state directory, or pass --allow-root"
        );
    }
    Ok(())
}

fn state_dir(kind: ComponentKind, args: &StateArgs) -> StateDir {
    let dir = args.state_dir.clone().unwrap_or_else(|| {
        if effective_uid_is_root() {
            PathBuf::from("/var/lib/postern").join(kind.as_str())
        } else {
            let base = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
                .unwrap_or_else(|| PathBuf::from("."));
            base.join("postern").join(kind.as_str())
        }
    });
    StateDir::new(dir)
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unnamed-host".into())
}

/// Runs a component subcommand.
pub async fn run(kind: ComponentKind, cmd: ComponentCommand) -> anyhow::Result<()> {
    match cmd {
        ComponentCommand::Register(args) => register(kind, args).await,
        ComponentCommand::Run(args) => {
            refuse_root(kind, args.allow_root)?;
            let state = state_dir(kind, &args.state);
            let shutdown = Shutdown::listen();
            let _metrics = serve_metrics(kind, args.metrics_listen, &shutdown).await?;
            match kind {
                ComponentKind::Connector => {
                    if args.config.is_some() {
                        bail!("--config (POSTERN_AGENT_CONFIG) is for the agent; the connector takes none");
                    }
                    run_connector(state, shutdown).await
                }
                ComponentKind::Agent => {
                    let config = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_CONFIG));
                    run_agent(state, &config, shutdown).await
                }
            }
        }
        ComponentCommand::Status(args) => status(kind, state_dir(kind, &args)).await,
    }
}

/// Starts the metrics listener of `--metrics-listen`, if given; it stops with
/// the process's shutdown signal.
async fn serve_metrics(
    kind: ComponentKind,
    addr: Option<std::net::SocketAddr>,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<postern_metrics::MetricsServer>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let server = postern_metrics::MetricsServer::start(addr, kind.as_str(), Vec::new(), shutdown.0.clone())
        .await
        .context("--metrics-listen")?;
    Ok(Some(server))
}

async fn register(kind: ComponentKind, args: RegisterArgs) -> anyhow::Result<()> {
    refuse_root(kind, args.allow_root)?;
    if kind == ComponentKind::Agent && args.group.is_some() {
        bail!("agents do not belong to connector groups");
    }
    let key_alg = match kind {
        ComponentKind::Agent => match args.rsa_bits {
            2048 | 3072 | 4096 => KeyAlg::Rsa(args.rsa_bits),
            other => bail!("--rsa-bits must be 2048, 3072 or 4096, not {other}"),
        },
        ComponentKind::Connector => KeyAlg::recommended(kind),
    };
    let state = state_dir(kind, &args.state);
    let server_ca_pem = match &args.server_ca {
        Some(p) => Some(read_server_ca(p)?),
        None => None,
    };
    let name = args.name.clone().unwrap_or_else(host_name);
    let credential = match &args.token {
        Some(t) => Credential::RegistrationToken(SecretString::from(t.as_str())),
        None => Credential::AccessToken(approval(kind, &args, &name).await?),
    };
    let options = RegisterOptions {
        server_url: args.server.clone(),
        kind,
        credential,
        name,
        version: postern_uplink::reported_version(),
        group: args.group.clone(),
        tenant: args.tenant.clone(),
        key_alg,
        server_ca_pem,
    };
    let enrolment = postern_uplink::register(&options, &state).await?;
    eprintln!(
        "Registered {kind} {} in tenant {} (state in {}).\nStart it with: postern {kind} run --state-dir {}",
        enrolment.component_id,
        enrolment.tenant,
        state.path().display(),
        state.path().display()
    );
    Ok(())
}

/// The `--server-ca` file, refused with its name (and which certificate) when a
/// certificate in it cannot be used.
fn read_server_ca(path: &std::path::Path) -> anyhow::Result<String> {
    postern_uplink::trust::file_anchors(path)?;
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Asks an administrator to approve registering this component (device flow,
/// SEC-14): the approval page names the kind, `name`, the tenant and this
/// host's address; what comes back is a credential for this registration only.
async fn approval(kind: ComponentKind, args: &RegisterArgs, name: &str) -> anyhow::Result<SecretString> {
    let tenant = args
        .tenant
        .as_deref()
        .context("give --tenant (for an administrator's approval) or --token")?;
    let client = PublicClient::new(
        Issuer::new(&args.server, tenant)?,
        postern_sts::CLI_CLIENT_ID,
        Duration::from_secs(30),
    )?;
    let authorization = client
        .start_registration_approval(postern_sts::registration_scope(kind), name)
        .await?;
    eprintln!(
        "\nAn administrator of {tenant} must approve registering this {kind} as {name}:\n  open {}\n  and check \
         the code {}\n",
        authorization.verification_url(),
        authorization.user_code
    );
    eprintln!(
        "Waiting for the approval (up to {} minutes; Ctrl-C gives up)…",
        SIGN_IN_WAIT.as_secs() / 60
    );
    let tokens = client.wait_for_device_tokens(&authorization, SIGN_IN_WAIT).await?;
    Ok(tokens.access_token)
}

fn load(state: StateDir, clock: SharedClock) -> anyhow::Result<ControlClient> {
    ControlClient::load(state, clock).map_err(|e| anyhow::anyhow!(e))
}

/// The connector ([`postern_connector::Connector`]: configuration, tunnels,
/// renewal) until a shutdown signal (then the tunnels drain) or an error that
/// needs an administrator.
pub(crate) async fn run_connector(state: StateDir, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let client = load(state, clock)?;
    postern_connector::Connector::new(client)
        .run(async move { shutdown.requested().await })
        .await?;
    Ok(())
}

/// The pass-through authentication agent (PTA-4 to PTA-7): the directory from the
/// configuration file, then the queue, validations and trust renewal until a
/// shutdown signal (then in-flight validations finish) or an error that needs an
/// administrator.
async fn run_agent(state: StateDir, config: &std::path::Path, mut shutdown: Shutdown) -> anyhow::Result<()> {
    let loaded = postern_agent::AgentConfig::load(config)?;
    let clock: SharedClock = Arc::new(SystemClock);
    let options = postern_agent::AgentOptions {
        max_in_flight: loaded.max_in_flight,
        ..postern_agent::AgentOptions::default()
    };
    let agent = postern_agent::Agent::new(state, clock, loaded.directory)?.with_options(options);
    agent.run(async move { shutdown.requested().await }).await?;
    Ok(())
}

/// The process's shutdown signal (SIGTERM or Ctrl-C). One task listens for the
/// process's whole life, installed before anything else runs, so a signal that
/// arrives while no loop is waiting for it (between two iterations, in the
/// middle of a call) is kept, not lost: every later wait sees it at once.
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// Stops when `stop` turns true: a process running components of its own
    /// (`postern demo`) listens for the signals once and tells each.
    pub(crate) fn from_watch(stop: watch::Receiver<bool>) -> Self {
        Self(stop)
    }

    /// Starts listening for the signals.
    fn listen() -> Self {
        let (tx, rx) = watch::channel(false);
        let signalled = signals();
        tokio::spawn(async move {
            signalled.await;
            tracing::info!("shutdown signal received");
            let _ = tx.send(true);
        });
        Self(rx)
    }

    /// Completes once a shutdown signal has come (at once if one came earlier).
    pub(crate) async fn requested(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // The listener is gone: no signal can come any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Completes at SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled.
pub(crate) fn signals() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    tracing::warn!("cannot listen for SIGTERM; stopping on Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn status(kind: ComponentKind, state: StateDir) -> anyhow::Result<()> {
    let clock: SharedClock = Arc::new(SystemClock);
    let client = match ControlClient::load(state.clone(), clock) {
        Ok(c) => c,
        Err(e @ UplinkError::CertificateExpired(_)) => bail!("{e}"),
        Err(e) => return Err(e.into()),
    };
    let (not_before, not_after) = client.certificate_validity();
    let e = client.enrolment();
    let service = match client.whoami().await {
        Ok(w) => format!("accepted (serial {})", w.serial),
        Err(err) => format!("not accepted: {err}"),
    };
    let report = serde_json::json!({
        "kind": kind.as_str(),
        "component_id": e.component_id,
        "tenant": e.tenant,
        "control_url": e.control_url,
        "certificate": { "not_before": not_before.secs(), "not_after": not_after.secs() },
        "service": service,
        "state_dir": state.path().display().to_string(),
    });
    let text = serde_json::to_string_pretty(&report)?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    Ok(())
}
