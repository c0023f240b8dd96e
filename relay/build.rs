//! Release builds of `weft-relay` on Linux place the functions the relay runs when it serves
//! (`link/hot.ld`, made by `link/profile-hot-code.sh`) together at the start of its code, so a
//! serving relay touches a few megabytes of its binary instead of most of it (decision 0044).
//! Other builds link as before; a function missing from the list only stays where it was.

fn main() {
    println!("cargo:rerun-if-changed=link/hot.ld");
    println!("cargo:rerun-if-changed=build.rs");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if release && linux {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        // `-Xlinker`: the path goes to the linker as one argument, whatever it holds.
        println!("cargo:rustc-link-arg-bin=weft-relay=-Xlinker");
        println!("cargo:rustc-link-arg-bin=weft-relay=--script={dir}/link/hot.ld");
    }
}
