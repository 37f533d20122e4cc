//! Who a component certificate names: the kind of component, its tenant and its ID, and
//! the URI subject alternative name that binds them (`urn:postern:{kind}:{tenant}:{id}`).
//! [`ComponentKind`] is the wire type of `postern-proto`, re-exported.

pub use postern_proto::ComponentKind;

use crate::error::PkiError;

/// Longest tenant or component identifier accepted. The tenant ID becomes the subject
/// common name, whose upper bound in RFC 5280 is 64 characters.
pub const MAX_ID_LEN: usize = 64;

/// Scheme and namespace of the component URI.
const URI_PREFIX: &str = "urn:postern:";

/// The identity a component certificate carries in its URI subject alternative name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ComponentBinding {
    /// Connector or agent.
    pub kind: ComponentKind,
    /// The tenant the component belongs to; also the certificate's subject CN.
    pub tenant_id: String,
    /// The component's ID in the store.
    pub component_id: String,
}

impl ComponentBinding {
    /// The URI form: `urn:postern:{connector|agent}:{tenant_id}:{component_id}`.
    pub fn to_uri(&self) -> String {
        format!("{URI_PREFIX}{}:{}:{}", self.kind, self.tenant_id, self.component_id)
    }

    /// Parses the URI form. `Ok(None)` if `uri` is not a Postern component URI at all;
    /// an error if it claims to be one but is malformed.
    pub fn parse_uri(uri: &str) -> Result<Option<Self>, PkiError> {
        let Some(rest) = uri.strip_prefix(URI_PREFIX) else {
            return Ok(None);
        };
        let bad = || PkiError::BadCertificate(format!("malformed component URI {uri:?}"));
        let mut parts = rest.split(':');
        let (Some(kind), Some(tenant_id), Some(component_id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let kind = ComponentKind::parse(kind).ok_or_else(bad)?;
        if check_id(tenant_id).is_err() || check_id(component_id).is_err() {
            return Err(bad());
        }
        Ok(Some(Self {
            kind,
            tenant_id: tenant_id.to_owned(),
            component_id: component_id.to_owned(),
        }))
    }
}

/// Checks a tenant or component identifier: 1 to [`MAX_ID_LEN`] characters of
/// `A-Z a-z 0-9 . _ -`. Identifiers are chosen by the service (UUIDs), so a failure is
/// the caller's bug; the narrow alphabet keeps them safe in a subject name and a URI.
pub fn check_id(id: &str) -> Result<(), PkiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadParameter(format!(
            "identifier {id:?} must be 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips() {
        let b = ComponentBinding {
            kind: ComponentKind::Agent,
            tenant_id: "0b7c9a52-5d1e-4f7e-9a63-0d6f3e1a2b4c".into(),
            component_id: "c-1".into(),
        };
        let uri = b.to_uri();
        assert_eq!(uri, "urn:postern:agent:0b7c9a52-5d1e-4f7e-9a63-0d6f3e1a2b4c:c-1");
        assert_eq!(ComponentBinding::parse_uri(&uri).unwrap(), Some(b));
    }

    #[test]
    fn foreign_uris_are_not_ours_and_malformed_ones_are_errors() {
        assert_eq!(ComponentBinding::parse_uri("https://example.com/").unwrap(), None);
        for bad in [
            "urn:postern:agent:t",
            "urn:postern:agent:t:c:extra",
            "urn:postern:gateway:t:c",
            "urn:postern:agent::c",
            "urn:postern:agent:t:c d",
        ] {
            assert!(
                matches!(ComponentBinding::parse_uri(bad), Err(PkiError::BadCertificate(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("abc-DEF_1.2").is_ok());
        assert!(check_id(&"a".repeat(MAX_ID_LEN)).is_ok());
        for bad in ["", "a:b", "a b", "é", "a/b", "a,O=Evil"] {
            assert!(matches!(check_id(bad), Err(PkiError::BadParameter(_))), "{bad}");
        }
        assert!(check_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
