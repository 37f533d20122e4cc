#![no_main]
//! The sealed-cookie opener: a cookie value opened with a fixed key as an app
//! session and as a sign-in flow, then read.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(sealed) = std::str::from_utf8(data) {
        postern_edge::fuzzing::sealed_cookie(sealed, 1_800_000_000);
    }
});
