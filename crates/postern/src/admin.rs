//! `postern admin`: sign in with the device flow and manage tenants, domains,
//! users, groups, roles, published apps, connectors, agents and their
//! registration tokens through the admin API.
//!
//! Results are printed to stdout as pretty JSON (a new registration token
//! alone, so a script can capture it); messages and errors go to stderr. Passwords are read from one line of standard input (no prompt, so
//! they can be piped), never from the command line where other users of the
//! host could see them.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use postern_client::wire::{
    AppSettings, AppView, AuditChainStatus, AuditQuery, ClientType, ComponentView, CreateClient, CreateConnectorGroup,
    CreateGroup, CreateRegistrationToken, CreateTenant, CreateUser, NameDirectoryUser, SigninQuery,
    UpdateTenantSettings, UpdateUser,
};
use postern_client::{
    AdminClient, ClientError, CredentialFile, Credentials, DEFAULT_MAX_WAIT, DEFAULT_TIMEOUT, Issuer, PublicClient,
    SecretString,
};
use postern_store::{ComponentKind, DomainAuthMode, Preauth, PrincipalKind, Role};
use postern_time::{Clock, SystemClock};
use serde::Serialize;

/// Client ID of the command line at every tenant (built in).
const CLI_CLIENT_ID: &str = "postern-cli";

mod policies;
use policies::{LocationsCommand, PoliciesCommand, UserRiskCommand};
mod updates;
use updates::{ReleasesCommand, UpdatesCommand};
/// What `postern admin login` asks for: an admin-API token that can be
/// refreshed.
const LOGIN_SCOPE: &str = "openid profile offline_access postern:admin";

/// The `postern admin` subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Sign in to a tenant with the device flow and keep the credentials.
    Login(LoginArgs),
    /// Sign out: revoke the refresh token and delete the stored credentials.
    Logout,
    /// Show who the stored credentials belong to, their tenant and roles.
    Whoami,
    /// Tenants of the installation (operators only).
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// This tenant's settings.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Domains of this tenant.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// Users of this tenant.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Groups of this tenant.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Administrative roles of users.
    #[command(subcommand)]
    Roles(RolesCommand),
    /// OAuth clients (applications signing users in through this tenant).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Published apps and who may use them (application administrators).
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Connectors of this tenant (application administrators).
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Authentication agents of this tenant (hybrid identity administrators).
    #[command(subcommand)]
    Agents(AgentsCommand),
    /// Connector groups of this tenant (application administrators).
    #[command(subcommand)]
    ConnectorGroups(ConnectorGroupsCommand),
    /// Tokens for unattended installs of connectors and agents.
    #[command(subcommand)]
    RegistrationTokens(RegistrationTokensCommand),
    /// Conditional access policies, and what they would decide (what-if).
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Named locations (sets of address ranges) that policies name.
    #[command(subcommand)]
    Locations(LocationsCommand),
    /// Sign-in events of this tenant, oldest first.
    Signins {
        /// Only events at or after this Unix time (seconds).
        #[arg(long)]
        since: Option<i64>,
        /// At most this many events (1–1000, default 100).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Token-signing keys of the installation (operators only).
    #[command(subcommand)]
    SigningKeys(SigningKeysCommand),
    /// The front door's cookie keys (operators only).
    #[command(subcommand)]
    CookieKeys(CookieKeysCommand),
    /// Signed releases of connectors and agents (operators only).
    #[command(subcommand)]
    Releases(ReleasesCommand),
    /// Automatic updates of this tenant's connectors and agents: policy,
    /// versions, history.
    #[command(subcommand)]
    Updates(UpdatesCommand),
}

/// Flags of `postern admin login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// URL of the service, e.g. `https://postern.example.com`.
    #[arg(long, env = "POSTERN_SERVER")]
    server: String,
    /// Short name of the tenant to sign in to.
    #[arg(long, env = "POSTERN_TENANT")]
    tenant: String,
}

/// `postern admin tenants ...`
#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// List every tenant.
    List,
    /// Create a tenant with its first global administrator; the administrator's
    /// password is read from one line of standard input.
    Create {
        /// Short name (3–32 lowercase letters, digits, dashes).
        name: String,
        /// Name shown on sign-in pages.
        #[arg(long)]
        display_name: String,
        /// The tenant's first domain (verified at once: you vouch for it).
        #[arg(long)]
        domain: String,
        /// The administrator's sign-in name, someone@domain.
        #[arg(long)]
        admin: String,
    },
    /// Delete a tenant and everything it owns.
    Delete {
        /// The tenant's short name.
        name: String,
    },
    /// Vouch for a tenant's domain after checking its DNS TXT record.
    VerifyDomain {
        /// The tenant's short name.
        tenant: String,
        /// The domain.
        domain: String,
    },
    /// Set a tenant's own limits at the front door; a limit not given is the
    /// installation's again.
    Limits {
        /// The tenant's short name.
        name: String,
        /// Requests a second over all the tenant's apps (1–1000000).
        #[arg(long = "rate-limit")]
        rate_limit_per_sec: Option<i64>,
        /// Requests at once above that rate (default: twice the rate).
        #[arg(long = "rate-burst", requires = "rate_limit_per_sec")]
        rate_limit_burst: Option<i64>,
        /// Sign-ins waiting on the tenant's agents at once (1–10000).
        #[arg(long)]
        max_pending_signins: Option<i64>,
    },
}

/// `postern admin tenant ...`
#[derive(Subcommand, Debug)]
pub enum TenantCommand {
    /// Show the settings.
    Show,
    /// Change settings; the others stay as they are.
    Set {
        /// Failed sign-ins before an account is locked (1–100).
        #[arg(long)]
        lockout_threshold: Option<i64>,
        /// First lockout period in seconds (1–86400).
        #[arg(long)]
        lockout_seconds: Option<i64>,
        /// Whether every user must use MFA (true or false).
        #[arg(long)]
        require_mfa: Option<bool>,
    },
}

/// How a domain's passwords are checked.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AuthMode {
    /// Passwords kept by the service.
    Cloud,
    /// Passwords checked on-prem by an authentication agent.
    Passthrough,
}

impl From<AuthMode> for DomainAuthMode {
    fn from(mode: AuthMode) -> Self {
        match mode {
            AuthMode::Cloud => DomainAuthMode::Cloud,
            AuthMode::Passthrough => DomainAuthMode::Passthrough,
        }
    }
}

/// `postern admin domains ...`
#[derive(Subcommand, Debug)]
pub enum DomainsCommand {
    /// List the domains.
    List,
    /// Add a domain; the answer names the DNS TXT record that proves it is yours.
    Add {
        /// Domain name.
        name: String,
    },
    /// Show one domain.
    Show {
        /// Domain name.
        name: String,
    },
    /// Set how the domain's passwords are checked.
    SetAuthMode {
        /// Domain name.
        name: String,
        /// cloud or passthrough.
        #[arg(value_enum)]
        mode: AuthMode,
    },
    /// Ask for verification (an operator of the service vouches for domains).
    Verify {
        /// Domain name.
        name: String,
    },
    /// Remove a domain no user signs in with.
    Remove {
        /// Domain name.
        name: String,
    },
}

