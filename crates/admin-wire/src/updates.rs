//! Releases and automatic updates: what operators publish, what a tenant
//! sets (channel, pin, pause) and sees (each component's version and update
//! state, the history), and the versions in the field.

use postern_proto::ComponentKind;
use postern_time::UnixTime;
use serde::{Deserialize, Serialize};

/// `POST /api/v1/system/releases`: a release's manifest and signature, as
/// `postern release sign` wrote them; the binary follows in chunks.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRelease {
    /// The manifest file's exact text.
    pub manifest: String,
    /// The `.minisig` file's text.
    pub signature: String,
    /// `stable` or `beta`.
    pub channel: String,
}

/// A release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReleaseView {
    /// Identifier.
    pub id: String,
    /// Version.
    pub version: String,
    /// Target triple.
    pub target: String,
    /// `stable` or `beta`.
    pub channel: String,
    /// SHA-256 of the binary.
    pub sha256: String,
    /// Size of the binary in bytes.
    pub size: u64,
    /// The oldest version it upgrades from.
    pub min_upgrade_from: String,
    /// Release notes.
    pub notes_url: String,
    /// Whether the binary is complete and checked (only then is it offered).
    pub ready: bool,
    /// Who published it.
    pub created_by: String,
    /// When.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
}

/// A tenant's update policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdatePolicyView {
    /// `stable` or `beta` (beta also takes stable releases).
    pub channel: String,
    /// Components go to this version and no further.
    pub pinned_version: Option<String>,
    /// No updates at all.
    pub paused: bool,
    /// Last change.
    #[schema(value_type = i64)]
    pub updated_at: UnixTime,
}

/// `PUT /api/v1/updates/policy`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUpdatePolicy {
    /// `stable` or `beta`.
    pub channel: String,
    /// A version to hold components at, or none.
    #[serde(default)]
    pub pinned_version: Option<String>,
    /// Pause updates.
    #[serde(default)]
    pub paused: bool,
}

/// One update of one component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentUpdateView {
    /// Identifier.
    pub id: String,
    /// The component.
    pub component_id: String,
    /// The release.
    pub release_id: String,
    /// Version before.
    pub from_version: String,
    /// Version offered.
    pub to_version: String,
    /// `offered`, `installing`, `succeeded`, `rolled_back`, `refused`,
    /// `failed` or `expired`.
    pub state: String,
    /// What the updater or the service said.
    pub detail: String,
    /// When it was offered.
    #[schema(value_type = i64)]
    pub started_at: UnixTime,
    /// When it ended.
    #[schema(value_type = Option<i64>)]
    pub finished_at: Option<UnixTime>,
}

/// A component's version and its latest update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentVersionView {
    /// Identifier.
    pub id: String,
    /// Connector or agent.
    #[schema(value_type = String)]
    pub kind: ComponentKind,
    /// Its name.
    pub name: String,
    /// Its connector group's ID (connectors).
    pub group_id: Option<String>,
    /// The version it last reported.
    pub version: String,
    /// Its latest update, if any.
    pub latest_update: Option<ComponentUpdateView>,
}

/// `GET /api/v1/updates`: the tenant's policy and its components.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdatesOverview {
    /// The policy.
    pub policy: UpdatePolicyView,
    /// Every connector and agent of the tenant.
    pub components: Vec<ComponentVersionView>,
}

/// `GET /api/v1/system/versions`: how many components run each version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FieldVersion {
    /// Connector or agent.
    pub kind: String,
    /// The version they report.
    pub version: String,
    /// How many, over every tenant.
    pub components: i64,
}
