//! One data directory, many commands: the local socket.
//!
//! redb lets one process at a time open the store. A long-running command (`sync --watch`,
//! `p2p listen`, `watch`) therefore listens on `DATA_DIR/weft.sock` while it holds the store,
//! and every other `weft` command on the directory sends it the parsed command instead of
//! opening the store. The running process executes it on its own [`Device`], so a message
//! sent this way reaches connected peers at once, and streams the output back.
//!
//! Protocol: newline-delimited JSON. The client sends one [`Request`]; the server answers with
//! [`Response`] lines, the last of which is `Exit`. A client that disconnects cancels its
//! command (how a handed-off `weft watch` ends). The socket lives in the data directory, which
//! is private to its owner (mode 0700), and is itself mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use weft_core::AcceptBackoff;
use weft_peer::Device;

use crate::cli::{self, exit, Command, Failure, Out, Sink};

/// Longest request line accepted.
const MAX_REQUEST: usize = 1 << 20;
/// Commands served at once.
const MAX_CLIENTS: usize = 64;
/// Protocol version of the socket.
const VERSION: u32 = 1;

/// What a client asks.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// [`VERSION`].
    pub v: u32,
    /// The command, paths absolute.
    pub command: Command,
}

/// One line of the answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Output.
    Out(Out),
    /// The command ended.
    Exit(Result<(), Failure>),
}

/// Serves commands for `device` on `path` until `cancel` fires. A stale socket file left by a
/// crashed process is replaced (the caller holds the store, so no live process owns it).
pub fn serve(
    device: Device,
    path: PathBuf,
    cancel: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    Ok(tokio::spawn(async move {
        let mut clients = tokio::task::JoinSet::new();
        let mut backoff = AcceptBackoff::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let stream = match r {
                        Ok((stream, _)) => {
                            backoff.succeeded();
                            stream
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: the next accept would
                            // fail the same way at once, so wait.
                            let pause = backoff.failed(&e);
                            if pause.log {
                                tracing::warn!(error = %e, wait = ?pause.wait, failures = pause.failures, "accepting a local socket connection failed");
                            }
                            tokio::select! {
                                _ = cancel.cancelled() => break,
                                _ = tokio::time::sleep(pause.wait) => continue,
                            }
                        }
                    };
                    let Ok(permit) = limit.clone().try_acquire_owned() else {
                        drop(stream);
                        continue;
                    };
                    let device = device.clone();
                    let cancel = cancel.clone();
                    clients.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            _ = serve_client(&device, stream) => {}
                            _ = cancel.cancelled() => {}
                        }
                    });
                }
                Some(_) = clients.join_next(), if !clients.is_empty() => {}
                _ = cancel.cancelled() => break,
            }
        }
        clients.shutdown().await;
        let _ = std::fs::remove_file(&path);
    }))
}

async fn serve_client(device: &Device, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let request = match reader.read_line(&mut line).await {
        Ok(_) => serde_json::from_str::<Request>(&line).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let request = match request {
        Ok(r) if r.v == VERSION => r,
        Ok(r) => {
            let f = Failure::new(
                exit::FAILURE,
                format!(
                    "the running weft speaks socket version {VERSION}, not {}",
                    r.v
                ),
            );
            let _ = send(&mut write, &Response::Exit(Err(f))).await;
            return;
        }
        Err(e) => {
            let f = Failure::new(
                exit::FAILURE,
                format!("bad request on the local socket: {e}"),
            );
            let _ = send(&mut write, &Response::Exit(Err(f))).await;
            return;
        }
    };
    let (sink, mut rx) = Sink::channel();
    let run = async {
        let r = cli::execute(device, request.command, &sink).await;
        drop(sink);
        r
    };
    let forward = async {
        while let Some(out) = rx.recv().await {
            if send(&mut write, &Response::Out(out)).await.is_err() {
                // The client is gone: dropping the receiver ends its command.
                return false;
            }
        }
        true
    };
    // The command sees its sink closed when the client goes away.
    let mut detect = BufReader::new(reader.into_inner());
    let gone = async {
        let mut buf = String::new();
        let _ = detect.read_line(&mut buf).await;
    };
    let (result, connected) = tokio::select! {
        (r, ok) = async { tokio::join!(run, forward) } => (Some(r), ok),
        _ = gone => (None, false),
    };
    if let (Some(result), true) = (result, connected) {
        let _ = send(&mut write, &Response::Exit(result)).await;
    }
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

/// Connects to the socket of a running weft holding the directory, if there is one.
pub async fn connect(path: &Path) -> Option<UnixStream> {
    UnixStream::connect(path).await.ok()
}

/// Runs `command` in the process behind `stream`, printing its output here. Returns what the
/// command returned there.
pub async fn run_remote(stream: UnixStream, command: Command) -> Result<(), Failure> {
    let (read, mut write) = stream.into_split();
    let req = Request {
        v: VERSION,
        command,
    };
    let mut line =
        serde_json::to_vec(&req).map_err(|e| Failure::new(exit::FAILURE, e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await.map_err(|e| {
        Failure::new(
            exit::FAILURE,
            format!("the running weft did not take the command: {e}"),
        )
    })?;
    let mut lines = BufReader::new(read).lines();
    let mut stdout = tokio::io::stdout();
    loop {
        let next = lines
            .next_line()
            .await
            .map_err(|e| Failure::new(exit::FAILURE, format!("lost the running weft: {e}")))?;
        let Some(l) = next else {
            return Err(Failure::new(
                exit::FAILURE,
                "the running weft closed the connection before the command finished",
            ));
        };
        match serde_json::from_str::<Response>(&l) {
            Ok(Response::Out(Out::Stdout(s))) => {
                let _ = stdout.write_all(s.as_bytes()).await;
                let _ = stdout.flush().await;
            }
            Ok(Response::Out(Out::Stderr(s))) => eprintln!("{s}"),
            Ok(Response::Exit(r)) => return r,
            Err(e) => {
                return Err(Failure::new(
                    exit::FAILURE,
                    format!("bad answer from the running weft: {e}"),
                ))
            }
        }
    }
}
