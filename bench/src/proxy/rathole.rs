//! rathole server and client with the TLS transport in front of a backend: the
//! closest peer of Postern's path (a client that dials out, a server that
//! listens for users), forwarding bytes rather than HTTP requests.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::children::{Child, free_port, loopback};

/// Password of the server's PKCS#12 identity (a throwaway, like the key in it).
const PKCS12_PASSWORD: &str = "postern-bench";

/// A running rathole pair; both stopped and their directory removed when
/// dropped.
pub struct Rathole {
    addr: SocketAddr,
    // Declared before `dir`: the processes stop before their directory goes.
    _client: Child,
    _server: Child,
    _dir: tempfile::TempDir,
}

impl Rathole {
    /// Starts a server (users connect to [`Rathole::addr`]) and a client that
    /// forwards to `backend`, TLS between them with a fresh CA and certificate
    /// for `localhost`. `openssl` packs the server's PKCS#12 identity.
    pub async fn start(rathole: &Path, openssl: &Path, backend: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("postern-bench-rathole-").tempdir()?;
        let d = dir.path();
        write_tls_material(d, openssl)?;
        let control = loopback(free_port()?);
        let addr = loopback(free_port()?);
        let server_toml = format!(
            "[server]\n\
             bind_addr = \"{control}\"\n\
             [server.transport]\n\
             type = \"tls\"\n\
             [server.transport.tcp]\n\
             nodelay = true\n\
             [server.transport.tls]\n\
             pkcs12 = \"{pfx}\"\n\
             pkcs12_password = \"{PKCS12_PASSWORD}\"\n\
             [server.services.bench]\n\
             token = \"postern-bench-token\"\n\
             bind_addr = \"{addr}\"\n\
             nodelay = true\n",
            pfx = d.join("identity.pfx").display(),
        );
        let client_toml = format!(
            "[client]\n\
             remote_addr = \"localhost:{port}\"\n\
             [client.transport]\n\
             type = \"tls\"\n\
             [client.transport.tcp]\n\
             nodelay = true\n\
             [client.transport.tls]\n\
             trusted_root = \"{ca}\"\n\
             hostname = \"localhost\"\n\
             [client.services.bench]\n\
             token = \"postern-bench-token\"\n\
             local_addr = \"{backend}\"\n\
             nodelay = true\n",
            port = control.port(),
            ca = d.join("ca.pem").display(),
        );
        std::fs::write(d.join("server.toml"), server_toml)?;
        std::fs::write(d.join("client.toml"), client_toml)?;
        let command = |role: &str| {
            let mut c = Command::new(rathole);
            c.arg(format!("--{role}")).arg(d.join(format!("{role}.toml")));
            // Per-connection logs would cost more than the forwarding.
            c.env("RUST_LOG", "warn");
            c
        };
        let mut server = Child::spawn("rathole server", command("server"), &d.join("server.log"))?;
        server.wait_for_port(control, Duration::from_secs(10)).await?;
        let mut client = Child::spawn("rathole client", command("client"), &d.join("client.log"))?;
        // The server opens the service's port once the client's control channel is up.
        let ready = server.wait_for_port(addr, Duration::from_secs(15)).await;
        if let Err(e) = ready {
            client.check_alive()?;
            bail!("{e:#}\nrathole client log:\n{}", client.log_tail());
        }
        Ok(Self {
            addr,
            _client: client,
            _server: server,
            _dir: dir,
        })
    }

    /// Where users connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `ca.pem` (a fresh CA) and `identity.pfx` (key and certificate for
/// `localhost` signed by it, with the CA) in `dir`.
fn write_tls_material(dir: &Path, openssl: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "postern-bench rathole CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(dir.join("server.pem"), cert.pem())?;
    std::fs::write(dir.join("server.key"), key.serialize_pem())?;
    let output = Command::new(openssl)
        .args(["pkcs12", "-export", "-out"])
        .arg(dir.join("identity.pfx"))
        .arg("-inkey")
        .arg(dir.join("server.key"))
        .arg("-in")
        .arg(dir.join("server.pem"))
        .arg("-certfile")
        .arg(dir.join("ca.pem"))
        .arg("-passout")
        .arg(format!("pass:{PKCS12_PASSWORD}"))
        .output()
        .context("running openssl pkcs12")?;
    if !output.status.success() {
        bail!(
            "openssl pkcs12 failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
