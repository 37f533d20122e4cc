//! The JSON wire format of the admin API: one definition of each request and
//! response body, used by the server (`postern-admin-api`) and by
//! `postern-client`, which therefore needs neither the server nor the store.
//!
//! Nothing here carries a password hash, a sealed TOTP seed, a secret digest
//! or key material: store records are converted into these views before they
//! leave the service. Request bodies refuse unknown fields, so a typo is an
//! error rather than a silently ignored setting. Secrets sent by a client
//! (passwords) and the secrets the service returns (a new client secret, a new
//! registration token, once each) are [`SecretString`]s so they never appear in
//! `Debug` output.

#![warn(missing_docs)]

use postern_keyring::SecretString;
use postern_model::{DomainAuthMode, Preauth, PrincipalKind, Role, SigninOutcome, UserSource};
use postern_proto::ComponentKind;
use postern_time::UnixTime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Grant type of the authorization code flow.
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
/// Grant type of refresh tokens.
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
/// Grant type of the device authorization flow (RFC 8628).
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Prefix of the DNS TXT record that proves ownership of a domain.
pub const DOMAIN_TXT_PREFIX: &str = "postern-verify=";

/// Serializes a secret in clear: only for the request or response that must
/// carry it.
pub fn serialize_secret<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose())
}

/// [`serialize_secret`] for an optional secret.
pub fn serialize_optional_secret<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose()),
        None => s.serialize_none(),
    }
}

/// Reads a field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// ---- errors -------------------------------------------------------------------

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `invalid_token`, `forbidden`, `invalid_request`,
    /// `not_found`, `conflict`, `temporarily_unavailable`, `server_error`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
    /// Every validation problem of the request, when there are any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

// ---- caller -------------------------------------------------------------------

/// `GET /api/v1/me`: who the token belongs to and what they may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    /// The signed-in user.
    pub user: UserView,
    /// The user's tenant.
    pub tenant: TenantView,
    /// Administrative roles the user holds.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
    /// Whether the user is an operator (global administrator of the system
    /// tenant) and may manage other tenants.
    pub operator: bool,
}

// ---- tenants ------------------------------------------------------------------

/// A tenant and its settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantView {
    /// Internal identifier.
    pub id: String,
    /// Short name (URLs, issuer).
    pub name: String,
    /// Name shown on sign-in pages.
    pub display_name: String,
    /// Whether this is the operator's tenant.
    pub is_system: bool,
    /// Failed sign-ins before an account is locked.
    pub lockout_threshold: i64,
    /// First lockout period in seconds.
    pub lockout_seconds: i64,
    /// Whether every user must use MFA.
    pub require_mfa: bool,
    /// Limits operators set for this tenant (absent ones: the installation's).
    #[serde(default)]
    pub limits: TenantLimitsView,
    /// When it was created.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
}

/// `PUT /api/v1/tenants/{name}/limits` (operators): a tenant's own limits at
/// the front door (SEC-9), each absent one the installation's default again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsView {
    /// Requests a second over all the tenant's apps, 1 to [`MAX_RATE_LIMIT`]
    /// (default: the installation's, 750); more get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<i64>,
    /// Requests at once above that rate, 1 to [`MAX_RATE_LIMIT`] (default:
    /// twice the tenant's rate, or the installation's burst); needs
    /// `rate_limit_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<i64>,
    /// Sign-ins waiting on the tenant's pass-through authentication agents at
    /// once, 1 to [`MAX_PENDING_SIGNINS`] (default: the installation's); more
    /// are told to try again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_signins: Option<i64>,
}

/// Highest cap on a tenant's sign-ins waiting on agents.
pub const MAX_PENDING_SIGNINS: i64 = 10_000;

