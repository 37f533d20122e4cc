//! Reading an account's entry: decoding search results without panicking, attribute
//! names per flavor, AD's binary GUIDs and group DNs.

use std::collections::HashMap;

use ldap3::ResultEntry;
use serde::Deserialize;
use uuid::Uuid;

use super::config::Flavor;

/// Which attributes hold what. Each field left out of the configuration takes the
/// flavor's default.
///
/// | field | Active Directory | OpenLDAP |
/// |---|---|---|
/// | `upn` | `userPrincipalName` | `uid` |
/// | `display_name` | `displayName` | `cn` |
/// | `mail` | `mail` | `mail` |
/// | `groups` | `memberOf` | `memberOf` (then a member search, see `group_filter`) |
/// | `stable_id` | `objectGUID` (binary, mixed-endian) | `entryUUID` (text) |
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AttributeNames {
    /// The sign-in name reported back ([`AccountInfo::upn`](crate::AccountInfo)).
    pub upn: Option<String>,
    /// The display name.
    pub display_name: Option<String>,
    /// The e-mail address.
    pub mail: Option<String>,
    /// Group DNs the entry is a member of.
    pub groups: Option<String>,
    /// The identifier that survives renames.
    pub stable_id: Option<String>,
}

/// Attribute names with the flavor's defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResolvedAttributes {
    pub upn: String,
    pub display_name: String,
    pub mail: String,
    pub groups: String,
    pub stable_id: String,
    /// Whether `stable_id` holds AD's binary GUID rather than a UUID string.
    pub binary_guid: bool,
}

impl ResolvedAttributes {
    pub(crate) fn resolve(flavor: Flavor, names: &AttributeNames) -> Self {
        let (upn, display_name, stable_id) = match flavor {
            Flavor::ActiveDirectory => ("userPrincipalName", "displayName", "objectGUID"),
            Flavor::OpenLdap => ("uid", "cn", "entryUUID"),
        };
        let pick =
            |configured: &Option<String>, default: &str| configured.clone().unwrap_or_else(|| default.to_owned());
        let stable_id = pick(&names.stable_id, stable_id);
        Self {
            upn: pick(&names.upn, upn),
            display_name: pick(&names.display_name, display_name),
            mail: pick(&names.mail, "mail"),
            groups: pick(&names.groups, "memberOf"),
            binary_guid: stable_id.eq_ignore_ascii_case("objectGUID"),
            stable_id,
        }
    }

    /// The attributes a user search asks for.
    pub(crate) fn requested(&self) -> Vec<&str> {
        vec![&self.upn, &self.display_name, &self.mail, &self.groups, &self.stable_id]
    }
}

/// One search result entry: its DN and its attributes keyed by lower-case name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub dn: String,
    attrs: HashMap<String, Vec<Vec<u8>>>,
}

impl Entry {
    /// Decodes a search result entry. `None` for references, intermediate messages and
    /// anything malformed (ldap3's own decoder panics on those).
    pub(crate) fn decode(raw: ResultEntry) -> Option<Entry> {
        if raw.is_ref() || raw.is_intermediate() {
            return None;
        }
        let mut parts = raw.0.match_id(4)?.expect_constructed()?.into_iter();
        let dn = String::from_utf8(parts.next()?.expect_primitive()?).ok()?;
        let mut attrs = HashMap::new();
        for attribute in parts.next()?.expect_constructed()? {
            let mut pair = attribute.expect_constructed()?.into_iter();
            let name = String::from_utf8(pair.next()?.expect_primitive()?).ok()?;
            let values = pair
                .next()?
                .expect_constructed()?
                .into_iter()
                .map(|v| v.expect_primitive())
                .collect::<Option<Vec<_>>>()?;
            attrs.insert(name.to_ascii_lowercase(), values);
        }
        Some(Entry { dn, attrs })
    }

