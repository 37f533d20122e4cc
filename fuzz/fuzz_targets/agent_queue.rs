#![no_main]
//! The agent's queue stream framing (newline-delimited JSON frames in chunks
//! of any size): the first byte picks a chunk size; chunked or whole, the
//! decoded frames are the same, and each frame survives the service's encoding.
use postern_agent::queue::{Decoded, LineDecoder};

fn decode(chunks: std::slice::Chunks<'_, u8>) -> (Vec<Decoded>, bool) {
    let mut decoder = LineDecoder::new(4096);
    let mut out = Vec::new();
    for chunk in chunks {
        if decoder.push(chunk, &mut out).is_err() {
            return (out, false);
        }
    }
    (out, true)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&size, stream)) = data.split_first() else {
        return;
    };
    let (whole, whole_ok) = decode(stream.chunks(stream.len().max(1)));
    let (chunked, chunked_ok) = decode(stream.chunks(usize::from(size % 64) + 1));
    assert_eq!(whole_ok, chunked_ok);
    if whole_ok {
        assert_eq!(whole, chunked);
    }
    for item in whole {
        if let Decoded::Frame(frame) = item {
            let line = serde_json::to_vec(&frame).unwrap();
            assert!(!line.contains(&b'\n'));
            assert_eq!(
                serde_json::from_slice::<postern_proto::relay::QueueFrame>(&line).unwrap(),
                frame
            );
        }
    }
});