/// `postern admin users ...` (a user is named by ID or by username).
#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// List the users.
    List,
    /// Show one user.
    Show {
        /// ID or username.
        user: String,
    },
    /// Create a cloud user in a verified domain, or with --directory name a
    /// directory user of a pass-through domain before their first sign-in.
    Create {
        /// Sign-in name, someone@domain (for --directory: the UPN the
        /// directory reports).
        username: String,
        /// A directory user of a verified pass-through domain, named ahead so
        /// apps and groups can be assigned now; their first sign-in through an
        /// agent adopts the account.
        #[arg(long, conflicts_with = "password_stdin")]
        directory: bool,
        /// Name shown to people (default: the username).
        #[arg(long)]
        display_name: Option<String>,
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Always require MFA.
        #[arg(long)]
        mfa_required: bool,
        /// Read an initial password from one line of standard input (without
        /// one, the user cannot sign in until a password is set).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's profile.
    Update {
        /// ID or username.
        user: String,
        /// New display name.
        #[arg(long)]
        display_name: Option<String>,
        /// New email address.
        #[arg(long, conflicts_with = "clear_email")]
        email: Option<String>,
        /// Remove the email address.
        #[arg(long)]
        clear_email: bool,
        /// Whether the user must always use MFA (true or false).
        #[arg(long)]
        mfa_required: Option<bool>,
    },
    /// Disable a user (ends their sessions).
    Disable {
        /// ID or username.
        user: String,
    },
    /// Enable a disabled user.
    Enable {
        /// ID or username.
        user: String,
    },
    /// Delete a user.
    Delete {
        /// ID or username.
        user: String,
    },
    /// Set a new password, read from one line of standard input (ends the
    /// user's sessions).
    SetPassword {
        /// ID or username.
        user: String,
    },
    /// Remove the user's authenticator so they enrol again (ends their
    /// sessions).
    ResetMfa {
        /// ID or username.
        user: String,
    },
    /// The risk level an administrator sets for a user.
    #[command(subcommand)]
    Risk(UserRiskCommand),
}

