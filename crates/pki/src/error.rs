//! The errors of this crate, each saying whose fault it is and what the caller does next.

use crate::ca::CaKind;
use crate::identity::ComponentKind;

/// What went wrong. Messages never contain key material; those of [`PkiError::BadCsr`],
/// [`PkiError::WeakKey`] and [`PkiError::BadCertificate`] are written for the on-prem
/// requester and may be returned to it as they are.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The certificate signing request is malformed, badly signed, or asks for something
    /// the service decides itself (extensions, a subject). The requester's fault: answer
    /// 400 with this message; retrying the same CSR will fail again.
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    /// The requester's key is of a type or size the policy does not allow. Answer 400
    /// with this message; the component must generate an allowed key and a new CSR.
    #[error("key refused: {0}")]
    WeakKey(String),
    /// A presented certificate cannot be parsed, is not one of ours, or is not a
    /// component certificate. Answer 400 (or 401 where it was meant to authenticate).
    #[error("certificate refused: {0}")]
    BadCertificate(String),
    /// A presented certificate of ours has expired (or is not valid yet). For an agent
    /// this means it must be re-registered by an administrator (PTA-7): answer 401.
    #[error("certificate is not valid at this time (valid {not_before}..{not_after})")]
    CertificateExpired {
        /// Start of the certificate's validity, Unix seconds.
        not_before: i64,
        /// End of the certificate's validity, Unix seconds.
        not_after: i64,
    },
    /// A CA was asked to certify a component it must not certify (for example the
    /// Agents CA and a connector, PTA-3). A bug in the caller: answer 500.
    #[error("the {ca} CA does not certify {component}s")]
    WrongCa {
        /// The CA that was asked.
        ca: CaKind,
        /// The kind of component it was asked to certify.
        component: ComponentKind,
    },
    /// A parameter chosen by the service itself (identifier, host name, validity,
    /// time, serial) is unusable. A bug in the caller or a configuration error: answer
    /// 500, or report it to the operator at start-up.
    #[error("invalid parameter: {0}")]
    BadParameter(String),
    /// The stored CA certificate or key does not load, or they do not belong together,
    /// or belong to another kind of CA. The operator must restore the CA from backup
    /// (or the KEK that seals it); the service cannot issue until then. Answer 500.
    #[error("CA material is unusable: {0}")]
    BadCaMaterial(String),
    /// The CA itself is not valid at the given time (expired, or not yet valid). The
    /// operator must rotate the CA. Answer 503 to requesters.
    #[error("the CA is not valid at this time: {0}")]
    CaNotValid(String),
    /// The cryptographic library failed (random generator, signing). Nothing the caller
    /// can fix: answer 500 and log.
    #[error("internal PKI error: {0}")]
    Internal(String),
}

impl PkiError {
    /// Whether the party that sent the input (CSR or certificate) is at fault, so the
    /// message can be returned to it (HTTP 4xx) rather than logged as a server fault.
    pub fn is_requester_fault(&self) -> bool {
        matches!(
            self,
            PkiError::BadCsr(_)
                | PkiError::WeakKey(_)
                | PkiError::BadCertificate(_)
                | PkiError::CertificateExpired { .. }
        )
    }
}

/// Maps an rcgen failure during signing or encoding: never the requester's fault.
pub(crate) fn internal(context: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Internal(format!("{context}: {e}"))
}
