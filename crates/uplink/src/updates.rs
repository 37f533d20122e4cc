//! The updater's calls (PTA-8), over the same mTLS connection and certificate
//! as the component's own: is there a newer release, the binary, how it went,
//! and whether the new version has called in.

use std::time::Duration;

use postern_proto::PROTOCOL_VERSION;
use postern_proto::updates::{self, UpdateCheck, UpdateCheckRequest, UpdateOutcome, UpdateReport, UpdateStatus};

use crate::client::CALL_TIMEOUT;
use crate::{ControlClient, UplinkError, transport};

/// Longest wait for the head of a release download (the body streams on).
const DOWNLOAD_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

impl ControlClient {
    /// Asks whether a newer release applies to this component; an offer comes
    /// with the one-at-a-time lease held for it.
    pub async fn update_check(&self, installed_version: &str, target: &str) -> Result<UpdateCheck, UplinkError> {
        let request = UpdateCheckRequest {
            protocol: PROTOCOL_VERSION,
            installed_version: installed_version.to_owned(),
            target: target.to_owned(),
        };
        let path = updates::update_check_path(&self.enrolment().tenant_id);
        self.call(reqwest::Method::POST, &path, Some(&request), CALL_TIMEOUT)
            .await
    }

    /// Starts downloading a release's binary; returns once the response head
    /// is in (the caller streams the body and checks its length).
    pub async fn update_download(&self, release_id: &str) -> Result<reqwest::Response, UplinkError> {
        if release_id.is_empty() || !release_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(UplinkError::Transport(
                "the service named an unusable release ID".into(),
            ));
        }
        let path = updates::update_download_path(&self.enrolment().tenant_id, release_id);
        let send = self.http().get(self.url(&path)).send();
        let response = tokio::time::timeout(DOWNLOAD_HEAD_TIMEOUT, send)
            .await
            .map_err(|_| UplinkError::Transport("the download did not start in time".into()))?
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(UplinkError::from_response(response).await);
        }
        Ok(response)
    }

    /// Reports how an update went.
    pub async fn update_report(
        &self,
        release_id: &str,
        outcome: UpdateOutcome,
        detail: &str,
    ) -> Result<(), UplinkError> {
        let report = UpdateReport {
            protocol: PROTOCOL_VERSION,
            release_id: release_id.to_owned(),
            outcome,
            detail: detail.to_owned(),
        };
        let path = updates::update_report_path(&self.enrolment().tenant_id);
        let response = self
            .http()
            .post(self.url(&path))
            .timeout(CALL_TIMEOUT)
            .json(&report)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(UplinkError::from_response(response).await);
        }
        Ok(())
    }

    /// The version the component last reported and the state of its latest
    /// update, as the service sees them.
    pub async fn update_status(&self) -> Result<UpdateStatus, UplinkError> {
        let path = updates::update_status_path(&self.enrolment().tenant_id);
        self.call::<(), _>(reqwest::Method::GET, &path, None, CALL_TIMEOUT)
            .await
    }
}
