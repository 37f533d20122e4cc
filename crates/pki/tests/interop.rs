//! The crate's certificates checked by independent implementations: rustls/webpki as the
//! mTLS listener will use them, a real TLS handshake on loopback, and the OpenSSL CLI.
// Helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use postern_pki::*;
use postern_time::{Clock, SystemClock, UnixTime};
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::default_provider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TENANT: &str = "3f0e8d4a-1b2c-4d5e-8f90-a1b2c3d4e5f6";

/// A fixed moment in the past: validity checks below use it, not the wall clock.
const PAST: UnixTime = UnixTime::from_secs(1_600_000_000);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(default_provider())
}

fn ca(kind: CaKind, now: UnixTime) -> CertificateAuthority {
    CertificateAuthority::generate(kind, "interop.example", now, CA_VALIDITY)
        .unwrap()
        .0
}

/// A component key and the certificate its CA issued for it.
struct Component {
    key: ComponentKey,
    cert: IssuedCert,
}

fn enrol(ca: &CertificateAuthority, kind: ComponentKind, alg: KeyAlg, id: &str, now: UnixTime) -> Component {
    let key = generate_key(alg).unwrap();
    let csr = make_csr(&key).unwrap();
    let cert = ca
        .issue_client(csr.as_bytes(), &ClientCertRequest::new(kind, TENANT, id), now)
        .unwrap();
    Component { key, cert }
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from(ca.cert_der().to_vec())).unwrap();
    Arc::new(roots)
}

fn client_verifier(ca: &CertificateAuthority, crls: Vec<Vec<u8>>) -> Arc<dyn ClientCertVerifier> {
    WebPkiClientVerifier::builder_with_provider(roots(ca), provider())
        .with_crls(crls.into_iter().map(CertificateRevocationListDer::from))
        .build()
        .unwrap()
}

fn at(t: UnixTime) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t.secs()).unwrap()))
}

fn der(cert: &IssuedCert) -> CertificateDer<'static> {
    CertificateDer::from(cert.cert_der.clone())
}

#[test]
fn webpki_accepts_components_only_under_their_own_ca() {
    let connectors = ca(CaKind::Connectors, PAST);
    let agents = ca(CaKind::Agents, PAST);
    let connector = enrol(&connectors, ComponentKind::Connector, KeyAlg::EcdsaP256, "c1", PAST);
    let connector_rsa = enrol(&connectors, ComponentKind::Connector, KeyAlg::Rsa(2048), "c2", PAST);
    let agent = enrol(&agents, ComponentKind::Agent, KeyAlg::Rsa(2048), "a1", PAST);
    let later = at(PAST + Duration::from_secs(3600));

    let connector_listener = client_verifier(&connectors, vec![]);
    let agent_listener = client_verifier(&agents, vec![]);
    connector_listener
        .verify_client_cert(&der(&connector.cert), &[], later)
        .unwrap();
    connector_listener
        .verify_client_cert(&der(&connector_rsa.cert), &[], later)
        .unwrap();
    agent_listener
        .verify_client_cert(&der(&agent.cert), &[], later)
        .unwrap();

    // PTA-3: a connector certificate is useless against the agents' trust root, and back.
    assert!(
        agent_listener
            .verify_client_cert(&der(&connector.cert), &[], later)
            .is_err()
    );
    assert!(
        connector_listener
            .verify_client_cert(&der(&agent.cert), &[], later)
            .is_err()
    );

    // Validity is what was issued, and time is the caller's: before and after fail.
    assert!(
        connector_listener
            .verify_client_cert(&der(&connector.cert), &[], at(PAST - Duration::from_secs(3600)))
            .is_err()
    );
    let expired = at(PAST + CONNECTOR_CERT_VALIDITY + Duration::from_secs(1));
    assert!(
        connector_listener
            .verify_client_cert(&der(&connector.cert), &[], expired)
            .is_err()
    );

    // The CA certificate itself is not a client certificate.
    let ca_der = CertificateDer::from(connectors.cert_der().to_vec());
    assert!(connector_listener.verify_client_cert(&ca_der, &[], later).is_err());
}