/// `postern admin groups ...` (a group is named by ID or by name).
#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List the groups.
    List,
    /// Create a group, or with --directory name a directory group before any
    /// member signs in.
    Create {
        /// Unique name (for --directory: exactly as the agent reports it).
        name: String,
        /// A directory group: a pass-through sign-in whose agent reports this
        /// group name makes the user a member. Answers the existing one if it
        /// is there already.
        #[arg(long)]
        directory: bool,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one group.
    Show {
        /// ID or name.
        group: String,
    },
    /// Delete a group.
    Delete {
        /// ID or name.
        group: String,
    },
    /// List a group's members.
    Members {
        /// ID or name.
        group: String,
    },
    /// Add a user to a group.
    AddMember {
        /// ID or name of the group.
        group: String,
        /// ID or username.
        user: String,
    },
    /// Remove a user from a group.
    RemoveMember {
        /// ID or name of the group.
        group: String,
        /// ID or username.
        user: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(&s.replace('-', "_")).ok_or_else(|| {
        let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("roles are {}", all.join(", "))
    })
}

/// `postern admin roles ...`
#[derive(Subcommand, Debug)]
pub enum RolesCommand {
    /// List a user's roles.
    List {
        /// ID or username.
        user: String,
    },
    /// Give a user a role.
    Assign {
        /// ID or username.
        user: String,
        /// global_administrator, application_administrator or
        /// hybrid_identity_administrator.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
    /// Take a role from a user.
    Revoke {
        /// ID or username.
        user: String,
        /// The role.
        #[arg(value_parser = parse_role)]
        role: Role,
    },
}

/// `postern admin clients ...`
#[derive(Subcommand, Debug)]
pub enum ClientsCommand {
    /// List the clients.
    List,
    /// Show one client.
    Show {
        /// The client ID.
        client_id: String,
    },
    /// Register a client; a confidential client's secret is printed once.
    Create {
        /// Display name.
        name: String,
        /// A public client (no secret; may use the device flow).
        #[arg(long)]
        public: bool,
        /// Redirect URI (repeat for several).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// Post-logout redirect URI (repeat for several).
        #[arg(long = "post-logout-redirect-uri")]
        post_logout_redirect_uris: Vec<String>,
        /// Grant type (repeat): authorization_code, refresh_token,
        /// urn:ietf:params:oauth:grant-type:device_code.
        #[arg(long = "grant-type", required = true)]
        grant_types: Vec<String>,
        /// Extra scope (repeat).
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// Delete a client and revoke its tokens.
    Delete {
        /// The client ID.
        client_id: String,
    },
}

/// How users are let through to an app.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PreauthArg {
    /// Users sign in at the STS first.
    Sts,
    /// No pre-authentication.
    Passthrough,
}

impl From<PreauthArg> for Preauth {
    fn from(arg: PreauthArg) -> Self {
        match arg {
            PreauthArg::Sts => Preauth::Sts,
            PreauthArg::Passthrough => Preauth::Passthrough,
        }
    }
}

/// The settings of an app that `create` and `update` share. Unset flags take
/// the service's defaults on `create` and keep the app's value on `update`.
#[derive(Args, Debug)]
pub struct AppFlags {
    /// sts (users sign in first; the default) or passthrough.
    #[arg(long, value_enum)]
    preauth: Option<PreauthArg>,
    /// Connector group (name or ID) whose connectors serve the app (default:
    /// the default group).
    #[arg(long)]
    connector_group: Option<String>,
    /// Seconds the backend has to answer (1–3600, default 85).
    #[arg(long = "backend-timeout")]
    backend_timeout_secs: Option<i64>,
    /// Check the backend's TLS certificate (the default).
    #[arg(long, conflicts_with = "no_validate_backend_tls")]
    validate_backend_tls: bool,
    /// Do not check the backend's TLS certificate.
    #[arg(long)]
    no_validate_backend_tls: bool,
    /// Translate headers such as Location and cookies (the default).
    #[arg(long, conflicts_with = "no_translate_headers")]
    translate_headers: bool,
    /// Do not translate headers.
    #[arg(long)]
    no_translate_headers: bool,
    /// Translate links in HTML and CSS bodies.
    #[arg(long, conflicts_with = "no_translate_links")]
    translate_links: bool,
    /// Do not translate links in bodies (the default).
    #[arg(long)]
    no_translate_links: bool,
    /// Identity headers sent to the backend, comma-separated, among user,
    /// email, groups and assertion (default: all four).
    #[arg(long, value_delimiter = ',', conflicts_with = "no_identity_headers")]
    identity_headers: Option<Vec<String>>,
    /// Send no identity headers to the backend.
    #[arg(long)]
    no_identity_headers: bool,
    /// Requests a second the front door lets through to the app (default:
    /// the installation's, 500).
    #[arg(long = "rate-limit", conflicts_with = "default_limits")]
    rate_limit_per_sec: Option<i64>,
    /// Requests at once above that rate (default: twice the app's rate).
    #[arg(long = "rate-burst", conflicts_with = "default_limits")]
    rate_limit_burst: Option<i64>,
    /// Largest request body forwarded to the app, in bytes; 0 for no limit
    /// (default: the installation's, no limit).
    #[arg(long, conflicts_with = "default_limits")]
    max_body_bytes: Option<i64>,
    /// Drop the app's own rate and body limits: the installation's apply.
    #[arg(long)]
    default_limits: bool,
}

/// A switch given as a `--x` / `--no-x` pair (never both): `None` when
/// neither was given.
fn switch(on: bool, off: bool) -> Option<bool> {
    (on || off).then_some(on)
}

impl AppFlags {
    /// Applies the flags that were given to `settings`.
    fn apply(self, settings: &mut AppSettings) {
        if let Some(preauth) = self.preauth {
            settings.preauth = Some(preauth.into());
        }
        if self.connector_group.is_some() {
            settings.connector_group = self.connector_group;
        }
        if self.backend_timeout_secs.is_some() {
            settings.backend_timeout_secs = self.backend_timeout_secs;
        }
        let flags = [
            (
                &mut settings.validate_backend_tls,
                switch(self.validate_backend_tls, self.no_validate_backend_tls),
            ),
            (
                &mut settings.translate_headers,
                switch(self.translate_headers, self.no_translate_headers),
            ),
            (
                &mut settings.translate_links,
                switch(self.translate_links, self.no_translate_links),
            ),
        ];
        for (setting, given) in flags {
            if given.is_some() {
                *setting = given;
            }
        }
        if self.no_identity_headers {
            settings.identity_headers = Some(Vec::new());
        } else if self.identity_headers.is_some() {
            settings.identity_headers = self.identity_headers;
        }
        if self.default_limits {
            settings.rate_limit_per_sec = None;
            settings.rate_limit_burst = None;
            settings.max_body_bytes = None;
        }
        for (setting, given) in [
            (&mut settings.rate_limit_per_sec, self.rate_limit_per_sec),
            (&mut settings.rate_limit_burst, self.rate_limit_burst),
            (&mut settings.max_body_bytes, self.max_body_bytes),
        ] {
            if given.is_some() {
                *setting = given;
            }
        }
    }
}

/// Who an assignment is for: exactly one of `--user` and `--group`.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct PrincipalArg {
    /// A user: ID or username.
    #[arg(long)]
    user: Option<String>,
    /// A group: ID or name.
    #[arg(long)]
    group: Option<String>,
}

/// `postern admin apps ...` (an app is named by ID or by name).
#[derive(Subcommand, Debug)]
pub enum AppsCommand {
    /// List the apps.
    List,
    /// Show one app.
    Show {
        /// ID or name.
        app: String,
    },
    /// Publish an app. It gets its own OIDC client at the STS, whose redirect
    /// URI is the external URL followed by `.postern/callback`.
    Create {
        /// Unique name.
        name: String,
        /// Where users reach it, e.g. `https://wiki.example.com/docs/`.
        #[arg(long)]
        external_url: String,
        /// Where connectors forward to, e.g. `http://wiki.corp.local:8080/`.
        #[arg(long)]
        internal_url: String,
        /// The other settings.
        #[command(flatten)]
        flags: AppFlags,
    },
    /// Change an app's settings; those not given stay as they are.
    Update {
        /// ID or name.
        app: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New external URL (the OIDC client's redirect URI follows).
        #[arg(long)]
        external_url: Option<String>,
        /// New internal URL.
        #[arg(long)]
        internal_url: Option<String>,
        /// The other settings.
        #[command(flatten)]
        flags: AppFlags,
    },
    /// Unpublish an app, with its OIDC client and assignments.
    Delete {
        /// ID or name.
        app: String,
    },
    /// List who may use an app.
    Assignments {
        /// ID or name.
        app: String,
    },
    /// Let a user, or the members of a group, use an app.
    Assign {
        /// ID or name of the app.
        app: String,
        /// The user or group.
        #[command(flatten)]
        principal: PrincipalArg,
    },
    /// Remove an assignment.
    Unassign {
        /// ID or name of the app.
        app: String,
        /// The user or group.
        #[command(flatten)]
        principal: PrincipalArg,
    },
}

/// `postern admin connectors ...` (a connector is named by ID, or by host
/// name when only one has it).
#[derive(Subcommand, Debug)]
pub enum ConnectorsCommand {
    /// List the connectors with their group and status.
    List,
    /// Show one connector.
    Show {
        /// ID or host name.
        connector: String,
    },
    /// Remove a connector: its certificate is revoked at once and it is refused
    /// from its next request on.
    Delete {
        /// ID or host name.
        connector: String,
    },
    /// Move a connector to another connector group.
    Move {
        /// ID or host name.
        connector: String,
        /// Name or ID of the group.
        group: String,
    },
}

/// `postern admin agents ...` (an agent is named by ID, or by host name when
/// only one has it).
#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// List the authentication agents with their status.
    List,
    /// Show one agent.
    Show {
        /// ID or host name.
        agent: String,
    },
    /// Remove an agent: its certificate is revoked at once and it is refused
    /// from its next request on.
    Delete {
        /// ID or host name.
        agent: String,
    },
}

/// `postern admin connector-groups ...` (a group is named by ID or by name).
#[derive(Subcommand, Debug)]
pub enum ConnectorGroupsCommand {
    /// List the groups with the number of their connectors.
    List,
    /// Create a group.
    Create {
        /// Unique name: letters, digits, spaces, dashes, underscores, dots.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show a group with its connectors.
    Show {
        /// ID or name.
        group: String,
    },
    /// Delete a group without connectors (not the default group).
    Delete {
        /// ID or name.
        group: String,
    },
}

/// What a registration token registers.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    /// Connectors (needs the application administrator role).
    Connector,
    /// Authentication agents (needs the hybrid identity administrator role).
    Agent,
}

impl From<KindArg> for ComponentKind {
    fn from(kind: KindArg) -> Self {
        match kind {
            KindArg::Connector => ComponentKind::Connector,
            KindArg::Agent => ComponentKind::Agent,
        }
    }
}

/// `postern admin registration-tokens ...`
#[derive(Subcommand, Debug)]
pub enum RegistrationTokensCommand {
    /// Mint a token for unattended installs. The token alone is printed on
    /// stdout, once; the service keeps only its digest.
    Create {
        /// What it registers.
        #[arg(long, value_enum)]
        kind: KindArg,
        /// Connector group the connectors join (connectors only; default: the
        /// default group).
        #[arg(long)]
        group: Option<String>,
        /// Lifetime in seconds (60–86400, default 3600).
        #[arg(long = "ttl")]
        ttl_secs: Option<i64>,
        /// How many registrations it allows (1–100, default 1).
        #[arg(long)]
        uses: Option<i64>,
    },
}

/// `postern admin audit ...`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Audit entries of this tenant, oldest first.
    List {
        /// Only entries after this sequence number.
        #[arg(long)]
        after: Option<i64>,
        /// At most this many entries (1–1000, default 100).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Check the installation's audit hash chain (operators only).
    Verify,
}

/// `postern admin signing-keys ...`
#[derive(Subcommand, Debug)]
pub enum SigningKeysCommand {
    /// Replace the token-signing key now; the old one stays published until the
    /// tokens it signed expire.
    Rotate,
}

/// `postern admin cookie-keys ...`
#[derive(Subcommand, Debug)]
pub enum CookieKeysCommand {
    /// Seal app sessions with a new key now; sessions sealed with older keys keep
    /// working until they expire, unless `--revoke-older`.
    Rotate {
        /// Also delete every older key: every app session and sign-in in
        /// progress ends (after a suspected leak of the database and KEK).
        #[arg(long)]
        revoke_older: bool,
    },
}

/// Runs an admin subcommand.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    let file = CredentialFile::default_location(|name| std::env::var_os(name))?;
    match cmd {
        AdminCommand::Login(args) => login(&file, args).await,
        AdminCommand::Logout => logout(&file).await,
        command => {
            let client = file.admin_client(SystemClock.now(), DEFAULT_TIMEOUT).await?;
            manage(&client, command).await
        }
    }
}