/// `POST /api/v1/tenants`: a new tenant with its first global administrator.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Short name: 3–32 lowercase letters, digits or dashes.
    pub name: String,
    /// Name shown on sign-in pages.
    pub display_name: String,
    /// The tenant's first domain; verified by the operator's act of creating it.
    pub domain: String,
    /// The first administrator's sign-in name, `someone@domain`.
    pub admin_username: String,
    /// The first administrator's password.
    #[serde(serialize_with = "serialize_secret")]
    #[schema(value_type = String)]
    pub admin_password: SecretString,
}

/// Response to [`CreateTenant`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TenantCreated {
    /// The new tenant.
    pub tenant: TenantView,
    /// Its first global administrator.
    pub admin: UserView,
}

/// `PATCH /api/v1/tenant`: settings to change; absent fields stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantSettings {
    /// Failed sign-ins before an account is locked (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_threshold: Option<i64>,
    /// First lockout period in seconds (1–86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lockout_seconds: Option<i64>,
    /// Whether every user must use MFA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mfa: Option<bool>,
}

// ---- domains ------------------------------------------------------------------

/// A domain of the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DomainView {
    /// Lowercase domain name.
    pub name: String,
    /// Whether ownership was verified (only verified domains hold users).
    pub verified: bool,
    /// How passwords of its users are checked.
    #[schema(value_type = String)]
    pub auth_mode: DomainAuthMode,
    /// When it was added.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
    /// For an unverified domain: the DNS TXT record that proves ownership,
    /// `postern-verify=<token>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_txt_record: Option<String>,
}

/// `POST /api/v1/domains`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// Domain name.
    pub name: String,
}

/// `PATCH /api/v1/domains/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDomain {
    /// How passwords of the domain's users are checked.
    #[schema(value_type = String)]
    pub auth_mode: DomainAuthMode,
}

// ---- users --------------------------------------------------------------------

/// A user account, without any credential material.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    /// Stable identifier (the `sub` of tokens).
    pub id: String,
    /// Sign-in name.
    pub username: String,
    /// Name shown to people.
    pub display_name: String,
    /// Email address.
    pub email: Option<String>,
    /// Where the account lives.
    #[schema(value_type = String)]
    pub source: UserSource,
    /// Whether the account may sign in.
    pub enabled: bool,
    /// Whether the user must always complete MFA.
    pub mfa_required: bool,
    /// Whether the user has enrolled an authenticator app.
    pub mfa_enrolled: bool,
    /// Whether a cloud password is set.
    pub has_password: bool,
    /// When it was created.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
    /// When it last changed.
    #[schema(value_type = i64)]
    pub updated_at: UnixTime,
}

/// `POST /api/v1/users`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Sign-in name, `local@domain` with a verified domain of the tenant.
    pub username: String,
    /// Name shown to people (default: the username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Initial cloud password. Without one the user cannot sign in until a
    /// password is set.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_optional_secret"
    )]
    #[schema(value_type = Option<String>)]
    pub password: Option<SecretString>,
    /// Whether the user must always complete MFA.
    #[serde(default)]
    pub mfa_required: bool,
}

/// `POST /api/v1/users/directory`: a directory account named before its
/// first sign-in, so apps and groups can be assigned to it now. The first
/// pass-through sign-in under this name adopts the account (same ID, same
/// assignments) and records its stable directory ID.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameDirectoryUser {
    /// Sign-in name as the directory reports it (the UPN), in a verified
    /// pass-through domain of the tenant.
    pub username: String,
    /// Name shown to people until the first sign-in brings the directory's
    /// (default: the username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Email address until the first sign-in brings the directory's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the user must always complete MFA.
    #[serde(default)]
    pub mfa_required: bool,
}

/// `PATCH /api/v1/users/{id}`: fields to change; absent fields stay as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// New email; `null` clears it.
    #[serde(default, deserialize_with = "double_option", skip_serializing_if = "Option::is_none")]
    pub email: Option<Option<String>>,
    /// Enable or disable the account (disabling ends its sessions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether the user must always complete MFA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_required: Option<bool>,
}

