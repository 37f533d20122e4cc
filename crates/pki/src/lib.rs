//! Certificate authorities, CSR checks and certificate profiles for connectors and agents.
//!
//! Pure functions and types: no I/O, no database, time passed in as `now`. The service
//! keeps three CAs per installation ([`CaKind`]): one for connectors, one for
//! pass-through-authentication agents and nothing else (PTA-3), and one for its own
//! control-plane server certificate. Enrolment and renewal endpoints check a component's
//! CSR and have the right CA issue a client certificate whose every field the service
//! chooses ([`CertificateAuthority::issue_client`]); the mTLS listener reads the verified
//! peer certificate with [`cert_info`]; revocations are published with
//! [`CertificateAuthority::crl`]. On the on-prem host, `register` uses [`generate_key`]
//! and [`make_csr`].
//!
//! ```
//! use postern_pki::*;
//! use postern_time::UnixTime;
//!
//! let now = UnixTime::from_secs(1_700_000_000);
//! // Service, at installation: create the CA, seal and store `material`.
//! let (agents_ca, _material) = CertificateAuthority::generate(CaKind::Agents, "postern.example", now, CA_VALIDITY)?;
//! // Agent host: a key that never leaves it, and a CSR.
//! let key = generate_key(KeyAlg::Rsa(2048))?;
//! let csr = make_csr(&key)?;
//! // Service, enrolment: the tenant comes from the admin's token, not from the CSR.
//! let req = ClientCertRequest::new(ComponentKind::Agent, "tenant-1", "agent-1");
//! let issued = agents_ca.issue_client(csr.as_bytes(), &req, now)?;
//! assert_eq!(cert_info(issued.cert_pem.as_bytes())?.tenant_id(), Some("tenant-1"));
//! assert_eq!(issued.key_id, key.key_id());
//! # Ok::<(), PkiError>(())
//! ```
#![warn(missing_docs)]

mod ca;
mod crl;
pub mod csr;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
mod info;
pub mod issue;
mod key;
mod pem;
mod policy;
mod self_signed;
pub mod serial;
mod validity;

pub use ca::{CaKeyMaterial, CaKind, CertificateAuthority, MAX_INSTALLATION_LEN};
pub use crl::{Crl, RevokedCert};
pub use csr::{MAX_CSR_LEN, make_csr};
pub use error::PkiError;
pub use identity::{ComponentBinding, ComponentKind, MAX_ID_LEN, check_id};
pub use info::{CertInfo, cert_info};
pub use issue::{ClientCertRequest, IssuedCert};
pub use key::{ComponentKey, generate_key, key_id};
pub use policy::{KeyAlg, KeyPolicy, RSA_EXPONENT};
pub use self_signed::{SelfSignedServer, ServerName, self_signed_server};
pub use serial::{SERIAL_LEN, normalize_serial};
pub use validity::{
    AGENT_CERT_VALIDITY, CA_VALIDITY, CLOCK_SKEW_ALLOWANCE, CONNECTOR_CERT_VALIDITY, CONNECTOR_RENEW_AFTER,
    MAX_LEAF_VALIDITY, RENEW_BEFORE_EXPIRY, SERVICE_CERT_VALIDITY, renewal_due,
};
