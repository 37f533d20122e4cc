//! `postern admin policies …`, `postern admin locations …` and
//! `postern admin users risk …`: conditional access from the command line.

use anyhow::Context;
use clap::Subcommand;
use postern_client::AdminClient;
use postern_client::wire::{ClientKind, LocationInput, PolicyInput, RiskLevel, SetUserRisk, WhatIf};

use super::{done, print_json, user_id};

/// `postern admin policies ...` (a policy is named by ID or by name).
#[derive(Subcommand, Debug)]
pub enum PoliciesCommand {
    /// List the policies.
    List,
    /// Show one policy.
    Show {
        /// ID or name.
        policy: String,
    },
    /// Create a policy from a JSON document (`{"name", "state", "conditions",
    /// "grants"}`; see docs/operations.md).
    Create {
        /// The file holding the policy, or `-` for standard input.
        #[arg(long)]
        file: String,
    },
    /// Replace a policy with a JSON document.
    Update {
        /// ID or name.
        policy: String,
        /// The file holding the policy, or `-` for standard input.
        #[arg(long)]
        file: String,
    },
    /// Delete a policy.
    Delete {
        /// ID or name.
        policy: String,
    },
    /// What the policies would decide for a user signing in to an app from an
    /// address, and why.
    WhatIf {
        /// The user, by ID or sign-in name.
        #[arg(long)]
        user: String,
        /// A published app (ID or name) or an OAuth client ID.
        #[arg(long)]
        app: Option<String>,
        /// The client's IP address.
        #[arg(long)]
        ip: String,
        /// browser (default), device_flow, refresh or legacy_password.
        #[arg(long, default_value = "browser")]
        client_kind: String,
        /// The session already has a second factor.
        #[arg(long)]
        mfa: bool,
    },
}

/// `postern admin locations ...` (a location is named by ID or by name).
#[derive(Subcommand, Debug)]
pub enum LocationsCommand {
    /// List the named locations.
    List,
    /// Show one.
    Show {
        /// ID or name.
        location: String,
    },
    /// Create a named location.
    Create {
        /// Its name.
        name: String,
        /// An address or CIDR range (repeat for more).
        #[arg(long = "range", required = true)]
        ranges: Vec<String>,
        /// Policies naming `trusted` include it.
        #[arg(long)]
        trusted: bool,
    },
    /// Replace a named location's name, ranges and trust.
    Update {
        /// ID or name.
        location: String,
        /// The (new) name.
        #[arg(long)]
        name: String,
        /// An address or CIDR range (repeat for more).
        #[arg(long = "range", required = true)]
        ranges: Vec<String>,
        /// Policies naming `trusted` include it.
        #[arg(long)]
        trusted: bool,
    },
    /// Delete a named location no policy names.
    Delete {
        /// ID or name.
        location: String,
    },
}

/// `postern admin users risk ...`
#[derive(Subcommand, Debug)]
pub enum UserRiskCommand {
    /// Set a user's risk level (it raises every sign-in's risk until dismissed).
    Set {
        /// ID or username.
        user: String,
        /// low, medium or high.
        #[arg(long)]
        level: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Dismiss a user's risk.
    Dismiss {
        /// ID or username.
        user: String,
    },
}

fn read_policy(file: &str) -> anyhow::Result<PolicyInput> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the policy from standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    serde_json::from_str(&text).with_context(|| format!("{file} is not a policy document"))
}

async fn policy_id(client: &AdminClient, policy: &str) -> anyhow::Result<String> {
    client
        .policies()
        .await?
        .into_iter()
        .find(|p| p.id == policy || p.name == policy)
        .map(|p| p.id)
        .with_context(|| format!("no policy {policy} in this tenant"))
}

async fn location_id(client: &AdminClient, location: &str) -> anyhow::Result<String> {
    client
        .locations()
        .await?
        .into_iter()
        .find(|l| l.id == location || l.name == location)
        .map(|l| l.id)
        .with_context(|| format!("no location {location} in this tenant"))
}

/// Runs a `policies` command.
pub(super) async fn policies(client: &AdminClient, cmd: PoliciesCommand) -> anyhow::Result<()> {
    match cmd {
        PoliciesCommand::List => print_json(&client.policies().await?),
        PoliciesCommand::Show { policy } => print_json(&client.policy(&policy_id(client, &policy).await?).await?),
        PoliciesCommand::Create { file } => print_json(&client.create_policy(&read_policy(&file)?).await?),
        PoliciesCommand::Update { policy, file } => {
            let id = policy_id(client, &policy).await?;
            print_json(&client.replace_policy(&id, &read_policy(&file)?).await?)
        }
        PoliciesCommand::Delete { policy } => {
            let id = policy_id(client, &policy).await?;
            done(client.delete_policy(&id).await, "policy deleted")
        }
        PoliciesCommand::WhatIf {
            user,
            app,
            ip,
            client_kind,
            mfa,
        } => {
            let client_kind: ClientKind = client_kind.parse()?;
            let question = WhatIf {
                user,
                app,
                ip,
                client_kind,
                mfa,
            };
            print_json(&client.what_if(&question).await?)
        }
    }
}

/// Runs a `locations` command.
pub(super) async fn locations(client: &AdminClient, cmd: LocationsCommand) -> anyhow::Result<()> {
    match cmd {
        LocationsCommand::List => print_json(&client.locations().await?),
        LocationsCommand::Show { location } => {
            print_json(&client.location(&location_id(client, &location).await?).await?)
        }
        LocationsCommand::Create { name, ranges, trusted } => {
            print_json(&client.create_location(&LocationInput { name, ranges, trusted }).await?)
        }
        LocationsCommand::Update {
            location,
            name,
            ranges,
            trusted,
        } => {
            let id = location_id(client, &location).await?;
            print_json(
                &client
                    .replace_location(&id, &LocationInput { name, ranges, trusted })
                    .await?,
            )
        }
        LocationsCommand::Delete { location } => {
            let id = location_id(client, &location).await?;
            done(client.delete_location(&id).await, "location deleted")
        }
    }
}

/// Runs a `users risk` command.
pub(super) async fn user_risk(client: &AdminClient, cmd: UserRiskCommand) -> anyhow::Result<()> {
    match cmd {
        UserRiskCommand::Set { user, level, reason } => {
            let level: RiskLevel = level.parse()?;
            let id = user_id(client, &user).await?;
            print_json(&client.set_user_risk(&id, &SetUserRisk { level, reason }).await?)
        }
        UserRiskCommand::Dismiss { user } => {
            let id = user_id(client, &user).await?;
            done(client.dismiss_user_risk(&id).await, "risk dismissed")
        }
    }
}
