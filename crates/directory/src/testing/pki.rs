//! Test certificates: a CA and a server certificate for loopback, written as PEM files.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use super::HarnessError;

/// A CA and one server certificate signed by it, as files in a directory.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// The CA certificate (PEM): what a client trusts.
    pub ca_file: PathBuf,
    /// The server certificate (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PKCS#8 PEM, mode 0600).
    pub key_file: PathBuf,
}

impl TestPki {
    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`: a fresh CA named
    /// `ca_name`, and a server certificate for `127.0.0.1`, `localhost` and `dns_names`.
    pub fn generate(dir: &Path, ca_name: &str, dns_names: &[&str]) -> Result<Self, HarnessError> {
        let err = |e: rcgen::Error| HarnessError::Certificates(e.to_string());
        let (ca_params, ca_key, ca_pem) = new_ca(ca_name)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names: Vec<String> = vec!["localhost".into()];
        names.extend(dns_names.iter().map(|n| (*n).to_owned()));
        let mut params = CertificateParams::new(names).map_err(err)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "postern test directory");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;

        let pki = Self {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
        };
        write(&pki.ca_file, &ca_pem, 0o644)?;
        write(&pki.cert_file, &cert.pem(), 0o644)?;
        write(&pki.key_file, &key.serialize_pem(), 0o600)?;
        Ok(pki)
    }

    /// Writes the certificate of a CA that signed nothing, as `file`: a client trusting
    /// only it must refuse the server.
    pub fn unrelated_ca(file: &Path) -> Result<PathBuf, HarnessError> {
        let (_, _, pem) = new_ca("unrelated test CA")?;
        write(file, &pem, 0o644)?;
        Ok(file.to_owned())
    }
}

fn new_ca(name: &str) -> Result<(CertificateParams, KeyPair, String), HarnessError> {
    let err = |e: rcgen::Error| HarnessError::Certificates(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((params, key, cert.pem()))
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, contents).map_err(HarnessError::io(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(HarnessError::io(format!("chmod {}", path.display())))
}
