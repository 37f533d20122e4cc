#![no_main]
//! The streaming HTML link translator over a backend's body: the first byte
//! picks a chunk size; whole or chunked, the output is the same, and a body
//! that names neither the internal host nor its base path passes byte for byte.
use postern_fuzz::translate_body;
use postern_translate::BodyKind;

libfuzzer_sys::fuzz_target!(|data: &[u8]| translate_body(BodyKind::Html, data));
