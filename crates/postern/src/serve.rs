//! `postern serve`: runs the service until SIGINT or SIGTERM, then drains;
//! SIGHUP reloads the public listener's TLS certificates.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use postern_service::{LogFormat, RawConfig, RunningService};
use postern_time::SystemClock;

/// Flags of `postern serve`; each overrides the config file and environment.
#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short = 'c', env = "POSTERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the database, keys and the key-encryption key.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<String>,
    /// URL users reach the service at (default: derived from --listen).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Address of the mTLS endpoint for connectors and agents (default 127.0.0.1:8443).
    #[arg(long)]
    pub control_listen: Option<String>,
    /// Serve Prometheus metrics at `http://ADDR/metrics` (default: none).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// postgres://… to scale out (default: SQLite in the data dir).
    #[arg(long)]
    pub database_url: Option<String>,
    /// Log format: pretty or json.
    #[arg(long)]
    pub log_format: Option<String>,
}

impl ServeArgs {
    fn overrides(&self) -> RawConfig {
        RawConfig {
            data_dir: self.data_dir.clone(),
            listen: self.listen.clone(),
            public_url: self.public_url.clone(),
            metrics_listen: self.metrics_listen.clone(),
            database_url: self.database_url.clone(),
            log_format: self.log_format.clone(),
            control: self
                .control_listen
                .as_ref()
                .map(|l| postern_service::config::RawControl {
                    listen: Some(l.clone()),
                    ..Default::default()
                }),
            ..Default::default()
        }
    }
}

/// Runs the service until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = RawConfig::load(args.config.as_deref(), &args.overrides())?.validate()?;
    crate::logging::init(config.log_format == LogFormat::Json);
    let mut service = RunningService::start(config, Arc::new(SystemClock))
        .await
        .context("starting the service")?;
    if let Some(setup) = service.take_setup_code() {
        // Standard output, not the log (standard error): the code is a secret that
        // must not land in log storage.
        print_banner(&format!(
            "\n  First run: no organisation exists yet.\n  Open this link within {} minutes to create one and its administrator:\n\n    {}\n",
            (setup.expires_at.secs() - service.sts().now().secs()) / 60,
            setup.url
        ));
    }
    print_banner(&format!(
        "  Postern is listening on {} (public URL {})\n",
        service.local_addr(),
        service.public_url()
    ));
    tokio::select! {
        () = shutdown_signal() => {}
        () = reload_on_hangup(&service) => {}
    }
    tracing::info!("shutting down: draining in-flight requests");
    service.shutdown().await;
    Ok(())
}

/// Prints to standard output, which is for people; logs go to standard error.
/// Never fails: a closed or full standard output must not stop the service
/// (`println!` would panic on a closed pipe).
fn print_banner(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Reads the public listener's certificates again at every SIGHUP (after they
/// are renewed); a broken set is logged and the current one stays. Never returns
/// unless SIGHUP cannot be watched.
async fn reload_on_hangup(service: &RunningService) {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; restart the service to load renewed certificates");
                return std::future::pending().await;
            }
        };
        while hangup.recv().await.is_some() {
            match service.reload_certificates() {
                Ok(true) => {}
                Ok(false) => tracing::info!("SIGHUP: the listener has no TLS certificates to reload"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: certificates not reloaded; the current ones stay"),
            }
        }
    }
    std::future::pending().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
