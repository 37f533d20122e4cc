//! Which redirect URIs an authorization request may name: exactly a registered
//! one, except that a native app's loopback redirect may use any port (RFC 8252
//! §7.3), since the app listens on whatever port the system gives it. Only `http`
//! to the IP literals `127.0.0.1` or `[::1]` (and other 127/8 literals) qualify;
//! `localhost` does not (RFC 8252 §8.3: the name may resolve elsewhere), nor
//! does any other host or scheme. The code is bound to the exact URI the request
//! named, and the token endpoint compares against that one, nothing else.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Whether `requested` may be redirected to for a client that registered
/// `registered`.
pub(crate) fn is_registered(registered: &[String], requested: &str) -> bool {
    registered
        .iter()
        .any(|r| r == requested || loopback_match(r, requested))
}

/// Whether `requested` is the loopback URI `registered` with another port (or
/// with a port where `registered` has none, or none where it has one).
fn loopback_match(registered: &str, requested: &str) -> bool {
    let (Ok(reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    let Some(host) = loopback_host(&reg) else {
        return false;
    };
    loopback_host(&req) == Some(host)
        && reg.path() == req.path()
        && reg.query() == req.query()
        && reg.fragment().is_none()
        && req.fragment().is_none()
}

/// The loopback IP literal of a plain `http` URL without credentials.
fn loopback_host(url: &Url) -> Option<LoopbackIp> {
    if url.scheme() != "http" || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    match url.host()? {
        Host::Ipv4(ip) if ip.is_loopback() => Some(LoopbackIp::V4(ip)),
        Host::Ipv6(ip) if ip.is_loopback() => Some(LoopbackIp::V6(ip)),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoopbackIp {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(registered: &str, requested: &str) -> bool {
        is_registered(&[registered.to_owned()], requested)
    }

    #[test]
    fn loopback_ip_literals_take_any_port() {
        assert!(allowed("http://127.0.0.1/cb", "http://127.0.0.1:53123/cb"));
        assert!(allowed("http://127.0.0.1:8080/cb", "http://127.0.0.1:53123/cb"));
        assert!(allowed("http://127.0.0.1:8080/cb", "http://127.0.0.1/cb"));
        assert!(allowed("http://[::1]/cb", "http://[::1]:61000/cb"));
        assert!(allowed("http://127.0.0.1/cb?x=1", "http://127.0.0.1:1/cb?x=1"));
    }

    #[test]
    fn everything_else_must_match_exactly() {
        // Another path, query, loopback address family or literal.
        assert!(!allowed("http://127.0.0.1/cb", "http://127.0.0.1:5000/other"));
        assert!(!allowed("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb?x=1"));
        assert!(!allowed("http://127.0.0.1/cb", "http://[::1]:5000/cb"));
        assert!(!allowed("http://127.0.0.1/cb", "http://127.0.0.2:5000/cb"));
        // Names, other hosts, https, credentials, fragments.
        assert!(!allowed("http://localhost/cb", "http://localhost:5000/cb"));
        assert!(!allowed("http://127.0.0.1/cb", "http://localhost:5000/cb"));
        assert!(!allowed("https://app.acme.test/cb", "https://app.acme.test:8443/cb"));
        assert!(!allowed("http://app.acme.test/cb", "http://app.acme.test:8080/cb"));
        assert!(!allowed("https://127.0.0.1/cb", "https://127.0.0.1:5000/cb"));
        assert!(!allowed("http://127.0.0.1/cb", "https://127.0.0.1:5000/cb"));
        assert!(!allowed("http://127.0.0.1/cb", "http://evil@127.0.0.1:5000/cb"));
        assert!(!allowed("http://127.0.0.1/cb", "http://127.0.0.1:5000/cb#f"));
        assert!(!allowed("http://127.0.0.1/cb", "not a url"));
        // Exact matches still pass, loopback or not.
        assert!(allowed("https://app.acme.test/cb", "https://app.acme.test/cb"));
        assert!(allowed("http://localhost:5000/cb", "http://localhost:5000/cb"));
    }
}
