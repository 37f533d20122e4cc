#![no_main]
//! The control side of the queue: an agent's answer (`ValidationResult`), as
//! the results endpoint decodes it, and the two-way queue's body (lines of
//! `QueueResult`), as the service reads it: whatever arrives, memory stays
//! within one line and every decoded answer survives its own encoding.
use postern_proto::lines::{Decoded, LineDecoder};
use postern_proto::relay::{QueueResult, ValidationResult};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ValidationResult>(data);
    let mut decoder = LineDecoder::new(4096);
    let mut out: Vec<Decoded<QueueResult>> = Vec::new();
    for chunk in data.chunks(97) {
        if decoder.push(chunk, &mut out).is_err() {
            break;
        }
    }
    for item in out {
        if let Decoded::Frame(answer) = item {
            let line = serde_json::to_vec(&answer).unwrap();
            assert_eq!(serde_json::from_slice::<QueueResult>(&line).unwrap(), answer);
        }
    }
});