/// `POST /api/v1/users/{id}/password`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPassword {
    /// The new password.
    #[serde(serialize_with = "serialize_secret")]
    #[schema(value_type = String)]
    pub password: SecretString,
}

/// Roles of a user (`GET`, `PUT`, `DELETE` under `/api/v1/users/{id}/roles`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRoles {
    /// The user.
    pub user_id: String,
    /// The roles held after the request.
    #[schema(value_type = Vec<String>)]
    pub roles: Vec<Role>,
}

// ---- groups -------------------------------------------------------------------

/// A group of users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    /// Identifier.
    pub id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Where the group lives.
    #[schema(value_type = String)]
    pub source: UserSource,
    /// When it was created.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
}

/// `POST /api/v1/groups`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// Unique name within the tenant.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

// ---- OAuth clients ------------------------------------------------------------

/// Whether a client authenticates with a secret.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientType {
    /// Runs on a server and keeps a secret.
    #[default]
    Confidential,
    /// Runs where a secret cannot be kept (browser, CLI); may use the device flow.
    Public,
}

/// A registered OAuth client, without its secret digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientView {
    /// The `client_id`.
    pub client_id: String,
    /// Display name.
    pub name: String,
    /// Confidential or public.
    pub client_type: ClientType,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Exact post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Scopes allowed beyond the standard OpenID Connect ones.
    pub scopes: Vec<String>,
    /// Owned by the service; cannot be deleted.
    pub builtin: bool,
    /// The published app this client signs users in to, if any: it follows
    /// the app's external URL and is removed with the app, not on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// When it was registered.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
}

/// `POST /api/v1/clients`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// Display name.
    pub name: String,
    /// Confidential (default) or public.
    #[serde(default)]
    pub client_type: ClientType,
    /// Absolute `https` URLs (`http` only for loopback hosts), no fragment.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Same rules as `redirect_uris`.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Among `authorization_code`, `refresh_token` and (public clients only)
    /// `urn:ietf:params:oauth:grant-type:device_code`.
    pub grant_types: Vec<String>,
    /// Extra scopes; `postern:admin` only when a global administrator asks.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Response to [`CreateClient`]: the only time the secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientCreated {
    /// The registered client.
    #[serde(flatten)]
    pub client: ClientView,
    /// The secret of a confidential client. The service keeps only its digest:
    /// store it now, it cannot be shown again.
    #[serde(default, serialize_with = "serialize_optional_secret")]
    #[schema(value_type = Option<String>)]
    pub client_secret: Option<SecretString>,
}

// ---- published apps -------------------------------------------------------------

/// The identity headers an app's backend may be sent, in their canonical order.
pub const IDENTITY_HEADERS: [&str; 4] = ["user", "email", "groups", "assertion"];
/// Backend timeout of an app that names none (seconds).
pub const DEFAULT_BACKEND_TIMEOUT_SECS: i64 = 85;
/// Longest backend timeout (seconds).
pub const MAX_BACKEND_TIMEOUT_SECS: i64 = 3600;
/// Highest request rate (and burst) an app or tenant may be given.
pub const MAX_RATE_LIMIT: i64 = 1_000_000;
/// Largest request body limit an app may be given (1 TiB; 0 means none).
pub const MAX_BODY_LIMIT: i64 = 1 << 40;

