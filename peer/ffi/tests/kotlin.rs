//! The Kotlin bindings on the JVM against a real relay: the test program
//! (`peer/ffi/kotlin/WeftTest.kt`) drives two users' devices through the generated bindings
//! (converging, the listener, status, pause/resume, typed errors) and exits non-zero on the
//! first failed check.
//!
//! Needs `java`, JNA (Debian's `libjna-java`, or `WEFT_JNA_JAR`) and the Kotlin compiler from
//! `peer/ffi/kotlin`'s lock file (`npm install` there, or `WEFT_KOTLINC`). Without them the
//! test fails when `CI` is set and is skipped (with a note on stderr) otherwise. The Kotlin is
//! compiled once per run.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const KOTLIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/kotlin");

/// The tools, or why they are missing.
struct Tools {
    kotlinc: PathBuf,
    java: PathBuf,
    /// JNA and kotlinx-coroutines (bundled with the compiler).
    classpath: Vec<PathBuf>,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn find_tools() -> Result<Tools, String> {
    let java =
        on_path("java").ok_or("no `java` on PATH (apt-get install openjdk-17-jdk-headless)")?;
    let kotlinc = std::env::var_os("WEFT_KOTLINC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(KOTLIN_DIR).join("node_modules/kotlin-compiler/bin/kotlinc"));
    if !kotlinc.is_file() {
        return Err(format!(
            "no Kotlin compiler at {} (cd peer/ffi/kotlin && npm install)",
            kotlinc.display()
        ));
    }
    let jna = std::env::var_os("WEFT_JNA_JAR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/java/jna.jar"));
    if !jna.is_file() {
        return Err(format!(
            "no JNA at {} (apt-get install libjna-java)",
            jna.display()
        ));
    }
    // kotlinc/bin/kotlinc -> kotlinc/lib/kotlinx-coroutines-core-jvm.jar
    let lib = kotlinc
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("lib"))
        .ok_or("the Kotlin compiler has no lib directory")?;
    let coroutines = lib.join("kotlinx-coroutines-core-jvm.jar");
    if !coroutines.is_file() {
        return Err(format!("no {} beside the compiler", coroutines.display()));
    }
    Ok(Tools {
        kotlinc,
        java,
        classpath: vec![jna, coroutines],
    })
}

fn join(paths: &[PathBuf]) -> String {
    std::env::join_paths(paths)
        .expect("class path")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kotlin_apps_sync_listen_pause_and_get_typed_errors() {
    let tools = find_tools();
    if !support::require("Kotlin", tools.as_ref().err().cloned()) {
        return;
    }
    let tools = tools.expect("checked above");
    let work = tempfile::tempdir().expect("temporary directory");

    let started = Instant::now();
    let bindings = work.path().join("bindings");
    let lib = support::generate_bindings("kotlin", &bindings);
    let jar = work.path().join("weft-test.jar");
    let mut sources: Vec<PathBuf> = vec![
        bindings.join("uniffi/weft_ffi/weft_ffi.kt"),
        Path::new(KOTLIN_DIR).join("WeftTest.kt"),
    ];
    sources.retain(|p| p.exists());
    assert_eq!(sources.len(), 2, "the bindings and the test program exist");
    let compiled = Command::new(&tools.kotlinc)
        .args(&sources)
        .arg("-cp")
        .arg(join(&tools.classpath))
        .args(["-include-runtime", "-nowarn", "-d"])
        .arg(&jar)
        .output()
        .expect("kotlinc runs");
    assert!(
        compiled.status.success(),
        "kotlinc failed:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    eprintln!(
        "Kotlin bindings generated and compiled in {:?}",
        started.elapsed()
    );

    let relay = support::Relay::start().await;
    let mut classpath = vec![jar];
    classpath.extend(tools.classpath.iter().cloned());
    let mut cmd = tokio::process::Command::new(&tools.java);
    cmd.arg(format!(
        "-Djna.library.path={}",
        lib.parent().expect("the library's directory").display()
    ))
    .arg("-cp")
    .arg(join(&classpath))
    .arg("WeftTestKt")
    .env("WEFT_RELAY_ADDR", relay.addr.to_string())
    .env("WEFT_RELAY_CERT", &relay.cert_pem)
    .env("WEFT_METRICS_URL", &relay.metrics_url)
    .env("WEFT_TOKEN_ALICE", relay.token("alice"))
    .env("WEFT_TOKEN_BOB", relay.token("bob"))
    .env("WEFT_WORK_DIR", work.path())
    .kill_on_drop(true);
    let run_started = Instant::now();
    let out = tokio::time::timeout(std::time::Duration::from_secs(240), cmd.output())
        .await
        .expect("the Kotlin test finishes within 4 minutes")
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the Kotlin test failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ALL PASSED"), "{stdout}\n{stderr}");
    eprintln!("Kotlin scenarios ran in {:?}", run_started.elapsed());
}
