//! The `weft-relay` commands, as the contract states them.
//!
//! - `args.rs`: the grammar (clap): [`Cli`], [`Command`] and their arguments, and
//!   [`UsageError`] (exit status 2).
//! - `serve.rs`: `weft-relay serve`: the startup checks, then the relay's steps from opening
//!   the store to the drain at shutdown.
//! - `signals.rs`: the SIGTERM and SIGINT handlers, installed before anything is opened.
//! - `token.rs`: `weft-relay token`.
//!
//! The submodules import one another, never this one.

mod args;
mod serve;
mod signals;
mod token;

pub(crate) use args::{Cli, Command, LogFormat, UsageError};
pub(crate) use serve::serve;
pub(crate) use token::token;
