//! Certificate revocation lists: a v2 CRL signed by a CA, listing the serials of
//! certificates revoked before their expiry (BEY-6), published over plain HTTP (SEC-4).
//!
//! The service itself does not rely on the CRL: every mTLS request is checked against the
//! store. The CRL lets anything else that trusts a Postern CA see revocations.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use postern_time::UnixTime;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use crate::ca::CertificateAuthority;
use crate::error::{PkiError, internal};
use crate::serial::parse_text;
use crate::validity::{CLOCK_SKEW_ALLOWANCE, to_asn1};

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCert {
    /// The serial's text form (hex; see [`crate::serial`]).
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: UnixTime,
}

/// A signed CRL in both encodings.
#[derive(Clone, PartialEq, Eq)]
pub struct Crl {
    /// DER, served as `application/pkix-crl`.
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`).
    pub pem: String,
}

impl fmt::Debug for Crl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Crl")
            .field("der_len", &self.der.len())
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Signs a v2 CRL listing `revoked`, numbered `crl_number` (the caller keeps it
    /// increasing), with thisUpdate `now` less [`CLOCK_SKEW_ALLOWANCE`] and nextUpdate
    /// `now + next_update`. Carries the CRL number and authority key identifier
    /// extensions (RFC 5280 §5.2). A serial listed twice appears once, with its earliest
    /// revocation time. No reason codes: the store's reasons are for people.
    pub fn crl(
        &self,
        revoked: &[RevokedCert],
        crl_number: u64,
        now: UnixTime,
        next_update: Duration,
    ) -> Result<Crl, PkiError> {
        if next_update.is_zero() {
            return Err(PkiError::BadParameter(
                "CRL next update must be after this update".into(),
            ));
        }
        let mut by_serial: BTreeMap<Vec<u8>, UnixTime> = BTreeMap::new();
        for entry in revoked {
            let serial = parse_text(&entry.serial)?;
            let at = by_serial.entry(serial).or_insert(entry.revoked_at);
            *at = (*at).min(entry.revoked_at);
        }
        let revoked_certs = by_serial
            .into_iter()
            .map(|(serial, at)| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: to_asn1(at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let params = CertificateRevocationListParams {
            this_update: to_asn1(now - CLOCK_SKEW_ALLOWANCE)?,
            next_update: to_asn1(now + next_update)?,
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.key_identifier().to_vec()),
        };
        let crl = params.signed_by(&self.issuer()?).map_err(internal("signing the CRL"))?;
        let pem = crl.pem().map_err(internal("encoding the CRL"))?;
        Ok(Crl {
            der: crl.der().as_ref().to_vec(),
            pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::{FromDer, parse_x509_certificate, parse_x509_crl};
    use x509_parser::revocation_list::CertificateRevocationList;

    use super::*;
    use crate::ca::CaKind;
    use crate::serial::to_text;
    use crate::validity::CA_VALIDITY;

    const NOW: UnixTime = UnixTime::from_secs(1_650_000_000);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn lists_the_revoked_serials_and_verifies() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Connectors, "i", NOW, CA_VALIDITY).unwrap();
        let revoked = [
            RevokedCert {
                serial: "4a0b0c0d0e0f10111213141516171819".into(),
                revoked_at: NOW - DAY,
            },
            RevokedCert {
                serial: "00:FF:01".into(),
                revoked_at: NOW,
            },
            RevokedCert {
                serial: "4A0B0C0D0E0F10111213141516171819".into(),
                revoked_at: NOW - DAY - DAY,
            },
        ];
        let crl = ca.crl(&revoked, 7, NOW, DAY).unwrap();
        let (rest, parsed) = parse_x509_crl(&crl.der).unwrap();
        assert!(rest.is_empty());
        assert_eq!(parsed.version().map(|v| v.0), Some(1), "v2");
        assert_eq!(parsed.crl_number().map(|n| n.to_string()), Some("7".into()));
        assert_eq!(parsed.last_update().timestamp(), (NOW - CLOCK_SKEW_ALLOWANCE).secs());
        assert_eq!(parsed.next_update().map(|t| t.timestamp()), Some((NOW + DAY).secs()));
        let entries: Vec<(String, i64)> = parsed
            .iter_revoked_certificates()
            .map(|r| (to_text(r.raw_serial()), r.revocation_date.timestamp()))
            .collect();
        assert_eq!(
            entries,
            [
                ("4a0b0c0d0e0f10111213141516171819".to_string(), (NOW - DAY - DAY).secs()),
                ("ff01".to_string(), NOW.secs()),
            ]
        );
        let (_, ca_cert) = parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(parsed.issuer().as_raw(), ca_cert.subject().as_raw());
        parsed.verify_signature(ca_cert.public_key()).unwrap();
        let aki = parsed
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.clone(),
                _ => None,
            })
            .unwrap();
        assert_eq!(aki.0, ca.key_identifier());
        // The PEM form holds the same CRL.
        let pem_der = rustls_pki_types::pem::PemObject::from_pem_slice(crl.pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateRevocationListDer<'_>| d.as_ref().to_vec())
            .unwrap();
        assert_eq!(pem_der, crl.der);
        assert!(CertificateRevocationList::from_der(&pem_der).is_ok());
    }

    #[test]
    fn empty_crl_is_valid() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let crl = ca.crl(&[], 0, NOW, DAY).unwrap();
        let (_, parsed) = parse_x509_crl(&crl.der).unwrap();
        assert_eq!(parsed.iter_revoked_certificates().count(), 0);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let (ca, _) = CertificateAuthority::generate(CaKind::Agents, "i", NOW, CA_VALIDITY).unwrap();
        let bad_serial = [RevokedCert {
            serial: "not hex".into(),
            revoked_at: NOW,
        }];
        assert!(matches!(
            ca.crl(&bad_serial, 1, NOW, DAY),
            Err(PkiError::BadParameter(_))
        ));
        assert!(matches!(
            ca.crl(&[], 1, NOW, Duration::ZERO),
            Err(PkiError::BadParameter(_))
        ));
    }
}
