//! Exports the target triple being built for, so a binary knows which releases
//! fit it (`POSTERN_BUILD_TARGET`).

fn main() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=POSTERN_BUILD_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
