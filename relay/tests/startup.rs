//! The `weft-relay serve` process around its start: signals that arrive early, and what it
//! leaves in its data directory.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::Duration;

/// `weft-relay serve --dev` on a fresh data directory with `args`, its stdout and stderr piped.
fn spawn_relay(dir: &std::path::Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-relay"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--http", "off"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the weft-relay binary runs")
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the child to exit.
fn exit_status(mut child: Child) -> ExitStatus {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
        child
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the relay did not exit")
        .unwrap()
}

/// Reads stderr lines until one contains `needle`; the lines read. Panics if stderr ends first.
fn stderr_until(stderr: &mut BufReader<ChildStderr>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "stderr ended before {needle:?}: {seen:#?}");
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

/// Keeps draining `stderr` so the relay never blocks on a full pipe.
fn drain(stderr: BufReader<ChildStderr>) {
    std::thread::spawn(move || for _ in stderr.lines() {});
}

#[test]
fn sigint_right_after_the_ready_line_stops_the_relay_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_relay(dir.path(), &[]);
    drain(BufReader::new(child.stderr.take().unwrap()));
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("weft-relay ready"), "{ready:?}");
    send_signal(&child, "-INT");
    let status = exit_status(child);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn sigint_while_an_empty_relay_waits_for_postgres_exits_0() {
    // Nothing listens on port 1: the empty relay waits for Postgres before it is ready, and
    // says so on stderr; the SIGINT handler is already installed by then.
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn_relay(
        dir.path(),
        &[
            "--postgres",
            "postgres://postgres@127.0.0.1:1/postgres?connect_timeout=2",
        ],
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    stderr_until(&mut stderr, "waiting for it");
    send_signal(&child, "-INT");
    drain(stderr);
    let status = exit_status(child);
    assert!(status.success(), "exit status {status}");
}

/// Starts the relay on `dir`, waits for its ready line and stops it with SIGTERM (exit 0).
fn start_and_stop(dir: &std::path::Path) {
    let mut child = spawn_relay(dir, &[]);
    drain(BufReader::new(child.stderr.take().unwrap()));
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("weft-relay ready"), "{ready:?}");
    send_signal(&child, "-TERM");
    assert!(exit_status(child).success());
}

#[cfg(unix)]
#[test]
fn the_data_directory_is_made_private_on_every_start() {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("relay-data");
    let (cert, key) = weft_relay::dev_cert_paths(&dir);
    let tls = key.parent().unwrap().to_owned();
    let store = dir.join(weft_relay::STORE_FILE);
    let secret = dir.join(weft_relay::DEV_SECRET_FILE);
    let check = || {
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tls), 0o700);
        for file in [&store, &secret, &key] {
            assert_eq!(mode(file), 0o600, "{}", file.display());
        }
    };

    // The directory exists already, with the usual 0755: the store is created in it.
    std::fs::create_dir(&dir).unwrap();
    set(&dir, 0o755);
    start_and_stop(&dir);
    check();

    // Everything loosened between two starts is tightened again.
    for file in [&store, &secret, &key, &cert] {
        set(file, 0o644);
    }
    set(&tls, 0o755);
    set(&dir, 0o755);
    start_and_stop(&dir);
    check();
    assert_eq!(mode(&cert), 0o644, "the certificate is public");
}
