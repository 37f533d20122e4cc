#![no_main]
//! What the agent reads from directory answers: AD's `data XXX` bind
//! sub-codes, objectGUID bytes and the first RDN value of a group's DN.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = postern_directory::ad_guid_to_uuid(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = postern_directory::ad_bind_code(text);
        let _ = postern_directory::first_rdn_value(text);
    }
});
