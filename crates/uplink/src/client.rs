//! Calls to the mTLS control endpoint, authenticated by the component's client
//! certificate, trusting only the anchors learned at registration (or the
//! system's, when the control endpoint is publicly trusted).

use std::sync::Arc;
use std::time::Duration;

use postern_keyring::SecretString;
use postern_pki::{KeyAlg, generate_key, make_csr};
use postern_proto::control::{
    self, ConfigVersion, ConnectorConfig, ConnectorConfigRequest, RenewRequest, RenewResponse, RenewalCheck, WhoAmI,
};
use postern_proto::relay::{self, BootstrapResponse, ValidationResult};
use postern_proto::{ComponentKind, PROTOCOL_VERSION};
use postern_time::{RustlsTime, SharedClock, UnixTime};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::{Enrolment, StateDir};
use crate::{UplinkError, transport};

/// Deadline of ordinary control calls.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Extra time a configuration watch may take beyond the service's own timeout.
const WATCH_SLACK: Duration = Duration::from_secs(10);

/// A client of the control endpoint for one registered component.
pub struct ControlClient {
    state: StateDir,
    enrolment: Enrolment,
    clock: SharedClock,
    http: reqwest::Client,
    tunnel_tls: Arc<rustls::ClientConfig>,
    cert_not_before: UnixTime,
    cert_not_after: UnixTime,
    /// Whether calls carry the component's version (not the updater's).
    reports_version: bool,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("component", &self.enrolment.component_id)
            .field("control_url", &self.enrolment.control_url)
            .finish_non_exhaustive()
    }
}

