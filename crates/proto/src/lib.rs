//! Wire types shared by the service and its on-prem components: one definition of each message, with a protocol version.
//!
//! Every request an on-prem component sends carries [`PROTOCOL_VERSION`]; the
//! service answers a mismatch with [`ErrorBody`] code `protocol_mismatch` naming
//! both versions, so an operator knows which side to upgrade. No I/O here.
#![warn(missing_docs)]

pub mod control;
pub mod headers;
pub mod lines;
pub mod registration;
pub mod relay;
pub mod tunnel;
pub mod updates;
pub mod upgrade;

use serde::{Deserialize, Serialize};

/// Version of the component ⇄ service protocol. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Path prefix of the enrolment API on the service's public listener.
pub const REGISTER_PATH: &str = "/v1/register";

/// What kind of on-prem component speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// Carries user requests to internal apps.
    Connector,
    /// Checks passwords against the directory.
    Agent,
}

impl ComponentKind {
    /// The wire and display form.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Connector => "connector",
            ComponentKind::Agent => "agent",
        }
    }
}

impl ComponentKind {
    /// Parses the wire form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connector" => Some(ComponentKind::Connector),
            "agent" => Some(ComponentKind::Agent),
            _ => None,
        }
    }
}

/// A string that names no component kind.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown component kind {0:?}")]
pub struct UnknownKind(pub String);

impl TryFrom<String> for ComponentKind {
    type Error = UnknownKind;
    fn try_from(s: String) -> Result<Self, UnknownKind> {
        ComponentKind::parse(&s).ok_or(UnknownKind(s))
    }
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error response to a component.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `forbidden`, `protocol_mismatch`,
    /// `certificate_revoked`, `bad_csr`.
    pub error: String,
    /// What happened and what to do, for the operator.
    pub message: String,
}

/// A protocol version the other side cannot speak.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "this component speaks protocol version {theirs} but the service speaks {ours}; upgrade the {older} \
     (the component with `postern updater`, the service by deploying a newer release)"
)]
pub struct ProtocolMismatch {
    /// The version the service speaks.
    pub ours: u32,
    /// The version the component sent.
    pub theirs: u32,
    /// Which side is older: `component` or `service`.
    pub older: &'static str,
}

/// Checks a component's protocol version against ours.
pub fn check_protocol(theirs: u32) -> Result<(), ProtocolMismatch> {
    if theirs == PROTOCOL_VERSION {
        return Ok(());
    }
    Err(ProtocolMismatch {
        ours: PROTOCOL_VERSION,
        theirs,
        older: if theirs < PROTOCOL_VERSION {
            "component"
        } else {
            "service"
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_mismatch_names_the_older_side() {
        assert!(check_protocol(PROTOCOL_VERSION).is_ok());
        let newer = check_protocol(PROTOCOL_VERSION + 1).unwrap_err();
        assert_eq!(newer.older, "service");
        assert!(newer.to_string().contains("upgrade the service"));
        let older = check_protocol(0).unwrap_err();
        assert!(older.to_string().contains("upgrade the component"));
    }

    #[test]
    fn kinds_serialize_as_documented() {
        assert_eq!(serde_json::to_string(&ComponentKind::Agent).unwrap(), "\"agent\"");
        let back: ComponentKind = serde_json::from_str("\"connector\"").unwrap();
        assert_eq!(back, ComponentKind::Connector);
    }
}
