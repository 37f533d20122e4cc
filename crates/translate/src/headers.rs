//! Translation of URL-bearing request and response headers.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use crate::UrlMap;

/// `Refresh` (not among `http`'s constants).
const REFRESH: HeaderName = HeaderName::from_static("refresh");

/// Digest headers describing the bytes of the body, wrong once it is rewritten.
const BODY_DIGESTS: [HeaderName; 4] = [
    HeaderName::from_static("content-md5"),
    HeaderName::from_static("digest"),
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// Replaces each value of `name` that is a valid string and that `rewrite` changes.
/// Values that are not visible ASCII, and results that are not valid header
/// values, stay as they were.
fn rewrite_values(headers: &mut HeaderMap, name: HeaderName, rewrite: impl Fn(&str) -> Option<String>) {
    if let Entry::Occupied(mut entry) = headers.entry(name) {
        for value in entry.iter_mut() {
            let Some(new) = value.to_str().ok().and_then(&rewrite) else {
                continue;
            };
            if let Ok(mut new) = HeaderValue::from_str(&new) {
                new.set_sensitive(value.is_sensitive());
                *value = new;
            }
        }
    }
}

/// Rewrites the URLs of a response from the internal to the external base:
///
/// - `Location`, `Content-Location`: the whole value ([`UrlMap::to_external`]).
/// - `Refresh` (`5; url=...`): the URL part.
/// - `Link`: every `<...>` reference.
/// - `Access-Control-Allow-Origin`: the internal origin becomes the external one.
/// - `Set-Cookie`: a `Domain` attribute naming the internal host or one of its
///   parent domains is **dropped**, so the cookie becomes host-only for the
///   external host (the narrowest scope; writing the external host instead would
///   also send it to that host's subdomains). Other `Domain` values stay: the
///   browser refuses those that do not fit the external host. A `Path` under the
///   internal base path moves under the external prefix (`/app/x` → `/docs/x`,
///   `/app` → `/docs`); any other path (`/`, `/elsewhere`) becomes the external
///   prefix without its final slash (`/docs`), which covers `/docs` and all below
///   it. Cookies without `Path` keep the browser's default, which is already
///   computed from the external URL. `__Host-` cookies require `Path=/` and so
///   are only kept by browsers when the external prefix is `/`.
///
/// Never panics; malformed values are left as they are.
pub fn translate_response_headers(map: &UrlMap, headers: &mut HeaderMap) {
    rewrite_values(headers, header::LOCATION, |v| map.to_external(v));
    rewrite_values(headers, header::CONTENT_LOCATION, |v| map.to_external(v));
    rewrite_values(headers, REFRESH, |v| rewrite_refresh(map, v));
    rewrite_values(headers, header::LINK, |v| rewrite_link(map, v));
    rewrite_values(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, |v| {
        map.origin_to_external(v)
    });
    rewrite_values(headers, header::SET_COOKIE, |v| rewrite_set_cookie(map, v));
}

/// Rewrites the URLs of a request from the external to the internal base, so a
/// backend that checks them (CSRF defences compare `Origin` and `Referer` with its
/// own address) sees its own: `Referer` ([`UrlMap::to_internal`]) and `Origin`
/// (the external origin becomes the internal one; `null` and other origins stay).
pub fn translate_request_headers(map: &UrlMap, headers: &mut HeaderMap) {
    rewrite_values(headers, header::REFERER, |v| map.to_internal(v));
    rewrite_values(headers, header::ORIGIN, |v| map.origin_to_internal(v));
}

/// For apps with link translation on: asks the backend for an uncompressed body
/// by setting `Accept-Encoding: identity` (removing the header would, by RFC 9110,
/// allow any coding). Call it on every request to such an app; a backend that
/// compresses anyway gets its body passed through untranslated (see
/// [`crate::BodyTranslator::for_response`]).
pub fn request_uncompressed(headers: &mut HeaderMap) {
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
}

/// Adjusts the headers of a response whose body is being translated: removes
/// `Content-Length` (the length changes; the body is then sent chunked or
/// delimited by HTTP/2 frames), `Accept-Ranges` and the body digests
/// (`Content-MD5`, `Digest`, `Content-Digest`, `Repr-Digest`), and weakens a strong
/// `ETag` (`"x"` → `W/"x"`): the translated bytes differ from the backend's, so
/// byte ranges validated by the strong tag (`If-Range`) would splice two different
/// representations. Caches keep working with the weak tag.
pub fn adjust_headers_for_translated_body(headers: &mut HeaderMap) {
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    for name in BODY_DIGESTS {
        headers.remove(name);
    }
    rewrite_values(headers, header::ETAG, |v| {
        v.trim_start().starts_with('"').then(|| format!("W/{}", v.trim()))
    });
}

fn skip_space(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Rewrites the URL of a `Refresh` header or `<meta http-equiv=refresh>` content
/// (`5; url=/app/x`, `0;URL='...'`, `3, /app/x`). None when there is none to change.
pub(crate) fn rewrite_refresh(map: &UrlMap, value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut i = skip_space(bytes, 0);
    while bytes.get(i).is_some_and(|b| b.is_ascii_digit() || *b == b'.') {
        i += 1;
    }
    i = skip_space(bytes, i);
    if !matches!(bytes.get(i), Some(b';' | b',')) {
        return None;
    }
    i = skip_space(bytes, i + 1);
    if bytes.get(i..i + 3).is_some_and(|k| k.eq_ignore_ascii_case(b"url")) {
        let after = skip_space(bytes, i + 3);
        if bytes.get(after) == Some(&b'=') {
            i = skip_space(bytes, after + 1);
        }
    }
    let (start, end) = match bytes.get(i) {
        Some(&quote @ (b'"' | b'\'')) => {
            let start = i + 1;
            let len = bytes.get(start..)?.iter().position(|&b| b == quote);
            (start, len.map_or(bytes.len(), |len| start + len))
        }
        _ => (i, value.trim_end().len().max(i)),
    };
    let url = map.to_external(value.get(start..end)?)?;
    Some(format!("{}{url}{}", value.get(..start)?, value.get(end..)?))
}

/// Rewrites every `<...>` reference of a `Link` header.
fn rewrite_link(map: &UrlMap, value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    let mut changed = false;
    while let Some((before, after)) = rest.split_once('<') {
        let Some((reference, after)) = after.split_once('>') else {
            break;
        };
        out.push_str(before);
        out.push('<');
        match map.to_external(reference) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(reference),
        }
        out.push('>');
        rest = after;
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Whether a cookie `Domain` value names the internal host or a parent domain of it.
fn names_internal_host(map: &UrlMap, domain: &str) -> bool {
    let domain = domain.trim();
    let domain = domain.strip_prefix('.').unwrap_or(domain).to_ascii_lowercase();
    let host = map.internal().cookie_host();
    !domain.is_empty()
        && (domain == host
            || (map.internal().host_is_domain()
                && host.strip_suffix(domain.as_str()).is_some_and(|sub| sub.ends_with('.'))))
}

/// Rewrites the `Domain` and `Path` attributes of one `Set-Cookie` value (see
/// [`translate_response_headers`]); the name, value and other attributes are kept
/// as written.
fn rewrite_set_cookie(map: &UrlMap, value: &str) -> Option<String> {
    let mut segments = value.split(';');
    let mut out = String::from(segments.next()?);
    let mut changed = false;
    for segment in segments {
        let (name, attr_value) = match segment.split_once('=') {
            Some((name, v)) => (name.trim(), Some(v)),
            None => (segment.trim(), None),
        };
        if name.eq_ignore_ascii_case("domain") && attr_value.is_some_and(|d| names_internal_host(map, d)) {
            changed = true;
            continue;
        }
        if name.eq_ignore_ascii_case("path")
            && let Some(path) = attr_value.map(str::trim).filter(|p| p.starts_with('/'))
            && let Some((head, _)) = segment.split_once('=')
        {
            let new = map.internal().map_cookie_path(map.external(), path);
            if new != path {
                out.push(';');
                out.push_str(head);
                out.push('=');
                out.push_str(&new);
                changed = true;
                continue;
            }
        }
        out.push(';');
        out.push_str(segment);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> UrlMap {
        UrlMap::new("https://wiki.example.com/docs/", "http://wiki.corp.local:8080/app/").unwrap()
    }

    fn response(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        translate_response_headers(&map(), &mut h);
        h
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn location_and_content_location() {
        let h = response(&[
            ("location", b"http://wiki.corp.local:8080/app/login?next=%2Fapp%2F"),
            ("content-location", b"/app/page"),
        ]);
        assert_eq!(
            values(&h, "location"),
            ["https://wiki.example.com/docs/login?next=%2Fapp%2F"]
        );
        assert_eq!(values(&h, "content-location"), ["/docs/page"]);
        let h = response(&[(
            "location",
            b"https://sso.example.com/auth?r=http://wiki.corp.local:8080/app/",
        )]);
        assert_eq!(
            values(&h, "location"),
            ["https://sso.example.com/auth?r=http://wiki.corp.local:8080/app/"]
        );
    }

    #[test]
    fn values_that_are_not_strings_stay_untouched() {
        let h = response(&[("location", b"/app/\xe9t\xe9"), ("set-cookie", b"a=\xff; Path=/app")]);
        assert_eq!(h.get("location").unwrap().as_bytes(), b"/app/\xe9t\xe9");
        assert_eq!(h.get("set-cookie").unwrap().as_bytes(), b"a=\xff; Path=/app");
    }

    #[test]
    fn refresh_forms() {
        let m = map();
        for (input, expected) in [
            ("5; url=/app/x", Some("5; url=/docs/x")),
            (
                "0;URL='http://wiki.corp.local:8080/app/x'",
                Some("0;URL='https://wiki.example.com/docs/x'"),
            ),
            ("3 , url = \"/app/x\" ", Some("3 , url = \"/docs/x\" ")),
            ("1.5, /app/x", Some("1.5, /docs/x")),
            ("0; url='/app/unterminated", Some("0; url='/docs/unterminated")),
            ("5", None),
            ("5;", None),
            ("5; url=", None),
            ("5; url=other.html", None),
            ("5 url=/app/x", None),
            ("", None),
            (";;;", None),
            ("0; url=\"", None),
            ("0; url", None),
        ] {
            assert_eq!(rewrite_refresh(&m, input).as_deref(), expected, "{input:?}");
        }
        let h = response(&[("refresh", b"5; url=/app/x")]);
        assert_eq!(values(&h, "refresh"), ["5; url=/docs/x"]);
    }

    #[test]
    fn link_header_references() {
        let h = response(&[
            (
                "link",
                b"</app/s.css>; rel=preload; as=style, <http://wiki.corp.local:8080/app/f.woff2>; rel=preload",
            ),
            ("link", b"<https://cdn.example.com/x>; rel=preconnect, <broken"),
        ]);
        assert_eq!(
            values(&h, "link"),
            [
                "</docs/s.css>; rel=preload; as=style, <https://wiki.example.com/docs/f.woff2>; rel=preload",
                "<https://cdn.example.com/x>; rel=preconnect, <broken",
            ]
        );
    }

    #[test]
    fn allow_origin() {
        let h = response(&[("access-control-allow-origin", b"http://wiki.corp.local:8080")]);
        assert_eq!(values(&h, "access-control-allow-origin"), ["https://wiki.example.com"]);
        let h = response(&[("access-control-allow-origin", b"*")]);
        assert_eq!(values(&h, "access-control-allow-origin"), ["*"]);
    }

    #[test]
    fn cookies_with_several_attributes() {
        let h = response(&[
            (
                "set-cookie",
                b"sid=a=b; Path=/app/; Domain=wiki.corp.local; HttpOnly; Secure; SameSite=Lax",
            ),
            ("set-cookie", b"x=1; domain=.corp.local; path=/app/admin; Max-Age=60"),
            ("set-cookie", b"y=2; Path=/; Domain=.example.com"),
            ("set-cookie", b"z=3; Path=/app"),
            ("set-cookie", b"w=4; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly"),
            ("set-cookie", b"v=5; Path=; Domain=; Path=relative"),
            ("set-cookie", b"Path=/app; Domain=WIKI.CORP.LOCAL."),
            ("set-cookie", b"u=6;Domain=ki.corp.local;Path=/elsewhere/x"),
        ]);
        assert_eq!(
            values(&h, "set-cookie"),
            [
                "sid=a=b; Path=/docs/; HttpOnly; Secure; SameSite=Lax",
                "x=1; path=/docs/admin; Max-Age=60",
                "y=2; Path=/docs; Domain=.example.com",
                "z=3; Path=/docs",
                "w=4; Expires=Wed, 21 Oct 2015 07:28:00 GMT; HttpOnly",
                "v=5; Path=; Domain=; Path=relative",
                "Path=/app; Domain=WIKI.CORP.LOCAL.",
                "u=6;Domain=ki.corp.local;Path=/docs",
            ]
        );
    }

    #[test]
    fn cookie_domains_for_ip_hosts() {
        let m = UrlMap::new("https://ext.example.com/", "http://10.1.2.3:8080/").unwrap();
        assert_eq!(rewrite_set_cookie(&m, "a=1; Domain=10.1.2.3").as_deref(), Some("a=1"));
        assert_eq!(rewrite_set_cookie(&m, "a=1; Domain=2.3"), None);
        assert_eq!(
            rewrite_set_cookie(&m, "a=1; Path=/x").as_deref(),
            None,
            "external prefix is /, path under it"
        );
        let m = UrlMap::new("https://ext.example.com/p/", "http://[fd00::1]/").unwrap();
        assert_eq!(
            rewrite_set_cookie(&m, "a=1; Domain=fd00::1; Path=/").as_deref(),
            Some("a=1; Path=/p/")
        );
    }

    #[test]
    fn request_headers_go_the_other_way() {
        let mut h = HeaderMap::new();
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://wiki.example.com/docs/page?x=1"),
        );
        h.insert(header::ORIGIN, HeaderValue::from_static("https://wiki.example.com"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip, br"));
        translate_request_headers(&map(), &mut h);
        request_uncompressed(&mut h);
        assert_eq!(h[header::REFERER], "http://wiki.corp.local:8080/app/page?x=1");
        assert_eq!(h[header::ORIGIN], "http://wiki.corp.local:8080");
        assert_eq!(h[header::ACCEPT_ENCODING], "identity");
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        h.insert(
            header::REFERER,
            HeaderValue::from_static("https://other.example.com/docs/"),
        );
        translate_request_headers(&map(), &mut h);
        assert_eq!(h[header::ORIGIN], "null");
        assert_eq!(h[header::REFERER], "https://other.example.com/docs/");
    }

    #[test]
    fn translated_body_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("123"));
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert("content-digest", HeaderValue::from_static("sha-256=:x:"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        adjust_headers_for_translated_body(&mut h);
        assert_eq!(h.get(header::CONTENT_LENGTH), None);
        assert_eq!(h.get(header::ACCEPT_RANGES), None);
        assert_eq!(h.get("content-digest"), None);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
        assert_eq!(h[header::CONTENT_TYPE], "text/html");
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("W/\"abc\""));
        adjust_headers_for_translated_body(&mut h);
        assert_eq!(h[header::ETAG], "W/\"abc\"");
    }

    #[test]
    fn random_values_never_panic() {
        let pieces = [
            "/",
            "//",
            "app",
            "/app/",
            "http:",
            "https://",
            "wiki.corp.local",
            "wiki.example.com",
            ":8080",
            ":",
            "[",
            "]",
            "::1",
            "@",
            "?",
            "#",
            ";",
            ",",
            "=",
            "url",
            "'",
            "\"",
            " ",
            "\t",
            "é",
            "日",
            "\\",
            "<",
            ">",
            "(",
            ")",
            "Path",
            "Domain",
            ".",
            "%2F",
            "W/",
            "0",
            "docs/",
        ];
        let m = map();
        let mut rng = crate::testing::Rng(42);
        for _ in 0..20_000 {
            let count = rng.below(16);
            let s = rng.text(&pieces, count);
            for out in [m.to_external(&s), m.to_internal(&s)].into_iter().flatten() {
                assert_ne!(out, s, "Some means changed");
            }
            let _ = (m.origin_to_external(&s), m.origin_to_internal(&s));
            let _ = (
                rewrite_refresh(&m, &s),
                rewrite_link(&m, &s),
                rewrite_set_cookie(&m, &s),
            );
            let _ = (crate::html::rewrite_srcset(&m, &s), crate::css::rewrite_css_str(&m, &s));
            if let Ok(v) = HeaderValue::from_str(&s) {
                let mut h = HeaderMap::new();
                for name in [
                    "location",
                    "refresh",
                    "link",
                    "set-cookie",
                    "access-control-allow-origin",
                    "etag",
                ] {
                    h.append(HeaderName::from_static(name), v.clone());
                }
                translate_response_headers(&m, &mut h);
                adjust_headers_for_translated_body(&mut h);
                translate_request_headers(&m, &mut h);
            }
        }
    }

    #[test]
    fn sensitive_flag_is_kept() {
        let mut h = HeaderMap::new();
        let mut v = HeaderValue::from_static("s=1; Path=/app/");
        v.set_sensitive(true);
        h.insert(header::SET_COOKIE, v);
        translate_response_headers(&map(), &mut h);
        assert_eq!(h[header::SET_COOKIE], "s=1; Path=/docs/");
        assert!(h[header::SET_COOKIE].is_sensitive());
    }
}