/// `POST /api/v1/apps` and `PUT /api/v1/apps/{id}`: every setting of an app.
/// `PUT` replaces the app: an absent optional field takes its default again.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// Unique name within the tenant.
    pub name: String,
    /// Where users reach it: `http(s)://host[:port][/prefix/]`, no query,
    /// fragment or credentials. The host is lowercased and the path prefix
    /// made to start and end with `/`. One app per address, across tenants.
    pub external_url: String,
    /// Where connectors forward to: `http(s)://host[:port][/base/path]`, no
    /// query, fragment or credentials.
    pub internal_url: String,
    /// `sts` (default: users sign in first) or `passthrough`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub preauth: Option<Preauth>,
    /// Connector group (ID or name) whose connectors serve it (default: the
    /// tenant's default group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector_group: Option<String>,
    /// Time the backend has to answer, 1–3600 seconds (default 85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_timeout_secs: Option<i64>,
    /// Whether connectors check the backend's TLS certificate (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_backend_tls: Option<bool>,
    /// Whether headers (`Location`, cookies) are translated between internal
    /// and external names (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translate_headers: Option<bool>,
    /// Whether links in HTML and CSS bodies are translated (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translate_links: Option<bool>,
    /// Identity headers sent to the backend, among [`IDENTITY_HEADERS`]
    /// (default: all of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_headers: Option<Vec<String>>,
    /// Requests a second the front door lets through to the app, 1 to
    /// [`MAX_RATE_LIMIT`] (default: the installation's, 500); more get 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<i64>,
    /// Requests at once above that rate, 1 to [`MAX_RATE_LIMIT`] (default:
    /// twice the app's rate, or the installation's burst); needs
    /// `rate_limit_per_sec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<i64>,
    /// Largest request body forwarded to the app in bytes, 0 (no limit) to
    /// [`MAX_BODY_LIMIT`] (default: the installation's, no limit); larger
    /// uploads get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<i64>,
}

/// A published app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppView {
    /// Identifier.
    pub id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Where users reach it.
    pub external_url: String,
    /// Where connectors forward to.
    pub internal_url: String,
    /// Pre-authentication.
    #[schema(value_type = String)]
    pub preauth: Preauth,
    /// The connector group whose connectors serve it.
    pub connector_group: GroupRef,
    /// Time the backend has to answer (seconds).
    pub backend_timeout_secs: i64,
    /// Whether connectors check the backend's TLS certificate.
    pub validate_backend_tls: bool,
    /// Whether headers are translated.
    pub translate_headers: bool,
    /// Whether links in bodies are translated.
    pub translate_links: bool,
    /// Identity headers sent to the backend.
    pub identity_headers: Vec<String>,
    /// The app's own request rate (absent: the installation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<i64>,
    /// The app's own burst (absent: the installation's, or twice its rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_burst: Option<i64>,
    /// The app's own request body limit in bytes, 0 for none (absent: the
    /// installation's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<i64>,
    /// The app's OIDC client at the STS (public, PKCE), used for
    /// pre-authentication.
    pub client_id: String,
    /// That client's redirect URI: `{external_url}.postern/callback`.
    pub redirect_uri: String,
    /// Why the tenant may not publish on this app's host (SEC-12), when it may
    /// not: such an app is not served until it moves to a host of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_problem: Option<String>,
    /// When it was published.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
    /// When it last changed.
    #[schema(value_type = i64)]
    pub updated_at: UnixTime,
}

/// `POST /api/v1/apps/{id}/assignments`: lets a user or the members of a
/// group use the app (idempotent).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignApp {
    /// `user` or `group`.
    #[schema(value_type = String)]
    pub kind: PrincipalKind,
    /// The user's or group's ID, or the username or group name.
    pub id: String,
}

/// One assignment of an app.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssignmentView {
    /// `user` or `group`.
    #[schema(value_type = String)]
    pub kind: PrincipalKind,
    /// The user's or group's ID.
    pub id: String,
    /// Its username or group name; `None` when it no longer exists.
    pub name: Option<String>,
}

// ---- on-prem components --------------------------------------------------------

pub use postern_proto::registration::REGISTRATION_TOKEN_PREFIX;

/// Whether a component has called the service lately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComponentStatus {
    /// Seen within the last five minutes (by the service's clock).
    Active,
    /// Not seen for longer, or never.
    Inactive,
}

/// A connector group, by ID and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupRef {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
}

