//! Release builds of `weft-relay` on Linux place the functions the relay runs when it serves
//! (`link/hot.ld`, made by `link/profile-hot-code.sh`) together at the start of its code, so a
//! serving relay touches a few megabytes of its binary instead of most of it, and pack its
//! relative relocations (`DT_RELR`) where the C library reads them (decision 0044). Other builds
//! link as before; a function missing from the list only stays where it was.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=link/hot.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if var("PROFILE") != "release" || var("CARGO_CFG_TARGET_OS") != "linux" {
        return;
    }
    let dir = var("CARGO_MANIFEST_DIR");
    // `-Xlinker`: the path goes to the linker as one argument, whatever it holds.
    println!("cargo:rustc-link-arg-bin=weft-relay=-Xlinker");
    println!("cargo:rustc-link-arg-bin=weft-relay=--script={dir}/link/hot.ld");
    if glibc_reads_relr() {
        println!("cargo:rustc-link-arg-bin=weft-relay=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the binary will run on a C library that reads packed relocations (glibc 2.36 and
/// later): a native build for glibc on a machine that has one. A glibc binary already needs
/// the glibc it was built against, so this asks nothing more of the machines it runs on.
fn glibc_reads_relr() -> bool {
    if var("HOST") != var("TARGET") || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return false;
    }
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text.trim().trim_start_matches("glibc ").split('.');
    let number = |part: Option<&str>| part.and_then(|p| p.parse::<u32>().ok());
    match (number(version.next()), number(version.next())) {
        (Some(major), Some(minor)) => (major, minor) >= (2, 36),
        _ => false,
    }
}

/// A variable cargo sets for build scripts, empty when unset.
fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}
