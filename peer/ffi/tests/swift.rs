//! The Swift bindings against a real relay: generates the Swift bindings from the
//! `libweft_ffi.so` cargo built, starts a relay on loopback (`support::Relay`), and runs the
//! XCTests of `peer/ffi/swift` with `swift test` inside the Debian 13 root that
//! `peer/ffi/swift/prepare-root.sh` prepares (Debian 12 has no Swift; the root shares the
//! host's network, and the library built here loads there: its glibc is newer). The relay's
//! address, certificate, metrics URL and a token per user reach the tests in a JSON file
//! (`WEFT_SWIFT_FIXTURE`). The Swift package is built once per run.
//!
//! Without a prepared root the test fails when `CI` is set and is skipped (with a note on
//! stderr) otherwise; `.ci/run` prepares the root.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The users the Swift scenarios act as (each scenario has its own; alice is the README sample).
const USERS: &[&str] = &[
    "alice", "ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy", "kim", "lou",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_apps_sync_listen_pause_and_get_typed_errors() {
    let root = PathBuf::from(
        std::env::var("WEFT_SWIFT_ROOT").unwrap_or_else(|_| "/var/cache/weft/swift-trixie".into()),
    );
    let missing = (!root.join(".weft-swift-root").exists()).then(|| {
        format!(
            "no prepared Swift root at {} (run `bash peer/ffi/swift/prepare-root.sh` as root)",
            root.display()
        )
    });
    if !support::require("Swift", missing) {
        return;
    }

    let ffi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = ffi
        .parent()
        .and_then(Path::parent)
        .expect("peer/ffi is two levels down");
    // The package, copied beside cargo's build (the source tree stays clean), with the
    // generated bindings and the library; Swift's build directory persists there between runs.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weft-ffi-swift");
    let lib_dir = work.join("lib");
    let pkg = work.join("package");
    let _ = std::fs::remove_dir_all(&pkg);
    let _ = std::fs::remove_dir_all(&lib_dir);
    std::fs::create_dir_all(&lib_dir).unwrap();
    copy_dir(&ffi.join("swift/Tests"), &pkg.join("Tests"));
    std::fs::copy(ffi.join("swift/Package.swift"), pkg.join("Package.swift")).unwrap();
    let raw = pkg.join("Generated/raw");
    let lib = support::generate_bindings("swift", &raw);
    std::fs::copy(&lib, lib_dir.join("libweft_ffi.so")).unwrap();
    lay_out_bindings(&raw, &pkg.join("Generated"));

    let relay = support::Relay::start().await;
    let tokens: serde_json::Map<String, serde_json::Value> = USERS
        .iter()
        .map(|u| (u.to_string(), relay.token(u).into()))
        .collect();
    let fixture = work.join("fixture.json");
    let json = serde_json::json!({
        "relay": relay.addr.to_string(),
        "metrics": relay.metrics_url,
        "cert_pem": std::fs::read_to_string(&relay.cert_pem).unwrap(),
        "tokens": tokens,
    });
    std::fs::write(&fixture, json.to_string()).unwrap();

    let started = Instant::now();
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(ffi.join("swift/run-in-root.sh"))
        .args(["--bind".as_ref(), workspace.as_os_str()])
        .args(["--bind".as_ref(), work.as_os_str()])
        .args(["--cd".as_ref(), pkg.as_os_str()])
        .args(["--", "swift", "test", "--scratch-path"])
        .arg(work.join("build"))
        // The library is linked from, and found at run time in, `lib/`.
        .arg("-Xlinker")
        .arg(format!("-L{}", lib_dir.display()))
        .args(["-Xlinker", "-rpath", "-Xlinker"])
        .arg(&lib_dir)
        .env("WEFT_SWIFT_FIXTURE", &fixture)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(600), cmd.output())
        .await
        .expect("swift test finishes within 10 minutes")
        .expect("run-in-root.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "swift test failed ({:?}); its output is above",
        out.status
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("Executed") && l.contains("test"))
        .unwrap_or("no XCTest summary");
    assert!(
        !summary.contains("no XCTest") && !summary.contains("Executed 0 tests"),
        "swift test ran no test: {summary}"
    );
    eprintln!(
        "Swift (build and run): {} in {:.1} s",
        summary.trim(),
        started.elapsed().as_secs_f64()
    );
}

/// The generated bindings laid out as the package expects: the Swift file in `Generated/Weft`,
/// the C header in `Generated/<module>` with a module map naming it.
fn lay_out_bindings(raw: &Path, out: &Path) {
    let mut swift = Vec::new();
    let mut headers = Vec::new();
    for entry in std::fs::read_dir(raw).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("swift") => swift.push(path),
            Some("h") => headers.push(path),
            _ => {}
        }
    }
    assert_eq!(
        (swift.len(), headers.len()),
        (1, 1),
        "one Swift file and one header"
    );
    let module = headers[0].file_stem().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        module, "weft_ffiFFI",
        "Package.swift names the C module weft_ffiFFI"
    );
    let c_dir = out.join(&module);
    std::fs::create_dir_all(&c_dir).unwrap();
    std::fs::copy(&headers[0], c_dir.join(format!("{module}.h"))).unwrap();
    std::fs::write(
        c_dir.join("module.modulemap"),
        format!("module {module} {{\n    header \"{module}.h\"\n    link \"weft_ffi\"\n    export *\n}}\n"),
    )
    .unwrap();
    let swift_dir = out.join("Weft");
    std::fs::create_dir_all(&swift_dir).unwrap();
    std::fs::copy(&swift[0], swift_dir.join("Weft.swift")).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
