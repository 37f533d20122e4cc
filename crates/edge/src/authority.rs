//! Which host a request is for (SEC-9): one function decides, for routing and
//! for everything after it.
//!
//! The authority comes from where RFC 9112 and RFC 9113 put it: the HTTP/2
//! `:authority` pseudo-header or an HTTP/1.1 absolute-form request target (both
//! are the URI's authority here) wins; otherwise the `Host` header. A request
//! the front door cannot place is answered 400 with a small page, and never
//! falls through to the service's own pages:
//!
//! - no `Host` on HTTP/1.1 or HTTP/2 without `:authority` (HTTP/1.0, which has
//!   no `Host`, goes to the service's own routes: probes send it so);
//! - more than one `Host` header line (RFC 9112 §3.2);
//! - an empty value, whitespace, user information (`user@host`), a bad port or
//!   characters no host name has;
//! - a `Host` that names another host than the request target or `:authority`.

use axum::response::Response;
use http::header::HOST;
use http::{Request, StatusCode, Version};

use crate::pages;
use crate::routing::normalize_host;

/// Why a request's host cannot be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// An HTTP/1.1 request without `Host`, or an HTTP/2 request without
    /// `:authority` or `host`.
    #[error("the request names no host")]
    Missing,
    /// More than one `Host` header line.
    #[error("the request has more than one Host header")]
    Repeated,
    /// The host carries user information (`user@host`).
    #[error("the request's host carries user information")]
    UserInfo,
    /// Empty, whitespace, a bad port, or characters no host name has.
    #[error("the request's host is malformed")]
    Malformed,
    /// `Host` names another host than the request target or `:authority`.
    #[error("the request's Host header conflicts with its target")]
    Conflicting,
}

/// The host a request is for, normalized as apps are stored (see
/// [`normalize_host`]); `Ok(None)` for an HTTP/1.0 request without `Host`.
pub fn request_authority<B>(request: &Request<B>) -> Result<Option<String>, AuthorityError> {
    let mut host_lines = request.headers().get_all(HOST).iter();
    let host_line = host_lines.next();
    if host_lines.next().is_some() {
        return Err(AuthorityError::Repeated);
    }
    let from_header = match host_line {
        Some(value) => Some(parse_host(value.to_str().map_err(|_| AuthorityError::Malformed)?)?),
        None => None,
    };
    let from_target = match request.uri().authority() {
        Some(authority) => Some(parse_host(authority.as_str())?),
        None => None,
    };
    match (from_target, from_header) {
        (Some(target), Some(header)) if target != header => Err(AuthorityError::Conflicting),
        (Some(host), _) | (None, Some(host)) => Ok(Some(host)),
        (None, None) if request.version() <= Version::HTTP_10 => Ok(None),
        (None, None) => Err(AuthorityError::Missing),
    }
}

fn parse_host(value: &str) -> Result<String, AuthorityError> {
    if value.contains('@') {
        return Err(AuthorityError::UserInfo);
    }
    normalize_host(value).ok_or(AuthorityError::Malformed)
}

/// The 400 page for a request whose host cannot be told.
pub fn bad_authority_response(error: AuthorityError) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    tracing::debug!(request = %request_id, reason = %error, "request refused: no usable host");
    pages::error(
        StatusCode::BAD_REQUEST,
        "Bad request",
        &format!("{}: nothing is served for it.", capitalized(&error.to_string())),
        &request_id,
    )
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, hosts: &[&[u8]]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(target);
        for host in hosts {
            builder = builder.header(HOST, http::HeaderValue::from_bytes(host).unwrap());
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn the_authority_of_every_kind_of_request() {
        use AuthorityError::*;
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        let ok = |s: &str| Ok(Some(s.to_owned()));
        type Case<'a> = (Version, &'a str, &'a [&'a [u8]], Result<Option<String>, AuthorityError>);
        let cases: &[Case] = &[
            // Origin form: the Host header decides.
            (HTTP_11, "/", &[b"Wiki.Acme.Test"], ok("wiki.acme.test")),
            (HTTP_11, "/", &[b"wiki.acme.test:443"], ok("wiki.acme.test")),
            (HTTP_11, "/", &[b"wiki.acme.test:8080"], ok("wiki.acme.test:8080")),
            (HTTP_11, "/", &[b"[::1]:8080"], ok("[::1]:8080")),
            (HTTP_11, "/", &[b"127.0.0.1"], ok("127.0.0.1")),
            (HTTP_11, "/", &[], Err(Missing)),
            (HTTP_10, "/healthz", &[], Ok(None)),
            (HTTP_10, "/", &[b"wiki.acme.test"], ok("wiki.acme.test")),
            (HTTP_11, "/", &[b""], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki acme.test"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki.acme.test:"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki.acme.test:http"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki.acme.test:99999"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki.acme.test:80:80"], Err(Malformed)),
            (HTTP_11, "/", &[b"::1"], Err(Malformed)),
            (HTTP_11, "/", &[b"[not-v6]"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki.acme.test/x"], Err(Malformed)),
            (HTTP_11, "/", &[b"wiki\xffacme"], Err(Malformed)),
            (HTTP_11, "/", &[b"."], Err(Malformed)),
            (HTTP_11, "/", &[b"admin@wiki.acme.test"], Err(UserInfo)),
            (HTTP_11, "/", &[b"a.test", b"b.test"], Err(Repeated)),
            (HTTP_11, "/", &[b"a.test", b"a.test"], Err(Repeated)),
            // Absolute form (HTTP/1.1) and :authority (HTTP/2) win over Host.
            (HTTP_11, "http://wiki.acme.test/x", &[], ok("wiki.acme.test")),
            (
                HTTP_11,
                "http://wiki.acme.test/x",
                &[b"wiki.acme.test:80"],
                ok("wiki.acme.test"),
            ),
            (HTTP_11, "http://wiki.acme.test/x", &[b"evil.test"], Err(Conflicting)),
            (HTTP_11, "http://user@wiki.acme.test/x", &[], Err(UserInfo)),
            (HTTP_2, "https://wiki.acme.test/x", &[], ok("wiki.acme.test")),
            (
                HTTP_2,
                "https://wiki.acme.test/x",
                &[b"other.acme.test"],
                Err(Conflicting),
            ),
            (HTTP_2, "/x", &[b"wiki.acme.test"], ok("wiki.acme.test")),
            (HTTP_2, "/x", &[], Err(Missing)),
        ];
        for (version, target, hosts, expected) in cases {
            let got = request_authority(&request(*version, target, hosts));
            assert_eq!(
                &got,
                expected,
                "{version:?} {target} Host: {:?}",
                hosts.iter().map(|h| String::from_utf8_lossy(h)).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_refusal_is_a_small_400_page() {
        let response = bad_authority_response(AuthorityError::Conflicting);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
