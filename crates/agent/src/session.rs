//! The mTLS client and decryption key the agent works with, loaded together from the
//! state directory: at start, on every reconnect (a fresh client is a fresh TLS
//! connection, so a dead one is never reused) and after a renewal (a new key).

use std::sync::Arc;

use postern_pki::{ComponentKey, KeyAlg};
use postern_proto::ComponentKind;
use postern_time::SharedClock;
use postern_uplink::{ControlClient, StateDir, UplinkError};

use crate::AgentError;
use crate::decrypt::AgentKey;

/// A client and the key of the same registration.
pub(crate) struct Session {
    /// The mTLS client (its certificate certifies `key`).
    pub client: ControlClient,
    /// The key passwords are encrypted to.
    pub key: Arc<AgentKey>,
    /// The key's algorithm, kept for renewals.
    pub alg: KeyAlg,
}

impl Session {
    /// Loads the registration in `state`. The caller keeps renewals out meanwhile (they
    /// write key and certificate one after the other).
    pub fn load(state: &StateDir, clock: &SharedClock) -> Result<Self, AgentError> {
        let client = ControlClient::load(state.clone(), clock.clone()).map_err(AgentError::from_uplink)?;
        if client.enrolment().kind != ComponentKind::Agent {
            return Err(AgentError::NotAnAgent(state.path().display().to_string()));
        }
        let (key_pem, cert_pem, _) = state.load().map_err(AgentError::from_uplink)?;
        let key = ComponentKey::from_pkcs8_pem(&key_pem).map_err(|e| AgentError::State(UplinkError::Pki(e)))?;
        let info = postern_pki::cert_info(cert_pem.as_bytes()).map_err(|e| AgentError::State(UplinkError::Pki(e)))?;
        if info.public_key_spki_der != key.public_spki_der()
            || (info.not_before, info.not_after) != client.certificate_validity()
        {
            return Err(AgentError::State(UplinkError::Corrupt(
                "key and certificate changed while being read".into(),
            )));
        }
        let agent_key = AgentKey::from_component_key(&key)?;
        Ok(Self {
            client,
            key: Arc::new(agent_key),
            alg: key.alg(),
        })
    }

    /// The tenant this agent serves.
    pub fn tenant_id(&self) -> &str {
        &self.client.enrolment().tenant_id
    }
}
