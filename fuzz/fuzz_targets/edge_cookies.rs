#![no_main]
//! The front door's cookie parsing: the cookie named on line 1 read from the
//! `name: value` header lines after it, and its own cookies stripped.
use postern_fuzz::{fields, header_lines};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([name, headers]) = fields::<2>(data) else {
        return;
    };
    postern_edge::fuzzing::cookies(&header_lines(headers), name);
});
