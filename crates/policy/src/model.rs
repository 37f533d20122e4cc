//! What a conditional access policy is made of: references to users, apps and
//! locations (each with a compact string form, the one the admin API and the
//! store use), conditions, grants, states, risk levels and client kinds.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Why a reference, level or kind could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// How risky a sign-in looks, ordered from none to high.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// No signal.
    #[default]
    None,
    /// Something unusual (a network the user has not signed in from).
    Low,
    /// Likely an attack on the account (brute force, impossible travel).
    Medium,
    /// An attack or an anonymising network.
    High,
}

impl RiskLevel {
    /// Every level, lowest first.
    pub const ALL: [RiskLevel; 4] = [RiskLevel::None, RiskLevel::Low, RiskLevel::Medium, RiskLevel::High];

    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::None => "none",
            RiskLevel::Low => "low",
            RiskLevel::Medium => "medium",
            RiskLevel::High => "high",
        }
    }
}

impl FromStr for RiskLevel {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        RiskLevel::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| ParseError(format!("{s:?} is not a risk level (none, low, medium, high)")))
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client is signing in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A browser: the sign-in pages, `/authorize`, the front door.
    Browser,
    /// The device authorization grant (a command line on another device).
    DeviceFlow,
    /// A refresh token exchanged for new tokens.
    Refresh,
    /// A non-interactive password grant (legacy authentication). Postern has
    /// none; should one be added, it is refused by a built-in rule.
    LegacyPassword,
}

impl ClientKind {
    /// Every kind.
    pub const ALL: [ClientKind; 4] = [
        ClientKind::Browser,
        ClientKind::DeviceFlow,
        ClientKind::Refresh,
        ClientKind::LegacyPassword,
    ];

    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Browser => "browser",
            ClientKind::DeviceFlow => "device_flow",
            ClientKind::Refresh => "refresh",
            ClientKind::LegacyPassword => "legacy_password",
        }
    }
}

impl FromStr for ClientKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        ClientKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            ParseError(format!(
                "{s:?} is not a client kind (browser, device_flow, refresh, legacy_password)"
            ))
        })
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a policy is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    /// Evaluated and enforced.
    Enabled,
    /// Evaluated and logged ("would have blocked"), never enforced.
    ReportOnly,
    /// Not evaluated.
    Disabled,
}

impl PolicyState {
    /// The stored and wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Enabled => "enabled",
            PolicyState::ReportOnly => "report_only",
            PolicyState::Disabled => "disabled",
        }
    }
}

impl FromStr for PolicyState {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        [PolicyState::Enabled, PolicyState::ReportOnly, PolicyState::Disabled]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| ParseError(format!("{s:?} is not a policy state (enabled, report_only, disabled)")))
    }
}

/// What a policy demands of the sign-ins it applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Refuse. Wins over every other grant.
    Block,
    /// A second factor (TOTP or a recovery code) in this session.
    RequireMfa,
    /// The user assigned to the app (directly or through a group). Clients
    /// that are not a published app's have nothing to assign: not applicable.
    RequireAssignment,
}

impl Grant {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Block => "block",
            Grant::RequireMfa => "require_mfa",
            Grant::RequireAssignment => "require_assignment",
        }
    }
}

/// Who a policy names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UserRef {
    /// Every user, and every name typed that is no account.
    All,
    /// One user, by ID.
    User(String),
    /// The members of a group, by ID.
    Group(String),
}

/// Which client applications a policy names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AppRef {
    /// Every client, published apps and others (the command line included).
    All,
    /// A published app, by ID.
    App(String),
    /// An OAuth client, by client ID.
    Client(String),
}

/// Which networks a policy names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LocationRef {
    /// Any address.
    Any,
    /// Any named location marked trusted.
    Trusted,
    /// A named location, by ID.
    Named(String),
    /// A range given inline (a single address is a /32 or /128).
    Range(IpNet),
}