#[test]
fn x509_parser_verifies_the_signature_independently() {
    use x509_parser::prelude::parse_x509_certificate;
    let agents = ca(CaKind::Agents, PAST);
    let other = ca(CaKind::Agents, PAST);
    let agent = enrol(&agents, ComponentKind::Agent, KeyAlg::Rsa(3072), "a1", PAST);
    let (_, cert) = parse_x509_certificate(&agent.cert.cert_der).unwrap();
    let (_, ca_cert) = parse_x509_certificate(agents.cert_der()).unwrap();
    let (_, other_cert) = parse_x509_certificate(other.cert_der()).unwrap();
    cert.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert!(cert.verify_signature(Some(other_cert.public_key())).is_err());
    assert_eq!(cert.public_key().raw, agent.key.public_spki_der());
}

#[test]
fn webpki_honours_the_crl() {
    let connectors = ca(CaKind::Connectors, PAST);
    let kept = enrol(&connectors, ComponentKind::Connector, KeyAlg::EcdsaP256, "kept", PAST);
    let removed = enrol(
        &connectors,
        ComponentKind::Connector,
        KeyAlg::EcdsaP256,
        "removed",
        PAST,
    );
    let now = PAST + Duration::from_secs(60);
    let revoked = [RevokedCert {
        serial: removed.cert.serial.clone(),
        revoked_at: now,
    }];
    let crl = connectors.crl(&revoked, 1, now, Duration::from_secs(86_400)).unwrap();
    let listener = client_verifier(&connectors, vec![crl.der.clone()]);
    let later = at(now + Duration::from_secs(60));
    listener.verify_client_cert(&der(&kept.cert), &[], later).unwrap();
    let err = listener
        .verify_client_cert(&der(&removed.cert), &[], later)
        .unwrap_err();
    assert!(format!("{err:?}").contains("Revoked"), "{err:?}");
}

/// Runs `openssl` with `args`; the tool is installed on every machine this project
/// builds on, so its absence is a failure, not a skip.
fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed (apt-get install openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn openssl_parses_the_crl_and_enforces_it() {
    let now = SystemClock.now();
    let agents = ca(CaKind::Agents, now);
    let kept = enrol(&agents, ComponentKind::Agent, KeyAlg::Rsa(2048), "kept", now);
    let removed = enrol(&agents, ComponentKind::Agent, KeyAlg::Rsa(2048), "removed", now);
    let revoked = [RevokedCert {
        serial: removed.cert.serial.clone(),
        revoked_at: now,
    }];
    let crl = agents.crl(&revoked, 42, now, Duration::from_secs(86_400)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crl_pem = write(dir.path(), "crl.pem", crl.pem.as_bytes());
    let crl_der = write(dir.path(), "crl.der", &crl.der);

    let (ok, pem_text) = openssl(&["crl", "-in", &crl_pem, "-noout", "-text"]);
    assert!(ok, "{pem_text}");
    let (ok, der_text) = openssl(&["crl", "-inform", "DER", "-in", &crl_der, "-noout", "-text"]);
    assert!(ok, "{der_text}");
    assert_eq!(pem_text, der_text);
    assert!(pem_text.contains("Version 2"), "{pem_text}");
    assert!(pem_text.contains("Issuer: CN = Postern Agents CA"), "{pem_text}");
    assert!(pem_text.contains("X509v3 CRL Number"), "{pem_text}");
    assert!(pem_text.contains("42"), "{pem_text}");
    assert!(pem_text.contains(&removed.cert.serial.to_uppercase()), "{pem_text}");
    assert!(!pem_text.contains(&kept.cert.serial.to_uppercase()), "{pem_text}");

    // openssl's own chain check, as a third party relying on the CRL would do it.
    let ca_pem = write(dir.path(), "ca.pem", agents.cert_pem().as_bytes());
    let kept_pem = write(dir.path(), "kept.pem", kept.cert.cert_pem.as_bytes());
    let removed_pem = write(dir.path(), "removed.pem", removed.cert.cert_pem.as_bytes());
    let verify = |leaf: &str| {
        openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-crl_check",
            "-CAfile",
            &ca_pem,
            "-CRLfile",
            &crl_pem,
            leaf,
        ])
    };
    let (ok, text) = verify(&kept_pem);
    assert!(ok, "{text}");
    let (ok, text) = verify(&removed_pem);
    assert!(!ok && text.contains("certificate revoked"), "{text}");
    // And the CA's signature on the CRL checks out.
    let (ok, text) = openssl(&["crl", "-in", &crl_pem, "-noout", "-CAfile", &ca_pem]);
    assert!(ok && text.contains("verify OK"), "{text}");
}

