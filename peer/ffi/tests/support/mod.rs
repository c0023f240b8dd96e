//! What the foreign-language tests share: the library and its generated bindings, a real
//! relay on loopback (with its metrics over HTTP), tokens, and the skip-or-fail rule for
//! missing tools.

#![allow(dead_code)]

pub mod kotlin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use weft_core::clock::WallClock;
use weft_core::store::{GroupCommit, KvStore, RedbStore};
use weft_relay::{Claims, JwtSecret, Minter};

/// A tool the test needs is missing: in CI (`CI` set) that fails the test, elsewhere it is
/// skipped with a note on stderr. Returns whether to go on.
pub fn require(test: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else { return true };
    if std::env::var_os("CI").is_some() {
        panic!("the {test} test must run in CI: {why}");
    }
    eprintln!("skipping the {test} test: {why}");
    false
}

/// `target/debug` (or whichever profile built this test): the test binary is in its `deps/`.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/PROFILE/deps")
        .to_owned()
}

/// The cdylib cargo built for this test run: in `deps/`, where the compiler writes it (cargo
/// copies it up to `target/PROFILE` only when the library itself is what was asked for, so
/// the copy there may be older).
pub fn cdylib() -> PathBuf {
    let name = format!(
        "{}weft_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let dir = target_dir();
    [dir.join("deps").join(&name), dir.join(&name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not in {} (built with the tests)", dir.display()))
}

/// Generates the bindings for `language` (`kotlin`, `swift`) from the cdylib into `out`, with
/// the uniffi-bindgen binary of this package (library mode: the metadata is in the library).
pub fn generate_bindings(language: &str, out: &Path) -> PathBuf {
    let lib = cdylib();
    let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
        .args(["generate", "--no-format", "--library"])
        .arg(&lib)
        .args(["--language", language, "--out-dir"])
        .arg(out)
        .status()
        .expect("uniffi-bindgen runs");
    assert!(status.success(), "uniffi-bindgen failed for {language}");
    lib
}

/// A relay in this process: its real QUIC server, hub and redb store in a temporary
/// directory, and its metrics on an HTTP address. Dropping it stops it.
pub struct Relay {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT/metrics`.
    pub metrics_url: String,
    /// Its self-signed certificate, PEM.
    pub cert_pem: PathBuf,
    secret: JwtSecret,
    clock: WallClock,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts a relay on loopback (on the current tokio runtime).
    pub async fn start() -> Relay {
        let dir = tempfile::tempdir().expect("temporary directory");
        let secret = weft_relay::ensure_dev_secret(dir.path()).expect("dev secret");
        let identity = weft_relay::ensure_dev_cert(dir.path()).expect("dev certificate");
        let cert_pem = dir.path().join("tls").join("cert.pem");
        assert!(
            cert_pem.exists(),
            "the dev certificate is at {}",
            cert_pem.display()
        );
        let kv: Arc<dyn KvStore> = Arc::new(
            RedbStore::open_with_tables(
                dir.path().join("relay.redb"),
                &weft_relay::TABLES,
                Default::default(),
            )
            .expect("relay store"),
        );
        let group = Arc::new(GroupCommit::new(kv).expect("group commit"));
        let metrics = Arc::new(weft_relay::Metrics::default());
        let clock = WallClock::system();
        let verifier = weft_relay::Verifier::new(&secret).with_clock(clock.clone());
        let endpoint = weft_relay::bind_quic("127.0.0.1:0".parse().expect("address"), &identity)
            .expect("QUIC endpoint");
        let addr = endpoint.local_addr().expect("bound address");
        let hub = weft_relay::Hub::new(
            weft_relay::HubConfig::default(),
            group,
            verifier.clone(),
            metrics.clone(),
        );
        let (hub_tx, hub_rx) = mpsc::channel(1024);
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("HTTP listener");
        let metrics_url = format!(
            "http://{}/metrics",
            http.local_addr().expect("HTTP address")
        );
        let (stop, stop_rx) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let tasks = vec![
            tokio::spawn(hub.run(hub_rx)),
            tokio::spawn(weft_relay::accept_loop(
                endpoint,
                verifier,
                weft_relay::ServerLimits::default(),
                hub_tx,
                metrics.clone(),
                until_stopped(stop_rx.clone()),
            )),
            tokio::spawn(weft_relay::serve_http(
                http,
                metrics,
                None,
                None,
                until_stopped(stop_rx),
            )),
        ];
        Relay {
            addr,
            metrics_url,
            cert_pem,
            secret,
            clock,
            stop,
            tasks,
            _dir: dir,
        }
    }

    /// A token for `sub` that may create documents, valid for an hour.
    pub fn token(&self, sub: &str) -> String {
        let claims = Claims::new(sub, self.clock.unix_secs(), 3600).with_create(true);
        Minter::new(&self.secret).mint(&claims).expect("token")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}
