#![no_main]
//! Values sealed at rest by the key-encryption key ring: opened with a fixed
//! ring; a ring's text form parsed; anything sealed opens to itself.
use std::sync::LazyLock;

use postern_keyring::Keyring;

static RING: LazyLock<Keyring> = LazyLock::new(|| {
    Keyring::from_text("2:cG9zdGVybi1mdXp6LWtleXJpbmcta2V5LTItMzJieXQ=\n1:cG9zdGVybi1mdXp6LWtleXJpbmcta2V5LTEtMzJieXQ=")
        .unwrap()
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = RING.open("fuzz-context", data);
    let _ = RING.needs_reseal(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Keyring::from_text(text);
    }
    let sealed = RING.seal("fuzz-context", data).unwrap();
    assert_eq!(RING.open("fuzz-context", &sealed).unwrap().as_slice(), data);
    assert!(RING.open("another-context", &sealed).is_err());
});
