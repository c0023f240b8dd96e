//! The two WebSocket servers the `ws-native` and `ws-npm` workloads compare, each a process of
//! its own so its RSS is its own: the `weft-relay` binary (`serve --dev --ws`, redb in a
//! temporary directory) and `weft-samod-server` (samod 0.16, filesystem storage in a temporary
//! directory). Both binaries are looked for beside `weft-bench`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Weft,
    Samod,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Weft => "weft-relay",
            Kind::Samod => "samod-0.16",
        }
    }
}

/// How to build what the ws workloads start.
pub(crate) const BUILD_HINT: &str = "build them with `cargo build --release -p weft-relay \
     -p weft-tests --features weft-tests/samod-bench`";

/// A running server process, killed on drop.
pub(crate) struct Server {
    /// The URL a client dials (with `?token=` for weft).
    pub(crate) url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

/// A binary beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find weft-bench's own path")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!("{} is missing; {BUILD_HINT}", path.display());
    }
    Ok(path)
}

impl Server {
    pub(crate) fn start(kind: Kind) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
        let mut cmd = match kind {
            Kind::Weft => {
                let mut c = Command::new(sibling("weft-relay")?);
                c.args(["serve", "--dev", "--listen", "127.0.0.1:0", "--http", "off"])
                    .args(["--ws", "127.0.0.1:0", "--data-dir"])
                    .arg(dir.path());
                c
            }
            Kind::Samod => {
                let mut c = Command::new(sibling("weft-samod-server")?);
                c.arg(dir.path());
                c
            }
        };
        // weft-bench turns transparent huge pages off for itself (`tune_allocator`), which a
        // child would inherit: each server starts as from a shell, with the system's policy.
        // SAFETY: only prctl, async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                Ok(())
            });
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", kind.name()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the ready line")?;
        let Some(addr) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ws="))
            .map(str::to_string)
        else {
            let _ = child.kill();
            bail!("{} did not print a ready line: {line:?}", kind.name());
        };
        let url = match kind {
            Kind::Weft => format!("ws://{addr}/?token={}", weft_token(dir.path())?),
            Kind::Samod => format!("ws://{addr}/"),
        };
        Ok(Server {
            url,
            child,
            _dir: dir,
        })
    }

    /// The process's resident set, its peak, and its anonymous part, in KiB (`VmRSS`,
    /// `VmHWM`, `RssAnon`: the rest of the resident set is mapped files, mostly its binary).
    pub(crate) fn rss_kib(&self) -> anyhow::Result<(u64, u64, u64)> {
        status_kib(self.child.id())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's CPU time (user + system) so far.
    pub(crate) fn cpu(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return Duration::ZERO;
        };
        // Fields after the command name (which may hold spaces, closed by the last ')').
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return Duration::ZERO;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
        let total = ticks(11) + ticks(12);
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_micros(total * 1_000_000 / hz)
    }
}

/// `VmRSS`, `VmHWM` and `RssAnon` of process `pid`, in KiB.
pub(crate) fn status_kib(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the server's /proc status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (field("VmRSS:"), field("VmHWM:"), field("RssAnon:")) {
        (Some(rss), Some(hwm), Some(anon)) => Ok((rss, hwm, anon)),
        _ => bail!("no VmRSS/VmHWM/RssAnon in the server's /proc status"),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token for the relay in `dir` (its `--dev` secret), allowed to create documents.
fn weft_token(dir: &std::path::Path) -> anyhow::Result<String> {
    let out = Command::new(sibling("weft-relay")?)
        .args(["token", "--secret-file"])
        .arg(dir.join("jwt.secret"))
        .args(["--sub", "bench", "--create"])
        .output()
        .context("running weft-relay token")?;
    if !out.status.success() {
        bail!(
            "weft-relay token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
