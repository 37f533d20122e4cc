//! The vocabulary the store, the admin API's wire format and its client share:
//! administrative roles, where accounts live, how a domain's passwords are
//! checked, how users reach an app, who may use it, and how a sign-in ended.
//!
//! Plain enums with their stored and wire forms, and nothing else: the client
//! of the admin API uses them without the store (and its database drivers).
#![warn(missing_docs)]

/// A stored or sent value that names none of an enum's variants.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownValue {
    kind: &'static str,
    value: String,
}

impl UnknownValue {
    fn new(kind: &'static str, value: String) -> Self {
        Self { kind, value }
    }
}

/// An administrative role within a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in the tenant; in the operator's tenant, also other tenants.
    GlobalAdministrator,
    /// Published apps, OAuth clients and connectors.
    ApplicationAdministrator,
    /// Domains' authentication modes and pass-through authentication agents.
    HybridIdentityAdministrator,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [
        Role::GlobalAdministrator,
        Role::ApplicationAdministrator,
        Role::HybridIdentityAdministrator,
    ];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdministrator => "global_administrator",
            Role::ApplicationAdministrator => "application_administrator",
            Role::HybridIdentityAdministrator => "hybrid_identity_administrator",
        }
    }

    /// Parses the stored and wire form.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The role an administrator needs to register (or mint a registration token
    /// for) a component of `kind`: application administrator for connectors,
    /// hybrid identity administrator for agents (PTA-2); global administrators
    /// satisfy both.
    pub fn to_register(kind: postern_proto::ComponentKind) -> Role {
        match kind {
            postern_proto::ComponentKind::Connector => Role::ApplicationAdministrator,
            postern_proto::ComponentKind::Agent => Role::HybridIdentityAdministrator,
        }
    }

    /// Whether holding `self` grants what `required` grants ("or higher").
    pub fn satisfies(self, required: Role) -> bool {
        self == required || self == Role::GlobalAdministrator
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the passwords of a domain's users are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainAuthMode {
    /// Password hashes kept by the service (cloud-only accounts).
    Cloud,
    /// Pass-through authentication: checked on-prem by an agent.
    Passthrough,
}

impl DomainAuthMode {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainAuthMode::Cloud => "cloud",
            DomainAuthMode::Passthrough => "passthrough",
        }
    }
}

impl TryFrom<String> for DomainAuthMode {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, UnknownValue> {
        match s.as_str() {
            "cloud" => Ok(DomainAuthMode::Cloud),
            "passthrough" => Ok(DomainAuthMode::Passthrough),
            _ => Err(UnknownValue::new("domain authentication mode", s)),
        }
    }
}

/// Where an account lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    /// Created in the service, with a password hash kept here.
    Cloud,
    /// Mirrored from the on-prem directory; no password here.
    Directory,
}

impl UserSource {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            UserSource::Cloud => "cloud",
            UserSource::Directory => "directory",
        }
    }
}

impl TryFrom<String> for UserSource {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, UnknownValue> {
        match s.as_str() {
            "cloud" => Ok(UserSource::Cloud),
            "directory" => Ok(UserSource::Directory),
            _ => Err(UnknownValue::new("user source", s)),
        }
    }
}

/// How users are let through to an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preauth {
    /// Users sign in at the STS first (APP-1).
    Sts,
    /// No pre-authentication (APP-2).
    Passthrough,
}

impl Preauth {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Preauth::Sts => "sts",
            Preauth::Passthrough => "passthrough",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sts" => Some(Preauth::Sts),
            "passthrough" => Some(Preauth::Passthrough),
            _ => None,
        }
    }
}

/// Who may use an app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// One user.
    User,
    /// Every member of a group.
    Group,
}

impl PrincipalKind {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::Group => "group",
        }
    }
}

/// How a sign-in attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SigninOutcome {
    /// Signed in.
    Success,
    /// Wrong username or password (unknown accounts included: the log does not
    /// distinguish them either).
    BadCredentials,
    /// Refused by smart lockout before the password was checked.
    LockedOut,
    /// The account is disabled.
    Disabled,
    /// A wrong or replayed MFA code.
    MfaFailed,
    /// The password was right but the sign-in did not finish for another reason.
    Interrupted,
    /// Refused by a conditional access policy (before the password was
    /// checked, or after); the detail names the policies and the risk.
    Blocked,
}

impl SigninOutcome {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            SigninOutcome::Success => "success",
            SigninOutcome::BadCredentials => "bad_credentials",
            SigninOutcome::LockedOut => "locked_out",
            SigninOutcome::Disabled => "disabled",
            SigninOutcome::MfaFailed => "mfa_failed",
            SigninOutcome::Interrupted => "interrupted",
            SigninOutcome::Blocked => "blocked",
        }
    }
}

impl TryFrom<String> for SigninOutcome {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, UnknownValue> {
        [
            SigninOutcome::Success,
            SigninOutcome::BadCredentials,
            SigninOutcome::LockedOut,
            SigninOutcome::Disabled,
            SigninOutcome::MfaFailed,
            SigninOutcome::Interrupted,
            SigninOutcome::Blocked,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .ok_or_else(|| UnknownValue::new("sign-in outcome", s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_round_trip_and_unknown_ones_are_named() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for mode in [DomainAuthMode::Cloud, DomainAuthMode::Passthrough] {
            assert_eq!(DomainAuthMode::try_from(mode.as_str().to_owned()), Ok(mode));
        }
        for source in [UserSource::Cloud, UserSource::Directory] {
            assert_eq!(UserSource::try_from(source.as_str().to_owned()), Ok(source));
        }
        for preauth in [Preauth::Sts, Preauth::Passthrough] {
            assert_eq!(Preauth::parse(preauth.as_str()), Some(preauth));
        }
        assert_eq!(
            SigninOutcome::try_from("locked_out".to_owned()),
            Ok(SigninOutcome::LockedOut)
        );
        let unknown = UserSource::try_from("ldap".to_owned()).unwrap_err();
        assert_eq!(unknown.to_string(), "unknown user source \"ldap\"");
        assert!(SigninOutcome::try_from("won".to_owned()).is_err());
        assert_eq!(PrincipalKind::Group.as_str(), "group");
    }
}
