#![no_main]
//! The connector's tunnel head mapping: the app's internal URL (line 1), a
//! stream's `:path` (line 2) and `:authority` (line 3), and its headers.
use postern_fuzz::{fields, header_lines};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([internal_url, path, authority, headers]) = fields::<4>(data) else {
        return;
    };
    postern_connector::fuzzing::map_heads(internal_url, path, authority, &header_lines(headers));
});