fn tagged<'a>(s: &'a str, tag: &str) -> Option<&'a str> {
    s.strip_prefix(tag)
        .and_then(|rest| rest.strip_prefix(':'))
        .filter(|id| !id.is_empty())
}

impl TryFrom<String> for UserRef {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl FromStr for UserRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "all" {
            return Ok(UserRef::All);
        }
        if let Some(id) = tagged(s, "user") {
            return Ok(UserRef::User(id.to_owned()));
        }
        if let Some(id) = tagged(s, "group") {
            return Ok(UserRef::Group(id.to_owned()));
        }
        Err(ParseError(format!(
            "{s:?} names no users: use all, user:ID or group:ID"
        )))
    }
}

impl From<UserRef> for String {
    fn from(r: UserRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::All => f.write_str("all"),
            UserRef::User(id) => write!(f, "user:{id}"),
            UserRef::Group(id) => write!(f, "group:{id}"),
        }
    }
}

impl TryFrom<String> for AppRef {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl FromStr for AppRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s == "all" {
            return Ok(AppRef::All);
        }
        if let Some(id) = tagged(s, "app") {
            return Ok(AppRef::App(id.to_owned()));
        }
        if let Some(id) = tagged(s, "client") {
            return Ok(AppRef::Client(id.to_owned()));
        }
        Err(ParseError(format!(
            "{s:?} names no application: use all, app:ID or client:CLIENT_ID"
        )))
    }
}

impl From<AppRef> for String {
    fn from(r: AppRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for AppRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppRef::All => f.write_str("all"),
            AppRef::App(id) => write!(f, "app:{id}"),
            AppRef::Client(id) => write!(f, "client:{id}"),
        }
    }
}

/// Parses an address range: a CIDR, or a single address (a host route). The
/// host bits are cleared, so `192.0.2.7/24` means `192.0.2.0/24`.
pub fn parse_range(s: &str) -> Result<IpNet, ParseError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| ParseError(format!("{s:?} is not an IP address or CIDR range")))
}

impl TryFrom<String> for LocationRef {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        s.parse()
    }
}

impl FromStr for LocationRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "any" => return Ok(LocationRef::Any),
            "trusted" => return Ok(LocationRef::Trusted),
            _ => {}
        }
        if let Some(id) = tagged(s, "location") {
            return Ok(LocationRef::Named(id.to_owned()));
        }
        parse_range(s).map(LocationRef::Range).map_err(|_| {
            ParseError(format!(
                "{s:?} names no location: use any, trusted, location:ID, an IP address or a CIDR range"
            ))
        })
    }
}

impl From<LocationRef> for String {
    fn from(r: LocationRef) -> String {
        r.to_string()
    }
}

impl fmt::Display for LocationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationRef::Any => f.write_str("any"),
            LocationRef::Trusted => f.write_str("trusted"),
            LocationRef::Named(id) => write!(f, "location:{id}"),
            LocationRef::Range(net) => write!(f, "{net}"),
        }
    }
}

/// Who or what is included, less who or what is excluded. Exclusion wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "T: Deserialize<'de>"))]
pub struct Selection<T> {
    /// Included (at least one).
    pub include: Vec<T>,
    /// Excluded, even when included.
    #[serde(default)]
    pub exclude: Vec<T>,
}

/// When a policy applies: every condition must hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Users and groups.
    pub users: Selection<UserRef>,
    /// Client applications (published apps and OAuth clients).
    pub apps: Selection<AppRef>,
    /// Client networks; absent: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locations: Option<Selection<LocationRef>>,
    /// Sign-in risk levels; empty: any level.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk_levels: Vec<RiskLevel>,
    /// Client kinds; empty: any kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_kinds: Vec<ClientKind>,
}

/// The stored body of a policy: its conditions and grants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRules {
    /// When it applies.
    pub conditions: Conditions,
    /// What it demands; `block` stands alone.
    pub grants: Vec<Grant>,
}

