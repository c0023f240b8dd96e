//! `memory`: what the relay's resident memory costs per loaded document, per idle (evicted)
//! document and per idle connection.
//!
//! The relay runs in this process as in every workload; the devices run in a child process
//! (`clients.rs`), so every byte of this process's resident set that a phase adds is the
//! relay's (the bench's own share is fixed before each phase starts and is its baseline).
//!
//! - **Documents** (`docs.rs`): a device uploads N small conversations (a header and ten
//!   chat messages each, every one by an actor of its own) through the sync rounds, then
//!   disconnects. RSS with them loaded, then once the relay has evicted them
//!   (`evict_after` shortened to seconds; the relay's default is a minute): per document,
//!   on a relay as configured and on one whose store page cache is full from the start (the
//!   cache is a bounded, fixed cost); the second against the target of 2 KiB per idle
//!   document.
//! - **Connections** (`conns.rs`): idle connections, joined and with no document, up to
//!   10,000 (full mode), QUIC and WebSocket, each against its transport's floor measured
//!   the same way: a bare quinn server (the throughput workload's forwarder: the relay's
//!   endpoint settings, hello and welcome, a reader and a writer per connection) and a bare
//!   tokio-tungstenite server (the relay's socket settings, `join` answered, a reader per
//!   socket). Against the target of 64 KiB per connection.
//!
//! Readings are anonymous resident memory (`RssAnon`: heap, stacks, allocator arenas; the
//! binary's code pages are left out, a fixed cost). Before each, freed memory is given back
//! to the system (`mi_collect` on this thread and on the relay's worker, whose heap holds most
//! of what the relay frees), so a reading is what the relay holds, not what mimalloc keeps for
//! reuse until its purge delay; the documents phase also reads memory as the relay leaves it,
//! right after eviction and (full mode) a purge delay later.

mod clients;
mod conns;
mod docs;

pub use clients::{run_child, CHILD_ENV};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::plan::Plan;

/// The targets of issue 20, in KiB.
pub const TARGET_IDLE_DOC_KIB: f64 = 2.0;
pub const TARGET_IDLE_CONN_KIB: f64 = 64.0;

pub(crate) fn memory_workload(plan: &Plan, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let granted = raise_file_limit();
    eprintln!("  open files allowed: {granted}");
    let docs = docs::measure(plan)?;
    let conns = conns::measure(plan, rt)?;
    Ok(json!({
        "workload": "memory",
        "quick": plan.quick,
        "open_files_limit": granted,
        "targets": {
            "idle_doc_kib": TARGET_IDLE_DOC_KIB,
            "idle_conn_kib": TARGET_IDLE_CONN_KIB,
        },
        "docs": docs,
        "conns": conns,
        "baseline": {
            "docs": "the relay's resident set before the upload (in the docs entry: start_kib)",
            "conns": "a bare quinn server and a bare tokio-tungstenite server holding the same \
                      idle connections (in each conns entry: baseline_kib_per_conn)",
        },
    }))
}

/// Raises this process's open-file limit to its hard limit (10,000 sockets need it); the
/// child that holds the clients inherits it. Returns the soft limit now in force.
fn raise_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the one struct passed, which lives on
    // this stack frame for the duration of the call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

/// This process's anonymous resident memory, in KiB, after freed memory went back to the
/// system on this thread and on the server's worker (`collect_on_server` runs it there).
fn settled_kib(collect_on_server: impl FnOnce()) -> u64 {
    collect_on_server();
    crate::large_change::release_freed_memory();
    anon_kib()
}

/// Anonymous resident memory (`RssAnon`): the heap, stacks and allocator arenas. The rest of
/// the resident set is mapped files, mostly this binary's code, which grows by a fixed
/// megabyte or two the first time each code path runs, whatever the number of documents.
fn anon_kib() -> u64 {
    crate::large_change::status_kib("RssAnon").unwrap_or(0)
}

/// The whole resident set (`VmRSS`), as `ps` shows it.
fn rss_kib() -> u64 {
    crate::large_change::status_kib("VmRSS").unwrap_or(0)
}

/// A child process of this binary holding devices (see `clients.rs`).
struct Devices {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Devices {
    fn start(mode: &str, env: &[(&str, String)]) -> anyhow::Result<Devices> {
        let exe = std::env::current_exe().context("cannot find weft-bench's own path")?;
        let mut cmd = Command::new(exe);
        cmd.env(CHILD_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("cannot start the devices' process")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Devices {
            child,
            stdin,
            stdout,
        })
    }

    /// The child's next line on stdout.
    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the devices' process ended: {:?}", self.child.wait()?);
        }
        Ok(line.trim().to_string())
    }

    /// Asks for `n` connections in all and waits until the child holds them.
    fn hold(&mut self, n: usize) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{n}")?;
        stdin.flush()?;
        let line = self.line()?;
        if line != format!("ready {n}") {
            bail!("the devices' process said {line:?}");
        }
        Ok(())
    }

    /// Closes stdin (the child closes its connections) and waits for the child.
    fn finish(mut self) -> anyhow::Result<()> {
        self.stdin.take();
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the devices' process failed: {status}");
        }
        Ok(())
    }
}

impl Drop for Devices {
    fn drop(&mut self) {
        self.stdin.take();
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn kib_per(delta_kib: i64, n: usize) -> f64 {
    (delta_kib as f64 / n.max(1) as f64 * 100.0).round() / 100.0
}

fn verdict(value: f64, target: f64) -> &'static str {
    if value <= target {
        "met"
    } else {
        "MISSED"
    }
}
