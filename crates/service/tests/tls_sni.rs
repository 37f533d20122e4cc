//! The front door's TLS end to end: the real service with certificates for several
//! hosts, and a real TLS client per SNI name checking which certificate came back.
// Helpers outside `#[test]` functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use postern_service::config::{TlsFiles, TlsSettings};
use postern_service::{Config, RunningService};
use postern_time::ManualClock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A test CA issuing leaf certificates.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Postern test CA");
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Issues a certificate for `names`, written with the CA's as `dir/stem.crt` and
    /// its key as `dir/stem.key` (0600); returns the files and the leaf's DER.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> (TlsFiles, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem() + &self.pem).unwrap();
        write_private(&files.key, &key.serialize_pem());
        (files, cert.der().to_vec())
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

/// A TLS client trusting `anchors`, offering `alpn`, with full handshakes only (a
/// resumed session reports the certificate of the session it resumes).
fn connector(anchors: &[CertificateDer<'static>], alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for anchor in anchors {
        roots.add(anchor.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

/// Connects to `addr` asking for `name` (SNI for a DNS name, none for an IP
/// address); the handshake verifies the certificate for `name`.
async fn handshake(connector: &TlsConnector, addr: SocketAddr, name: &str) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    connector
        .connect(server_name, tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {name}: {e}"))
}

fn leaf(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn start(config: Config) -> RunningService {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    RunningService::start(config, ManualClock::starting_now())
        .await
        .unwrap()
}

#[tokio::test]
async fn each_host_gets_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir(&certs_dir).unwrap();
    let ca = TestCa::new();
    let (login, login_der) = ca.issue(dir.path(), "login", &["login.example.test", "127.0.0.1"]);
    let (wiki, wiki_der) = ca.issue(dir.path(), "wiki", &["wiki.example.test"]);
    let (_, apps_der) = ca.issue(&certs_dir, "apps", &["*.apps.example.test"]);

    let mut config = Config::local(dir.path().join("data"));
    config.tls = Some(TlsSettings {
        default: Some(login),
        certificates: vec![wiki],
        certificates_dir: Some(certs_dir),
        self_signed: false,
        self_signed_names: Vec::new(),
    });
    let service = start(config).await;
    let addr = service.local_addr();
    assert_eq!(service.public_url().scheme(), "https");

    let client = connector(std::slice::from_ref(&ca.der), &[b"h2", b"http/1.1"]);
    let wiki_conn = handshake(&client, addr, "wiki.example.test").await;
    assert_eq!(leaf(&wiki_conn), wiki_der);
    assert_eq!(wiki_conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(leaf(&handshake(&client, addr, "crm.apps.example.test").await), apps_der);
    assert_eq!(leaf(&handshake(&client, addr, "login.example.test").await), login_der);
    assert_ne!(wiki_der, login_der);

    // An unknown host gets the default certificate, which the client then refuses.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let refused = client
        .connect(ServerName::try_from("unknown.example.test").unwrap(), tcp)
        .await;
    assert!(
        refused.is_err(),
        "the default certificate does not name unknown.example.test"
    );

    // A client dialling the IP address sends no SNI: the default certificate, and the
    // service answers over it (HTTP/1.1).
    let http1 = connector(std::slice::from_ref(&ca.der), &[b"http/1.1"]);
    let mut ip_conn = handshake(&http1, addr, "127.0.0.1").await;
    assert_eq!(leaf(&ip_conn), login_der);
    assert_eq!(ip_conn.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    ip_conn
        .write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    ip_conn.read_to_end(&mut response).await.unwrap_or_default();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    service.shutdown().await;
}

#[tokio::test]
async fn self_signed_certificate_for_the_public_host_and_its_apps_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = Config::local(data.clone());
    config.public_url = Some("https://login.example.test".parse().unwrap());
    config.tls = Some(TlsSettings {
        self_signed: true,
        ..TlsSettings::default()
    });
    let service = start(config.clone()).await;
    let addr = service.local_addr();
    let cert_path = data.join("tls/self-signed.crt");
    let generated = CertificateDer::from_pem_file(&cert_path).unwrap();
    let client = connector(std::slice::from_ref(&generated), &[b"h2", b"http/1.1"]);
    for name in [
        "login.example.test",
        "wiki.login.example.test",
        "localhost",
        "127.0.0.1",
    ] {
        let conn = handshake(&client, addr, name).await;
        assert_eq!(leaf(&conn), generated.to_vec(), "{name}");
    }
    service.shutdown().await;

    // The next start serves the same certificate.
    let service = start(config).await;
    let conn = handshake(&client, service.local_addr(), "login.example.test").await;
    assert_eq!(leaf(&conn), generated.to_vec());
    assert_eq!(CertificateDer::from_pem_file(&cert_path).unwrap(), generated);
    service.shutdown().await;
}

/// Renewed certificates are picked up by a reload without a restart: the next
/// handshake gets the new one, a connection opened before keeps working, and a
/// broken set (a key that does not match) is refused while the current set stays.
#[tokio::test]
async fn renewed_certificates_are_served_after_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let certs_dir = dir.path().join("certs");
    std::fs::create_dir(&certs_dir).unwrap();
    let ca = TestCa::new();
    let (login, _) = ca.issue(dir.path(), "login", &["login.example.test", "127.0.0.1"]);
    let (_, old_der) = ca.issue(&certs_dir, "wiki", &["wiki.example.test"]);
    let mut config = Config::local(dir.path().join("data"));
    config.tls = Some(TlsSettings {
        default: Some(login),
        certificates: Vec::new(),
        certificates_dir: Some(certs_dir.clone()),
        self_signed: false,
        self_signed_names: Vec::new(),
    });
    let service = start(config).await;
    let addr = service.local_addr();
    let client = connector(std::slice::from_ref(&ca.der), &[b"http/1.1"]);
    let mut before = handshake(&client, addr, "wiki.example.test").await;
    assert_eq!(leaf(&before), old_der);

    // Renewal: new files in place of the old ones, then a reload.
    std::fs::remove_file(certs_dir.join("wiki.crt")).unwrap();
    std::fs::remove_file(certs_dir.join("wiki.key")).unwrap();
    let (_, new_der) = ca.issue(&certs_dir, "wiki", &["wiki.example.test"]);
    assert_ne!(new_der, old_der);
    assert_eq!(
        leaf(&handshake(&client, addr, "wiki.example.test").await),
        old_der,
        "nothing changes before the reload"
    );
    assert!(service.reload_certificates().unwrap(), "the listener has TLS");
    assert_eq!(leaf(&handshake(&client, addr, "wiki.example.test").await), new_der);

    // The connection from before the reload still works.
    before
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: wiki.example.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    before.read_to_end(&mut response).await.unwrap_or_default();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 "), "{response}");

    // A broken renewal (the key of another certificate): refused, naming the
    // file; the working set stays.
    let (other, _) = ca.issue(dir.path(), "other", &["other.example.test"]);
    std::fs::remove_file(certs_dir.join("wiki.key")).unwrap();
    std::fs::copy(&other.key, certs_dir.join("wiki.key")).unwrap();
    let err = service.reload_certificates().unwrap_err().to_string();
    assert!(err.contains("wiki"), "{err}");
    assert_eq!(
        leaf(&handshake(&client, addr, "wiki.example.test").await),
        new_der,
        "the current set stays after a failed reload"
    );
    service.shutdown().await;
}

/// A listener without TLS has nothing to reload, and says so.
#[tokio::test]
async fn a_plain_listener_has_no_certificates_to_reload() {
    let dir = tempfile::tempdir().unwrap();
    let service = start(Config::local(dir.path().join("data"))).await;
    assert!(!service.reload_certificates().unwrap());
    service.shutdown().await;
}
