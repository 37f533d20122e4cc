//! Entry points for the fuzz targets in `fuzz/` (not an API): the connector's
//! decoders of what the tunnel and the service send it.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use postern_proto::control::AppRef;

use crate::apps::App;
use crate::forward::{backend_head, strip_hop_by_hop};

/// Parses `internal_url` as an app's backend, maps a tunnel stream's head
/// (`path_and_query`, `authority`, `headers`) to the backend request's head, and
/// strips a backend response's hop-by-hop headers (`headers` again). Panics only
/// if a mapped head breaks an invariant: a path outside the internal base, a
/// hop-by-hop header passed on, or no `Host`.
pub fn map_heads(internal_url: &str, path_and_query: &str, authority: &str, headers: &[(&[u8], &[u8])]) {
    let app_ref = AppRef {
        id: "app".into(),
        internal_url: internal_url.to_owned(),
        validate_backend_tls: true,
        backend_timeout_secs: 0,
    };
    let Ok(app) = App::parse(&app_ref, Duration::from_secs(1)) else {
        return;
    };
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            map.append(name, value);
        }
    }
    let uri = if authority.is_empty() {
        path_and_query.to_owned()
    } else {
        format!("http://{authority}{path_and_query}")
    };
    let Ok(request) = Request::builder().uri(uri).body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    parts.headers = map.clone();
    if let Ok(head) = backend_head(&app, &parts) {
        let base = internal_base_path(internal_url);
        assert!(head.uri.path().starts_with(&base), "{} left {base}", head.uri.path());
        assert!(head.headers.contains_key(http::header::HOST));
        for hop in ["connection", "transfer-encoding", "upgrade", "te", "keep-alive"] {
            assert!(!head.headers.contains_key(hop), "{hop} passed on");
        }
    }
    strip_hop_by_hop(&mut map);
    assert!(!map.contains_key(http::header::CONNECTION));
}

/// The internal URL's path without its trailing `/`, as [`App::parse`] keeps it.
fn internal_base_path(internal_url: &str) -> String {
    url::Url::parse(internal_url)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}
