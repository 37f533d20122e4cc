//! The installation's three certificate authorities (connectors, agents, the
//! service's own control endpoint), made once and shared by every instance: the
//! CA certificate in the store, its private key sealed under the KEK (context
//! `ca:<kind>`), so several instances behind a load balancer sign with the same
//! CAs and a database backup alone holds no usable CA key.

use std::sync::Arc;

use postern_keyring::Keyring;
use postern_pki::{CA_VALIDITY, CaKind, CertificateAuthority, ComponentKind};
use postern_store::{Store, StoreError};
use postern_time::UnixTime;

use crate::error::ControlError;

/// The three CAs.
#[derive(Clone)]
pub struct Authorities {
    connectors: Arc<CertificateAuthority>,
    agents: Arc<CertificateAuthority>,
    service: Arc<CertificateAuthority>,
}

impl std::fmt::Debug for Authorities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorities")
    }
}

fn seal_context(kind: CaKind) -> String {
    format!("ca:{}", kind.as_str())
}

async fn load_or_create(
    store: &Store,
    keyring: &Keyring,
    kind: CaKind,
    installation: &str,
    now: UnixTime,
) -> Result<CertificateAuthority, ControlError> {
    for _ in 0..2 {
        if let Some(record) = store.certificate_authority(kind.as_str()).await? {
            let key = keyring.open(&seal_context(kind), &record.key_sealed)?;
            return Ok(CertificateAuthority::from_parts(kind, &record.cert_pem, &key)?);
        }
        let (ca, material) = CertificateAuthority::generate(kind, installation, now, CA_VALIDITY)?;
        let sealed = keyring.seal(&seal_context(kind), material.key_pkcs8_der())?;
        match store
            .insert_certificate_authority(kind.as_str(), material.cert_pem(), &sealed, now)
            .await
        {
            Ok(()) => {
                tracing::info!(ca = kind.as_str(), "certificate authority created");
                return Ok(ca);
            }
            // Another instance made it first: use that one.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ControlError::Internal(format!(
        "could not load the {} CA",
        kind.as_str()
    )))
}

impl Authorities {
    /// Loads the three CAs, creating any that does not exist yet.
    pub async fn load_or_create(
        store: &Store,
        keyring: &Keyring,
        installation: &str,
        now: UnixTime,
    ) -> Result<Self, ControlError> {
        Ok(Self {
            connectors: Arc::new(load_or_create(store, keyring, CaKind::Connectors, installation, now).await?),
            agents: Arc::new(load_or_create(store, keyring, CaKind::Agents, installation, now).await?),
            service: Arc::new(load_or_create(store, keyring, CaKind::Service, installation, now).await?),
        })
    }

    /// The CA that certifies components of `kind`.
    pub fn for_component(&self, kind: ComponentKind) -> &CertificateAuthority {
        match kind {
            ComponentKind::Connector => &self.connectors,
            ComponentKind::Agent => &self.agents,
        }
    }

    /// A CA by kind.
    pub fn get(&self, kind: CaKind) -> &CertificateAuthority {
        match kind {
            CaKind::Connectors => &self.connectors,
            CaKind::Agents => &self.agents,
            CaKind::Service => &self.service,
        }
    }
}
