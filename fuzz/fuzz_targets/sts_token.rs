#![no_main]
//! JWT verification: a token as an access token, ID token, identity assertion
//! and queue credential, against a fixed key set.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = postern_sts::fuzzing::verify_token(token);
    }
});
