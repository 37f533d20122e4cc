//! The pair of base URLs an app is published under, and the prefix swap between them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::TranslateError;

/// Characters a base URL may not contain once serialised. Each of them would let a
/// substituted base break out of the context it is written into: an HTML attribute
/// or JavaScript string (quotes, backslash, angle brackets, backtick), an unquoted
/// CSS `url()` (parentheses, white space) or a `srcset` list (comma).
const FORBIDDEN_IN_BASE: &[char] = &['"', '\'', '\\', '<', '>', '`', '(', ')', ',', ' ', '\t', '\n', '\r'];

/// The host part of a base URL, compared the way browsers compare hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BaseHost {
    /// A DNS name, lower case (IDNA-encoded by the `url` crate).
    Domain(String),
    /// An IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 address (written in brackets in URLs).
    V6(Ipv6Addr),
}

impl BaseHost {
    /// Whether `host` (as written in a URL authority, brackets included for IPv6)
    /// names this host.
    fn matches(&self, host: &str) -> bool {
        match self {
            BaseHost::Domain(name) => host.eq_ignore_ascii_case(name),
            BaseHost::V4(ip) => host.parse::<Ipv4Addr>().is_ok_and(|h| h == *ip),
            BaseHost::V6(ip) => host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .and_then(|h| h.parse::<Ipv6Addr>().ok())
                .is_some_and(|h| h == *ip),
        }
    }
}

/// One side of the mapping: scheme, host, port and a path prefix ending in `/`.
#[derive(Clone, Debug)]
pub(crate) struct Base {
    scheme: String,
    host: BaseHost,
    /// The host as it is written in a URL (`[::1]` for IPv6).
    host_text: String,
    port: u16,
    /// Path prefix, always starting and ending with `/`.
    path: String,
}