/// A registered connector or agent: what it reported, its certificate and its
/// status. No key material: the certificate is named by its serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentView {
    /// Identifier (bound into its certificate).
    pub id: String,
    /// Connector or agent.
    #[schema(value_type = String)]
    pub kind: ComponentKind,
    /// Host name it reported.
    pub name: String,
    /// Its connector group (connectors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// Identifier of its public key, which the STS tags password ciphertexts
    /// with (agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Software version it reported.
    pub version: String,
    /// `active` if it called within the last five minutes, else `inactive`.
    pub status: ComponentStatus,
    /// When it last called the service.
    #[schema(value_type = Option<i64>)]
    pub last_seen_at: Option<UnixTime>,
    /// From which address.
    pub last_seen_ip: Option<String>,
    /// Serial of its current certificate (lowercase hex).
    pub serial: String,
    /// When that certificate was issued.
    #[schema(value_type = i64)]
    pub cert_issued_at: UnixTime,
    /// When it expires.
    #[schema(value_type = i64)]
    pub cert_not_after: UnixTime,
    /// Whether the component should renew the certificate now (it does so by
    /// itself on its next exchange with the service).
    pub renewal_due: bool,
    /// When it was registered.
    #[schema(value_type = i64)]
    pub registered_at: UnixTime,
    /// By whom (`user:<id>`, or the registration token used).
    pub registered_by: String,
}

/// `PUT /api/v1/connectors/{id}/group`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveConnector {
    /// The connector group to move to, by name or ID.
    pub group: String,
}

/// A connector group with the number of its connectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectorGroupView {
    /// Identifier.
    pub id: String,
    /// Unique name within the tenant.
    pub name: String,
    /// Free text.
    pub description: String,
    /// New connectors join the default group unless told otherwise; it cannot
    /// be deleted.
    pub is_default: bool,
    /// Version of the configuration its connectors run with.
    pub config_version: i64,
    /// How many connectors it has.
    pub connector_count: usize,
    /// When it was created.
    #[schema(value_type = i64)]
    pub created_at: UnixTime,
}

/// `GET /api/v1/connector-groups/{id}`: a group with its connectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectorGroupDetail {
    /// The group.
    #[serde(flatten)]
    pub group: ConnectorGroupView,
    /// Its connectors.
    pub connectors: Vec<ComponentView>,
}

/// `POST /api/v1/connector-groups`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnectorGroup {
    /// Unique name: 1–64 letters, digits, spaces, dashes, underscores or dots.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// `POST /api/v1/registration-tokens`: a token for unattended installs of
/// connectors (application administrators) or agents (hybrid identity
/// administrators).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistrationToken {
    /// What it may register.
    #[schema(value_type = String)]
    pub kind: ComponentKind,
    /// Connector tokens only: the group (name or ID) the connectors join
    /// (default: the tenant's default group at registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Lifetime in seconds, 60–86400 (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<i64>,
    /// How many registrations it allows, 1–100 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<i64>,
}

/// Response to [`CreateRegistrationToken`]: the only time the token is shown.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistrationTokenCreated {
    /// The token, `ptr_…`. The service keeps only its digest: hand it to the
    /// installer now, it cannot be shown again.
    #[serde(serialize_with = "serialize_secret")]
    #[schema(value_type = String)]
    pub token: SecretString,
    /// What it may register.
    #[schema(value_type = String)]
    pub kind: ComponentKind,
    /// The group new connectors join, when one was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// When it stops working.
    #[schema(value_type = i64)]
    pub expires_at: UnixTime,
    /// How many registrations it allows.
    pub uses: i64,
}

// ---- logs ---------------------------------------------------------------------

