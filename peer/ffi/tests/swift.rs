//! The Swift bindings against a real relay: generates the Swift bindings from the
//! `libweft_ffi.so` cargo built, starts `weft-relay serve --dev` on loopback, and runs the
//! XCTests of `peer/ffi/swift` with `swift test` inside the Debian 13 root that
//! `peer/ffi/swift/prepare-root.sh` prepares (Debian 12 has no Swift). The relay's address,
//! certificate and a token per user reach the tests in a JSON file (`WEFT_SWIFT_FIXTURE`).
//!
//! Without a prepared root this test skips with a message, except under `CI=true`, where it
//! fails (`.ci/run` prepares the root).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The users the Swift scenarios act as (each scenario has its own).
const USERS: &[&str] = &[
    "ann", "ben", "cat", "dan", "eve", "fay", "gus", "hal", "ivy",
];

#[test]
fn swift_tests_pass_against_a_real_relay() {
    let root = PathBuf::from(
        std::env::var("WEFT_SWIFT_ROOT").unwrap_or_else(|_| "/var/cache/weft/swift-trixie".into()),
    );
    if !root.join(".weft-swift-root").exists() {
        let why = format!(
            "no prepared Swift root at {} (run `bash peer/ffi/swift/prepare-root.sh` as root)",
            root.display()
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{why}");
        }
        eprintln!("SKIPPED the Swift binding tests: {why}");
        return;
    }

    let ffi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = ffi
        .parent()
        .and_then(Path::parent)
        .expect("peer/ffi is two levels down");
    // The library as cargo built it for this test (in `deps/`: cargo copies a cdylib up to the
    // target directory only when it builds the crate itself), copied where Swift links it.
    let bindgen = PathBuf::from(env!("CARGO_BIN_EXE_uniffi-bindgen"));
    let built = bindgen.with_file_name("deps").join("libweft_ffi.so");
    assert!(built.exists(), "cargo built no {}", built.display());

    // The package, copied beside cargo's build (the source tree stays clean), with the
    // generated bindings; Swift's own build directory persists there between runs.
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weft-ffi-swift");
    let lib_dir = work.join("lib");
    let pkg = work.join("package");
    let _ = std::fs::remove_dir_all(&pkg);
    std::fs::create_dir_all(&lib_dir).unwrap();
    let lib = lib_dir.join("libweft_ffi.so");
    std::fs::copy(&built, &lib).unwrap();
    copy_dir(&ffi.join("swift/Tests"), &pkg.join("Tests"));
    std::fs::copy(ffi.join("swift/Package.swift"), pkg.join("Package.swift")).unwrap();
    generate_bindings(&bindgen, &lib, &pkg.join("Generated"));

    let relay = Relay::start(&work.join("relay"));
    let fixture = work.join("fixture.json");
    std::fs::write(&fixture, relay.fixture().to_string()).unwrap();

    let started = Instant::now();
    let out = Command::new("bash")
        .arg(ffi.join("swift/run-in-root.sh"))
        .args(["--bind".as_ref(), workspace.as_os_str()])
        .args(["--bind".as_ref(), work.as_os_str()])
        .args(["--cd".as_ref(), pkg.as_os_str()])
        .arg("--")
        .args(["timeout", "--kill-after=10", "900", "swift", "test"])
        .arg("--scratch-path")
        .arg(work.join("build"))
        // The library is linked from, and found at run time in, cargo's target directory.
        .arg("-Xlinker")
        .arg(format!("-L{}", lib_dir.display()))
        .args(["-Xlinker", "-rpath", "-Xlinker"])
        .arg(&lib_dir)
        .env("WEFT_SWIFT_FIXTURE", &fixture)
        .stdin(Stdio::null())
        .output()
        .expect("run-in-root.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "swift test failed ({:?}); its output is above, the relay's log is {}",
        out.status,
        work.join("relay.log").display()
    );
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("Executed") && l.contains("tests"))
        .unwrap_or("no XCTest summary");
    eprintln!(
        "Swift: {} in {:.1} s",
        summary.trim(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        !summary.contains("Executed 0 tests"),
        "swift test ran no test: {summary}"
    );
}

/// `uniffi-bindgen generate --library` for Swift, laid out as the package expects: the Swift
/// file in `Generated/Weft`, the C header in `Generated/<module>` with a module map naming it.
fn generate_bindings(bindgen: &Path, lib: &Path, out: &Path) {
    let raw = out.join("raw");
    let run = Command::new(bindgen)
        .args(["generate", "--library"])
        .arg(lib)
        .args(["--language", "swift", "--out-dir"])
        .arg(&raw)
        .output()
        .expect("uniffi-bindgen runs");
    // (It warns that swift-format is missing: the output is only compiled, never read.)
    assert!(
        run.status.success(),
        "uniffi-bindgen failed: {:?}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let mut swift = Vec::new();
    let mut headers = Vec::new();
    for entry in std::fs::read_dir(&raw).unwrap() {
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

/// `weft-relay serve --dev` on an ephemeral loopback port; killed when dropped.
struct Relay {
    child: Child,
    /// QUIC.
    addr: String,
    /// `/metrics`.
    http: String,
    dir: PathBuf,
}

impl Relay {
    fn start(dir: &Path) -> Relay {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.with_extension("log")).unwrap();
        let mut child = Command::new(relay_bin())
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .env_remove("WEFT_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("weft-relay starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("weft-relay ready ") {
                    let field = |name: &str| {
                        rest.split_whitespace()
                            .find_map(|f| f.strip_prefix(name))
                            .unwrap_or("")
                            .to_owned()
                    };
                    let _ = tx.send((field("quic="), field("http=")));
                }
            }
        });
        let (addr, http) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the relay's ready line within 30 s");
        Relay {
            child,
            addr,
            http,
            dir: dir.to_path_buf(),
        }
    }

    /// What the Swift tests read: address, certificate, metrics URL and a token per user.
    fn fixture(&self) -> serde_json::Value {
        let secret = weft_relay::ensure_dev_secret(&self.dir).unwrap();
        let minter = weft_relay::Minter::new(&secret);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let tokens: serde_json::Map<String, serde_json::Value> = USERS
            .iter()
            .map(|u| {
                let claims = weft_relay::Claims::new(*u, now, 3600).with_create(true);
                (u.to_string(), minter.mint(&claims).unwrap().into())
            })
            .collect();
        let (cert, _) = weft_relay::dev_cert_paths(&self.dir);
        serde_json::json!({
            "relay": self.addr,
            "metrics": format!("http://{}/metrics", self.http),
            "cert_pem": std::fs::read_to_string(cert).unwrap(),
            "tokens": tokens,
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The relay binary beside this crate's binaries (the workspace test run builds it; built
/// here when missing).
fn relay_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_uniffi-bindgen")).with_file_name("weft-relay");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weft-relay", "--bin", "weft-relay"])
            .status()
            .expect("cargo build weft-relay");
        assert!(status.success());
    }
    path
}
