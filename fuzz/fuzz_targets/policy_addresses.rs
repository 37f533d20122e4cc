#![no_main]
//! The anonymising-networks list (one address or range a line, Tor's exit
//! list format too), and a single range as policies name them.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (list, _bad) = postern_policy::AddressList::parse(text);
    let _ = list.contains("192.0.2.7".parse().unwrap());
    let _ = postern_policy::parse_range(text);
});
