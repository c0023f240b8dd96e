//! Driving the `weft` and `weft-relay` binaries as a user would.
#![allow(dead_code)]

pub mod events;
pub mod in_process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn weft_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// The relay binary beside `weft` (built by the workspace test run; built here if missing).
pub fn relay_bin() -> PathBuf {
    let path = weft_bin().with_file_name("weft-relay");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weft-relay", "--bin", "weft-relay"])
            .status()
            .expect("cargo build weft-relay");
        assert!(status.success());
    }
    path
}

fn quiet() -> Stdio {
    if std::env::var_os("WEFT_TEST_LOG").is_some() {
        Stdio::inherit()
    } else {
        Stdio::null()
    }
}

/// One device: a data directory.
pub struct Dev {
    pub dir: tempfile::TempDir,
}

impl Dev {
    pub fn new() -> Dev {
        Dev {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A device that acts for `user` (`weft init --name USER`).
    pub fn user(user: &str) -> Dev {
        let d = Dev::new();
        d.ok(&["init", "--name", user]);
        d
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(weft_bin());
        c.arg("--data-dir").arg(self.dir.path()).args(args);
        c.env_remove("WEFT_TOKEN").env_remove("WEFT_DATA_DIR");
        c
    }

    /// Runs a command and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed and returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "weft {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    pub fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "weft {args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "weft {args:?} failed silently");
        stderr
    }

    /// Starts a long-running command in the background.
    pub fn spawn(&self, args: &[&str]) -> Bg {
        let child = self
            .cmd(args)
            .stdout(Stdio::piped())
            .stderr(quiet())
            .spawn()
            .unwrap();
        Bg { child }
    }

    pub fn init(&self) -> String {
        self.ok(&["init"]).trim().to_owned()
    }

    pub fn new_conversation(&self, title: &str) -> String {
        self.ok(&["doc", "new", "--kind", "conversation", "--title", title])
            .trim()
            .to_owned()
    }

    pub fn msgs_json(&self, doc: &str) -> String {
        self.ok(&["msg", "list", doc, "--json"])
    }

    pub fn heads(&self, doc: &str) -> String {
        self.ok(&["doc", "heads", doc])
    }

    pub fn msg_count(&self, doc: &str) -> usize {
        let out = self.run(&["msg", "list", doc, "--json"]);
        if !out.status.success() {
            return 0;
        }
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .map(|v| v.len())
            .unwrap_or(0)
    }
}

/// A background process, killed on drop.
pub struct Bg {
    pub child: Child,
}

impl Bg {
    /// The first line of its stdout.
    pub fn first_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().to_owned()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A relay process on loopback with its data directory.
pub struct Relay {
    pub bg: Bg,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    _keep: Option<tempfile::TempDir>,
}

impl Relay {
    pub fn start() -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut r = Relay::start_at(&path, "127.0.0.1:0");
        r._keep = Some(dir);
        r
    }

    /// Starts a relay on `listen` with the data directory `dir` (kept by the caller).
    pub fn start_at(dir: &Path, listen: &str) -> Relay {
        Relay::start_at_with(dir, listen, &[])
    }

    /// A relay with no leeway on token expiry (for tests of expiry).
    pub fn start_strict() -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let mut r = Relay::start_at_with(&path, "127.0.0.1:0", &["--jwt-leeway", "0s"]);
        r._keep = Some(dir);
        r
    }

    pub fn start_at_with(dir: &Path, listen: &str, extra: &[&str]) -> Relay {
        let mut child = Command::new(relay_bin())
            .args([
                "serve",
                "--dev",
                "--http",
                "off",
                "--listen",
                listen,
                "--data-dir",
            ])
            .arg(dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(quiet())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(ready.starts_with("weft-relay ready"), "{ready:?}");
        let addr = ready
            .split_whitespace()
            .find_map(|w| w.strip_prefix("quic="))
            .unwrap()
            .parse()
            .unwrap();
        Relay {
            bg: Bg { child },
            addr,
            dir: dir.to_owned(),
            _keep: None,
        }
    }

    pub fn cert(&self) -> String {
        self.dir.join("tls/cert.pem").display().to_string()
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Mints a token: `weft-relay token --sub SUB EXTRA...`.
    pub fn token(&self, sub: &str, extra: &[&str]) -> String {
        let out = Command::new(relay_bin())
            .args(["token", "--secret-file"])
            .arg(self.dir.join("jwt.secret"))
            .args(["--sub", sub])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// `sync --once` arguments for this relay.
    pub fn sync_args<'a>(&'a self, addr: &'a str, cert: &'a str, token: &'a str) -> Vec<&'a str> {
        sync_args(addr, cert, token, "--once")
    }
}

/// Polls `cond` until it holds or `limit` passes: for what other processes (the `weft` and
/// `weft-relay` binaries) do, which gives the test no event to await.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "gave up waiting for {what} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A loopback UDP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `sync --watch` arguments for a relay at `addr`.
pub fn watch_args<'a>(addr: &'a str, cert: &'a str, token: &'a str) -> Vec<&'a str> {
    sync_args(addr, cert, token, "--watch")
}

fn sync_args<'a>(addr: &'a str, cert: &'a str, token: &'a str, mode: &'a str) -> Vec<&'a str> {
    vec![
        "sync",
        "--relay",
        addr,
        "--relay-cert",
        cert,
        "--token",
        token,
        mode,
    ]
}
