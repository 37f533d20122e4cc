//! `postern admin releases …` (operators: publish, list, withdraw, versions in
//! the field) and `postern admin updates …` (a tenant's policy, its
//! components' versions and update history).

use anyhow::Context;
use clap::Subcommand;
use postern_client::wire::{PublishRelease, SetUpdatePolicy};
use postern_client::{AdminClient, RELEASE_CHUNK};
use tokio::io::AsyncReadExt;

use super::{done, print_json};

/// `postern admin releases ...` (operators).
#[derive(Subcommand, Debug)]
pub enum ReleasesCommand {
    /// List the releases.
    List,
    /// Publish a release: the manifest and signature from `postern release
    /// sign`, and the binary (sent in pieces, then checked by the service
    /// against the manifest before it is offered).
    Publish {
        /// The manifest file (`postern-<version>-<target>.json`).
        #[arg(long)]
        manifest: std::path::PathBuf,
        /// Its signature (default: the manifest's path with `.minisig` added).
        #[arg(long)]
        signature: Option<std::path::PathBuf>,
        /// The binary the manifest describes.
        #[arg(long)]
        binary: std::path::PathBuf,
        /// `stable` or `beta`.
        #[arg(long, default_value = "stable")]
        channel: String,
    },
    /// Withdraw a release (by ID).
    Delete {
        /// The release's ID.
        id: String,
    },
    /// How many connectors and agents run each version, over every tenant.
    Versions,
}

/// `postern admin updates ...` (global administrators of the tenant).
#[derive(Subcommand, Debug)]
pub enum UpdatesCommand {
    /// The update policy and each component's version and latest update.
    Show,
    /// Set the update policy.
    Policy {
        /// `stable` or `beta` (beta also takes stable releases).
        #[arg(long, default_value = "stable")]
        channel: String,
        /// Hold every component at this version (no newer one is installed).
        #[arg(long)]
        pin: Option<String>,
        /// Pause updates.
        #[arg(long)]
        pause: bool,
    },
    /// The update history, newest first.
    History {
        /// Only this component's (connector or agent ID).
        #[arg(long)]
        component: Option<String>,
    },
}

/// Runs `postern admin releases …`.
pub(super) async fn releases(client: &AdminClient, cmd: ReleasesCommand) -> anyhow::Result<()> {
    match cmd {
        ReleasesCommand::List => print_json(&client.releases().await?),
        ReleasesCommand::Publish {
            manifest,
            signature,
            binary,
            channel,
        } => {
            let signature = signature.unwrap_or_else(|| crate::release::signature_path(&manifest));
            let release = PublishRelease {
                manifest: std::fs::read_to_string(&manifest)
                    .with_context(|| format!("reading {}", manifest.display()))?,
                signature: std::fs::read_to_string(&signature)
                    .with_context(|| format!("reading {}", signature.display()))?,
                channel,
            };
            let stored = client.publish_release(&release).await?;
            upload(client, &stored.id, &binary).await?;
            print_json(&client.complete_release(&stored.id).await?)
        }
        ReleasesCommand::Delete { id } => done(client.delete_release(&id).await, "Release withdrawn."),
        ReleasesCommand::Versions => print_json(&client.field_versions().await?),
    }
}

/// Sends `binary` in pieces of [`RELEASE_CHUNK`] bytes.
async fn upload(client: &AdminClient, id: &str, binary: &std::path::Path) -> anyhow::Result<()> {
    let mut file = tokio::fs::File::open(binary)
        .await
        .with_context(|| format!("opening {}", binary.display()))?;
    let total = file.metadata().await?.len();
    let mut seq = 0u64;
    let mut sent = 0u64;
    loop {
        let mut buf = Vec::with_capacity(RELEASE_CHUNK);
        (&mut file).take(RELEASE_CHUNK as u64).read_to_end(&mut buf).await?;
        if buf.is_empty() {
            return Ok(());
        }
        sent += buf.len() as u64;
        client.upload_release_chunk(id, seq, buf).await?;
        seq += 1;
        if seq.is_multiple_of(64) {
            eprintln!("sent {sent} of {total} bytes");
        }
    }
}

/// Runs `postern admin updates …`.
pub(super) async fn updates(client: &AdminClient, cmd: UpdatesCommand) -> anyhow::Result<()> {
    match cmd {
        UpdatesCommand::Show => print_json(&client.updates().await?),
        UpdatesCommand::Policy { channel, pin, pause } => print_json(
            &client
                .set_update_policy(&SetUpdatePolicy {
                    channel,
                    pinned_version: pin,
                    paused: pause,
                })
                .await?,
        ),
        UpdatesCommand::History { component } => print_json(&client.update_history(component.as_deref()).await?),
    }
}
