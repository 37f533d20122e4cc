//! Headers that describe one connection, not the message (RFC 9110 §7.6.1):
//! never carried across a hop, in either direction, by the front door or the
//! connector. One list for both ends of the tunnel.

use http::header::{CONNECTION, COOKIE};
use http::{HeaderMap, HeaderName};

/// Whether `name` is a hop-by-hop header (`Upgrade` included: an upgrade is
/// carried by the tunnel's own header, never as the user's).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// Removes the hop-by-hop headers and those a `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    let hop: Vec<HeaderName> = headers.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    for name in hop {
        headers.remove(name);
    }
}

/// The value of the cookie `name` in a request's `Cookie` headers (quotes
/// around it removed), or `None` when it is absent or empty. The one reader of
/// the front door's, the STS's and the console's cookies.
pub fn request_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn connection_headers_and_those_it_names_go_the_rest_stays() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("close, X-Secret-Hop , bad header"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        for name in [
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "transfer-encoding",
            "proxy-authorization",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("x"));
        }
        h.insert("accept", HeaderValue::from_static("text/html"));
        h.insert("cookie", HeaderValue::from_static("a=1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("accept") && h.contains_key("cookie"));
    }

    #[test]
    fn cookies_are_read_by_exact_name_across_headers() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a-long=1; a=\"two\""));
        h.append("cookie", HeaderValue::from_static("empty=; b=3 "));
        assert_eq!(request_cookie(&h, "a"), Some("two"));
        assert_eq!(request_cookie(&h, "a-long"), Some("1"));
        assert_eq!(request_cookie(&h, "b"), Some("3"));
        assert_eq!(request_cookie(&h, "empty"), None);
        assert_eq!(request_cookie(&h, "missing"), None);
    }
}
