#![no_main]
//! An app's two base URLs (lines 1 and 2: external, internal) and a URL or
//! origin to translate both ways (line 3).
use postern_fuzz::fields;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some([external, internal, url]) = fields::<3>(data) else {
        return;
    };
    let Ok(map) = postern_translate::UrlMap::new(external, internal) else {
        return;
    };
    let _ = (map.external_base(), map.internal_base());
    let _ = map.to_external(url);
    let _ = map.to_internal(url);
    let _ = map.origin_to_external(url);
    let _ = map.origin_to_internal(url);
});