/// Signs in with the device flow, stores the credentials and shows `whoami`.
async fn login(file: &CredentialFile, args: LoginArgs) -> anyhow::Result<()> {
    let issuer = Issuer::new(&args.server, &args.tenant)?;
    let oauth = PublicClient::new(issuer.clone(), CLI_CLIENT_ID, DEFAULT_TIMEOUT)?;
    let authorization = oauth.start_device_authorization(LOGIN_SCOPE).await?;
    eprintln!(
        "To sign in, open {}\nand check that it shows the code {}.",
        authorization.verification_url(),
        authorization.user_code
    );
    eprintln!(
        "Waiting for the sign-in (up to {} minutes; Ctrl-C gives up)…",
        DEFAULT_MAX_WAIT.as_secs() / 60
    );
    let tokens = oauth.wait_for_device_tokens(&authorization, DEFAULT_MAX_WAIT).await?;
    let credentials = Credentials::new(&issuer, CLI_CLIENT_ID, tokens, SystemClock.now());
    let server = credentials.server.clone();
    let access_token = credentials.access_token.clone();
    file.save(&credentials)?;
    eprintln!("Signed in; credentials saved to {}.", file.path().display());
    let client = AdminClient::new(&server, access_token, DEFAULT_TIMEOUT)?;
    print_json(&client.me().await?)
}

/// Revokes the refresh token (best effort) and deletes the credentials.
async fn logout(file: &CredentialFile) -> anyhow::Result<()> {
    let Some(credentials) = file.load()? else {
        eprintln!("Not signed in.");
        return Ok(());
    };
    if let Some(refresh_token) = &credentials.refresh_token {
        let revoked = async {
            PublicClient::new(credentials.issuer()?, &credentials.client_id, DEFAULT_TIMEOUT)?
                .revoke(refresh_token)
                .await
        }
        .await;
        if let Err(e) = revoked {
            eprintln!("warning: could not revoke the session at the service ({e}); it ends when it expires");
        }
    }
    file.remove()?;
    eprintln!("Signed out.");
    Ok(())
}

/// Every command that calls the admin API with the stored credentials.
async fn manage(client: &AdminClient, command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Login(_) | AdminCommand::Logout => bail!("handled before signing in"),
        AdminCommand::Whoami => print_json(&client.me().await?),
        AdminCommand::Tenants(cmd) => tenants(client, cmd).await,
        AdminCommand::Tenant(TenantCommand::Show) => print_json(&client.tenant().await?),
        AdminCommand::Tenant(TenantCommand::Set {
            lockout_threshold,
            lockout_seconds,
            require_mfa,
        }) => {
            let update = UpdateTenantSettings {
                lockout_threshold,
                lockout_seconds,
                require_mfa,
            };
            print_json(&client.update_tenant(&update).await?)
        }
        AdminCommand::Domains(cmd) => domains(client, cmd).await,
        AdminCommand::Users(cmd) => users(client, cmd).await,
        AdminCommand::Groups(cmd) => groups(client, cmd).await,
        AdminCommand::Roles(cmd) => roles(client, cmd).await,
        AdminCommand::Clients(cmd) => clients(client, cmd).await,
        AdminCommand::Apps(cmd) => apps(client, cmd).await,
        AdminCommand::Connectors(cmd) => connectors(client, cmd).await,
        AdminCommand::Agents(cmd) => agents(client, cmd).await,
        AdminCommand::ConnectorGroups(cmd) => connector_groups(client, cmd).await,
        AdminCommand::RegistrationTokens(cmd) => registration_tokens(client, cmd).await,
        AdminCommand::Policies(cmd) => policies::policies(client, cmd).await,
        AdminCommand::Locations(cmd) => policies::locations(client, cmd).await,
        AdminCommand::Signins { since, limit } => print_json(&client.signins(&SigninQuery { since, limit }).await?),
        AdminCommand::Audit(AuditCommand::List { after, limit }) => {
            print_json(&client.audit(&AuditQuery { after, limit }).await?)
        }
        AdminCommand::Audit(AuditCommand::Verify) => {
            let status = client.verify_audit().await?;
            print_json(&status)?;
            if !status.intact {
                bail!("{}", broken_chain_message(&status));
            }
            Ok(())
        }
        AdminCommand::SigningKeys(SigningKeysCommand::Rotate) => print_json(&client.rotate_signing_key().await?),
        AdminCommand::CookieKeys(CookieKeysCommand::Rotate { revoke_older }) => {
            print_json(&client.rotate_cookie_key(revoke_older).await?)
        }
        AdminCommand::Releases(cmd) => updates::releases(client, cmd).await,
        AdminCommand::Updates(cmd) => updates::updates(client, cmd).await,
    }
}

async fn tenants(client: &AdminClient, cmd: TenantsCommand) -> anyhow::Result<()> {
    match cmd {
        TenantsCommand::List => print_json(&client.tenants().await?),
        TenantsCommand::Create {
            name,
            display_name,
            domain,
            admin,
        } => {
            let admin_password = read_secret_line("the administrator's password")?;
            let request = CreateTenant {
                name,
                display_name,
                domain,
                admin_username: admin,
                admin_password,
            };
            print_json(&client.create_tenant(&request).await?)
        }
        TenantsCommand::Delete { name } => done(client.delete_tenant(&name).await, "tenant deleted"),
        TenantsCommand::VerifyDomain { tenant, domain } => {
            print_json(&client.verify_tenant_domain(&tenant, &domain).await?)
        }
        TenantsCommand::Limits {
            name,
            rate_limit_per_sec,
            rate_limit_burst,
            max_pending_signins,
        } => {
            let limits = postern_client::wire::TenantLimitsView {
                rate_limit_per_sec,
                rate_limit_burst,
                max_pending_signins,
            };
            print_json(&client.set_tenant_limits(&name, &limits).await?)
        }
    }
}

