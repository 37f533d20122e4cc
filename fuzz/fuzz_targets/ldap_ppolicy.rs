#![no_main]
//! The password-policy response control's BER value, as a directory sends it.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = postern_directory::PasswordPolicyResponse::decode(data);
});
