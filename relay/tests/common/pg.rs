//! A throwaway Postgres for tests: `initdb` + `pg_ctl` on a private port and socket directory,
//! as the `postgres` user when running as root (initdb refuses root), trust authentication,
//! deleted on drop.
//!
//! Binaries are looked up in `WEFT_PG_BIN`, then `/usr/lib/postgresql/*/bin` (newest first),
//! then `PATH`. Without them a test skips with a loud message, except under `CI=true`, where
//! it fails: CI must run these tests (`.ci/run` installs Postgres).
//!
//! [`PgServer::start_tls`] starts one with `ssl=on` and a given certificate that accepts TCP
//! clients over TLS only (`hostssl`); tests reach it in plaintext through its Unix socket
//! ([`socket_client`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct PgServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    as_postgres: bool,
    /// Server options beyond the port, socket and durability ones (`-c ssl=on ...`).
    extra_opts: String,
}

impl PgServer {
    /// Starts a fresh server, or `None` (after saying why on stderr) when Postgres is not
    /// installed outside CI.
    pub fn start() -> Option<PgServer> {
        Self::start_with(None)
    }

    /// Like [`PgServer::start`], with TLS on: `cert_pem` (the server's chain, leaf first) and
    /// `key_pem` are its identity, and TCP clients must use TLS (the Unix socket stays plain).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<PgServer> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<PgServer> {
        let Some(bin) = find_bin() else {
            let msg = "Postgres binaries not found (set WEFT_PG_BIN or install postgresql)";
            if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
                panic!("{msg}: CI must run the Postgres tests");
            }
            eprintln!("\n!!!!! SKIPPING a Postgres test: {msg} !!!!!\n");
            return None;
        };
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("weft-pg")
            .tempdir()
            .unwrap();
        let mut extra_opts = String::new();
        if let Some((cert, key)) = tls {
            use std::os::unix::fs::PermissionsExt;
            let (cert_file, key_file) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert_file, cert).unwrap();
            std::fs::write(&key_file, key).unwrap();
            // Postgres refuses a key that others may read.
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            extra_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                cert_file.display(),
                key_file.display()
            );
        }
        if as_postgres {
            run(Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path()));
        }
        let port = free_port();
        let server = PgServer {
            bin,
            dir,
            port,
            as_postgres,
            extra_opts,
        };
        server.cmd(
            "initdb",
            &[
                "-D",
                &server.data().to_string_lossy(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        if tls.is_some() {
            // Over TCP, TLS or nothing: a client that connects at all used TLS.
            std::fs::write(
                server.data().join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 trust\n\
                 hostssl all all ::1/128 trust\n",
            )
            .unwrap();
        }
        server.start_again();
        Some(server)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `postgres://` URL of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=5",
            self.port
        )
    }

    /// A key=value connection string for the server's Unix socket (plaintext, even with TLS
    /// on).
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off{}",
            self.port,
            self.dir.path().display(),
            self.extra_opts
        );
        let log = self.dir.path().join("log");
        self.cmd(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }

    /// Stops the server (fast: open connections are closed).
    pub fn stop(&self) {
        self.cmd(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }

    fn cmd(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        c.args(args).current_dir(self.dir.path());
        run(&mut c)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = c
            .args([
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

fn run(c: &mut Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Whether the Postgres server binaries are found (where [`PgServer::start`] looks).
pub fn installed() -> bool {
    find_bin().is_some()
}

fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("WEFT_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    if let Some(newest) = versions.pop() {
        return Some(newest);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client connected to `server` (its connection task runs on the current runtime).
pub async fn client(server: &PgServer) -> tokio_postgres::Client {
    connect(&server.url()).await
}

/// A client connected to `server` through its Unix socket, which needs no TLS.
pub async fn socket_client(server: &PgServer) -> tokio_postgres::Client {
    connect(&server.socket_url()).await
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
