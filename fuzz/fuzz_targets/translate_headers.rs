#![no_main]
//! Header translation: a backend's response headers (`Location`, `Set-Cookie`,
//! `Link`, `Refresh`, ...) to the user, a user's request headers (`Referer`,
//! `Origin`) to the backend; `name: value` lines.
use postern_fuzz::{header_lines, url_map};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut headers = http::HeaderMap::new();
    for (name, value) in header_lines(text) {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name), http::HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    let map = url_map();
    let mut response = headers.clone();
    postern_translate::translate_response_headers(&map, &mut response);
    let _ = postern_translate::translatable_body(&response);
    postern_translate::adjust_headers_for_translated_body(&mut response);
    let mut request = headers;
    postern_translate::translate_request_headers(&map, &mut request);
    postern_translate::request_uncompressed(&mut request);
});
