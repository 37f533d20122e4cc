//! One update round, and the loop that runs a round every hour or so.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use postern_proto::updates::{OfferedRelease, UpdateOutcome};
use postern_release::{Manifest, TrustedKey, parse_version};
use postern_time::SharedClock;
use postern_uplink::{ControlClient, StateDir};
use rand::Rng;

use crate::download::{DownloadError, download_to};
use crate::{Installation, InstalledRecord, Supervisor, UpdaterError};

/// How the updater is set up.
#[derive(Clone, Debug)]
pub struct UpdaterOptions {
    /// The component's state directory (its certificate; read only).
    pub state_dir: StateDir,
    /// The component's binary, replaced by updates.
    pub binary: PathBuf,
    /// The updater's own directory (the record of what it installed).
    pub work_dir: PathBuf,
    /// The publisher key releases must be signed with.
    pub trusted_key: TrustedKey,
    /// The target triple of this host's binary.
    pub target: String,
    /// The version installed when the updater has installed nothing yet (its
    /// own, being the same binary).
    pub fallback_version: String,
    /// How long the new version has to call in before it is rolled back.
    pub health_timeout: Duration,
    /// How often the service is asked whether it has.
    pub health_poll: Duration,
    /// Longest wait for the next bytes of a download.
    pub stall_timeout: Duration,
    /// How often to check when the service does not say (before jitter).
    pub check_interval: Duration,
}

impl UpdaterOptions {
    /// Defaults: five minutes for the health check, polled every two seconds,
    /// a minute for a stalled download, an hourly check.
    pub fn new(state_dir: StateDir, binary: PathBuf, work_dir: PathBuf, trusted_key: TrustedKey) -> Self {
        Self {
            state_dir,
            binary,
            work_dir,
            trusted_key,
            target: postern_release::BUILD_TARGET.into(),
            fallback_version: postern_uplink::reported_version(),
            health_timeout: Duration::from_secs(300),
            health_poll: Duration::from_secs(2),
            stall_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(3600),
        }
    }
}

/// How a round ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to install now.
    UpToDate {
        /// The service's reason.
        reason: String,
        /// When to ask again.
        check_again: Duration,
    },
    /// The new version is installed and has called in.
    Updated {
        /// Version before.
        from: String,
        /// Version now.
        to: String,
    },
    /// The release was refused; nothing was replaced.
    Refused {
        /// The version offered.
        version: String,
        /// Why.
        why: String,
    },
    /// Something failed before the swap (a download cut short, a local
    /// error); nothing was replaced, and the next round may try again.
    Failed {
        /// The version offered.
        version: String,
        /// Why.
        why: String,
    },
    /// The new version did not call in; the previous binary is back.
    RolledBack {
        /// The version that failed.
        version: String,
        /// Why.
        why: String,
    },
}

/// The updater of one component.
pub struct Updater {
    options: UpdaterOptions,
    supervisor: Arc<dyn Supervisor>,
    clock: SharedClock,
}

impl std::fmt::Debug for Updater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updater")
            .field("binary", &self.options.binary)
            .finish_non_exhaustive()
    }
}

impl Updater {
    /// An updater with these options, stopping and starting the component
    /// through `supervisor`.
    pub fn new(options: UpdaterOptions, supervisor: Arc<dyn Supervisor>, clock: SharedClock) -> Self {
        Self {
            options,
            supervisor,
            clock,
        }
    }

    /// The version installed now: the newer of the updater's record (what it
    /// installed last) and the fallback (its own version: the updater runs
    /// the same binary, so a binary installed by hand and the updater
    /// restarted from it count too).
    pub fn installed_version(&self) -> Result<String, UpdaterError> {
        let fallback = self.options.fallback_version.clone();
        let Some(record) = InstalledRecord::load(&self.options.work_dir)? else {
            return Ok(fallback);
        };
        let newer = match (
            semver::Version::parse(&record.version),
            semver::Version::parse(&fallback),
        ) {
            (Ok(r), Ok(f)) if f > r => fallback,
            (Ok(_), _) => record.version,
            (Err(_), _) => fallback,
        };
        Ok(newer)
    }