    #[cfg(test)]
    pub(crate) fn new(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Entry {
        Entry {
            dn: dn.to_owned(),
            attrs: attrs
                .iter()
                .map(|(k, vs)| (k.to_ascii_lowercase(), vs.iter().map(|v| v.to_vec()).collect()))
                .collect(),
        }
    }

    /// The first value of `name` as text (values that are not UTF-8 are skipped).
    pub(crate) fn text(&self, name: &str) -> Option<String> {
        self.texts(name).into_iter().next()
    }

    /// Every value of `name` that is UTF-8 text.
    pub(crate) fn texts(&self, name: &str) -> Vec<String> {
        self.values(name)
            .iter()
            .filter_map(|v| String::from_utf8(v.clone()).ok())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// Every raw value of `name`.
    pub(crate) fn values(&self, name: &str) -> &[Vec<u8>] {
        self.attrs
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The stable identifier: AD's binary GUID or a UUID in text, as a lower-case UUID
    /// string. `None` when the entry has none or it is not a UUID.
    pub(crate) fn stable_id(&self, attrs: &ResolvedAttributes) -> Option<String> {
        let raw = self.values(&attrs.stable_id).first()?;
        if attrs.binary_guid {
            ad_guid_to_uuid(raw)
        } else {
            let text = std::str::from_utf8(raw).ok()?;
            Uuid::parse_str(text.trim()).ok().map(|u| u.hyphenated().to_string())
        }
    }
}

/// AD's `objectGUID` (16 bytes) as a UUID string.
///
/// AD stores a Windows `GUID` struct: the first three fields little-endian, the last
/// eight bytes as they are. `e3 6b 3b 9b 27 13 9e 41 a9 c8 …` is
/// `9b3b6be3-1327-419e-a9c8-…`, the form `samba-tool user show` and PowerShell print.
///
/// ```
/// let raw = [0xe3, 0x6b, 0x3b, 0x9b, 0x27, 0x13, 0x9e, 0x41, 0xa9, 0xc8, 0x82, 0x72, 0x22, 0x73, 0xa0, 0xa8];
/// assert_eq!(
///     postern_directory::ad_guid_to_uuid(&raw).as_deref(),
///     Some("9b3b6be3-1327-419e-a9c8-82722273a0a8")
/// );
/// ```
pub fn ad_guid_to_uuid(raw: &[u8]) -> Option<String> {
    let bytes: [u8; 16] = raw.try_into().ok()?;
    Some(Uuid::from_bytes_le(bytes).hyphenated().to_string())
}

/// The value of the first RDN of `dn`, unescaped (RFC 4514): `CN=Sales\, West,OU=Groups,…`
/// gives `Sales, West`. `None` when `dn` does not start with `attr=value`.
///
/// ```
/// assert_eq!(postern_directory::first_rdn_value("CN=Domain Admins,CN=Users,DC=example,DC=test").as_deref(), Some("Domain Admins"));
/// ```
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let (_, value) = dn.split_once('=')?;
    let mut out: Vec<u8> = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b',' | b'+' => break,
            b'\\' => {
                let next = bytes.next()?;
                if next.is_ascii_hexdigit() {
                    let low = bytes.next()?;
                    let hex = [next, low];
                    let text = std::str::from_utf8(&hex).ok()?;
                    out.push(u8::from_str_radix(text, 16).ok()?);
                } else {
                    out.push(next);
                }
            }
            other => out.push(other),
        }
    }
    let value = String::from_utf8(out).ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_mixed_endian() {
        // Seen on the Samba AD DC: `objectGUID:: 42s7mycTnkGpyIJyInOgqA==`, shown by
        // samba-tool as 9b3b6be3-1327-419e-a9c8-82722273a0a8.
        let raw = [
            0xe3, 0x6b, 0x3b, 0x9b, 0x27, 0x13, 0x9e, 0x41, 0xa9, 0xc8, 0x82, 0x72, 0x22, 0x73, 0xa0, 0xa8,
        ];
        assert_eq!(
            ad_guid_to_uuid(&raw).as_deref(),
            Some("9b3b6be3-1327-419e-a9c8-82722273a0a8")
        );
        assert_eq!(ad_guid_to_uuid(&raw[..15]), None);
        assert_eq!(ad_guid_to_uuid(&[0; 17]), None);
    }

    #[test]
    fn stable_id_by_flavor() {
        let ad = ResolvedAttributes::resolve(Flavor::ActiveDirectory, &AttributeNames::default());
        let guid: &[u8] = &[1, 0, 0, 0, 2, 0, 3, 0, 4, 5, 6, 7, 8, 9, 10, 11];
        let e = Entry::new("CN=a", &[("objectguid", &[guid])]);
        assert_eq!(
            e.stable_id(&ad).as_deref(),
            Some("00000001-0002-0003-0405-060708090a0b")
        );

        let ol = ResolvedAttributes::resolve(Flavor::OpenLdap, &AttributeNames::default());
        let e = Entry::new("uid=a", &[("entryUUID", &[b"3F2504E0-4F89-11D3-9A0C-0305E82C3301"])]);
        assert_eq!(
            e.stable_id(&ol).as_deref(),
            Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301")
        );
        let e = Entry::new("uid=a", &[("entryUUID", &[b"not a uuid"])]);
        assert_eq!(e.stable_id(&ol), None);
        assert_eq!(Entry::new("uid=a", &[]).stable_id(&ol), None);
    }

    #[test]
    fn attribute_lookup_ignores_case() {
        let e = Entry::new("uid=a", &[("Mail", &[b"a@example.com", b"b@example.com"])]);
        assert_eq!(e.text("mail").as_deref(), Some("a@example.com"));
        assert_eq!(e.texts("MAIL").len(), 2);
        assert!(e.texts("cn").is_empty());
    }

    #[test]
    fn group_names_from_dns() {
        let cases = [
            ("CN=Domain Admins,CN=Users,DC=example,DC=test", Some("Domain Admins")),
            ("cn=staff,ou=groups,dc=example,dc=com", Some("staff")),
            ("CN=Sales\\, West,OU=Groups,DC=x", Some("Sales, West")),
            ("CN=a\\2Cb,DC=x", Some("a,b")),
            ("CN=J\\C3\\BCrgen,DC=x", Some("Jürgen")),
            ("CN=multi+OU=valued,DC=x", Some("multi")),
            ("no equals sign", None),
            ("CN=,DC=x", None),
            ("CN=bad\\", None),
            ("CN=bad\\4", None),
        ];
        for (dn, name) in cases {
            assert_eq!(first_rdn_value(dn).as_deref(), name, "{dn}");
        }
    }

    #[test]
    fn defaults_per_flavor_and_overrides() {
        let ad = ResolvedAttributes::resolve(Flavor::ActiveDirectory, &AttributeNames::default());
        assert_eq!(ad.upn, "userPrincipalName");
        assert!(ad.binary_guid);
        let ol = ResolvedAttributes::resolve(
            Flavor::OpenLdap,
            &AttributeNames {
                display_name: Some("displayName".into()),
                ..AttributeNames::default()
            },
        );
        assert_eq!(ol.display_name, "displayName");
        assert_eq!(ol.stable_id, "entryUUID");
        assert!(!ol.binary_guid);
        assert_eq!(ol.requested().len(), 5);
    }
}
