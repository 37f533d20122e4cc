#![no_main]
//! Reading a component's certificate (PEM or DER): tenant, kind, ID, serial.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = postern_pki::cert_info(data);
});