    /// One round: check, and install what is offered (see the crate docs).
    pub async fn run_once(&self) -> Result<Outcome, UpdaterError> {
        // Loaded each round: the component may have renewed its certificate.
        let client = ControlClient::load_for_updater(self.options.state_dir.clone(), self.clock.clone())?;
        let installed = self.installed_version()?;
        let check = client.update_check(&installed, &self.options.target).await?;
        let Some(offer) = check.update else {
            tracing::info!(installed = %installed, reason = %check.reason, "no update");
            return Ok(Outcome::UpToDate {
                reason: check.reason,
                check_again: Duration::from_secs(check.check_again_secs.max(60)),
            });
        };
        tracing::info!(installed = %installed, offered = %offer.version, "update offered");
        let install = Installation::new(&self.options.binary);
        let manifest = match self.prepare(&client, &offer, &installed, &install).await {
            Ok(m) => m,
            Err(e) => return self.abandon(&client, &offer, &install, e).await,
        };
        if let Err(e) = self.swap_in(&install).await {
            let why = format!("installing failed, the previous binary stays: {e}");
            tracing::error!(%why);
            self.report(&client, &offer, UpdateOutcome::Failed, &why).await;
            return Ok(Outcome::Failed {
                version: manifest.version,
                why,
            });
        }
        self.report(
            &client,
            &offer,
            UpdateOutcome::Installed,
            "started; waiting for it to call in",
        )
        .await;
        if self.wait_healthy(&client, &manifest.version).await {
            InstalledRecord {
                version: manifest.version.clone(),
                sha256: manifest.sha256.clone(),
            }
            .save(&self.options.work_dir)?;
            tracing::info!(from = %installed, to = %manifest.version, "update installed; the new version called in");
            return Ok(Outcome::Updated {
                from: installed,
                to: manifest.version,
            });
        }
        let why = format!(
            "{} did not call in within {}s; the previous binary is back",
            manifest.version,
            self.options.health_timeout.as_secs()
        );
        tracing::error!(%why, "rolling back");
        self.roll_back(&install).await?;
        self.report(&client, &offer, UpdateOutcome::RolledBack, &why).await;
        Ok(Outcome::RolledBack {
            version: manifest.version,
            why,
        })
    }

    /// Verifies the offer and downloads its binary to the staging file.
    async fn prepare(
        &self,
        client: &ControlClient,
        offer: &OfferedRelease,
        installed: &str,
        install: &Installation,
    ) -> Result<Manifest, DownloadError> {
        let refused = |why: String| DownloadError::Refused(why);
        let manifest = postern_release::verify(offer.manifest.as_bytes(), &offer.signature, &self.options.trusted_key)
            .map_err(|e| refused(e.to_string()))?;
        if manifest.target != self.options.target {
            return Err(refused(format!(
                "the release is for {}, this host runs {}",
                manifest.target, self.options.target
            )));
        }
        let installed_v =
            parse_version("installed version", installed).map_err(|e| DownloadError::Local(e.to_string()))?;
        let version = manifest.version().map_err(|e| refused(e.to_string()))?;
        if version <= installed_v {
            return Err(refused(format!(
                "a downgrade: the signed manifest is version {version} and {installed_v} is installed"
            )));
        }
        let min = manifest.min_upgrade_from().map_err(|e| refused(e.to_string()))?;
        if min > installed_v {
            return Err(refused(format!(
                "{version} upgrades from {min} or newer, and {installed_v} is installed"
            )));
        }
        install
            .discard_staged()
            .map_err(|e| DownloadError::Local(e.to_string()))?;
        let response = client
            .update_download(&offer.release_id)
            .await
            .map_err(|e| DownloadError::Incomplete(format!("the download did not start: {e}")))?;
        tracing::info!(version = %version, bytes = manifest.size, "downloading");
        download_to(response, &install.staged(), &manifest, self.options.stall_timeout).await?;
        tracing::info!(version = %version, "download verified: size, SHA-256 and signature match");
        Ok(manifest)
    }

    /// Gives up on an offer before anything was replaced, and says why.
    async fn abandon(
        &self,
        client: &ControlClient,
        offer: &OfferedRelease,
        install: &Installation,
        error: DownloadError,
    ) -> Result<Outcome, UpdaterError> {
        install.discard_staged()?;
        let (outcome, why) = match error {
            DownloadError::Refused(why) => (UpdateOutcome::Refused, why),
            DownloadError::Incomplete(why) | DownloadError::Local(why) => (UpdateOutcome::Failed, why),
        };
        tracing::error!(version = %offer.version, %why, "update not installed; nothing was replaced");
        self.report(client, offer, outcome, &why).await;
        let version = offer.version.clone();
        Ok(match outcome {
            UpdateOutcome::Refused => Outcome::Refused { version, why },
            _ => Outcome::Failed { version, why },
        })
    }

