//! `postern admin`: sign in with the device flow and manage tenants, domains,
//! users, groups and roles through the admin API.

/// The `postern admin` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {}

/// Runs an admin subcommand.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {}
}