fn tls_config(
    enrolment: &Enrolment,
    cert_pem: &str,
    key_pem: &str,
    clock: SharedClock,
) -> Result<rustls::ClientConfig, UplinkError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| UplinkError::Corrupt(format!("{what}: {e}"));
    let roots = if enrolment.control_ca_pem.trim().is_empty() {
        crate::trust::system_roots()?
    } else {
        let mut roots = RootCertStore::empty();
        let source = "the control endpoint's trust anchors (control_ca_pem in state.json)";
        for cert in crate::trust::pem_anchors(source, enrolment.control_ca_pem.as_bytes())? {
            roots.add(cert).map_err(|e| bad(source, &e))?;
        }
        roots
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad("private key", &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_details(provider, Arc::new(RustlsTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| UplinkError::Internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("key and certificate", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl ControlClient {
    /// Loads the registration in `state` and builds the mTLS client. Fails with
    /// [`UplinkError::CertificateExpired`] when the certificate has expired (the
    /// component must be registered again).
    pub fn load(state: StateDir, clock: SharedClock) -> Result<Self, UplinkError> {
        Self::load_with(state, clock, true)
    }

    /// Like [`ControlClient::load`], for the updater: its calls carry no
    /// version (they say nothing about the component's health) and are never
    /// refused for the component being outdated.
    pub fn load_for_updater(state: StateDir, clock: SharedClock) -> Result<Self, UplinkError> {
        Self::load_with(state, clock, false)
    }

    fn load_with(state: StateDir, clock: SharedClock, reports_version: bool) -> Result<Self, UplinkError> {
        let (key_pem, cert_pem, enrolment) = state.load()?;
        let info = postern_pki::cert_info(cert_pem.as_bytes())?;
        let key = postern_pki::ComponentKey::from_pkcs8_pem(&key_pem)?;
        if key.public_spki_der() != info.public_key_spki_der {
            return Err(UplinkError::Corrupt(
                "the stored key does not match the stored certificate (interrupted renewal?); register again".into(),
            ));
        }
        if info.not_after <= clock.now() {
            return Err(UplinkError::CertificateExpired(info.not_after.secs()));
        }
        let tls = tls_config(&enrolment, &cert_pem, &key_pem, clock.clone())?;
        let mut tunnel_tls = tls.clone();
        tunnel_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut headers = reqwest::header::HeaderMap::new();
        if reports_version {
            let value =
                |v: &str| reqwest::header::HeaderValue::from_str(v).map_err(|e| UplinkError::Internal(e.to_string()));
            headers.insert(
                postern_proto::updates::VERSION_HEADER,
                value(&crate::version::reported_version())?,
            );
            headers.insert(
                postern_proto::updates::TARGET_HEADER,
                value(crate::version::build_target())?,
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(transport)?;
        Ok(Self {
            state,
            enrolment,
            clock,
            http,
            tunnel_tls: Arc::new(tunnel_tls),
            cert_not_before: info.not_before,
            cert_not_after: info.not_after,
            reports_version,
        })
    }

    /// What registration stored.
    pub fn enrolment(&self) -> &Enrolment {
        &self.enrolment
    }

    /// Where and how to open the application tunnel: the control URL and a TLS
    /// client configuration with this component's certificate, the control
    /// endpoint's trust anchors, TLS 1.3 only and ALPN `http/1.1` only (the tunnel
    /// starts as an HTTP/1.1 upgrade). Changes after a certificate renewal.
    pub fn tunnel_connector(&self) -> (String, Arc<rustls::ClientConfig>) {
        (self.enrolment.control_url.clone(), self.tunnel_tls.clone())
    }

    /// Validity of the current certificate.
    pub fn certificate_validity(&self) -> (UnixTime, UnixTime) {
        (self.cert_not_before, self.cert_not_after)
    }

    /// The HTTP client (mTLS).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.enrolment.control_url.trim_end_matches('/'))
    }

    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, UplinkError> {
        let mut request = self.http.request(method, self.url(path)).timeout(timeout);
        if let Some(b) = body {
            request = request.json(b);
        }
        let response = request.send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(UplinkError::from_response(response).await);
        }
        response.json().await.map_err(transport)
    }

    /// A request on the mTLS connection to any path of the control endpoint, for
    /// diagnostics and tests (the typed methods build the right paths).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).timeout(CALL_TIMEOUT)
    }

    /// Who the service thinks this component is.
    pub async fn whoami(&self) -> Result<WhoAmI, UplinkError> {
        self.call::<(), _>(reqwest::Method::GET, control::WHOAMI_PATH, None, CALL_TIMEOUT)
            .await
    }

    /// Installs a renewed key and certificate: saved first, then used.
    fn switch_to(&mut self, key_pem: &str, cert_pem: &str) -> Result<(), UplinkError> {
        self.state.save_credentials(key_pem, cert_pem)?;
        let reloaded = ControlClient::load_with(self.state.clone(), self.clock.clone(), self.reports_version)?;
        *self = reloaded;
        Ok(())
    }

    /// The connector's configuration exchange (CON-2, CON-3). When the certificate
    /// is due for renewal (older than 180 days, CON-4) or the service asks for it,
    /// sends a CSR for a fresh key and switches to the renewed certificate.
    pub async fn connector_config(&mut self, version: &str) -> Result<ConnectorConfig, UplinkError> {
        if self.enrolment.kind != ComponentKind::Connector {
            return Err(UplinkError::Internal(
                "only connectors fetch a connector configuration".into(),
            ));
        }
        let path = control::connector_config_path(&self.enrolment.tenant_id);
        let due = postern_pki::renewal_due(
            ComponentKind::Connector,
            self.cert_not_before,
            self.cert_not_after,
            self.clock.now(),
        );
        let fresh_key = if due {
            Some(generate_key(KeyAlg::recommended(ComponentKind::Connector))?)
        } else {
            None
        };
        let request = ConnectorConfigRequest {
            protocol: PROTOCOL_VERSION,
            version: version.to_owned(),
            csr_pem: fresh_key.as_ref().map(make_csr).transpose()?,
        };
        let config: ConnectorConfig = self
            .call(reqwest::Method::POST, &path, Some(&request), CALL_TIMEOUT)
            .await?;
        if let (Some(key), Some(cert)) = (&fresh_key, &config.renewed_certificate_pem) {
            let info = postern_pki::cert_info(cert.as_bytes())?;
            if info.public_key_spki_der != key.public_spki_der() {
                return Err(UplinkError::Internal(
                    "the renewed certificate certifies another key".into(),
                ));
            }
            self.switch_to(&key.to_pem(), cert)?;
            tracing::info!(component = %self.enrolment.component_id, "connector certificate renewed");
        }
        Ok(config)
    }

    /// Waits until the connector's configuration version differs from `version`
    /// (or the service's watch timeout passes) and returns the current version.
    pub async fn watch_config(&self, version: i64) -> Result<i64, UplinkError> {
        let path = format!(
            "{}?version={version}",
            control::connector_config_watch_path(&self.enrolment.tenant_id)
        );
        let answer: ConfigVersion = self
            .call::<(), _>(reqwest::Method::GET, &path, None, Duration::from_secs(25) + WATCH_SLACK)
            .await?;
        Ok(answer.config_version)
    }

    /// Asks whether the agent should renew now (PTA-7).
    pub async fn agent_renewal_check(&self) -> Result<RenewalCheck, UplinkError> {
        let path = control::agent_renewal_check_path(&self.enrolment.tenant_id);
        self.call::<(), _>(reqwest::Method::POST, &path, None, CALL_TIMEOUT)
            .await
    }

    /// Renews the agent's certificate with a fresh key pair (authenticated by the
    /// current certificate; no admin involved) and switches to it.
    pub async fn agent_renew(&mut self, key_alg: KeyAlg) -> Result<RenewResponse, UplinkError> {
        let key = generate_key(key_alg)?;
        let request = RenewRequest {
            protocol: PROTOCOL_VERSION,
            csr_pem: make_csr(&key)?,
        };
        let path = control::agent_renew_path(&self.enrolment.tenant_id);
        let answer: RenewResponse = self
            .call(reqwest::Method::POST, &path, Some(&request), CALL_TIMEOUT)
            .await?;
        let info = postern_pki::cert_info(answer.certificate_pem.as_bytes())?;
        if info.public_key_spki_der != key.public_spki_der() {
            return Err(UplinkError::Internal(
                "the renewed certificate certifies another key".into(),
            ));
        }
        self.switch_to(&key.to_pem(), &answer.certificate_pem)?;
        tracing::info!(component = %self.enrolment.component_id, "agent certificate renewed");
        Ok(answer)
    }

    /// The agent's bootstrap call (PTA-4): a short-lived credential for the tenant's
    /// queue, and how to use it.
    pub async fn agent_bootstrap(&self) -> Result<BootstrapResponse, UplinkError> {
        let path = relay::agent_bootstrap_path(&self.enrolment.tenant_id);
        self.call::<(), _>(reqwest::Method::POST, &path, None, CALL_TIMEOUT)
            .await
    }

    /// Opens the tenant's queue stream at `queue_path` (a path on the control
    /// endpoint, from [`Self::agent_bootstrap`]) with the queue credential. Returns
    /// when the response head has arrived; the body is the stream of frames, with no
    /// overall deadline (the caller watches the heartbeats).
    pub async fn agent_queue(
        &self,
        queue_path: &str,
        credential: &SecretString,
    ) -> Result<reqwest::Response, UplinkError> {
        let request = self.http.get(self.queue_url(queue_path)?);
        self.open_queue(request, credential).await
    }

    /// Opens the two-way queue (`duplex_path`, from [`Self::agent_bootstrap`]): as
    /// [`Self::agent_queue`], and `results` is sent as the request's body for as
    /// long as the queue lasts (newline-delimited
    /// [`postern_proto::relay::QueueResult`]s). Returns when the response head
    /// has arrived; on a connection that is not HTTP/2 the caller should end
    /// `results` and post its results instead.
    pub async fn agent_duplex_queue(
        &self,
        duplex_path: &str,
        credential: &SecretString,
        results: reqwest::Body,
    ) -> Result<reqwest::Response, UplinkError> {
        let request = self
            .http
            .post(self.queue_url(duplex_path)?)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .body(results);
        self.open_queue(request, credential).await
    }

    /// The URL of a queue path the service named, if it is a path on the
    /// control endpoint.
    fn queue_url(&self, path: &str) -> Result<String, UplinkError> {
        if !path.starts_with('/') || path.starts_with("//") {
            return Err(UplinkError::Transport(
                "the service named a queue that is not a path on the control endpoint".into(),
            ));
        }
        Ok(self.url(path))
    }

    /// Sends a queue's request and waits for its response head.
    async fn open_queue(
        &self,
        request: reqwest::RequestBuilder,
        credential: &SecretString,
    ) -> Result<reqwest::Response, UplinkError> {
        let send = request
            .bearer_auth(credential.expose())
            .header(reqwest::header::ACCEPT, "application/x-ndjson")
            .send();
        let response = tokio::time::timeout(CALL_TIMEOUT, send)
            .await
            .map_err(|_| UplinkError::Transport("the queue did not answer in time".into()))?
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(UplinkError::from_response(response).await);
        }
        Ok(response)
    }

    /// Returns the result of validation request `request_id` (PTA-5). The request ID
    /// must be a plain identifier (the caller checks).
    pub async fn agent_result(&self, request_id: &str, result: &ValidationResult) -> Result<(), UplinkError> {
        let path = relay::agent_result_path(&self.enrolment.tenant_id, request_id);
        let response = self
            .http
            .post(self.url(&path))
            .timeout(CALL_TIMEOUT)
            .json(result)
            .send()
            .await
            .map_err(transport)?;
        if !response.status().is_success() {
            return Err(UplinkError::from_response(response).await);
        }
        Ok(())
    }

    /// One round of agent upkeep: asks whether to renew and renews if told to.
    /// Returns when to ask again.
    pub async fn agent_maintain(&mut self, key_alg: KeyAlg) -> Result<Duration, UplinkError> {
        let check = self.agent_renewal_check().await?;
        if check.renew {
            self.agent_renew(key_alg).await?;
            return Ok(Duration::from_secs(4 * 3600));
        }
        Ok(Duration::from_secs(check.check_again_secs.max(1)))
    }
}
