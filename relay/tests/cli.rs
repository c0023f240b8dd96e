//! The `weft-relay` binary as an operator and a test script use it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::now;
use weft_core::{DocId, Role};
use weft_relay::{dev_cert_paths, load_cert_and_key, load_secret, Verifier, DEV_SECRET_FILE};

const SECRET: &str = "0123456789abcdef0123456789abcdef-integration";

/// `weft-relay ARGS` with no `WEFT_*` variables inherited from the environment.
fn relay(args: &[&str]) -> Output {
    relay_with_env(args, &[])
}

fn relay_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-relay"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("the weft-relay binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// Asserts the contract's failure shape: the status, nothing on stdout, and one line on stderr
/// that starts with the program's name.
#[track_caller]
fn assert_fails(out: &Output, status: i32) -> String {
    assert_eq!(out.status.code(), Some(status), "stderr: {}", stderr(out));
    assert_eq!(stdout(out), "", "stdout must stay empty on failure");
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line on stderr, got: {err:?}");
    assert!(err.starts_with("weft-relay: "), "{err:?}");
    err
}

fn secret_file(dir: &Path, contents: &str) -> PathBuf {
    let path = dir.join("jwt.secret");
    std::fs::write(&path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn doc(n: u8) -> DocId {
    DocId::from_bytes([n; 16])
}

#[test]
fn an_operator_mints_a_token_that_the_relay_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), &format!("{SECRET}\n"));
    let (chat, trip) = (doc(1), doc(2));
    let out = relay(&[
        "token",
        "--secret-file",
        secret.to_str().unwrap(),
        "--sub",
        "alice",
        "--doc",
        &chat.to_string(),
        "--doc",
        &format!("{}:ro", trip.url()),
        "--create",
        "--ttl",
        "1h",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "");

    let printed = stdout(&out);
    let token = printed.strip_suffix('\n').expect("one line");
    assert!(
        !token.contains(char::is_whitespace),
        "only the token: {printed:?}"
    );

    let before = now();
    let claims = Verifier::new(&load_secret(&secret).unwrap())
        .verify(token, before)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(
        claims.role_for(&chat),
        Some(Role::ReadWrite),
        "no role means rw"
    );
    assert_eq!(claims.role_for(&trip), Some(Role::ReadOnly));
    assert!(claims.create);
    assert!(!claims.admin);
    let iat = claims.iat.unwrap();
    assert!(iat.abs_diff(before) < 60);
    assert_eq!(claims.exp, iat + 3600);
}

#[test]
fn the_default_ttl_is_a_day_and_admin_is_carried() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), SECRET);
    let out = relay(&[
        "token",
        "--secret-file",
        secret.to_str().unwrap(),
        "--sub",
        "root",
        "--admin",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let claims = Verifier::new(&load_secret(&secret).unwrap())
        .verify(stdout(&out).trim_end(), now())
        .unwrap();
    assert!(claims.admin && !claims.create);
    assert!(claims.docs.is_empty());
    assert_eq!(claims.exp - claims.iat.unwrap(), 24 * 3600);
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), SECRET);
    let secret = secret.to_str().unwrap();
    let base = ["token", "--secret-file", secret, "--sub", "alice"];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        relay(&args)
    };

    let err = assert_fails(&with(&["--doc", "not-a-doc-id"]), 2);
    assert!(err.contains("not-a-doc-id"), "{err}");
    assert_fails(&with(&["--doc", &format!("{}:admin", doc(1))]), 2);
    assert_fails(&with(&["--ttl", "forever"]), 2);
    assert_fails(&with(&["--ttl", "0s"]), 2);
    assert_fails(&with(&["--frobnicate"]), 2);
    assert_fails(
        &with(&[
            "--doc",
            &format!("{}:ro", doc(1)),
            "--doc",
            &doc(1).to_string(),
        ]),
        2,
    );
    assert_fails(&relay(&["token", "--secret-file", secret]), 2);
    assert_fails(&relay(&["token", "--secret-file", secret, "--sub", ""]), 2);
    assert_fails(&relay(&[]), 2);
    assert_fails(&relay(&["serve", "--listen", "nowhere"]), 2);
    assert_fails(&relay(&["serve", "--cert", "only-a-cert.pem"]), 2);
    let data = dir.path().join("relay-data");
    let web_without_http = [
        "serve",
        "--dev",
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--web",
        "--http",
        "off",
    ];
    let err = assert_fails(&relay(&web_without_http), 2);
    assert!(err.contains("--http"), "{err}");
    // The push hook needs its secret, and a URL it can POST to.
    let err = assert_fails(&relay(&["serve", "--notify-url", "http://127.0.0.1:9/"]), 2);
    assert!(err.contains("--notify-secret-file"), "{err}");
    let hook = |url: &str| {
        let mut args = web_without_http[..6].to_vec();
        args.extend(["--notify-url", url, "--notify-secret-file", secret]);
        relay(&args)
    };
    let err = assert_fails(&hook("ftp://127.0.0.1/hook"), 1);
    assert!(err.contains("only http:// and https://"), "{err}");
    let err = assert_fails(&hook("http://"), 1);
    assert!(err.contains("--notify-url"), "{err}");
    std::fs::create_dir(dir.path().join("hook")).unwrap();
    let short = secret_file(&dir.path().join("hook"), "short");
    let mut args = web_without_http[..6].to_vec();
    args.extend([
        "--notify-url",
        "http://127.0.0.1:9/",
        "--notify-secret-file",
        short.to_str().unwrap(),
    ]);
    let err = assert_fails(&relay(&args), 1);
    assert!(err.contains("--notify-secret-file"), "{err}");
}

