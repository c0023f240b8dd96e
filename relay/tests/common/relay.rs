//! The `weft-relay` binary as a child process: started with `serve --dev` on a data directory
//! of its own, its ready line parsed, tokens minted from its dev secret, its dev certificate.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use weft_relay::{load_secret, Claims, Minter};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    now_ms() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The address the ready line gives after `prefix` (`quic=`, `http=`, `ws=`).
pub fn ready_addr(ready: &str, prefix: &str) -> SocketAddr {
    ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {ready:?}"))
        .parse()
        .unwrap()
}

/// A running `weft-relay serve --dev` on `dir`; killed on drop.
pub struct RelayProcess {
    pub child: Child,
    pub dir: tempfile::TempDir,
    /// The ready line it printed.
    pub ready: String,
}

impl RelayProcess {
    /// Starts `weft-relay serve --dev --listen 127.0.0.1:0 --data-dir <dir>` with `args` and
    /// `env`, and waits for its ready line.
    pub fn start(dir: tempfile::TempDir, args: &[&str], env: &[(&str, &str)]) -> RelayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft-relay"))
            .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("WEFT_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert!(ready.starts_with("weft-relay ready"), "{ready:?}");
        RelayProcess { child, dir, ready }
    }

    /// The address its ready line gives after `prefix`.
    pub fn addr(&self, prefix: &str) -> SocketAddr {
        ready_addr(&self.ready, prefix)
    }

    /// A token for `claims`, signed with the relay's dev secret.
    pub fn token(&self, claims: &Claims) -> String {
        let secret = load_secret(&self.dir.path().join("jwt.secret")).unwrap();
        Minter::new(&secret).mint(claims).unwrap()
    }

    /// The relay's dev certificate, for pinning.
    pub fn cert(&self) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        let tls = self.dir.path().join("tls");
        weft_relay::load_cert_and_key(&tls.join("cert.pem"), &tls.join("key.pem"))
            .unwrap()
            .cert_chain
    }

    /// SIGKILL (nothing is flushed beyond what the relay had acknowledged); the data
    /// directory, moved out before the process handle drops.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.take_dir()
    }

    /// Sends SIGTERM (without waiting).
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends SIGTERM; the child to wait on (this handle keeps a placeholder).
    pub fn terminate(mut self) -> Child {
        self.sigterm();
        let placeholder = Command::new("true").spawn().unwrap();
        std::mem::replace(&mut self.child, placeholder)
    }

    /// Takes the data directory, leaving an empty one behind.
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of metric `name` (a counter or gauge without labels) at the relay's HTTP address.
pub fn metric(http: std::net::SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no metric {name}"))
        .trim()
        .parse()
        .unwrap()
}
