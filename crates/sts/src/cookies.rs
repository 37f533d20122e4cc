//! The STS's cookies: reading them from a request and writing `Set-Cookie` values
//! with the right attributes (HttpOnly always; Secure over HTTPS; SameSite=Lax).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

/// Browser-binding cookie: ties a sign-in flow to the browser that started it.
pub(crate) const BIND: &str = "postern_bind";
/// Single-sign-on session cookie, scoped to one tenant's path.
pub(crate) const SSO: &str = "postern_sso";

/// The value of cookie `name`, if the request carries it.
pub(crate) fn get(headers: &HeaderMap, name: &str) -> Option<String> {
    postern_proto::headers::request_cookie(headers, name).map(str::to_owned)
}

/// A `Set-Cookie` value. `max_age` of `None` makes a browser-session cookie; zero
/// deletes it.
pub(crate) fn set(name: &str, value: &str, path: &str, max_age: Option<Duration>, secure: bool) -> HeaderValue {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    // Values are base64url tokens and paths are validated tenant names, so the
    // header is always valid; fall back to deleting nothing rather than panicking.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("postern_invalid=; Max-Age=0"))
}

/// The path SSO cookies of a tenant are scoped to.
pub(crate) fn tenant_path(tenant_name: &str) -> String {
    format!("/t/{tenant_name}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes() {
        let mut h = HeaderMap::new();
        h.append(
            axum::http::header::COOKIE,
            HeaderValue::from_static("a=1; postern_bind=xyz"),
        );
        h.append(axum::http::header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(get(&h, BIND).as_deref(), Some("xyz"));
        assert_eq!(get(&h, "b").as_deref(), Some("2"));
        assert_eq!(get(&h, "c"), None);
        let v = set(SSO, "v", "/t/acme/", Some(Duration::from_secs(60)), true);
        assert_eq!(
            v.to_str().unwrap(),
            "postern_sso=v; Path=/t/acme/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
    }
}
