#![no_main]
//! CSR checks at enrolment and renewal (PEM or DER from a component).
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = postern_pki::fuzzing::csr(data);
});
