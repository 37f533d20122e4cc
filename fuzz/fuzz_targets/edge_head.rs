#![no_main]
//! The front door's tunnel head mapping: an app's internal URL (line 1), a
//! group name for the identity header (line 2), and the headers of a user's
//! request or a backend's response.
use postern_fuzz::{fields, header_lines};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([internal_url, group, headers]) = fields::<3>(data) else {
        return;
    };
    postern_edge::fuzzing::heads(&header_lines(headers), internal_url, group);
});