    /// Stops the component, swaps the binary, starts it. A failed swap starts
    /// the old binary again; a failed start is left to the health check (and
    /// so to the rollback).
    async fn swap_in(&self, install: &Installation) -> Result<(), UpdaterError> {
        self.supervisor.stop().await?;
        if let Err(e) = install.swap() {
            let _ = install.discard_staged();
            self.supervisor.start().await?;
            return Err(e);
        }
        if let Err(e) = self.supervisor.start().await {
            tracing::error!(error = %e, "the new version did not start");
        }
        Ok(())
    }

    /// Stops the component, puts the previous binary back, starts it.
    async fn roll_back(&self, install: &Installation) -> Result<(), UpdaterError> {
        if let Err(e) = self.supervisor.stop().await {
            tracing::warn!(error = %e, "stopping the failed version");
        }
        install.roll_back()?;
        self.supervisor.start().await
    }

    /// Whether the service sees `version` call in before the health deadline.
    async fn wait_healthy(&self, client: &ControlClient, version: &str) -> bool {
        let deadline = tokio::time::Instant::now() + self.options.health_timeout;
        loop {
            match client.update_status().await {
                Ok(s) if s.reported_version == version => return true,
                Ok(s) if s.state.as_deref() == Some("succeeded") && s.to_version.as_deref() == Some(version) => {
                    return true;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "asking the service about the new version"),
            }
            if tokio::time::Instant::now() + self.options.health_poll > deadline {
                return false;
            }
            tokio::time::sleep(self.options.health_poll).await;
        }
    }

    /// Reports to the service; a failure is logged (the lease runs out anyway).
    async fn report(&self, client: &ControlClient, offer: &OfferedRelease, outcome: UpdateOutcome, detail: &str) {
        if let Err(e) = client.update_report(&offer.release_id, outcome, detail).await {
            tracing::warn!(error = %e, outcome = outcome.as_str(), "could not report the update");
        }
    }

    /// Runs rounds until `stop` completes: after each, waits the service's
    /// interval (or the configured one) with up to 10 % random jitter, so a
    /// fleet does not ask at the same moment.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<(), UpdaterError> {
        tokio::pin!(stop);
        loop {
            let wait = match self.run_once().await {
                Ok(Outcome::UpToDate { check_again, .. }) => check_again,
                Ok(outcome) => {
                    tracing::info!(?outcome, "update round done");
                    self.options.check_interval
                }
                Err(e) if matches!(&e, UpdaterError::Uplink(u) if u.needs_registration()) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "update round failed; trying again later");
                    self.options.check_interval
                }
            };
            let wait = jittered(wait);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = &mut stop => return Ok(()),
            }
        }
    }
}

/// `base` plus up to 10 % more, at random.
fn jittered(base: Duration) -> Duration {
    let extra = base.as_millis() / 10;
    let extra = u64::try_from(extra).unwrap_or(u64::MAX);
    base + Duration::from_millis(rand::rng().random_range(0..=extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updater(work_dir: &std::path::Path, fallback: &str) -> Updater {
        struct Idle;
        #[async_trait::async_trait]
        impl Supervisor for Idle {
            async fn stop(&self) -> Result<(), UpdaterError> {
                Ok(())
            }
            async fn start(&self) -> Result<(), UpdaterError> {
                Ok(())
            }
        }
        let key = TrustedKey::from_text(postern_release::trust::PUBLISHER_KEY).unwrap();
        let mut options = UpdaterOptions::new(
            StateDir::new(work_dir.join("state")),
            work_dir.join("postern"),
            work_dir.to_path_buf(),
            key,
        );
        options.fallback_version = fallback.into();
        Updater::new(options, Arc::new(Idle), Arc::new(postern_time::SystemClock))
    }

    #[test]
    fn the_installed_version_is_the_newer_of_record_and_own() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(updater(dir.path(), "0.1.0").installed_version().unwrap(), "0.1.0");
        InstalledRecord {
            version: "0.2.0".into(),
            sha256: String::new(),
        }
        .save(dir.path())
        .unwrap();
        // Installed by the updater, which still runs 0.1.0.
        assert_eq!(updater(dir.path(), "0.1.0").installed_version().unwrap(), "0.2.0");
        // Installed by hand, the updater restarted from it.
        assert_eq!(updater(dir.path(), "0.3.0").installed_version().unwrap(), "0.3.0");
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(3600));
            assert!(d >= Duration::from_secs(3600) && d <= Duration::from_secs(3960));
        }
    }
}
