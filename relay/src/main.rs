//! `weft-relay`: the relay's command line.
//!
//! - `weft-relay serve [...]`: checks its secret and TLS identity (creating them with `--dev`),
//!   serves QUIC, WebSocket and HTTP until SIGTERM or Ctrl-C, and prints the ready line once
//!   it listens.
//! - `weft-relay token --secret-file FILE --sub USER [--doc DOC[:rw|:ro]]... [--create]
//!   [--admin] [--ttl 24h]`: prints an HS256 JWT on stdout. `--doc DOC` without a role grants
//!   `rw`.
//!
//! Exit status: 0 success, 2 usage error (bad flag, malformed id, bad duration), 1 anything
//! else; a failure prints one line on stderr. Logs go to stderr.
//!
//! This file parses and reports; the commands themselves are in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat, UsageError};

/// mimalloc rather than glibc malloc: the hub allocates and frees a frame or buffer per
/// message, and under load glibc's allocator took a large share of the relay's CPU
/// (docs/decisions/0007-mimalloc-for-the-relay.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off before the first allocation (`weft_relay::disable_thp`): a
/// constructor runs before the runtime's own start-up allocates, which in `main` would be
/// too late for the first 2 MiB pages.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static DISABLE_THP: extern "C" fn() = {
    extern "C" fn disable_thp() {
        weft_relay::disable_thp();
    }
    disable_thp
};

fn main() -> ExitCode {
    weft_relay::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return clap_exit(&err),
    };
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format, "info");
            cli::serve(*args)
        }
        Command::Token(args) => {
            init_tracing(LogFormat::Human, "warn");
            cli::token(args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weft-relay: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Help and version go to stdout with status 0; usage errors become one line on stderr with
/// status 2.
fn clap_exit(err: &clap::Error) -> ExitCode {
    if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        eprintln!("weft-relay: a subcommand is required: serve or token (see --help)");
        return ExitCode::from(2);
    }
    if !err.use_stderr() {
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    let rendered = err.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.is_empty() && !line.starts_with("Usage:"))
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("weft-relay: {message}");
    ExitCode::from(2)
}

/// Without `RUST_LOG`, `default_level` for everything but Automerge, which is at `warn`: it
/// opens an `info` span on every load, transaction commit and column encoding, and formatting
/// their fields was several percent of a cluster relay's CPU.
fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},automerge=warn"))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