/// How a URL path relates to a base path.
enum PathTail<'a> {
    /// The path lies under the base path; the tail follows its trailing `/`.
    Under(&'a str),
    /// The path is the base path without its trailing `/` (`/app` for `/app/`); the
    /// tail is what follows it (empty, or a query or fragment).
    Bare(&'a str),
}

impl Base {
    fn parse(which: &'static str, text: &str) -> Result<Self, TranslateError> {
        let invalid = |reason: String| TranslateError::InvalidBase { which, reason };
        let url = url::Url::parse(text.trim()).map_err(|e| invalid(e.to_string()))?;
        let scheme = url.scheme().to_owned();
        if scheme != "http" && scheme != "https" {
            return Err(invalid(format!("scheme must be http or https, not {scheme}")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid("user information is not allowed".into()));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a query or fragment is not allowed".into()));
        }
        let (host, host_text) = match url.host() {
            Some(url::Host::Domain(d)) => (BaseHost::Domain(d.to_ascii_lowercase()), d.to_ascii_lowercase()),
            Some(url::Host::Ipv4(ip)) => (BaseHost::V4(ip), ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (BaseHost::V6(ip), format!("[{ip}]")),
            None => return Err(invalid("a host is required".into())),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("no port and no default port".into()))?;
        let mut path = url.path().to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        let base = Base {
            scheme,
            host,
            host_text,
            port,
            path,
        };
        if let Some(c) = base
            .url()
            .chars()
            .find(|c| FORBIDDEN_IN_BASE.contains(c) || c.is_control())
        {
            return Err(invalid(format!("the character {c:?} is not allowed in a base URL")));
        }
        Ok(base)
    }

    fn default_port(scheme: &str) -> Option<u16> {
        if scheme.eq_ignore_ascii_case("http") {
            Some(80)
        } else if scheme.eq_ignore_ascii_case("https") {
            Some(443)
        } else {
            None
        }
    }

    /// `host[:port]`, the port left out when it is the scheme's default.
    pub(crate) fn authority(&self) -> String {
        if Self::default_port(&self.scheme) == Some(self.port) {
            self.host_text.clone()
        } else {
            format!("{}:{}", self.host_text, self.port)
        }
    }

    /// `scheme://host[:port]`.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority())
    }

    /// The whole base URL, ending in `/`.
    pub(crate) fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// The path prefix without its trailing `/`, or `/` for the root.
    pub(crate) fn bare_path(&self) -> &str {
        match self.path.strip_suffix('/') {
            Some("") | None => "/",
            Some(p) => p,
        }
    }

    /// The host name or address, without brackets, lower case.
    pub(crate) fn cookie_host(&self) -> String {
        match &self.host {
            BaseHost::Domain(d) => d.clone(),
            BaseHost::V4(ip) => ip.to_string(),
            BaseHost::V6(ip) => ip.to_string(),
        }
    }

    /// Whether the host is a DNS name (cookies may then name a parent domain).
    pub(crate) fn host_is_domain(&self) -> bool {
        matches!(self.host, BaseHost::Domain(_))
    }

    /// The absolute forms of this base that a program could have written literally:
    /// with and without an explicit default port.
    fn literal_forms(&self) -> Vec<String> {
        let mut forms = vec![self.url()];
        if Self::default_port(&self.scheme) == Some(self.port) {
            forms.push(format!(
                "{}://{}:{}{}",
                self.scheme, self.host_text, self.port, self.path
            ));
        }
        forms
    }

    /// Whether a URL authority (`host[:port]`, no user information) names this
    /// base's host and port, `scheme` giving the default port.
    fn authority_matches(&self, authority: &str, scheme: &str) -> bool {
        if authority.contains('@') {
            return false;
        }
        let (host, port) = if authority.starts_with('[') {
            match authority.find(']') {
                Some(end) => {
                    let (host, rest) = authority.split_at(end + 1);
                    match rest {
                        "" => (host, None),
                        _ => match rest.strip_prefix(':') {
                            Some(port) => (host, Some(port)),
                            None => return false,
                        },
                    }
                }
                None => return false,
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None | Some("") => Self::default_port(scheme),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u16>().ok(),
            Some(_) => None,
        };
        port == Some(self.port) && self.host.matches(host)
    }

    /// Relates a path-and-after (`/x?y#z`, `?y`, or empty) to the base path.
    fn path_tail<'a>(&self, rest: &'a str) -> Option<PathTail<'a>> {
        if self.path == "/" {
            return Some(PathTail::Under(rest.strip_prefix('/').unwrap_or(rest)));
        }
        if let Some(tail) = rest.strip_prefix(self.path.as_str()) {
            return Some(PathTail::Under(tail));
        }
        let bare = self.bare_path();
        let tail = rest.strip_prefix(bare)?;
        (tail.is_empty() || tail.starts_with('?') || tail.starts_with('#')).then_some(PathTail::Bare(tail))
    }

    /// The path of `to` corresponding to `tail` of this base.
    fn map_path(to: &Base, tail: PathTail<'_>) -> String {
        match tail {
            PathTail::Under(t) => format!("{}{t}", to.path),
            PathTail::Bare(t) => format!("{}{t}", to.bare_path()),
        }
    }

    /// Maps a cookie `Path` value from this base to `to`: a path under this base
    /// gets the same place under `to`, any other path becomes `to`'s bare prefix.
    pub(crate) fn map_cookie_path(&self, to: &Base, path: &str) -> String {
        match self.path_tail(path) {
            Some(tail) => Self::map_path(to, tail),
            None => to.bare_path().to_owned(),
        }
    }
}

/// Splits `scheme://authority<rest>` or `//authority<rest>` into its scheme (None
/// when scheme-relative), authority and the rest (starting with `/`, `?`, `#`, or empty).
fn split_absolute(url: &str) -> Option<(Option<&str>, &str, &str)> {
    let (scheme, after) = if let Some(after) = url.strip_prefix("//") {
        (None, after)
    } else {
        let colon = url.find(':')?;
        let (scheme, after) = url.split_at(colon);
        let mut chars = scheme.chars();
        if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return None;
        }
        let after = after.strip_prefix("://")?;
        (Some(scheme), after)
    };
    let end = after.find(['/', '?', '#', '\\']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if rest.starts_with('\\') {
        return None;
    }
    Some((scheme, authority, rest))
}

/// Bytes browsers strip around URL attribute values.
fn is_url_space(c: char) -> bool {
    c <= ' '
}

/// Maps `url` from base `from` to base `to`, keeping everything after the base
/// prefix byte for byte. None when the URL is not under `from` or nothing changes.
fn translate(from: &Base, to: &Base, url: &str) -> Option<String> {
    let core = url.trim_matches(is_url_space);
    let lead = url.len() - url.trim_start_matches(is_url_space).len();
    let (head, trail) = url.split_at(lead + core.len());
    let head = &head[..lead];
    let mapped = if let Some((scheme, authority, rest)) = split_absolute(core) {
        match scheme {
            None => {
                if !from.authority_matches(authority, &from.scheme) {
                    return None;
                }
                format!("//{}{}", to.authority(), Base::map_path(to, from.path_tail(rest)?))
            }
            Some(scheme) => {
                if !scheme.eq_ignore_ascii_case(&from.scheme) || !from.authority_matches(authority, scheme) {
                    return None;
                }
                format!("{}{}", to.origin(), Base::map_path(to, from.path_tail(rest)?))
            }
        }
    } else if core.starts_with('/') {
        Base::map_path(to, from.path_tail(core)?)
    } else {
        return None;
    };
    let out = format!("{head}{mapped}{trail}");
    (out != url).then_some(out)
}

/// Maps a serialised origin (`scheme://host[:port]`, as in `Origin` and
/// `Access-Control-Allow-Origin`) from `from` to `to`.
fn translate_origin(from: &Base, to: &Base, origin: &str) -> Option<String> {
    let core = origin.trim_matches(is_url_space);
    let (scheme, authority, rest) = split_absolute(core)?;
    let scheme = scheme?;
    (rest.is_empty() && scheme.eq_ignore_ascii_case(&from.scheme) && from.authority_matches(authority, scheme))
        .then(|| to.origin())
        .filter(|o| o != origin)
}

#[derive(Debug)]
struct Inner {
    external: Base,
    internal: Base,
    /// Literal internal→external replacements for script text, longest first.
    literals: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where an app is published (external base) and where it is served from
/// (internal base), and the translation of URLs between the two.
///
/// Cheap to clone (the bases are shared).
#[derive(Clone, Debug)]
pub struct UrlMap {
    inner: Arc<Inner>,
}

impl UrlMap {
    /// Builds the map from the two base URLs, e.g.
    /// `UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080/app/")`.
    ///
    /// Each base must be an `http` or `https` URL with a host, no user information,
    /// query or fragment. A path not ending in `/` is taken as a folder (`/app` means
    /// `/app/`). Host names are compared case-insensitively, ports by value (a
    /// default port may be written or not).
    ///
    /// # Errors
    /// [`TranslateError::InvalidBase`] naming the base and the reason; a
    /// configuration error the operator must fix. Also refused: a serialised base
    /// containing quotes, a backslash, angle brackets, a backtick, parentheses, a
    /// comma or white space, since substituted bases are written verbatim into
    /// HTML, CSS and scripts.
    pub fn new(external_base: &str, internal_base: &str) -> Result<Self, TranslateError> {
        let external = Base::parse("external", external_base)?;
        let internal = Base::parse("internal", internal_base)?;
        let mut literals = Vec::new();
        let ext_url = external.url();
        for form in internal.literal_forms() {
            literals.push((json_escape(&form).into_bytes(), json_escape(&ext_url).into_bytes()));
            literals.push((form.into_bytes(), ext_url.clone().into_bytes()));
        }
        literals.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        Ok(UrlMap {
            inner: Arc::new(Inner {
                external,
                internal,
                literals,
            }),
        })
    }

    /// The external base, normalised (`https://wiki.example.com/docs/`).
    pub fn external_base(&self) -> String {
        self.inner.external.url()
    }

    /// The internal base, normalised (`http://wiki.corp.local:8080/app/`).
    pub fn internal_base(&self) -> String {
        self.inner.internal.url()
    }

    pub(crate) fn external(&self) -> &Base {
        &self.inner.external
    }

    pub(crate) fn internal(&self) -> &Base {
        &self.inner.internal
    }

    /// Literal internal→external base replacements for script text, longest first:
    /// each absolute spelling of the internal base, plain and JSON-escaped (`\/`).
    pub(crate) fn literals(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.inner.literals
    }

    /// Rewrites a URL the backend wrote so that it points at the external base.
    ///
    /// Translated: absolute URLs (`http://wiki.corp.local:8080/app/x?y#z` →
    /// `https://wiki.example.com/docs/x?y#z`), scheme-relative URLs
    /// (`//wiki.corp.local:8080/app/x` → `//wiki.example.com/docs/x`) and
    /// root-relative paths (`/app/x` → `/docs/x`) under the internal base, including
    /// the base path without its final slash (`/app` → `/docs`). Leading and trailing
    /// white space is kept; the part after the base is kept byte for byte.
    ///
    /// Returns None (leave the value as it is) for everything else: other hosts,
    /// ports or schemes, user information, paths outside the base path, relative
    /// references (`x.png`, `../x`, `?q`, `#frag`), `data:`, `mailto:`,
    /// `javascript:`, and when the result would equal the input.
    pub fn to_external(&self, url: &str) -> Option<String> {
        translate(&self.inner.internal, &self.inner.external, url)
    }

    /// The reverse of [`UrlMap::to_external`]: rewrites a URL under the external base
    /// to the internal base, for request headers such as `Referer`.
    pub fn to_internal(&self, url: &str) -> Option<String> {
        translate(&self.inner.external, &self.inner.internal, url)
    }

    /// Maps the internal origin (`http://wiki.corp.local:8080`) to the external one
    /// (`https://wiki.example.com`); None for any other value.
    pub fn origin_to_external(&self, origin: &str) -> Option<String> {
        translate_origin(&self.inner.internal, &self.inner.external, origin)
    }

    /// Maps the external origin to the internal one, for the `Origin` request
    /// header; None for any other value (including `null`).
    pub fn origin_to_internal(&self, origin: &str) -> Option<String> {
        translate_origin(&self.inner.external, &self.inner.internal, origin)
    }
}

/// The JSON/JavaScript spelling of a URL with escaped slashes (`http:\/\/h\/p\/`).
fn json_escape(url: &str) -> String {
    url.replace('/', "\\/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiki() -> UrlMap {
        UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080/app/").unwrap()
    }

    #[test]
    fn absolute_urls_under_the_internal_base_are_translated() {
        let m = wiki();
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080/app/x?y#z").as_deref(),
            Some("https://wiki.example.com/docs/x?y#z")
        );
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080/app/").as_deref(),
            Some("https://wiki.example.com/docs/")
        );
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080/app").as_deref(),
            Some("https://wiki.example.com/docs")
        );
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080/app?q=1").as_deref(),
            Some("https://wiki.example.com/docs?q=1")
        );
    }

    #[test]
    fn host_and_scheme_compare_case_insensitively_path_does_not() {
        let m = wiki();
        assert_eq!(
            m.to_external("HTTP://Wiki.CORP.local:8080/app/a").as_deref(),
            Some("https://wiki.example.com/docs/a")
        );
        assert_eq!(m.to_external("http://wiki.corp.local:8080/APP/a"), None);
    }

    #[test]
    fn scheme_relative_urls_keep_their_form() {
        let m = wiki();
        assert_eq!(
            m.to_external("//wiki.corp.local:8080/app/x").as_deref(),
            Some("//wiki.example.com/docs/x")
        );
        assert_eq!(
            m.to_external("//wiki.corp.local/app/x"),
            None,
            "default port of http is 80, not 8080"
        );
    }

    #[test]
    fn root_relative_paths_under_the_base_path_are_translated() {
        let m = wiki();
        assert_eq!(m.to_external("/app/x").as_deref(), Some("/docs/x"));
        assert_eq!(m.to_external("/app").as_deref(), Some("/docs"));
        assert_eq!(m.to_external("/app#top").as_deref(), Some("/docs#top"));
        assert_eq!(m.to_external("/application"), None);
        assert_eq!(m.to_external("/other/x"), None);
        assert_eq!(m.to_external("/app/x://y").as_deref(), Some("/docs/x://y"));
    }

    #[test]
    fn everything_else_is_left_alone() {
        let m = wiki();
        for url in [
            "x.png",
            "../app/x",
            "#frag",
            "?q=1",
            "",
            "   ",
            "data:image/png;base64,AAAA",
            "mailto:a@wiki.corp.local",
            "javascript:alert(1)",
            "http://other.corp.local:8080/app/x",
            "http://wiki.corp.local:8081/app/x",
            "http://wiki.corp.local/app/x",
            "https://wiki.corp.local:8080/app/x",
            "http://user@wiki.corp.local:8080/app/x",
            "http://wiki.corp.local:8080.evil/app/x",
            "http://wiki.corp.local.evil:8080/app/x",
            "http://wiki.corp.local:80800/app/x",
            "http://wiki.corp.local:8080\\app\\x",
            "ftp://wiki.corp.local:8080/app/x",
            "http:/app/x",
        ] {
            assert_eq!(m.to_external(url), None, "{url}");
        }
    }

    #[test]
    fn white_space_around_a_value_is_kept() {
        let m = wiki();
        assert_eq!(m.to_external("  /app/x\n").as_deref(), Some("  /docs/x\n"));
    }

    #[test]
    fn default_ports_may_be_spelled_or_not() {
        let m = UrlMap::new("https://ext.example.com/", "http://int.local/").unwrap();
        assert_eq!(m.internal_base(), "http://int.local/");
        assert_eq!(
            m.to_external("http://int.local/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(
            m.to_external("http://int.local:80/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(
            m.to_external("http://int.local:/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(
            m.to_external("http://int.local:0080/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(m.to_external("http://int.local:443/a"), None);
        let m = UrlMap::new("https://ext.example.com:8443/p/", "https://int.local:443/").unwrap();
        assert_eq!(m.external_base(), "https://ext.example.com:8443/p/");
        assert_eq!(
            m.to_external("https://int.local/a").as_deref(),
            Some("https://ext.example.com:8443/p/a")
        );
    }

    #[test]
    fn internal_base_without_a_path_maps_every_path() {
        let m = UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080").unwrap();
        assert_eq!(m.internal_base(), "http://wiki.corp.local:8080/");
        assert_eq!(m.to_external("/x").as_deref(), Some("/docs/x"));
        assert_eq!(m.to_external("/").as_deref(), Some("/docs/"));
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080").as_deref(),
            Some("https://wiki.example.com/docs/")
        );
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080?q").as_deref(),
            Some("https://wiki.example.com/docs/?q")
        );
        assert_eq!(m.to_internal("/docs/x").as_deref(), Some("/x"));
        assert_eq!(m.to_internal("/docs").as_deref(), Some("/"));
    }

    #[test]
    fn external_prefix_slash_maps_bare_base_path_to_root() {
        let m = UrlMap::new("https://wiki.example.com", "http://wiki.corp.local:8080/app").unwrap();
        assert_eq!(m.external_base(), "https://wiki.example.com/");
        assert_eq!(m.internal_base(), "http://wiki.corp.local:8080/app/");
        assert_eq!(m.to_external("/app").as_deref(), Some("/"));
        assert_eq!(m.to_external("/app?x").as_deref(), Some("/?x"));
        assert_eq!(m.to_external("/app/a/b").as_deref(), Some("/a/b"));
        assert_eq!(
            m.to_external("http://wiki.corp.local:8080/app").as_deref(),
            Some("https://wiki.example.com/")
        );
    }

    #[test]
    fn identical_paths_give_none_for_root_relative() {
        let m = UrlMap::new("https://ext.example.com/app/", "http://int.local/app/").unwrap();
        assert_eq!(m.to_external("/app/x"), None);
        assert_eq!(
            m.to_external("http://int.local/app/x").as_deref(),
            Some("https://ext.example.com/app/x")
        );
    }

    #[test]
    fn ipv6_hosts_compare_by_address() {
        let m = UrlMap::new("https://ext.example.com/", "http://[fd00::1]:8080/").unwrap();
        assert_eq!(m.internal_base(), "http://[fd00::1]:8080/");
        assert_eq!(
            m.to_external("http://[fd00::1]:8080/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(
            m.to_external("http://[FD00:0::0:1]:8080/a").as_deref(),
            Some("https://ext.example.com/a")
        );
        assert_eq!(
            m.to_external("//[fd00::1]:8080/a").as_deref(),
            Some("//ext.example.com/a")
        );
        assert_eq!(m.to_external("http://[fd00::2]:8080/a"), None);
        assert_eq!(m.to_external("http://[fd00::1/a"), None);
        assert_eq!(m.to_external("http://[fd00::1]x:8080/a"), None);
        let m = UrlMap::new("https://[2001:db8::5]/", "http://10.0.0.5/").unwrap();
        assert_eq!(
            m.to_external("http://10.0.0.5/a").as_deref(),
            Some("https://[2001:db8::5]/a")
        );
        assert_eq!(
            m.to_internal("https://[2001:DB8::5]:443/a").as_deref(),
            Some("http://10.0.0.5/a")
        );
    }

    #[test]
    fn to_internal_is_the_reverse() {
        let m = wiki();
        assert_eq!(
            m.to_internal("https://wiki.example.com/docs/x?y").as_deref(),
            Some("http://wiki.corp.local:8080/app/x?y")
        );
        assert_eq!(m.to_internal("https://wiki.example.com/other"), None);
        assert_eq!(m.to_internal("http://wiki.example.com/docs/x"), None);
    }

    #[test]
    fn origins_map_both_ways() {
        let m = wiki();
        assert_eq!(
            m.origin_to_internal("https://wiki.example.com").as_deref(),
            Some("http://wiki.corp.local:8080")
        );
        assert_eq!(
            m.origin_to_internal("https://WIKI.example.com:443").as_deref(),
            Some("http://wiki.corp.local:8080")
        );
        assert_eq!(m.origin_to_internal("null"), None);
        assert_eq!(m.origin_to_internal("https://evil.example.com"), None);
        assert_eq!(m.origin_to_internal("https://wiki.example.com/docs/"), None);
        assert_eq!(
            m.origin_to_external("http://wiki.corp.local:8080").as_deref(),
            Some("https://wiki.example.com")
        );
    }

    #[test]
    fn invalid_bases_are_refused_with_the_reason() {
        for (ext, int) in [
            ("wiki.example.com", "http://a/"),
            ("ftp://wiki.example.com/", "http://a/"),
            ("https://u:p@wiki.example.com/", "http://a/"),
            ("https://wiki.example.com/?q", "http://a/"),
            ("https://wiki.example.com/#f", "http://a/"),
            ("https://wiki.example.com/it's/", "http://a/"),
            ("https://wiki.example.com/a(b)/", "http://a/"),
            ("https://wiki.example.com/a,b/", "http://a/"),
            ("https://wiki.example.com/", "mailto:x@y"),
            ("https://wiki.example.com/", ""),
        ] {
            let err = UrlMap::new(ext, int).unwrap_err();
            assert!(matches!(err, TranslateError::InvalidBase { .. }), "{ext} {int}: {err}");
        }
        let err = UrlMap::new("https://wiki.example.com/", "file:///x").unwrap_err();
        assert!(err.to_string().contains("internal"), "{err}");
    }

    #[test]
    fn literal_forms_cover_default_ports_and_json_escapes() {
        let m = UrlMap::new("https://ext.example.com/p/", "http://int.local/app/").unwrap();
        let froms: Vec<String> = m
            .literals()
            .iter()
            .map(|(f, _)| String::from_utf8(f.clone()).unwrap())
            .collect();
        assert!(froms.contains(&"http://int.local/app/".to_owned()));
        assert!(froms.contains(&"http://int.local:80/app/".to_owned()));
        assert!(froms.contains(&"http:\\/\\/int.local\\/app\\/".to_owned()));
        assert!(froms.windows(2).all(|w| w[0].len() >= w[1].len()), "longest first");
    }

    #[test]
    fn cookie_paths_map_inside_and_outside_the_base() {
        let m = wiki();
        let (i, e) = (m.internal(), m.external());
        assert_eq!(i.map_cookie_path(e, "/app/"), "/docs/");
        assert_eq!(i.map_cookie_path(e, "/app/sub"), "/docs/sub");
        assert_eq!(i.map_cookie_path(e, "/app"), "/docs");
        assert_eq!(i.map_cookie_path(e, "/"), "/docs");
        assert_eq!(i.map_cookie_path(e, "/elsewhere"), "/docs");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A base URL: scheme, one of a few hosts, maybe a port, a short path.
        fn base() -> impl Strategy<Value = String> {
            (
                prop::sample::select(vec!["http", "https"]),
                prop::sample::select(vec!["wiki.example.com", "wiki.corp.local", "10.0.0.7", "a.test"]),
                prop::option::of(prop::sample::select(vec![80u16, 443, 8080])),
                prop::collection::vec(prop::sample::select(vec!["app", "docs", "a", "wiki"]), 0..3),
            )
                .prop_map(|(scheme, host, port, segs)| {
                    let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                    let path: String = segs.iter().map(|s| format!("{s}/")).collect();
                    format!("{scheme}://{host}{port}/{path}")
                })
        }

        /// What follows the base: a relative path (never starting with `/`: the
        /// base ends in one), maybe a query and fragment.
        fn suffix() -> impl Strategy<Value = String> {
            (
                "([a-z0-9._~-]{1,6}(/[a-z0-9._~-]{1,6}){0,3}/?)?",
                prop::option::of("[a-z0-9=&]{0,8}"),
                prop::option::of("[a-z0-9]{0,5}"),
            )
                .prop_map(|(path, query, fragment)| {
                    let mut s = path;
                    if let Some(q) = query {
                        s.push('?');
                        s.push_str(&q);
                    }
                    if let Some(f) = fragment {
                        s.push('#');
                        s.push_str(&f);
                    }
                    s
                })
        }

        proptest! {
            /// A URL under the internal base goes out under the external base
            /// and comes back unchanged, absolute, scheme-relative or
            /// root-relative; the part after the base is kept byte for byte.
            #[test]
            fn internal_external_internal_round_trips(
                external in base(),
                internal in base(),
                rest in suffix(),
            ) {
                let map = UrlMap::new(&external, &internal).unwrap();
                let (ext, int) = (map.external_base(), map.internal_base());
                prop_assume!(ext != int);
                let url = format!("{int}{rest}");
                let out = map.to_external(&url);
                prop_assert_eq!(out.clone(), Some(format!("{ext}{rest}")), "{} out", url);
                prop_assert_eq!(map.to_internal(&format!("{ext}{rest}")), Some(url.clone()), "back");

                // Root-relative: only the paths differ, so only when they do.
                let path_of = |base: &str| base.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default();
                let (ext_path, int_path) = (path_of(&ext), path_of(&int));
                if ext_path != int_path {
                    let relative = format!("{int_path}{rest}");
                    prop_assert_eq!(map.to_external(&relative), Some(format!("{ext_path}{rest}")));
                    prop_assert_eq!(map.to_internal(&format!("{ext_path}{rest}")), Some(relative));
                }
            }
        }
    }
}