async fn domains(client: &AdminClient, cmd: DomainsCommand) -> anyhow::Result<()> {
    match cmd {
        DomainsCommand::List => print_json(&client.domains().await?),
        DomainsCommand::Add { name } => print_json(&client.create_domain(&name).await?),
        DomainsCommand::Show { name } => print_json(&client.domain(&name).await?),
        DomainsCommand::SetAuthMode { name, mode } => {
            print_json(&client.set_domain_auth_mode(&name, mode.into()).await?)
        }
        DomainsCommand::Verify { name } => print_json(&client.verify_domain(&name).await?),
        DomainsCommand::Remove { name } => done(client.delete_domain(&name).await, "domain removed"),
    }
}

async fn users(client: &AdminClient, cmd: UsersCommand) -> anyhow::Result<()> {
    match cmd {
        UsersCommand::List => print_json(&client.users().await?),
        UsersCommand::Risk(cmd) => policies::user_risk(client, cmd).await,
        UsersCommand::Show { user } => print_json(&client.user(&user_id(client, &user).await?).await?),
        UsersCommand::Create {
            username,
            directory: true,
            display_name,
            email,
            mfa_required,
            password_stdin: _,
        } => {
            let request = NameDirectoryUser {
                username,
                display_name,
                email,
                mfa_required,
            };
            print_json(&client.name_directory_user(&request).await?)
        }
        UsersCommand::Create {
            username,
            directory: false,
            display_name,
            email,
            mfa_required,
            password_stdin,
        } => {
            let password = password_stdin.then(|| read_secret_line("the password")).transpose()?;
            let request = CreateUser {
                username,
                display_name,
                email,
                password,
                mfa_required,
            };
            print_json(&client.create_user(&request).await?)
        }
        UsersCommand::Update {
            user,
            display_name,
            email,
            clear_email,
            mfa_required,
        } => {
            let update = UpdateUser {
                display_name,
                email: if clear_email { Some(None) } else { email.map(Some) },
                enabled: None,
                mfa_required,
            };
            update_user(client, &user, update).await
        }
        UsersCommand::Disable { user } => update_user(client, &user, enabled(false)).await,
        UsersCommand::Enable { user } => update_user(client, &user, enabled(true)).await,
        UsersCommand::Delete { user } => {
            let id = user_id(client, &user).await?;
            done(client.delete_user(&id).await, "user deleted")
        }
        UsersCommand::SetPassword { user } => {
            let id = user_id(client, &user).await?;
            let password = read_secret_line("the new password")?;
            done(
                client.set_password(&id, password).await,
                "password set; the user's sessions ended",
            )
        }
        UsersCommand::ResetMfa { user } => {
            let id = user_id(client, &user).await?;
            done(
                client.reset_mfa(&id).await,
                "MFA reset; the user enrols again at next sign-in",
            )
        }
    }
}

fn enabled(enabled: bool) -> UpdateUser {
    UpdateUser {
        enabled: Some(enabled),
        ..UpdateUser::default()
    }
}

async fn update_user(client: &AdminClient, user: &str, update: UpdateUser) -> anyhow::Result<()> {
    let id = user_id(client, user).await?;
    print_json(&client.update_user(&id, &update).await?)
}

async fn groups(client: &AdminClient, cmd: GroupsCommand) -> anyhow::Result<()> {
    match cmd {
        GroupsCommand::List => print_json(&client.groups().await?),
        GroupsCommand::Create {
            name,
            description,
            directory: false,
        } => print_json(&client.create_group(&CreateGroup { name, description }).await?),
        GroupsCommand::Create {
            name,
            description,
            directory: true,
        } => print_json(
            &client
                .ensure_directory_group(&CreateGroup { name, description })
                .await?,
        ),
        GroupsCommand::Show { group } => print_json(&client.group(&group_id(client, &group).await?).await?),
        GroupsCommand::Delete { group } => {
            let id = group_id(client, &group).await?;
            done(client.delete_group(&id).await, "group deleted")
        }
        GroupsCommand::Members { group } => print_json(&client.group_members(&group_id(client, &group).await?).await?),
        GroupsCommand::AddMember { group, user } => {
            let (group, user) = (group_id(client, &group).await?, user_id(client, &user).await?);
            done(client.add_member(&group, &user).await, "member added")
        }
        GroupsCommand::RemoveMember { group, user } => {
            let (group, user) = (group_id(client, &group).await?, user_id(client, &user).await?);
            done(client.remove_member(&group, &user).await, "member removed")
        }
    }
}

async fn roles(client: &AdminClient, cmd: RolesCommand) -> anyhow::Result<()> {
    match cmd {
        RolesCommand::List { user } => print_json(&client.user_roles(&user_id(client, &user).await?).await?),
        RolesCommand::Assign { user, role } => {
            print_json(&client.assign_role(&user_id(client, &user).await?, role).await?)
        }
        RolesCommand::Revoke { user, role } => {
            print_json(&client.revoke_role(&user_id(client, &user).await?, role).await?)
        }
    }
}

async fn clients(client: &AdminClient, cmd: ClientsCommand) -> anyhow::Result<()> {
    match cmd {
        ClientsCommand::List => print_json(&client.clients().await?),
        ClientsCommand::Show { client_id } => print_json(&client.client(&client_id).await?),
        ClientsCommand::Create {
            name,
            public,
            redirect_uris,
            post_logout_redirect_uris,
            grant_types,
            scopes,
        } => {
            let request = CreateClient {
                name,
                client_type: if public {
                    ClientType::Public
                } else {
                    ClientType::Confidential
                },
                redirect_uris,
                post_logout_redirect_uris,
                grant_types,
                scopes,
            };
            let created = client.create_client(&request).await?;
            if created.client_secret.is_some() {
                eprintln!("Store the client_secret now: it is shown this once.");
            }
            print_json(&created)
        }
        ClientsCommand::Delete { client_id } => done(client.delete_client(&client_id).await, "client deleted"),
    }
}

