//! Node clients for the WebSocket tests: the npm packages of `tests/js` (pinned in its
//! `package-lock.json`) installed once per test run, and a Node script of that directory driven
//! over stdin and stdout, one JSON line per command, answer or event.
//!
//! Without node or npm the tests that need them fail when `CI` is set and are skipped (with a
//! note on stderr) otherwise.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The directory of the Node clients and their npm packages.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

/// Installs the npm packages once per test run; `false` when node or npm is missing outside CI.
pub fn npm_ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let result = READY.get_or_init(|| {
        let dir = js_dir();
        for tool in ["node", "npm"] {
            let found = std::process::Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(format!("{tool} is not installed"));
            }
        }
        let installed = dir
            .join("node_modules/@automerge/automerge-repo-network-websocket/package.json")
            .exists();
        if !installed {
            // `install` keeps the lock file's versions; `ci` refuses a lock file without the
            // optional per-platform packages some registries omit.
            let status = std::process::Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--no-save"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("npm install: {e}"))?;
            if !status.success() {
                return Err(format!("npm install in {} failed: {status}", dir.display()));
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the WebSocket tests with Node clients need node and npm: {why}")
        }
        Err(why) => {
            eprintln!("skipping a WebSocket test with a Node client: {why}");
            false
        }
    }
}

/// A Node script of `tests/js` in its own process, scripted over stdin and stdout: each command
/// is a JSON line with an `id`, answered by a line with the same `id`; lines with an `event`
/// field come whenever the script sees something.
pub struct Node {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    events: Vec<Value>,
}

impl Node {
    /// Starts `node SCRIPT ARGS...` in `tests/js`; it ends when this handle drops.
    pub fn start(script: &str, args: &[&str]) -> Node {
        let mut child = Command::new("node")
            .arg(js_dir().join(script))
            .args(args)
            .current_dir(js_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start node");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Node {
            _child: child,
            stdin,
            lines,
            next_id: 0,
            events: Vec::new(),
        }
    }

    async fn line(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("the Node client went silent")
            .unwrap()
            .expect("the Node client exited");
        serde_json::from_str(&line).unwrap()
    }

    /// Sends a command and waits for its answer (events seen meanwhile are kept); an answer
    /// with an `error` fails the test.
    pub async fn call(&mut self, mut cmd: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = json!(id);
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        loop {
            let v = self.line().await;
            if v.get("event").is_some() {
                self.events.push(v);
            } else if v["id"] == json!(id) {
                assert!(v.get("error").is_none(), "{cmd}: {v}");
                return v;
            }
        }
    }

    /// The next event, in the order the script printed them.
    pub async fn event(&mut self) -> Value {
        if !self.events.is_empty() {
            return self.events.remove(0);
        }
        self.line().await
    }
}
