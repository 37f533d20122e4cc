//! `postern`: one binary with the roles of the system as subcommands.

mod admin;

use clap::{Parser, Subcommand};

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
    /// Manage tenants, domains, users, groups and roles (signs in with the device flow).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Admin { command } => admin::run(command).await,
    }
}
