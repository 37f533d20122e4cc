//! Certificate revocation lists, one per CA, served on the public listener so a
//! component may fetch them over plain HTTP (SEC-4): `GET /pki/{ca}.crl` (DER,
//! `application/pkix-crl`) and `GET /pki/{ca}.crl.pem`. The service itself does not
//! rely on them: every mTLS request is checked against the store, so removal takes
//! effect at once (BEY-6). A CRL is re-signed (with a new number) when the set of
//! revoked serials changes, or after [`REFRESH`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use postern_pki::{CaKind, Crl, RevokedCert};
use postern_time::UnixTime;
use tokio::sync::Mutex;

use crate::Control;
use crate::error::ControlError;

/// A CRL is re-signed at least this often.
const REFRESH: Duration = Duration::from_secs(3600);
/// nextUpdate of each CRL.
const NEXT_UPDATE: Duration = Duration::from_secs(24 * 3600);

struct Cached {
    crl: Crl,
    serials: Vec<String>,
    made_at: UnixTime,
}

/// The latest CRL of each CA, per instance.
#[derive(Default)]
pub(crate) struct CrlCache {
    by_ca: Mutex<HashMap<&'static str, Cached>>,
}

impl Control {
    /// The current CRL of a CA.
    pub async fn crl_for(&self, kind: CaKind) -> Result<Crl, ControlError> {
        let now = self.now();
        let revoked = self.store.revoked_certificates(kind.as_str(), now).await?;
        let serials: Vec<String> = revoked.iter().map(|r| r.serial.clone()).collect();
        let mut cache = self.crls.by_ca.lock().await;
        if let Some(c) = cache.get(kind.as_str())
            && c.serials == serials
            && now.since(c.made_at) < REFRESH
        {
            return Ok(c.crl.clone());
        }
        let number = self.store.next_crl_number(kind.as_str()).await?;
        let list: Vec<RevokedCert> = revoked
            .into_iter()
            .map(|r| RevokedCert {
                serial: r.serial,
                revoked_at: r.revoked_at,
            })
            .collect();
        let crl = self
            .authorities
            .get(kind)
            .crl(&list, u64::try_from(number).unwrap_or(0), now, NEXT_UPDATE)?;
        cache.insert(
            kind.as_str(),
            Cached {
                crl: crl.clone(),
                serials,
                made_at: now,
            },
        );
        Ok(crl)
    }
}

/// `GET /pki/{connectors|agents|service}.crl[.pem]`.
pub(crate) async fn crl(State(control): State<Arc<Control>>, Path(file): Path<String>) -> Response {
    let (name, pem) = match file.strip_suffix(".crl.pem") {
        Some(n) => (n, true),
        None => match file.strip_suffix(".crl") {
            Some(n) => (n, false),
            None => return StatusCode::NOT_FOUND.into_response(),
        },
    };
    let Some(kind) = CaKind::parse(name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match control.crl_for(kind).await {
        Ok(crl) if pem => (
            [
                (header::CONTENT_TYPE, "application/x-pem-file"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            crl.pem,
        )
            .into_response(),
        Ok(crl) => (
            [
                (header::CONTENT_TYPE, "application/pkix-crl"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            crl.der,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
