//! Pass-through authentication between the STS and the agents (PTA-4, PTA-5):
//! bootstrap to the tenant's queue, the queue stream, validation requests and
//! results. All calls go over the mTLS control endpoint with the agent's client
//! certificate; the queue additionally needs the short-lived credential from
//! bootstrap (scoped to the tenant's queue only).

use serde::{Deserialize, Serialize};

/// Path of the bootstrap call.
pub fn agent_bootstrap_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/bootstrap")
}

/// Path of the queue stream (a long-lived response of newline-delimited
/// [`QueueFrame`]s).
pub fn agent_queue_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/queue")
}

/// Path of the two-way queue: a `POST` whose response is the queue stream, as
/// for [`agent_queue_path`], and whose request body carries the agent's results
/// back as newline-delimited [`QueueResult`]s (HTTP/2 only).
pub fn agent_duplex_queue_path(tenant_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/queue/duplex")
}

/// Path where an agent returns the result of a validation request.
pub fn agent_result_path(tenant_id: &str, request_id: &str) -> String {
    format!("/v1/t/{tenant_id}/agent/results/{request_id}")
}

/// The OAEP label a password is encrypted under: binds the ciphertext to one
/// request of one tenant, so it cannot be replayed into another request.
pub fn oaep_label(tenant_id: &str, request_id: &str) -> Vec<u8> {
    format!("postern-pta:v1:{tenant_id}:{request_id}").into_bytes()
}

/// `POST /v1/t/{tenant}/agent/bootstrap` answer (PTA-4). `Debug` masks the
/// credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapResponse {
    /// The service's protocol version.
    pub protocol: u32,
    /// Path of the tenant's queue stream on the control endpoint.
    pub queue_path: String,
    /// Bearer credential for the queue, valid for this agent and this tenant's
    /// queue only, until `expires_at`; bootstrap again before then.
    pub queue_credential: String,
    /// Expiry of the credential (Unix seconds).
    pub expires_at: i64,
    /// The service sends a heartbeat frame at least this often; reconnect when
    /// none arrived for three times as long.
    pub heartbeat_secs: u64,
    /// Validation requests the agent should work on at once, at most.
    pub max_in_flight: u32,
    /// Path of the two-way queue ([`agent_duplex_queue_path`]), same
    /// credential, when the service has one; an agent that uses it sends its
    /// results on the queue's own request instead of one `POST` each. Absent
    /// from older services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplex_queue_path: Option<String>,
}

impl std::fmt::Debug for BootstrapResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapResponse")
            .field("queue_path", &self.queue_path)
            .field("queue_credential", &"********")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// One line of the queue stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueFrame {
    /// Nothing to do; the connection is alive.
    Heartbeat {
        /// Service time (Unix seconds).
        at: i64,
    },
    /// Check a password.
    Validate(ValidationRequest),
}

/// A password to check (PTA-5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationRequest {
    /// Identifies the request; the result is posted to its path.
    pub request_id: String,
    /// The tenant (also bound into each ciphertext's OAEP label).
    pub tenant_id: String,
    /// The sign-in name as typed (normalized).
    pub username: String,
    /// Answer before this time (Unix milliseconds), or not at all.
    pub deadline_ms: i64,
    /// The password encrypted once per registered agent key.
    pub ciphertexts: Vec<AgentCiphertext>,
    /// Set by the relay when every agent of the tenant has declined the request
    /// as busy: wait for a free slot instead of declining again. Unset, an agent
    /// at its limit answers [`ValidationOutcome::Declined`] at once.
    #[serde(default)]
    pub wait_if_busy: bool,
}

/// The password encrypted to one agent's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCiphertext {
    /// The agent key's identifier (from its certificate).
    pub key_id: String,
    /// RSA-OAEP-SHA256 ciphertext, base64 (standard, padded), with
    /// [`oaep_label`] as label.
    pub ciphertext: String,
}

/// The outcome of a check, as the agent reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationOutcome {
    /// The password is right.
    Success,
    /// Wrong username or password (unknown accounts included).
    WrongCredentials,
    /// The password has expired.
    PasswordExpired,
    /// The account is disabled.
    AccountDisabled,
    /// The account has expired.
    AccountExpired,
    /// The account is locked in the directory.
    AccountLocked,
    /// The password must be changed before use.
    MustChangePassword,
    /// The directory could not be asked; another agent may try.
    DirectoryUnreachable,
    /// This agent cannot take the request now (all its validation slots are
    /// busy, or it holds no ciphertext for its key): the relay offers it to
    /// another agent at once. Says nothing about the password.
    Declined,
}

