//! `weft-samod-server DATA_DIR`: the baseline server of weft-bench's `ws-native` and `ws-npm`
//! workloads (built with `--features samod-bench`): samod 0.16, the Rust automerge-repo, as a
//! WebSocket sync server, the way its documentation sets one up: a tokio runtime with the
//! default workers, filesystem storage in DATA_DIR (automerge-repo's nodefs layout), every
//! connection accepted, TCP_NODELAY on every socket.
//!
//! Listens on an ephemeral loopback port and prints `samod ready ws=ADDR` on stdout once it
//! accepts. Runs until killed.

use std::process::ExitCode;

use anyhow::Context;

#[path = "weft-bench/samod_ws.rs"]
mod samod_ws;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: weft-samod-server DATA_DIR");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-samod-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(serve(dir.into())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-samod-server: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(dir: std::path::PathBuf) -> anyhow::Result<()> {
    let repo = samod::Repo::build_tokio()
        .with_storage(samod::storage::TokioFilesystemStorage::new(&dir))
        .with_peer_id(samod::PeerId::from("samod-server"))
        .load()
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind")?;
    let addr = listener.local_addr().context("no local address")?;
    let url = samod::Url::parse(&format!("ws://{addr}")).context("listener url")?;
    let acceptor = repo.make_acceptor(url).context("repo stopped")?;
    println!("samod ready ws={addr}");
    loop {
        let (tcp, _) = listener.accept().await.context("accept")?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A failed upgrade only loses that connection.
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                let _ = acceptor.accept(samod_ws::transport(ws));
            }
        });
    }
}