/// Query of `GET /api/v1/signins`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigninQuery {
    /// Unix seconds; events at or after it (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// At most this many events, 1–1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// One sign-in attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigninView {
    /// Identifier.
    pub id: String,
    /// When.
    #[schema(value_type = i64)]
    pub at: UnixTime,
    /// The sign-in name typed.
    pub username: String,
    /// The account, when it exists.
    pub user_id: Option<String>,
    /// The client signed in to.
    pub client_id: Option<String>,
    /// Client IP address.
    pub ip: String,
    /// How it ended.
    #[schema(value_type = String)]
    pub outcome: SigninOutcome,
    /// Short explanation.
    pub detail: String,
}

/// Query of `GET /api/v1/audit`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries after this sequence number (default 0: from the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// At most this many entries, 1–1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

/// One audit entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditView {
    /// Position in the installation-wide chain.
    pub seq: i64,
    /// When.
    #[schema(value_type = i64)]
    pub at: UnixTime,
    /// Who acted (`user:<id>`, `system`, `setup`).
    pub actor: String,
    /// What was done, e.g. `user.create`.
    pub action: String,
    /// What it was done to, e.g. `user:<id>`.
    pub target: String,
    /// Secret-free details.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// `GET /api/v1/audit/verify`: the state of the hash chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditChainStatus {
    /// Entries checked.
    pub entries: i64,
    /// Whether every entry matches its hash and link.
    pub intact: bool,
    /// The first entry that does not, if any.
    pub first_broken_seq: Option<i64>,
    /// What is wrong with that entry (missing, link or content changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

// ---- system -------------------------------------------------------------------

/// `POST /api/v1/system/signing-keys/rotate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SigningKeyRotated {
    /// Key ID of the new signing key.
    pub kid: String,
}

/// `POST /api/v1/system/cookie-keys/rotate`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCookieKey {
    /// Also delete every older key, ending every app session and sign-in in
    /// progress (after a suspected leak). Default: older keys keep opening the
    /// sessions they sealed until those expire.
    #[serde(default)]
    pub revoke_older: bool,
}

/// Answer of `POST /api/v1/system/cookie-keys/rotate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CookieKeyRotated {
    /// Key ID of the new cookie key.
    pub kid: String,
    /// Whether the older keys were revoked.
    pub revoked_older: bool,
}

// ---- conditional access -------------------------------------------------------

pub use postern_policy::{
    AppRef, ClientKind, Conditions, Effect, Evaluation, Grant, LocationRef, PolicyState, RiskAssessment, RiskLevel,
    RiskSignal, Selection, SignalKind, UserRef,
};

fn enabled() -> PolicyState {
    PolicyState::Enabled
}

/// Body of `POST /api/v1/policies` and `PUT /api/v1/policies/{id}`. References
/// name users (`user:ID` or `user:NAME`), groups (`group:ID|NAME`), apps
/// (`app:ID|NAME`), OAuth clients (`client:CLIENT_ID`) and named locations
/// (`location:ID|NAME`); they are stored by ID.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// Name, unique in the tenant.
    pub name: String,
    /// `enabled` (default), `report_only` or `disabled`.
    #[serde(default = "enabled")]
    #[schema(value_type = String)]
    pub state: PolicyState,
    /// When it applies.
    #[schema(value_type = Object)]
    pub conditions: Conditions,
    /// What it demands: `block` alone, or `require_mfa` and/or `require_assignment`.
    #[schema(value_type = Vec<String>)]
    pub grants: Vec<Grant>,
}

/// A conditional access policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyView {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
    /// Enforced, report-only or off.
    #[schema(value_type = String)]
    pub state: PolicyState,
    /// When it applies (references by ID).
    #[schema(value_type = Object)]
    pub conditions: Conditions,
    /// What it demands.
    #[schema(value_type = Vec<String>)]
    pub grants: Vec<Grant>,
}

/// Body of `POST /api/v1/locations` and `PUT /api/v1/locations/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationInput {
    /// Name, unique in the tenant.
    pub name: String,
    /// IPv4 and IPv6 addresses and CIDR ranges.
    pub ranges: Vec<String>,
    /// Whether policies naming `trusted` include it.
    #[serde(default)]
    pub trusted: bool,
}