/// Server config: the Service CA's server certificate, requiring a client certificate
/// from the Connectors CA.
fn server_config(service_cert: &IssuedCert, service_key: &[u8], connectors: &CertificateAuthority) -> ServerConfig {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier(connectors, vec![]))
        .with_single_cert(
            vec![der(service_cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(service_key.to_vec())),
        )
        .unwrap()
}

/// Client config: trusts only the Service CA, presents `component`'s certificate.
fn client_config(service_ca: &CertificateAuthority, component: &Component) -> ClientConfig {
    let key = PrivateKeyDer::from_pem_slice(component.key.to_pem().as_bytes()).unwrap();
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(service_ca))
        .with_client_auth_cert(vec![der(&component.cert)], key)
        .unwrap()
}

/// What each side of one connection saw.
struct Outcome {
    /// What the client read back, or its error.
    client: Result<Vec<u8>, String>,
    /// The client certificate as the server read it, or the server's error.
    server: Result<CertInfo, String>,
}

/// One connection: the client sends five bytes, the server echoes them.
async fn exchange(server: ServerConfig, client: ClientConfig) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
            .ok_or("no client certificate")?;
        let info = cert_info(&peer).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(&buf).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(info)
    });
    let connector = TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("postern.test").unwrap();
    let client = async {
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"hello").await.map_err(|e| e.to_string())?;
        let mut back = Vec::new();
        tls.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(back)
    }
    .await;
    let server = server_task.await.unwrap();
    Outcome { client, server }
}

#[tokio::test]
async fn mtls_handshake_on_loopback() {
    let now = SystemClock.now();
    let service_ca = ca(CaKind::Service, now);
    let connectors = ca(CaKind::Connectors, now);
    let agents = ca(CaKind::Agents, now);
    let names = ["postern.test".to_string(), "127.0.0.1".to_string()];
    let (service_cert, service_key) = service_ca.issue_server(&names, now, SERVICE_CERT_VALIDITY).unwrap();
    let connector = enrol(&connectors, ComponentKind::Connector, KeyAlg::EcdsaP256, "c1", now);
    let agent = enrol(&agents, ComponentKind::Agent, KeyAlg::Rsa(2048), "a1", now);
    let server = || server_config(&service_cert, &service_key, &connectors);

    // The connector, trusting the Service CA, gets through; the server sees who it is.
    let ok = exchange(server(), client_config(&service_ca, &connector)).await;
    assert_eq!(ok.client.unwrap(), b"hello");
    let seen = ok.server.unwrap();
    assert_eq!(seen.tenant_id(), Some(TENANT));
    assert_eq!(seen.component.unwrap().component_id, "c1");
    assert_eq!(seen.serial, connector.cert.serial);

    // A listener for connectors refuses an agent's certificate.
    let refused = exchange(server(), client_config(&service_ca, &agent)).await;
    let err = refused.server.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(refused.client.is_err());

    // A client that trusts another CA refuses the service's certificate.
    let distrust = exchange(server(), client_config(&connectors, &connector)).await;
    let err = distrust.client.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(distrust.server.is_err());
}
