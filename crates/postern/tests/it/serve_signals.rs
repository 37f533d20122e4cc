//! Signals to `postern serve` as a process: SIGHUP reloads the public
//! listener's certificates (renewed in place) without a restart and without
//! stopping the service.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A CA issuing leaf certificates for the test.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// Writes `dir/stem.crt` (leaf + CA) and `dir/stem.key` (0600) for `name`,
    /// replacing earlier files; returns the leaf's DER.
    fn issue(&self, dir: &Path, stem: &str, name: &str) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let key_path = dir.join(format!("{stem}.key"));
        // Written beside, then renamed over: how renewal tools replace files.
        let fresh = dir.join(format!(".{stem}.key.new"));
        std::fs::write(&fresh, key.serialize_pem()).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::rename(&fresh, &key_path).unwrap();
        std::fs::write(dir.join(format!("{stem}.crt")), cert.pem() + &self.pem).unwrap();
        cert.der().to_vec()
    }
}

/// The leaf certificate the service presents for `host` on a fresh connection.
async fn served_leaf(addr: SocketAddr, host: &str, ca_pem: &str) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .tls_info(true)
        .resolve(host, addr)
        .build()
        .unwrap();
    let response = client
        .get(format!("https://{host}:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .expect("TLS info recorded");
    info.peer_certificate().expect("a peer certificate").to_vec()
}

/// Renew a certificate, send SIGHUP: the next connections get the new one, the
/// service keeps running and logs the reload.
#[tokio::test]
async fn sighup_reloads_renewed_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca = Ca::new();
    let host = "wiki.acme.test";
    let old = ca.issue(&certs, "wiki", host);
    let log = dir.path().join("service.log");
    let serve = crate::common::spawn_serve(
        |c| {
            c.args([
                "--listen",
                "127.0.0.1:0",
                "--control-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("POSTERN_TLS__SELF_SIGNED", "true")
            .env("POSTERN_TLS__CERTIFICATES_DIR", &certs)
            .env("RUST_LOG", "info");
        },
        &log,
    )
    .await;
    let (mut child, addr) = (serve.child, serve.addr);
    assert_eq!(served_leaf(addr, host, &ca.pem).await, old);

    let new = ca.issue(&certs, "wiki", host);
    assert_ne!(new, old);
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if served_leaf(addr, host, &ca.pem).await == new {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "SIGHUP stopped the service:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(Instant::now() < deadline, "the renewed certificate was never served");
        postern_testkit::poll_pause(Duration::from_millis(50)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "the service runs on");
    // Log lines close behind another reach the file within 100 ms.
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("TLS certificates reloaded")
    {
        assert!(
            Instant::now() < deadline,
            "the reload was not logged:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        postern_testkit::poll_pause(Duration::from_millis(50)).await;
    }

    // A broken renewal is logged and the working certificate stays.
    std::fs::write(certs.join("wiki.crt"), "not a certificate").unwrap();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("certificates not reloaded")
    {
        assert!(Instant::now() < deadline, "the failed reload was not logged");
        postern_testkit::poll_pause(Duration::from_millis(50)).await;
    }
    assert_eq!(served_leaf(addr, host, &ca.pem).await, new);
    assert!(child.try_wait().unwrap().is_none());
    let _ = child.kill();
    let _ = child.wait();
}
