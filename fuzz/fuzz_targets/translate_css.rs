#![no_main]
//! The streaming CSS link translator (`url(...)`, `@import`): as for HTML.
use postern_fuzz::translate_body;
use postern_translate::BodyKind;

libfuzzer_sys::fuzz_target!(|data: &[u8]| translate_body(BodyKind::Css, data));
