//! The `weft` command line (the device binary of `weft-peer`) as a user runs it against a
//! relay started by these tests.
//!
//! The binary is the one beside `weft-relay` in the target directory: `cargo test --workspace`
//! builds it; when it is missing (`cargo test -p weft-relay` alone) it is built here first.

use std::path::PathBuf;
use std::process::{Command, Output};

use super::RelayProcess;

/// The `weft` binary, built if missing.
pub fn weft_bin() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_weft-relay")).with_file_name("weft");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "weft-peer", "--bin", "weft"])
            .status()
            .expect("cargo build weft");
        assert!(status.success(), "cannot build the weft binary");
    }
    path
}

/// One device: a data directory, acting for one user.
pub struct Weft {
    pub dir: tempfile::TempDir,
}

impl Weft {
    /// A device acting for `user` (`weft init --name USER`).
    pub fn user(user: &str) -> Weft {
        let d = Weft {
            dir: tempfile::tempdir().unwrap(),
        };
        d.ok(&["init", "--name", user]);
        d
    }

    /// Runs `weft --data-dir DIR ARGS...`.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(weft_bin())
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_DATA_DIR")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; its stdout.
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

    /// `weft sync --once` with `relay`, pinning its dev certificate.
    pub fn sync(&self, relay: &RelayProcess, token: &str) {
        let addr = relay.addr("quic=").to_string();
        let cert = relay.dir.path().join("tls/cert.pem");
        self.ok(&[
            "sync",
            "--relay",
            &addr,
            "--relay-cert",
            cert.to_str().unwrap(),
            "--token",
            token,
            "--once",
        ]);
    }
}