async fn apps(client: &AdminClient, cmd: AppsCommand) -> anyhow::Result<()> {
    match cmd {
        AppsCommand::List => {
            let apps = client.apps().await?;
            warn_host_problems(&apps);
            print_json(&apps)
        }
        AppsCommand::Show { app } => print_json(&find_app(client, &app).await?),
        AppsCommand::Create {
            name,
            external_url,
            internal_url,
            flags,
        } => {
            let mut settings = AppSettings {
                name,
                external_url,
                internal_url,
                preauth: None,
                connector_group: None,
                backend_timeout_secs: None,
                validate_backend_tls: None,
                translate_headers: None,
                translate_links: None,
                identity_headers: None,
                rate_limit_per_sec: None,
                rate_limit_burst: None,
                max_body_bytes: None,
            };
            flags.apply(&mut settings);
            print_json(&client.create_app(&settings).await?)
        }
        AppsCommand::Update {
            app,
            name,
            external_url,
            internal_url,
            flags,
        } => {
            let current = find_app(client, &app).await?;
            let id = current.id.clone();
            let mut settings = settings_of(current);
            settings.name = name.unwrap_or(settings.name);
            settings.external_url = external_url.unwrap_or(settings.external_url);
            settings.internal_url = internal_url.unwrap_or(settings.internal_url);
            flags.apply(&mut settings);
            print_json(&client.replace_app(&id, &settings).await?)
        }
        AppsCommand::Delete { app } => {
            let id = find_app(client, &app).await?.id;
            done(client.delete_app(&id).await, "app deleted, with its OIDC client")
        }
        AppsCommand::Assignments { app } => {
            print_json(&client.app_assignments(&find_app(client, &app).await?.id).await?)
        }
        AppsCommand::Assign { app, principal } => {
            let id = find_app(client, &app).await?.id;
            let (kind, principal) = principal_id(principal)?;
            print_json(&client.assign_app(&id, kind, &principal).await?)
        }
        AppsCommand::Unassign { app, principal } => {
            let id = find_app(client, &app).await?.id;
            let (kind, principal) = principal_id(principal)?;
            done(client.unassign_app(&id, kind, &principal).await, "assignment removed")
        }
    }
}

/// The settings an app has now, to be changed and sent back whole.
fn settings_of(app: AppView) -> AppSettings {
    AppSettings {
        name: app.name,
        external_url: app.external_url,
        internal_url: app.internal_url,
        preauth: Some(app.preauth),
        connector_group: Some(app.connector_group.id),
        backend_timeout_secs: Some(app.backend_timeout_secs),
        validate_backend_tls: Some(app.validate_backend_tls),
        translate_headers: Some(app.translate_headers),
        translate_links: Some(app.translate_links),
        identity_headers: Some(app.identity_headers),
        rate_limit_per_sec: app.rate_limit_per_sec,
        rate_limit_burst: app.rate_limit_burst,
        max_body_bytes: app.max_body_bytes,
    }
}

/// The app named by `app`: its ID or its name.
async fn find_app(client: &AdminClient, app: &str) -> anyhow::Result<AppView> {
    client
        .apps()
        .await?
        .into_iter()
        .find(|a| a.id == app || a.name == app)
        .with_context(|| format!("no app {app} in this tenant"))
}

/// The kind and ID of the user or group an assignment names.
/// The principal as the assignment routes take it: the service resolves an ID,
/// a username or a group name (an application administrator may not list users
/// or groups to look the ID up).
fn principal_id(principal: PrincipalArg) -> anyhow::Result<(PrincipalKind, String)> {
    match (principal.user, principal.group) {
        (Some(user), _) => Ok((PrincipalKind::User, user.trim().to_owned())),
        (None, Some(group)) => Ok((PrincipalKind::Group, group.trim().to_owned())),
        (None, None) => bail!("name a user (--user) or a group (--group)"),
    }
}

async fn connectors(client: &AdminClient, cmd: ConnectorsCommand) -> anyhow::Result<()> {
    let kind = ComponentKind::Connector;
    match cmd {
        ConnectorsCommand::List => print_json(&client.connectors().await?),
        ConnectorsCommand::Show { connector } => {
            let id = component_id(kind, client.connectors().await?, &connector)?;
            print_json(&client.connector(&id).await?)
        }
        ConnectorsCommand::Delete { connector } => {
            let id = component_id(kind, client.connectors().await?, &connector)?;
            done(
                client.delete_connector(&id).await,
                "connector deleted; its certificate is revoked and refused from its next request",
            )
        }
        ConnectorsCommand::Move { connector, group } => {
            let id = component_id(kind, client.connectors().await?, &connector)?;
            print_json(&client.move_connector(&id, &group).await?)
        }
    }
}

async fn agents(client: &AdminClient, cmd: AgentsCommand) -> anyhow::Result<()> {
    let kind = ComponentKind::Agent;
    match cmd {
        AgentsCommand::List => print_json(&client.agents().await?),
        AgentsCommand::Show { agent } => {
            let id = component_id(kind, client.agents().await?, &agent)?;
            print_json(&client.agent(&id).await?)
        }
        AgentsCommand::Delete { agent } => {
            let id = component_id(kind, client.agents().await?, &agent)?;
            done(
                client.delete_agent(&id).await,
                "agent deleted; its certificate is revoked and refused from its next request",
            )
        }
    }
}

async fn connector_groups(client: &AdminClient, cmd: ConnectorGroupsCommand) -> anyhow::Result<()> {
    match cmd {
        ConnectorGroupsCommand::List => print_json(&client.connector_groups().await?),
        ConnectorGroupsCommand::Create { name, description } => print_json(
            &client
                .create_connector_group(&CreateConnectorGroup { name, description })
                .await?,
        ),
        ConnectorGroupsCommand::Show { group } => print_json(
            &client
                .connector_group(&connector_group_id(client, &group).await?)
                .await?,
        ),
        ConnectorGroupsCommand::Delete { group } => {
            let id = connector_group_id(client, &group).await?;
            done(client.delete_connector_group(&id).await, "connector group deleted")
        }
    }
}

async fn registration_tokens(client: &AdminClient, cmd: RegistrationTokensCommand) -> anyhow::Result<()> {
    match cmd {
        RegistrationTokensCommand::Create {
            kind,
            group,
            ttl_secs,
            uses,
        } => {
            let request = CreateRegistrationToken {
                kind: kind.into(),
                group,
                ttl_secs,
                uses,
            };
            let created = client.create_registration_token(&request).await?;
            let group = created
                .group
                .as_ref()
                .map(|g| format!(" joining group {}", g.name))
                .unwrap_or_default();
            eprintln!(
                "warning: this registration token is a secret. Until {} (Unix time) it registers up to {} {}(s){group} \
                 in this tenant, for anyone who holds it. It is shown this once and the service keeps only its \
                 digest: hand it to the installer (--token or POSTERN_REGISTRATION_TOKEN) over a safe channel.",
                created.expires_at, created.uses, created.kind
            );
            print_secret(&created.token)
        }
    }
}

