#![no_main]
//! Request path normalization (line 2) and the return path after sign-in for
//! an app under the prefix on line 1.
use postern_fuzz::fields;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([prefix, candidate]) = fields::<2>(data) else {
        return;
    };
    postern_edge::fuzzing::request_path(candidate);
    postern_edge::fuzzing::return_path(prefix, candidate);
});