impl ValidationOutcome {
    /// The wire name (`success`, `wrong_credentials`, …), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationOutcome::Success => "success",
            ValidationOutcome::WrongCredentials => "wrong_credentials",
            ValidationOutcome::PasswordExpired => "password_expired",
            ValidationOutcome::AccountDisabled => "account_disabled",
            ValidationOutcome::AccountExpired => "account_expired",
            ValidationOutcome::AccountLocked => "account_locked",
            ValidationOutcome::MustChangePassword => "must_change_password",
            ValidationOutcome::DirectoryUnreachable => "directory_unreachable",
            ValidationOutcome::Declined => "declined",
        }
    }
}

/// One line of the two-way queue's request body: the result of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueResult {
    /// The request answered.
    pub request_id: String,
    /// The answer, as it would be posted to the request's own path.
    pub result: ValidationResult,
}

/// `POST /v1/t/{tenant}/agent/results/{id}` body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationResult {
    /// The agent's protocol version.
    pub protocol: u32,
    /// What the directory said.
    pub outcome: ValidationOutcome,
    /// The account's attributes, on success.
    #[serde(default)]
    pub account: Option<AccountAttributes>,
}

/// Attributes of a directory account, for just-in-time provisioning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountAttributes {
    /// User principal name (sign-in name).
    pub upn: String,
    /// Display name.
    pub display_name: String,
    /// Email address.
    #[serde(default)]
    pub mail: Option<String>,
    /// Group names.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Stable identifier in the directory (objectGUID, entryUUID).
    pub stable_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_lines() {
        let hb = serde_json::to_string(&QueueFrame::Heartbeat { at: 5 }).unwrap();
        assert_eq!(hb, r#"{"type":"heartbeat","at":5}"#);
        let v = QueueFrame::Validate(ValidationRequest {
            request_id: "r".into(),
            tenant_id: "t".into(),
            username: "u".into(),
            deadline_ms: 1,
            ciphertexts: vec![AgentCiphertext {
                key_id: "k".into(),
                ciphertext: "c".into(),
            }],
            wait_if_busy: false,
        });
        let line = serde_json::to_string(&v).unwrap();
        assert!(line.starts_with(r#"{"type":"validate""#) && !line.contains('\n'));
        assert_eq!(serde_json::from_str::<QueueFrame>(&line).unwrap(), v);
        // A request from a service that does not know `wait_if_busy` still decodes.
        let older = line.replace(",\"wait_if_busy\":false", "");
        assert_ne!(older, line);
        assert_eq!(serde_json::from_str::<QueueFrame>(&older).unwrap(), v);
        assert_eq!(
            serde_json::to_string(&ValidationOutcome::Declined).unwrap(),
            "\"declined\""
        );
        assert_ne!(oaep_label("t", "r1"), oaep_label("t", "r2"));
        let b = BootstrapResponse {
            protocol: 1,
            queue_path: "/q".into(),
            queue_credential: "secret-credential".into(),
            expires_at: 0,
            heartbeat_secs: 15,
            max_in_flight: 8,
            duplex_queue_path: None,
        };
        assert!(!format!("{b:?}").contains("secret-credential"));
        // An older service's answer (no two-way queue) still decodes, and an
        // older agent reads a newer answer (unknown fields are ignored).
        let old = serde_json::to_string(&b).unwrap();
        assert!(!old.contains("duplex"));
        assert_eq!(serde_json::from_str::<BootstrapResponse>(&old).unwrap(), b);
        let newer = BootstrapResponse {
            duplex_queue_path: Some(agent_duplex_queue_path("t")),
            ..b
        };
        let line = serde_json::to_string(&newer).unwrap();
        assert!(
            line.contains(r#""duplex_queue_path":"/v1/t/t/agent/queue/duplex""#),
            "{line}"
        );
        // A result line names its request and carries the posted body as it is.
        let result = QueueResult {
            request_id: "r1".into(),
            result: ValidationResult {
                protocol: 1,
                outcome: ValidationOutcome::WrongCredentials,
                account: None,
            },
        };
        let line = serde_json::to_string(&result).unwrap();
        assert_eq!(
            line,
            r#"{"request_id":"r1","result":{"protocol":1,"outcome":"wrong_credentials","account":null}}"#
        );
        assert_eq!(serde_json::from_str::<QueueResult>(&line).unwrap(), result);
    }
}