/// The ID of the component named by `name`, among `all` of `kind`: an ID, or a
/// host name only one of them has.
fn component_id(kind: ComponentKind, all: Vec<ComponentView>, name: &str) -> anyhow::Result<String> {
    if let Some(c) = all.iter().find(|c| c.id == name) {
        return Ok(c.id.clone());
    }
    let mut named = all.into_iter().filter(|c| c.name.eq_ignore_ascii_case(name));
    match (named.next(), named.next()) {
        (Some(c), None) => Ok(c.id),
        (Some(_), Some(_)) => bail!("several {kind}s are named {name}; give the ID (see `list`)"),
        (None, _) => bail!("no {kind} {name} in this tenant"),
    }
}

/// The ID of the connector group named by `group`: its ID or its name.
async fn connector_group_id(client: &AdminClient, group: &str) -> anyhow::Result<String> {
    client
        .connector_groups()
        .await?
        .into_iter()
        .find(|g| g.id == group || g.name == group)
        .map(|g| g.id)
        .with_context(|| format!("no connector group {group} in this tenant"))
}

/// The ID of the user named by `user`: an ID as given, or a username (it has
/// an `@`) looked up in the tenant.
async fn user_id(client: &AdminClient, user: &str) -> anyhow::Result<String> {
    if !user.contains('@') {
        return Ok(user.to_owned());
    }
    let wanted = user.trim().to_lowercase();
    client
        .users()
        .await?
        .into_iter()
        .find(|u| u.username == wanted)
        .map(|u| u.id)
        .with_context(|| format!("no user {wanted} in this tenant"))
}

/// The ID of the group named by `group`: its ID or its name. A caller who may
/// not list groups (an application administrator) names it by ID.
async fn group_id(client: &AdminClient, group: &str) -> anyhow::Result<String> {
    let groups = match client.groups().await {
        Ok(groups) => groups,
        Err(e) if e.status() == Some(403) => return Ok(group.to_owned()),
        Err(e) => return Err(e.into()),
    };
    groups
        .into_iter()
        .find(|g| g.id == group || g.name == group)
        .map(|g| g.id)
        .with_context(|| format!("no group {group} in this tenant"))
}

/// Reads one line of standard input as a secret, without a prompt.
fn read_secret_line(what: &str) -> anyhow::Result<SecretString> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("Reading {what} from standard input (it is not hidden; prefer piping it in).");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read {what} from standard input"))?;
    // Trimmed in place, so the only copy of the password is the one that is
    // zeroed when dropped.
    let len = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(len);
    let secret = SecretString::new(line);
    if secret.is_empty() {
        bail!("expected {what} on one line of standard input");
    }
    Ok(secret)
}

/// Reports a command without an answer body.
fn done(result: Result<(), ClientError>, message: &str) -> anyhow::Result<()> {
    result?;
    eprintln!("{message}");
    Ok(())
}

/// Tells on standard error about apps that are not served because their
/// organisation may not publish on their host (SEC-12).
fn warn_host_problems(apps: &[AppView]) {
    for app in apps {
        if let Some(problem) = &app.host_problem {
            eprintln!(
                "warning: app {} is not served at {}: {problem}",
                app.name, app.external_url
            );
        }
    }
}

/// What `audit verify` says about a broken chain: the first broken entry
/// and what is wrong with it.
fn broken_chain_message(status: &AuditChainStatus) -> String {
    let entry = status
        .first_broken_seq
        .map_or_else(|| "an unknown entry".to_owned(), |seq| format!("entry {seq}"));
    match &status.problem {
        Some(problem) => format!("the audit chain is broken at {entry}: {problem}"),
        None => format!("the audit chain is broken at {entry}"),
    }
}

/// Prints a result as pretty JSON on stdout.
#[allow(clippy::print_stdout)] // stdout carries the command's result, for people and scripts.
fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    // People at a terminal read dates; a script reading a pipe gets the API's
    // own JSON (Unix seconds), which it can parse into the wire types.
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        times_as_dates(&mut value);
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// Whether a field of this name holds a point in time (Unix seconds on the
/// wire): `created_at`, `locked_until`, `not_after`, `at`, …
fn is_time_field(name: &str) -> bool {
    name.ends_with("_at")
        || name.ends_with("_until")
        || matches!(name, "at" | "since" | "not_after" | "not_before" | "expires" | "expiry")
}

