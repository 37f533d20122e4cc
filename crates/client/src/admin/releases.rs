//! Releases and automatic updates: publishing (manifest, binary in chunks,
//! completion), the tenant's update policy, versions and history.

use postern_admin_wire::{
    ComponentUpdateView, FieldVersion, PublishRelease, ReleaseView, SetUpdatePolicy, UpdatePolicyView, UpdatesOverview,
};
use reqwest::Method;

use super::{AdminClient, NO_BODY};
use crate::error::ClientError;

/// Size of each piece of a binary sent to the service (well within its
/// request body limit).
pub const RELEASE_CHUNK: usize = 256 * 1024;

impl AdminClient {
    /// Every release (operators).
    pub async fn releases(&self) -> Result<Vec<ReleaseView>, ClientError> {
        self.call(Method::GET, &["system", "releases"], NO_BODY).await
    }

    /// Stores a release's signed manifest (operators); the binary follows with
    /// [`AdminClient::upload_release_chunk`], then
    /// [`AdminClient::complete_release`].
    pub async fn publish_release(&self, release: &PublishRelease) -> Result<ReleaseView, ClientError> {
        self.call(Method::POST, &["system", "releases"], Some(release)).await
    }

    /// Sends piece `seq` (from 0) of a release's binary.
    pub async fn upload_release_chunk(&self, id: &str, seq: u64, bytes: Vec<u8>) -> Result<(), ClientError> {
        let seq = seq.to_string();
        self.exchange(
            Method::PUT,
            &["system", "releases", id, "chunks", &seq],
            |r| {
                r.header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .body(bytes)
            },
            NO_BODY,
        )
        .await
        .map(|_| ())
    }

    /// Has the service check the binary against the manifest and offer the
    /// release.
    pub async fn complete_release(&self, id: &str) -> Result<ReleaseView, ClientError> {
        self.call(Method::POST, &["system", "releases", id, "complete"], NO_BODY)
            .await
    }

    /// Withdraws a release (operators).
    pub async fn delete_release(&self, id: &str) -> Result<(), ClientError> {
        self.call_empty(Method::DELETE, &["system", "releases", id], NO_BODY)
            .await
    }

    /// How many components run each version, over every tenant (operators).
    pub async fn field_versions(&self) -> Result<Vec<FieldVersion>, ClientError> {
        self.call(Method::GET, &["system", "versions"], NO_BODY).await
    }

    /// The tenant's update policy and each component's version and latest update.
    pub async fn updates(&self) -> Result<UpdatesOverview, ClientError> {
        self.call(Method::GET, &["updates"], NO_BODY).await
    }

    /// Sets the tenant's update policy (channel, pinned version, pause).
    pub async fn set_update_policy(&self, policy: &SetUpdatePolicy) -> Result<UpdatePolicyView, ClientError> {
        self.call(Method::PUT, &["updates", "policy"], Some(policy)).await
    }

    /// The tenant's update history, newest first (of one component, if given).
    pub async fn update_history(&self, component: Option<&str>) -> Result<Vec<ComponentUpdateView>, ClientError> {
        #[derive(serde::Serialize)]
        struct Q<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            component: Option<&'a str>,
        }
        self.query(&["updates", "history"], &Q { component }).await
    }
}
