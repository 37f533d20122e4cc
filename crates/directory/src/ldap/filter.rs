//! Search filter templates: placeholders filled with values escaped per RFC 4515, so a
//! username such as `*)(uid=*` matches only an account literally called that.

use ldap3::ldap_escape;

/// A search filter with `{name}` placeholders, checked when the configuration loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilterTemplate {
    text: String,
}

impl FilterTemplate {
    /// Checks `text`: every placeholder is one of `allowed`, at least one is used, and
    /// the filter parses once filled in.
    pub(crate) fn parse(text: &str, allowed: &[&str]) -> Result<Self, String> {
        let mut used = 0;
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in filter {text:?}"))?;
            let name = &after[..close];
            if !allowed.contains(&name) {
                return Err(format!(
                    "unknown placeholder {{{name}}} in filter {text:?} (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| format!("{{{a}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            used += 1;
            rest = &after[close + 1..];
        }
        if used == 0 {
            return Err(format!(
                "filter {text:?} uses none of the placeholders {}",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let template = Self { text: text.to_owned() };
        let sample: Vec<(&str, &str)> = allowed.iter().map(|a| (*a, "sample")).collect();
        ldap3::parse_filter(template.render(&sample))
            .map_err(|_| format!("filter {text:?} is not a valid LDAP filter"))?;
        Ok(template)
    }

    /// The filter with each `{name}` replaced by its value, escaped.
    pub(crate) fn render(&self, values: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        let mut rest = self.text.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let name = &after[..close];
            match values.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => out.push_str(&ldap_escape(*value)),
                None => out.push_str(&rest[open..open + close + 2]),
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// The account name in `username` for `sAMAccountName`-style matching: the part after
/// `DOMAIN\`, or the whole name. With `netbios_domain` set, a different `DOMAIN\` prefix
/// gives `None` (the account is not in this directory).
pub(crate) fn account_name<'a>(username: &'a str, netbios_domain: Option<&str>) -> Option<&'a str> {
    match username.split_once('\\') {
        Some((domain, account)) => {
            if let Some(expected) = netbios_domain
                && !domain.eq_ignore_ascii_case(expected)
            {
                return None;
            }
            Some(account)
        }
        None => Some(username),
    }
}

/// `account` without an `@domain` suffix (the whole name when it has no `@`).
pub(crate) fn local_part(account: &str) -> &str {
    account.rsplit_once('@').map_or(account, |(user, _)| user)
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &[&str] = &["username", "account", "user"];

    fn openldap() -> FilterTemplate {
        FilterTemplate::parse("(&(objectClass=inetOrgPerson)(uid={username}))", USER).unwrap()
    }

    #[test]
    fn values_are_escaped() {
        let f = openldap();
        assert_eq!(
            f.render(&[("username", "alice")]),
            "(&(objectClass=inetOrgPerson)(uid=alice))"
        );
        for (input, rendered) in [
            ("*", "(&(objectClass=inetOrgPerson)(uid=\\2a))"),
            ("*)(uid=*", "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))"),
            (
                "alice)(|(uid=*",
                "(&(objectClass=inetOrgPerson)(uid=alice\\29\\28|\\28uid=\\2a))",
            ),
            ("a\\b", "(&(objectClass=inetOrgPerson)(uid=a\\5cb))"),
            ("a\0b", "(&(objectClass=inetOrgPerson)(uid=a\\00b))"),
        ] {
            let out = f.render(&[("username", input)]);
            assert_eq!(out, rendered, "{input:?}");
            // Still exactly one equality match on uid: the injection did not add terms.
            assert!(ldap3::parse_filter(&out).is_ok(), "{out}");
        }
    }

    #[test]
    fn the_user_placeholder_is_the_name_before_the_at() {
        assert_eq!(local_part("alice@example.com"), "alice");
        assert_eq!(local_part("alice"), "alice");
        // The last `@` splits: what comes before is escaped like any value.
        assert_eq!(local_part("a@b@example.com"), "a@b");
        let f = FilterTemplate::parse(crate::ldap::OPENLDAP_USER_FILTER, USER).unwrap();
        let account = "*)(uid=*@example.com";
        let out = f.render(&[
            ("username", account),
            ("account", account),
            ("user", local_part(account)),
        ]);
        assert_eq!(
            out,
            "(&(objectClass=inetOrgPerson)(|(uid=\\2a\\29\\28uid=\\2a@example.com)(mail=\\2a\\29\\28uid=\\2a@example.com)(uid=\\2a\\29\\28uid=\\2a)))"
        );
        assert!(ldap3::parse_filter(&out).is_ok(), "{out}");
    }

    #[test]
    fn several_placeholders() {
        let f = FilterTemplate::parse(
            "(&(objectClass=user)(|(userPrincipalName={username})(sAMAccountName={account})))",
            USER,
        )
        .unwrap();
        assert_eq!(
            f.render(&[("username", "EXAMPLE\\alice"), ("account", "alice")]),
            "(&(objectClass=user)(|(userPrincipalName=EXAMPLE\\5calice)(sAMAccountName=alice)))"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(
            FilterTemplate::parse("(uid=alice)", USER)
                .unwrap_err()
                .contains("none of")
        );
        assert!(
            FilterTemplate::parse("(uid={login})", USER)
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            FilterTemplate::parse("(uid={username)", USER)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            FilterTemplate::parse("(uid={username}", USER)
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(FilterTemplate::parse("(member={dn})", &["dn"]).is_ok());
    }

    #[test]
    fn account_names() {
        assert_eq!(account_name("alice", None), Some("alice"));
        assert_eq!(account_name("alice@example.test", None), Some("alice@example.test"));
        assert_eq!(account_name("EXAMPLE\\alice", None), Some("alice"));
        assert_eq!(account_name("example\\alice", Some("EXAMPLE")), Some("alice"));
        assert_eq!(account_name("OTHER\\alice", Some("EXAMPLE")), None);
        assert_eq!(account_name("alice", Some("EXAMPLE")), Some("alice"));
    }
}
