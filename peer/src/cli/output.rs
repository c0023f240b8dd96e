//! How a command ends and what it prints: the contract's exit statuses, [`Failure`] (a status
//! and one sentence for stderr) and the [`Sink`] a command writes its output to.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weft_peer::DeviceError;
use weft_schema as schema;

/// Exit statuses (the contract's; success is 0).
pub mod exit {
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Usage error: bad flag, malformed id.
    pub const USAGE: i32 = 2;
    /// Refused: authentication or authorization failed.
    pub const REFUSED: i32 = 3;
    /// Unreachable or timed out.
    pub const UNREACHABLE: i32 = 4;
}

/// A command's failure: the exit status and one sentence for stderr.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// The exit status.
    pub code: i32,
    /// What went wrong, in one sentence.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Self {
        let code = match &e {
            DeviceError::ReadOnly(_) | DeviceError::Refused(_) | DeviceError::Deleted(_) => {
                exit::REFUSED
            }
            DeviceError::Unreachable(_) => exit::UNREACHABLE,
            _ => exit::FAILURE,
        };
        Failure::new(code, e.to_string())
    }
}

pub(super) fn write_failure(e: schema::WriteError) -> Failure {
    let code = match e {
        schema::WriteError::InvalidInput { .. } => exit::USAGE,
        _ => exit::FAILURE,
    };
    Failure::new(code, e.to_string())
}

pub(super) fn read_failure(e: schema::ReadError) -> Failure {
    Failure::new(exit::FAILURE, e.to_string())
}

/// What a command prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Out {
    /// To stdout.
    Stdout(String),
    /// To stderr.
    Stderr(String),
}

/// Where a command's output goes. Sending fails once the reader is gone (a client that
/// disconnected): long-running commands stop then.
#[derive(Clone, Debug)]
pub struct Sink(mpsc::Sender<Out>);

impl Sink {
    /// A sink and the receiving end.
    pub fn channel() -> (Sink, mpsc::Receiver<Out>) {
        let (tx, rx) = mpsc::channel(1024);
        (Sink(tx), rx)
    }

    pub(super) async fn out(&self, s: impl Into<String>) -> Result<(), Failure> {
        self.0
            .send(Out::Stdout(s.into()))
            .await
            .map_err(|_| Failure::new(exit::FAILURE, "the output was closed"))
    }

    pub(super) async fn err(&self, s: impl Into<String>) {
        let _ = self.0.send(Out::Stderr(s.into())).await;
    }

    pub(super) async fn closed(&self) {
        self.0.closed().await
    }
}

/// A time as RFC 3339, to the millisecond.
pub(super) fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}
