//! `postern`: one binary with the roles of the system as subcommands.

mod admin;
mod component;
mod demo;
mod log_line;
mod logging;
mod open_files;
mod release;
mod serve;
mod updater;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc rather than the C library's allocator. The data path allocates
/// and frees buffers of a few KiB per request (hyper's 8 KiB read buffers, a
/// request's future) on every worker thread; glibc's allocator spent about a
/// tenth of `serve`'s CPU on them under keep-alive load, merging its small
/// free lists before each such allocation. Side by side, jemalloc took
/// 0.79x the CPU per proxied request and held 12 rather than 15 KiB per
/// idle keep-alive connection, for 1 to 2 MiB more idle memory per process
/// (`docs/benchmarks.md`). Its background threads give freed pages back
/// to the system while the process is idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Publish internal web apps and sign users in against the on-prem directory,
/// with no inbound port.
#[derive(Parser, Debug)]
#[command(name = "postern", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Try everything on this machine: the service, a sample app published
    /// twice, a connector, an agent with demo users, an administrator.
    Demo(demo::DemoArgs),
    /// Run the service: sign-in (OpenID Connect provider), admin API, and more.
    Serve(serve::ServeArgs),
    /// Manage tenants, domains, users, groups and roles (signs in with the device flow).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// The connector: carries user requests to internal apps (on-prem, outbound only).
    Connector {
        #[command(subcommand)]
        command: component::ComponentCommand,
    },
    /// The pass-through authentication agent: checks passwords against the
    /// directory (on-prem, outbound only).
    Agent {
        #[command(subcommand)]
        command: component::ComponentCommand,
    },
    /// The updater of a connector or agent (runs as root; the component does
    /// not): installs signed releases the service offers, rolls back failures.
    Updater {
        #[command(subcommand)]
        command: updater::UpdaterCommand,
    },
    /// The publisher's tools: make a signing key, sign and verify releases.
    Release {
        #[command(subcommand)]
        command: release::ReleaseCommand,
    },
}

fn main() -> ExitCode {
    // Room for as many connections as the administrator allows (logged once
    // logging is set up).
    open_files::raise();
    // One TLS crypto provider for the whole process, before anything uses TLS.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Admin { command } => admin::run(command).await,
            Command::Connector { command } => {
                logging::init(false);
                component::run(postern_proto::ComponentKind::Connector, command).await
            }
            Command::Agent { command } => {
                logging::init(false);
                component::run(postern_proto::ComponentKind::Agent, command).await
            }
            Command::Updater { command } => {
                logging::init(false);
                updater::run(command).await
            }
            Command::Release { command } => release::run(command),
        }
    });
    // Log lines still buffered go before the final error, if any.
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
