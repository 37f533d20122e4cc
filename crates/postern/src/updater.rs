//! `postern updater run`: keeps a connector or agent up to date (PTA-8). Runs
//! as root (SEC-11: the component itself runs unprivileged), reads the
//! component's certificate from its state directory, and stops and starts the
//! component through systemd (`systemctl stop|start UNIT`, see
//! docs/operations.md). It never handles passwords or user traffic.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_proto::ComponentKind;
use postern_time::{SharedClock, SystemClock};
use postern_updater::{Systemd, Updater, UpdaterOptions};
use postern_uplink::StateDir;

/// `postern updater …`
#[derive(clap::Subcommand, Debug)]
pub enum UpdaterCommand {
    /// Check every hour (with jitter) and install what the service offers.
    Run(RunArgs),
}

/// Flags of `postern updater run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Which component this updater keeps up to date.
    #[arg(long, value_parser = ["connector", "agent"])]
    component: String,
    /// The component's state directory (its certificate is read from there).
    #[arg(long)]
    state_dir: PathBuf,
    /// The binary to replace (default: this one).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The component's systemd unit (default: `postern-{component}.service`).
    #[arg(long)]
    unit: Option<String>,
    /// The updater's own directory (default `/var/lib/postern/updater/{component}`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// A root-owned file (0644 or 0600) with the publisher key to trust
    /// instead of the compiled-in one, if it exists.
    #[arg(long, default_value = postern_release::trust::OVERRIDE_PATH)]
    publisher_key: PathBuf,
    /// Seconds the new version has to call in before it is rolled back.
    #[arg(long, default_value_t = 300)]
    health_timeout_secs: u64,
    /// Seconds between checks when the service does not say (jittered).
    #[arg(long, default_value_t = 3600)]
    interval_secs: u64,
    /// One round, then exit (for cron or a systemd timer).
    #[arg(long)]
    once: bool,
}

/// Runs `postern updater …`.
pub async fn run(cmd: UpdaterCommand) -> anyhow::Result<()> {
    let UpdaterCommand::Run(args) = cmd;
    let kind = ComponentKind::parse(&args.component).unwrap_or(ComponentKind::Connector);
    let (trusted_key, source) = postern_release::trust::publisher_key(&args.publisher_key)?;
    tracing::info!(?source, "trusting this publisher key for releases");
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/postern/updater").join(kind.as_str()));
    let mut options = UpdaterOptions::new(StateDir::new(args.state_dir), binary, work_dir, trusted_key);
    options.health_timeout = Duration::from_secs(args.health_timeout_secs);
    options.check_interval = Duration::from_secs(args.interval_secs.max(60));
    let unit = args.unit.unwrap_or_else(|| format!("postern-{kind}.service"));
    let clock: SharedClock = Arc::new(SystemClock);
    let updater = Updater::new(options, Arc::new(Systemd::new(unit)), clock);
    if args.once {
        let outcome = updater.run_once().await?;
        tracing::info!(?outcome, "update round done");
        return Ok(());
    }
    // `systemctl stop` sends SIGTERM: a round in progress ends cleanly.
    updater.run(crate::component::signals()).await?;
    Ok(())
}
