#![no_main]
//! The control side of the queue: an agent's answer (`ValidationResult`), as
//! the results endpoint decodes it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<postern_proto::relay::ValidationResult>(data);
});