/// Rewrites every time field of `value` from Unix seconds to an RFC 3339 date
/// in UTC (`2026-12-05T22:38:37Z`), so that people read dates, not numbers.
/// Numbers that are not plausible times (before 2001 or after 2286) are left
/// as they are.
fn times_as_dates(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                let date = match &*field {
                    Value::Number(n) if is_time_field(name) => n.as_i64().and_then(rfc3339),
                    _ => None,
                };
                match date {
                    Some(date) => *field = Value::String(date),
                    None => times_as_dates(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(times_as_dates),
        _ => {}
    }
}

/// `secs` as an RFC 3339 date in UTC, if it is a plausible time.
fn rfc3339(secs: i64) -> Option<String> {
    if !(1_000_000_000..10_000_000_000).contains(&secs) {
        return None;
    }
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// Prints a secret the user asked for (a new registration token) alone on
/// stdout, so that a script can capture it.
#[allow(clippy::print_stdout)] // the secret is the command's result.
fn print_secret(secret: &SecretString) -> anyhow::Result<()> {
    println!("{}", secret.expose());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: AdminCommand,
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("admin").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn times_print_as_dates() {
        let mut v = serde_json::json!({
            "created_at": 1_764_974_317,
            "locked_until": 1_764_974_317,
            "lockout_threshold": 10,
            "size": 1_764_974_317,
            "expires_at": 0,
            "items": [{"at": 1_700_000_000, "expires_at": null}],
        });
        times_as_dates(&mut v);
        assert_eq!(v["created_at"], "2025-12-05T22:38:37Z");
        assert_eq!(v["locked_until"], "2025-12-05T22:38:37Z");
        assert_eq!(v["lockout_threshold"], 10, "not a time field");
        assert_eq!(v["size"], 1_764_974_317, "not a time field");
        assert_eq!(v["expires_at"], 0, "not a plausible time: left as it is");
        assert_eq!(v["items"][0]["at"], "2023-11-14T22:13:20Z");
        assert!(v["items"][0]["expires_at"].is_null());
    }

    #[test]
    fn commands_parse() {
        assert!(matches!(
            parse(&["login", "--server", "https://p.example", "--tenant", "acme"]),
            Ok(AdminCommand::Login(_))
        ));
        assert!(matches!(
            parse(&["roles", "assign", "jo@acme.test", "global-administrator"]),
            Ok(AdminCommand::Roles(RolesCommand::Assign {
                role: Role::GlobalAdministrator,
                ..
            }))
        ));
        assert!(parse(&["roles", "assign", "jo@acme.test", "root"]).is_err());
        assert!(matches!(
            parse(&["domains", "set-auth-mode", "acme.test", "passthrough"]),
            Ok(AdminCommand::Domains(DomainsCommand::SetAuthMode {
                mode: AuthMode::Passthrough,
                ..
            }))
        ));
        assert!(matches!(
            parse(&["tenant", "set", "--require-mfa", "true"]),
            Ok(AdminCommand::Tenant(TenantCommand::Set {
                require_mfa: Some(true),
                ..
            }))
        ));
        // Passwords never come from the command line.
        assert!(parse(&["users", "set-password", "jo@acme.test", "hunter2hunter2"]).is_err());
        assert!(parse(&["users", "create", "jo@acme.test", "--password", "x"]).is_err());
        assert!(parse(&["users", "update", "jo", "--email", "a@b.test", "--clear-email"]).is_err());
        assert!(
            parse(&["clients", "create", "wiki"]).is_err(),
            "a grant type is required"
        );
        assert!(matches!(
            parse(&[
                "registration-tokens",
                "create",
                "--kind",
                "connector",
                "--group",
                "DMZ west",
                "--ttl",
                "600",
                "--uses",
                "3"
            ]),
            Ok(AdminCommand::RegistrationTokens(RegistrationTokensCommand::Create {
                kind: KindArg::Connector,
                ttl_secs: Some(600),
                uses: Some(3),
                ..
            }))
        ));
        assert!(parse(&["registration-tokens", "create"]).is_err(), "a kind is required");
        assert!(parse(&["registration-tokens", "create", "--kind", "printer"]).is_err());
        assert!(matches!(
            parse(&["connectors", "move", "gw1", "dmz"]),
            Ok(AdminCommand::Connectors(ConnectorsCommand::Move { .. }))
        ));
        assert!(matches!(
            parse(&["agents", "delete", "dc1"]),
            Ok(AdminCommand::Agents(AgentsCommand::Delete { .. }))
        ));
        assert!(matches!(
            parse(&["connector-groups", "create", "dmz", "--description", "second site"]),
            Ok(AdminCommand::ConnectorGroups(ConnectorGroupsCommand::Create { .. }))
        ));
        assert!(
            parse(&["agents", "move", "dc1", "dmz"]).is_err(),
            "agents have no groups"
        );
    }

    #[test]
    fn app_commands_parse() {
        let Ok(AdminCommand::Apps(AppsCommand::Create { flags, .. })) = parse(&[
            "apps",
            "create",
            "wiki",
            "--external-url",
            "https://wiki.example.com/",
            "--internal-url",
            "http://wiki.corp/",
            "--no-validate-backend-tls",
            "--translate-links",
            "--identity-headers",
            "user,email",
        ]) else {
            panic!("apps create does not parse");
        };
        let mut settings = AppSettings {
            name: "wiki".into(),
            external_url: String::new(),
            internal_url: String::new(),
            preauth: None,
            connector_group: None,
            backend_timeout_secs: None,
            validate_backend_tls: None,
            translate_headers: Some(false),
            translate_links: None,
            identity_headers: None,
            rate_limit_per_sec: None,
            rate_limit_burst: None,
            max_body_bytes: None,
        };
        flags.apply(&mut settings);
        assert_eq!(settings.validate_backend_tls, Some(false));
        assert_eq!(settings.translate_links, Some(true));
        assert_eq!(settings.translate_headers, Some(false), "unset flags keep the value");
        assert_eq!(settings.identity_headers, Some(vec!["user".into(), "email".into()]));
        assert!(
            parse(&["apps", "create", "wiki", "--external-url", "https://w.example.com/"]).is_err(),
            "the internal URL is required"
        );
        for both in [
            &["--translate-links", "--no-translate-links"][..],
            &["--identity-headers", "user", "--no-identity-headers"],
        ] {
            let args = [&["apps", "update", "wiki"][..], both].concat();
            assert!(parse(&args).is_err(), "{args:?}");
        }
        let Ok(AdminCommand::Apps(AppsCommand::Update { flags, .. })) = parse(&[
            "apps",
            "update",
            "wiki",
            "--rate-limit",
            "50",
            "--max-body-bytes",
            "1048576",
        ]) else {
            panic!("apps update with limits does not parse");
        };
        settings.rate_limit_burst = Some(7);
        flags.apply(&mut settings);
        assert_eq!(
            (
                settings.rate_limit_per_sec,
                settings.rate_limit_burst,
                settings.max_body_bytes
            ),
            (Some(50), Some(7), Some(1_048_576))
        );
        let Ok(AdminCommand::Apps(AppsCommand::Update { flags, .. })) =
            parse(&["apps", "update", "wiki", "--default-limits"])
        else {
            panic!("apps update --default-limits does not parse");
        };
        flags.apply(&mut settings);
        assert_eq!(
            (
                settings.rate_limit_per_sec,
                settings.rate_limit_burst,
                settings.max_body_bytes
            ),
            (None, None, None)
        );
        assert!(parse(&["apps", "update", "wiki", "--default-limits", "--rate-limit", "5"]).is_err());
        assert!(matches!(
            parse(&[
                "tenants",
                "limits",
                "beta",
                "--rate-limit",
                "100",
                "--max-pending-signins",
                "20"
            ]),
            Ok(AdminCommand::Tenants(TenantsCommand::Limits {
                rate_limit_per_sec: Some(100),
                rate_limit_burst: None,
                max_pending_signins: Some(20),
                ..
            }))
        ));
        assert!(
            parse(&["tenants", "limits", "beta", "--rate-burst", "100"]).is_err(),
            "a burst needs a rate"
        );
        assert!(parse(&["apps", "assign", "wiki"]).is_err(), "a user or a group");
        assert!(parse(&["apps", "assign", "wiki", "--user", "jo", "--group", "staff"]).is_err());
        assert!(matches!(
            parse(&["apps", "unassign", "wiki", "--group", "staff"]),
            Ok(AdminCommand::Apps(AppsCommand::Unassign { .. }))
        ));
        assert!(
            parse(&[
                "apps",
                "create",
                "w",
                "--external-url",
                "x",
                "--internal-url",
                "y",
                "--preauth",
                "x"
            ])
            .is_err()
        );
    }

    fn view(id: &str, name: &str) -> ComponentView {
        serde_json::from_value(serde_json::json!({
            "id": id, "kind": "connector", "name": name, "version": "1", "status": "inactive",
            "last_seen_at": null, "last_seen_ip": null, "serial": "0a", "cert_issued_at": 0,
            "cert_not_after": 1, "renewal_due": false, "registered_at": 0, "registered_by": "test",
        }))
        .unwrap()
    }

    #[test]
    fn components_are_named_by_id_or_unique_host_name() {
        let all = || vec![view("c1", "gw1"), view("c2", "gw2"), view("c3", "gw2")];
        let kind = ComponentKind::Connector;
        assert_eq!(component_id(kind, all(), "c3").unwrap(), "c3");
        assert_eq!(component_id(kind, all(), "GW1").unwrap(), "c1");
        assert!(
            component_id(kind, all(), "gw2")
                .unwrap_err()
                .to_string()
                .contains("several")
        );
        assert!(component_id(kind, all(), "gw9").is_err());
    }
}
