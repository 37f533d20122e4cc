//! Registration (CON-1, PTA-3): the key pair is generated here and never leaves
//! the host; the service gets a CSR and a credential, and answers with the
//! certificate it chose.

use std::time::Duration;

use postern_keyring::SecretString;
use postern_pki::{KeyAlg, generate_key, make_csr};
use postern_proto::registration::{RegisterRequest, RegisterResponse};
use postern_proto::{ComponentKind, PROTOCOL_VERSION, REGISTER_PATH, check_protocol};

use crate::state::{Enrolment, StateDir};
use crate::{UplinkError, transport};

/// Deadline of the registration call.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How the registration is authorized.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A registration credential from the device flow: an administrator
    /// approved registering this kind of component under this name. (An
    /// administrator's access token is refused.)
    AccessToken(SecretString),
    /// A registration token minted through the admin API (`ptr_…`).
    RegistrationToken(SecretString),
}

impl Credential {
    fn secret(&self) -> &str {
        match self {
            Credential::AccessToken(t) | Credential::RegistrationToken(t) => t.expose(),
        }
    }
}

/// What to register.
#[derive(Clone, Debug)]
pub struct RegisterOptions {
    /// The service's public URL, e.g. `https://login.example.com`.
    pub server_url: String,
    /// Connector or agent.
    pub kind: ComponentKind,
    /// How the registration is authorized.
    pub credential: Credential,
    /// This host's name.
    pub name: String,
    /// This software's version.
    pub version: String,
    /// Connector group to join (connectors).
    pub group: Option<String>,
    /// The tenant (short name) the operator means, if they said: the service
    /// refuses a credential of another tenant instead of enrolling there.
    pub tenant: Option<String>,
    /// Key algorithm (agents: RSA; default [`KeyAlg::recommended`]).
    pub key_alg: KeyAlg,
    /// Extra trust anchors (PEM) for the service's public TLS certificate, if it is
    /// not publicly trusted.
    pub server_ca_pem: Option<String>,
}

fn http_client(server_ca_pem: Option<&str>) -> Result<reqwest::Client, UplinkError> {
    let mut builder = reqwest::Client::builder()
        .timeout(REGISTER_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = server_ca_pem {
        for cert in crate::trust::pem_anchors("the extra trust anchors (--server-ca)", pem.as_bytes())? {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(&cert).map_err(transport)?);
        }
    }
    builder.build().map_err(transport)
}

/// Registers this component and stores its key, certificate and enrolment in
/// `state`. Refuses to overwrite an existing registration.
pub async fn register(options: &RegisterOptions, state: &StateDir) -> Result<Enrolment, UplinkError> {
    if state.is_registered() {
        return Err(UplinkError::Corrupt(format!(
            "{} already holds a registration; remove it first (or use another --state-dir)",
            state.path().display()
        )));
    }
    let key = generate_key(options.key_alg)?;
    let csr_pem = make_csr(&key)?;
    let request = RegisterRequest {
        protocol: PROTOCOL_VERSION,
        kind: options.kind,
        csr_pem,
        name: options.name.clone(),
        version: options.version.clone(),
        group: options.group.clone(),
        tenant: options.tenant.clone(),
    };
    let url = format!("{}{REGISTER_PATH}", options.server_url.trim_end_matches('/'));
    let response = http_client(options.server_ca_pem.as_deref())?
        .post(&url)
        .bearer_auth(options.credential.secret())
        .json(&request)
        .send()
        .await
        .map_err(transport)?;
    if !response.status().is_success() {
        return Err(UplinkError::from_response(response).await);
    }
    let answer: RegisterResponse = response.json().await.map_err(transport)?;
    check_protocol(answer.protocol).map_err(|e| UplinkError::Internal(e.to_string()))?;
    // The certificate must certify the key made here, for this component.
    let info = postern_pki::cert_info(answer.certificate_pem.as_bytes())?;
    if info.public_key_spki_der != key.public_spki_der() {
        return Err(UplinkError::Internal("the service certified another key".into()));
    }
    let bound = info.component.as_ref().is_some_and(|c| {
        c.kind == options.kind && c.tenant_id == answer.tenant_id && c.component_id == answer.component_id
    });
    if !bound {
        return Err(UplinkError::Internal(
            "the certificate names another component or tenant".into(),
        ));
    }
    let enrolment = Enrolment {
        kind: options.kind,
        server_url: options.server_url.trim_end_matches('/').to_owned(),
        tenant: answer.tenant,
        tenant_id: answer.tenant_id,
        component_id: answer.component_id,
        control_url: answer.control_url,
        control_ca_pem: answer.control_ca_pem,
        group: answer.group,
    };
    state.save(&key.to_pem(), &answer.certificate_pem, &enrolment)?;
    tracing::info!(kind = %options.kind, component = %enrolment.component_id, "registered");
    Ok(enrolment)
}
