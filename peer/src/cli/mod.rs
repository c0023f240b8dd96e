//! The `weft` commands, as the contract states them.
//!
//! A command runs against a [`Device`] and writes its result to a [`Sink`]: the terminal when
//! the command opened the data directory itself, or the local socket when a long-running
//! command holds the directory and runs it on this command's behalf (see [`crate::ipc`]).
//! Either way the output, the exit status and the effects are the same.
//!
//! - `args.rs`: the grammar (clap): [`Cli`], [`Command`] and their arguments.
//! - `output.rs`: exit statuses, [`Failure`], the [`Sink`] and its [`Out`] lines.
//! - `context.rs`: what commands read before they act (the device's user, a document's
//!   presence, the clock).
//! - `doc.rs`, `sharing.rs`, `rec.rs`, `msg.rs`: `weft doc`, its share/unshare/delete
//!   requests, `weft rec` (and `doc new` of declared kinds), `weft msg`.
//! - `status.rs`, `watch.rs`: `weft status`, `weft watch`.
//! - `sync.rs`: `weft sync` and `weft p2p listen`.
//!
//! The submodules import one another, never this one.

mod args;
mod context;
mod doc;
mod msg;
mod output;
mod rec;
mod sharing;
mod status;
mod sync;
mod watch;

pub use args::{Cli, Command};
pub use output::{exit, Failure, Out, Sink};

use args::P2pCmd;
use weft_peer::Device;

/// Runs `cmd` on `device`.
pub async fn execute(device: &Device, cmd: Command, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        Command::Init { .. } => sink.out(format!("{}\n", device.id())).await,
        Command::Doc(c) => doc::doc_cmd(device, c, sink).await,
        Command::Rec(c) => rec::rec_cmd(device, c, sink).await,
        Command::Msg(c) => msg::msg_cmd(device, c, sink).await,
        Command::Status { json } => status::status(device, json, sink).await,
        Command::Watch { doc } => watch::watch(device, doc, sink).await,
        Command::Sync(args) => sync::sync(device, args, sink).await,
        Command::P2p(P2pCmd::Listen { listen, allow }) => {
            sync::p2p_listen(device, listen, allow, sink).await
        }
    }
}