impl PolicyRules {
    /// Every problem of these rules, for an administrator (empty: fine).
    /// References are checked to exist by the caller, which knows the tenant.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let c = &self.conditions;
        if c.users.include.is_empty() {
            problems.push("conditions.users.include must name at least one user, group, or all.".to_owned());
        }
        if c.users.exclude.contains(&UserRef::All) {
            problems.push("conditions.users.exclude cannot be all.".to_owned());
        }
        if c.apps.include.is_empty() {
            problems.push("conditions.apps.include must name at least one app, client, or all.".to_owned());
        }
        if c.apps.exclude.contains(&AppRef::All) {
            problems.push("conditions.apps.exclude cannot be all.".to_owned());
        }
        if let Some(locations) = &c.locations {
            if locations.include.is_empty() {
                problems.push(
                    "conditions.locations.include must name at least one location, range, trusted or any (or leave locations out)."
                        .to_owned(),
                );
            }
            if locations.exclude.contains(&LocationRef::Any) {
                problems.push("conditions.locations.exclude cannot be any.".to_owned());
            }
        }
        if self.grants.is_empty() {
            problems.push("grants must name at least one of block, require_mfa, require_assignment.".to_owned());
        }
        if self.grants.contains(&Grant::Block) && self.grants.len() > 1 {
            problems.push("grants: block stands alone (it wins over every other grant).".to_owned());
        }
        let mut seen = Vec::new();
        for g in &self.grants {
            if seen.contains(g) {
                problems.push(format!("grants: {} is named twice.", g.as_str()));
            }
            seen.push(*g);
        }
        problems
    }
}

/// A policy of a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Identifier.
    pub id: String,
    /// Name, unique in the tenant.
    pub name: String,
    /// Enforced, report-only or off.
    pub state: PolicyState,
    /// Conditions and grants.
    pub rules: PolicyRules,
}

/// A named set of address ranges of a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedLocation {
    /// Identifier.
    pub id: String,
    /// Name, unique in the tenant.
    pub name: String,
    /// Its ranges.
    pub ranges: Vec<IpNet>,
    /// Whether policies naming `trusted` include it.
    pub trusted: bool,
}

impl NamedLocation {
    /// The first of its ranges holding `ip`.
    pub fn range_holding(&self, ip: IpAddr) -> Option<&IpNet> {
        self.ranges.iter().find(|r| r.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_through_their_string_form() {
        for s in ["all", "user:u1", "group:g1"] {
            assert_eq!(s.parse::<UserRef>().unwrap().to_string(), s);
        }
        for s in ["all", "app:a1", "client:portal"] {
            assert_eq!(s.parse::<AppRef>().unwrap().to_string(), s);
        }
        for s in ["any", "trusted", "location:l1", "10.0.0.0/8", "2001:db8::/32"] {
            assert_eq!(s.parse::<LocationRef>().unwrap().to_string(), s);
        }
        assert_eq!("192.0.2.7".parse::<LocationRef>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            "192.0.2.7/24".parse::<LocationRef>().unwrap().to_string(),
            "192.0.2.0/24"
        );
        for bad in ["", "user:", "everyone", "group", "app:"] {
            assert!(
                bad.parse::<UserRef>().is_err() || bad.parse::<AppRef>().is_err(),
                "{bad}"
            );
        }
        assert!("somewhere".parse::<LocationRef>().is_err());
        assert!("300.1.1.1".parse::<LocationRef>().is_err());
    }

    #[test]
    fn rules_report_every_problem() {
        let rules = PolicyRules {
            conditions: Conditions {
                users: Selection {
                    include: vec![],
                    exclude: vec![UserRef::All],
                },
                apps: Selection {
                    include: vec![],
                    exclude: vec![],
                },
                locations: Some(Selection {
                    include: vec![],
                    exclude: vec![LocationRef::Any],
                }),
                risk_levels: vec![],
                client_kinds: vec![],
            },
            grants: vec![Grant::Block, Grant::RequireMfa, Grant::RequireMfa],
        };
        let problems = rules.problems();
        assert_eq!(problems.len(), 7, "{problems:#?}");
    }
}