/// A named location.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocationView {
    /// Identifier.
    pub id: String,
    /// Name.
    pub name: String,
    /// Its ranges (CIDR).
    pub ranges: Vec<String>,
    /// Whether it counts as trusted.
    pub trusted: bool,
}

fn browser() -> ClientKind {
    ClientKind::Browser
}

/// Body of `POST /api/v1/policies/what-if`: a sign-in to evaluate.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WhatIf {
    /// The user, by ID or sign-in name.
    pub user: String,
    /// A published app (ID or name) or an OAuth client ID; none: no client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The client's IP address.
    pub ip: String,
    /// How the client signs in (default `browser`).
    #[serde(default = "browser")]
    #[schema(value_type = String)]
    pub client_kind: ClientKind,
    /// Whether the session has a second factor.
    #[serde(default)]
    pub mfa: bool,
}

/// What the service would decide for a [`WhatIf`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhatIfResult {
    /// `allow`, `require_mfa` or `block`: what the policies enforce.
    #[schema(value_type = String)]
    pub effect: Effect,
    /// Why, a sentence per enforced reason.
    pub reasons: Vec<String>,
    /// What would be enforced with the report-only policies on.
    #[schema(value_type = String)]
    pub report_only_effect: Effect,
    /// Whether the sign-in would go through now (`require_mfa` with `mfa`
    /// set goes through; so does the app's baseline below).
    pub allowed: bool,
    /// Why the app itself refuses the user (disabled, not assigned), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_refuses: Option<String>,
    /// Every policy evaluated and why it applied or not.
    #[schema(value_type = Vec<Object>)]
    pub evaluations: Vec<Evaluation>,
    /// The sign-in risk and its signals.
    #[schema(value_type = Object)]
    pub risk: RiskAssessment,
}

/// Body of `PUT /api/v1/users/{id}/risk`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetUserRisk {
    /// `low`, `medium` or `high` (`none`: use DELETE to dismiss).
    #[schema(value_type = String)]
    pub level: RiskLevel,
    /// Why (kept in the audit log and shown in sign-in log entries).
    pub reason: String,
}

/// The risk an administrator set for a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserRiskView {
    /// The user.
    pub user_id: String,
    /// The level.
    #[schema(value_type = String)]
    pub level: RiskLevel,
    /// Why.
    pub reason: String,
    /// Who set it.
    pub set_by: String,
    /// When.
    #[schema(value_type = i64)]
    pub set_at: UnixTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_user_tells_absent_from_null() {
        let absent: UpdateUser = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.email, None);
        let cleared: UpdateUser = serde_json::from_str(r#"{"email":null}"#).unwrap();
        assert_eq!(cleared.email, Some(None));
        let set: UpdateUser = serde_json::from_str(r#"{"email":"a@b.test"}"#).unwrap();
        assert_eq!(set.email, Some(Some("a@b.test".into())));
        assert_eq!(serde_json::to_string(&cleared).unwrap(), r#"{"email":null}"#);
    }

    #[test]
    fn inputs_refuse_unknown_fields() {
        assert!(serde_json::from_str::<CreateGroup>(r#"{"name":"x","nmae":"y"}"#).is_err());
        assert!(serde_json::from_str::<UpdateTenantSettings>(r#"{"lockout":1}"#).is_err());
    }

    #[test]
    fn secrets_are_masked_in_debug_but_sent_on_the_wire() {
        let req = SetPassword {
            password: "correct horse battery".into(),
        };
        assert!(!format!("{req:?}").contains("horse"));
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"password": "correct horse battery"})
        );
    }
}

mod updates;
pub use updates::{
    ComponentUpdateView, ComponentVersionView, FieldVersion, PublishRelease, ReleaseView, SetUpdatePolicy,
    UpdatePolicyView, UpdatesOverview,
};

mod probe;
pub use probe::{AppProbe, ProbeCheck};
