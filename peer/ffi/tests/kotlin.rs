//! The Kotlin bindings on the JVM against a real relay: the test program
//! (`peer/ffi/kotlin/WeftTest.kt`) drives two users' devices through the generated bindings
//! (converging, the listener, status, pause/resume, typed errors) and exits non-zero on the
//! first failed check.
//!
//! Needs the tools `support::kotlin` names. Without them the test fails when `CI` is set and is
//! skipped (with a note on stderr) otherwise. The Kotlin is compiled once per run.

mod support;

use std::time::Instant;

use support::kotlin::Kotlin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kotlin_apps_sync_listen_pause_and_get_typed_errors() {
    let kotlin = Kotlin::find();
    if !support::require("Kotlin", kotlin.as_ref().err().cloned()) {
        return;
    }
    let kotlin = kotlin.expect("checked above");
    let work = tempfile::tempdir().expect("temporary directory");

    let started = Instant::now();
    let program = kotlin.compile("WeftTest.kt", work.path());
    eprintln!(
        "Kotlin bindings generated and compiled in {:?}",
        started.elapsed()
    );

    let relay = support::Relay::start().await;
    let mut cmd = kotlin.java(&program, "WeftTestKt");
    cmd.env("WEFT_RELAY_ADDR", relay.addr.to_string())
        .env("WEFT_RELAY_CERT", &relay.cert_pem)
        .env("WEFT_METRICS_URL", &relay.metrics_url)
        .env("WEFT_TOKEN_ALICE", relay.token("alice"))
        .env("WEFT_TOKEN_BOB", relay.token("bob"))
        .env("WEFT_WORK_DIR", work.path());
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
