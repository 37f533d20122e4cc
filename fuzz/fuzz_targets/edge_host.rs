#![no_main]
//! `Host` / `:authority` normalization before routing by host.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(host) = std::str::from_utf8(data) {
        postern_edge::fuzzing::host(host);
    }
});
