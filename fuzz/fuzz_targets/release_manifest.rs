#![no_main]
//! A release as the updater receives it: the manifest and, after a NUL byte,
//! its minisign signature, verified with a fixed publisher key; the manifest
//! and the signature also parsed on their own.
use std::sync::LazyLock;

use postern_release::{Manifest, TrustedKey};

static KEY: LazyLock<TrustedKey> = LazyLock::new(|| {
    TrustedKey::from_text(
        "untrusted comment: minisign public key CA1F87B0C3EF3A5A\nRWRaOu/DsIcfylDeCvkwSHXuH9n6XhXAyNqbjrk3wxNraHFuvn2m7EXa",
    )
    .unwrap()
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (manifest, signature) = data.split_at(split);
    let signature = String::from_utf8_lossy(signature.get(1..).unwrap_or_default());
    let _ = postern_release::check_signature_form(&signature);
    let _ = postern_release::verify(manifest, &signature, &KEY);
    if let Ok(m) = Manifest::from_bytes(manifest) {
        let _ = m.validate();
    }
    let _ = TrustedKey::from_text(&signature);
});
