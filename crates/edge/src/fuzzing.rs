//! Entry points for the fuzz targets in `fuzz/` (not an API): the front door's
//! decoders of what a user's browser sends and what a backend answers. Each
//! panics only when an output breaks the invariant its module documents.

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use postern_store::{App, AppLimits, ExternalScheme, Preauth};
use postern_time::UnixTime;

use crate::cookies::{fixed_key, is_own_cookie, open_with, read_cookie, strip_own_cookies};
use crate::forward::{
    clean_request_headers, clean_response_headers, encode_group, internal_authority, upgrade_protocol,
};
use crate::paths::normalize;
use crate::preauth::safe_return_path;
use crate::session::{flow_from_plain, flow_purpose, session_from_plain, session_purpose};

/// `kid` of the fixed cookie key the sealed-cookie target opens with.
pub const FUZZ_COOKIE_KID: &str = "fuzzkid01";
/// The fixed cookie key (the seed corpus holds values sealed with it).
pub const FUZZ_COOKIE_KEY: [u8; 32] = *b"postern-fuzz-cookie-key-32-bytes";
/// The app's ID and tenant in the purposes the seeds are sealed for.
pub const FUZZ_APP_ID: &str = "fuzz-app";
/// See [`FUZZ_APP_ID`].
pub const FUZZ_TENANT_ID: &str = "fuzz-tenant";

/// A published app with `prefix` as the fuzz targets see it.
fn app(prefix: &str) -> App {
    App {
        id: FUZZ_APP_ID.into(),
        tenant_id: FUZZ_TENANT_ID.into(),
        name: "fuzz".into(),
        external_scheme: ExternalScheme::Https,
        external_host: "wiki.acme.test".into(),
        path_prefix: prefix.into(),
        internal_url: "http://wiki.corp.local:8080/app/".into(),
        preauth: Preauth::Sts,
        connector_group_id: "group".into(),
        backend_timeout_secs: 85,
        validate_backend_tls: true,
        translate_headers: true,
        translate_links: true,
        identity_headers: Vec::new(),
        limits: AppLimits::default(),
        client_id: "client".into(),
        created_at: UnixTime::from_secs(0),
        updated_at: UnixTime::from_secs(0),
    }
}

/// A request path normalized as routing sees it; normalizing the result again
/// changes nothing, and it never holds a dot segment.
pub fn request_path(path: &str) {
    if let Ok(once) = normalize(path) {
        assert_eq!(
            normalize(&once).as_deref(),
            Ok(once.as_str()),
            "not idempotent for {path:?}"
        );
        assert!(once.starts_with('/'));
        assert!(!once.split('/').any(|s| s == "." || s == ".."), "{once:?}");
    }
}

/// A return path after sign-in for an app under `prefix`: when accepted, it is
/// a path on the app's host (not `//host`, no backslash) under the prefix.
pub fn return_path(prefix: &str, candidate: &str) {
    if !prefix.starts_with('/') || !prefix.ends_with('/') {
        return;
    }
    if let Some(path) = safe_return_path(&app(prefix), candidate) {
        assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
        assert!(!path.contains('\\'), "{path:?}");
        let bare = path.split(['?', '#']).next().unwrap_or_default();
        assert!(
            bare.starts_with(prefix) || bare == prefix.trim_end_matches('/'),
            "{candidate:?} left {prefix:?} as {path:?}"
        );
    }
}

/// A `Host` header normalized for routing: normalizing the result again
/// changes nothing.
pub fn host(host: &str) {
    if let Some(once) = crate::normalize_host(host) {
        assert_eq!(crate::normalize_host(&once).as_deref(), Some(once.as_str()), "{host:?}");
    }
}

/// Reads `name` from the `Cookie` headers and strips the front door's own
/// cookies, as before forwarding: none is left afterwards.
pub fn cookies(headers: &[(&[u8], &[u8])], name: &str) {
    let mut map = header_map(headers);
    let _ = read_cookie(&map, name);
    strip_own_cookies(&mut map);
    let left = map.get_all(http::header::COOKIE).iter().count();
    assert!(left <= 1, "cookies not joined");
    if let Some(value) = map.get(http::header::COOKIE).and_then(|v| v.to_str().ok()) {
        for pair in value.split(';') {
            let cookie_name = pair.split('=').next().unwrap_or_default().trim();
            assert!(!is_own_cookie(cookie_name), "{cookie_name:?} forwarded");
        }
    }
}

/// Opens a cookie value with the fixed key as a session and as a sign-in flow
/// of the fuzzing app, at `now`.
pub fn sealed_cookie(sealed: &str, now: i64) {
    let Some(key) = fixed_key(FUZZ_COOKIE_KID, &FUZZ_COOKIE_KEY) else {
        return;
    };
    let keys = [key];
    let app = app("/");
    let now = UnixTime::from_secs(now);
    if let Some(plain) = open_with(&keys, &session_purpose(&app), sealed)
        && let Ok(session) = session_from_plain(&plain, &app, now)
    {
        assert!(session.a == app.id && session.t == app.tenant_id && session.x > now.secs());
    }
    if let Some(plain) = open_with(&keys, &flow_purpose(&app), sealed) {
        let _ = flow_from_plain(&plain, now);
    }
}

/// Maps a request's head as the front door sends it into a tunnel, and a
/// backend's response head as the user gets it: no hop-by-hop, `x-postern-*`
/// or front-door cookie survives either way.
pub fn heads(headers: &[(&[u8], &[u8])], internal_url: &str, group: &str) {
    let map = header_map(headers);
    let mut request = Request::new(());
    *request.headers_mut() = map.clone();
    let (parts, ()) = request.into_parts();
    let _ = upgrade_protocol(&parts);
    let _ = internal_authority(internal_url);
    let encoded = encode_group(group);
    assert!(
        HeaderValue::from_str(&encoded).is_ok() && !encoded.contains(','),
        "{encoded:?}"
    );
    let mut forwarded = map.clone();
    clean_request_headers(&mut forwarded);
    assert_clean(&forwarded);
    assert!(!forwarded.contains_key(http::header::HOST));
    let mut answered = map;
    clean_response_headers(&mut answered);
    assert_clean(&answered);
}

fn assert_clean(headers: &HeaderMap) {
    for name in headers.keys() {
        let name = name.as_str();
        assert!(!name.starts_with("x-postern-"), "{name} passed on");
        assert!(
            ![
                "connection",
                "keep-alive",
                "transfer-encoding",
                "te",
                "trailer",
                "upgrade"
            ]
            .contains(&name),
            "{name} passed on"
        );
    }
}

fn header_map(headers: &[(&[u8], &[u8])]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    map
}
