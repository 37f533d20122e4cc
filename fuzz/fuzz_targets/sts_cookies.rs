#![no_main]
//! The sign-in pages' cookie parsing: the cookie named on line 1 read from
//! the `name: value` header lines after it.
use postern_fuzz::{fields, header_lines};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([name, lines]) = fields::<2>(data) else { return };
    let mut headers = http::HeaderMap::new();
    for (n, v) in header_lines(lines) {
        if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n), http::HeaderValue::from_bytes(v)) {
            headers.append(n, v);
        }
    }
    let _ = postern_sts::fuzzing::read_cookie(&headers, name);
});