#[test]
fn a_missing_or_short_secret_file_exits_1_with_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-secret");
    let err = assert_fails(
        &relay(&[
            "token",
            "--secret-file",
            missing.to_str().unwrap(),
            "--sub",
            "alice",
        ]),
        1,
    );
    assert!(err.contains("no-such-secret"), "{err}");

    let short = secret_file(dir.path(), "too short\n");
    let err = assert_fails(
        &relay(&[
            "token",
            "--secret-file",
            short.to_str().unwrap(),
            "--sub",
            "alice",
        ]),
        1,
    );
    assert!(err.contains("at least 32"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_world_readable_secret_is_used_with_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), SECRET);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = relay(&[
        "token",
        "--secret-file",
        secret.to_str().unwrap(),
        "--sub",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("readable by group or others"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out).lines().count(),
        1,
        "the warning stays off stdout"
    );
}

#[test]
fn serve_dev_creates_its_identity_once_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("relay-data");
    let data = data_dir.to_str().unwrap();

    serve_until_ready(
        &[
            "serve",
            "--dev",
            "--data-dir",
            data,
            "--http",
            "off",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let secret_path = data_dir.join(DEV_SECRET_FILE);
    let (cert, key) = dev_cert_paths(&data_dir);
    let files = [&secret_path, &cert, &key].map(|p| std::fs::read(p).unwrap());
    load_cert_and_key(&cert, &key).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&secret_path), 0o600);
        assert_eq!(mode(&key), 0o600);
    }

    // A later start, configured through the environment this time, reuses the same files.
    serve_until_ready(
        &["serve", "--http", "off"],
        &[
            ("WEFT_DEV", "1"),
            ("WEFT_DATA_DIR", data),
            ("WEFT_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert_eq!(
        files,
        [&secret_path, &cert, &key].map(|p| std::fs::read(p).unwrap())
    );

    // Tokens minted from the generated secret verify against it.
    let out = relay(&[
        "token",
        "--secret-file",
        secret_path.to_str().unwrap(),
        "--sub",
        "dev",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    Verifier::new(&load_secret(&secret_path).unwrap())
        .verify(stdout(&out).trim_end(), now())
        .unwrap();
}

#[test]
fn serve_without_dev_needs_a_secret_and_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let err = assert_fails(&relay(&["serve", "--data-dir", data]), 1);
    assert!(err.contains("--jwt-secret-file"), "{err}");

    let secret = secret_file(dir.path(), SECRET);
    let secret = secret.to_str().unwrap();
    let err = assert_fails(
        &relay(&["serve", "--data-dir", data, "--jwt-secret-file", secret]),
        1,
    );
    assert!(err.contains("--cert"), "{err}");

    let short_dir = dir.path().join("short");
    std::fs::create_dir(&short_dir).unwrap();
    let short = secret_file(&short_dir, "31 bytes is one byte too short.");
    let err = assert_fails(
        &relay(&[
            "serve",
            "--dev",
            "--data-dir",
            data,
            "--jwt-secret-file",
            short.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("at least 32"), "{err}");

    let missing_cert = dir.path().join("missing-cert.pem");
    let err = assert_fails(
        &relay(&[
            "serve",
            "--data-dir",
            data,
            "--jwt-secret-file",
            secret,
            "--cert",
            missing_cert.to_str().unwrap(),
            "--key",
            missing_cert.to_str().unwrap(),
        ]),
        1,
    );
    assert!(err.contains("missing-cert.pem"), "{err}");
}

/// Starts `serve`, waits for its ready line (the only thing on stdout), stops it with SIGTERM
/// and checks it exits 0.
#[track_caller]
fn serve_until_ready(args: &[&str], env: &[(&str, &str)]) {
    use std::io::{BufRead, BufReader, Read};
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-relay"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).envs(env.iter().copied());
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("the weft-relay binary runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("weft-relay ready quic=127.0.0.1:"),
        "{line:?}"
    );
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        let _ = tx.send((child.wait(), rest));
    });
    let (status, rest) = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("serve stopped on SIGTERM");
    assert!(status.unwrap().success());
    assert_eq!(rest, "", "nothing but the ready line on stdout");
}
