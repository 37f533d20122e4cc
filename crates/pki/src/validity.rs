//! Validity periods: recommended lifetimes, the clock-skew allowance, renewal rules, and
//! conversion between [`UnixTime`] and the times written into certificates.

use std::time::Duration;

use postern_time::UnixTime;
use time::OffsetDateTime;

use crate::error::PkiError;
use crate::identity::ComponentKind;

const DAY: u64 = 24 * 60 * 60;

/// How far before `now` every certificate's `notBefore` is set. A certificate is checked
/// by clocks other than the issuer's: the connector checks the service's server
/// certificate, and behind a load balancer one service instance checks what another
/// issued a moment ago. Five minutes absorbs ordinary NTP drift without meaningfully
/// extending a certificate's life.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// Recommended lifetime of a CA (all three kinds): ten years. Rotating a CA means
/// re-enrolling or renewing every component it certified, so it should be rare.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * DAY);

/// Recommended lifetime of a connector certificate: 365 days, renewed after 180 (CON-4),
/// so a connector that is offline for up to six months still renews by itself.
pub const CONNECTOR_CERT_VALIDITY: Duration = Duration::from_secs(365 * DAY);

/// Age after which a connector renews its certificate (CON-4).
pub const CONNECTOR_RENEW_AFTER: Duration = Duration::from_secs(180 * DAY);

/// Recommended lifetime of an agent certificate: 180 days, renewal offered 30 days before
/// expiry (PTA-7). An agent certificate lets its holder read passwords, so it lives
/// shorter than a connector's.
pub const AGENT_CERT_VALIDITY: Duration = Duration::from_secs(180 * DAY);

/// How long before expiry an agent (and, as a safety net, a connector) renews (PTA-7).
pub const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(30 * DAY);

/// Recommended lifetime of the service's own server certificate from the Service CA;
/// the service re-issues it at start-up once less than [`RENEW_BEFORE_EXPIRY`] remains.
pub const SERVICE_CERT_VALIDITY: Duration = Duration::from_secs(365 * DAY);

/// Longest lifetime this crate issues to a leaf certificate. Catches unit mistakes
/// (seconds taken for days) before they become decade-long credentials.
pub const MAX_LEAF_VALIDITY: Duration = Duration::from_secs(2 * 366 * DAY);

/// Whether a component whose certificate is valid `not_before..not_after` should renew
/// at `now`. Agents: once less than [`RENEW_BEFORE_EXPIRY`] remains (PTA-7). Connectors:
/// once older than [`CONNECTOR_RENEW_AFTER`] (CON-4), or once less than
/// [`RENEW_BEFORE_EXPIRY`] remains (a certificate shortened by its CA's own expiry, or
/// issued with a short lifetime). An expired certificate is not renewable: the caller
/// checks validity first.
pub fn renewal_due(kind: ComponentKind, not_before: UnixTime, not_after: UnixTime, now: UnixTime) -> bool {
    let near_expiry = not_after.since(now) <= RENEW_BEFORE_EXPIRY;
    match kind {
        ComponentKind::Agent => near_expiry,
        ComponentKind::Connector => near_expiry || now.since(not_before) >= CONNECTOR_RENEW_AFTER,
    }
}

/// Earliest and latest instants written into a certificate or CRL: years 1950 to 9999,
/// the range of the UTCTime and GeneralizedTime encodings RFC 5280 uses.
const FIRST_ENCODABLE: i64 = -631_152_000; // 1950-01-01T00:00:00Z
const LAST_ENCODABLE: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// `t` as a date-time to write into a certificate or CRL.
pub(crate) fn to_asn1(t: UnixTime) -> Result<OffsetDateTime, PkiError> {
    if !(FIRST_ENCODABLE..=LAST_ENCODABLE).contains(&t.secs()) {
        return Err(PkiError::BadParameter(format!("time {t} is outside 1950..9999")));
    }
    OffsetDateTime::from_unix_timestamp(t.secs()).map_err(|_| PkiError::BadParameter(format!("time {t}")))
}

/// Checks a leaf lifetime chosen by the caller: more than zero, at most
/// [`MAX_LEAF_VALIDITY`].
pub(crate) fn check_leaf_validity(validity: Duration) -> Result<(), PkiError> {
    if validity.is_zero() || validity > MAX_LEAF_VALIDITY {
        return Err(PkiError::BadParameter(format!(
            "certificate validity of {}s must be between 1s and {}s",
            validity.as_secs(),
            MAX_LEAF_VALIDITY.as_secs()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixTime = UnixTime::from_secs(1_700_000_000);

    #[test]
    fn agents_renew_thirty_days_before_expiry() {
        let not_after = T0 + AGENT_CERT_VALIDITY;
        let kind = ComponentKind::Agent;
        assert!(!renewal_due(kind, T0, not_after, T0));
        assert!(!renewal_due(
            kind,
            T0,
            not_after,
            not_after - RENEW_BEFORE_EXPIRY - Duration::from_secs(1)
        ));
        assert!(renewal_due(kind, T0, not_after, not_after - RENEW_BEFORE_EXPIRY));
    }

    #[test]
    fn connectors_renew_after_180_days_or_near_expiry() {
        let kind = ComponentKind::Connector;
        let not_after = T0 + CONNECTOR_CERT_VALIDITY;
        assert!(!renewal_due(kind, T0, not_after, T0 + Duration::from_secs(179 * DAY)));
        assert!(renewal_due(kind, T0, not_after, T0 + CONNECTOR_RENEW_AFTER));
        // Shortened by the CA's expiry: renews on the expiry rule although young.
        let short = T0 + Duration::from_secs(40 * DAY);
        assert!(renewal_due(kind, T0, short, T0 + Duration::from_secs(11 * DAY)));
    }

    #[test]
    fn times_outside_the_encodable_range_are_refused() {
        assert!(to_asn1(UnixTime::from_secs(FIRST_ENCODABLE)).is_ok());
        assert!(to_asn1(UnixTime::from_secs(LAST_ENCODABLE)).is_ok());
        assert!(to_asn1(UnixTime::from_secs(FIRST_ENCODABLE - 1)).is_err());
        assert!(to_asn1(UnixTime::from_secs(LAST_ENCODABLE + 1)).is_err());
        assert!(to_asn1(UnixTime::from_secs(i64::MAX)).is_err());
    }

    #[test]
    fn leaf_validity_is_bounded() {
        assert!(check_leaf_validity(CONNECTOR_CERT_VALIDITY).is_ok());
        assert!(check_leaf_validity(Duration::ZERO).is_err());
        assert!(check_leaf_validity(MAX_LEAF_VALIDITY + Duration::from_secs(1)).is_err());
    }
}
