//! Checking a connection's document messages in its own task, before the hub sees them.
//!
//! Parsing a peer's changes ([`weft_core::engine::check_message`]) costs time per operation:
//! negligible for a chat message, a long stall for a change of a million operations. Done by
//! the hub, one member's large upload would stall every other document.
//! So connection tasks (QUIC and WebSocket alike) check each `Sync` and `Changes` message
//! themselves, on a blocking thread when it is large, and hand the hub the result
//! ([`HubEvent::Inbound`]); the hub only decides and stores.

use weft_core::check::Limits;
use weft_core::engine::{check_message, ConnId, EngineError};
use weft_core::wire::Message;

use crate::hub::HubEvent;

/// Messages larger than this are checked on a blocking thread, not the connection's task.
const OFF_THREAD_BYTES: usize = 64 * 1024;

/// The hub event for a message from `conn`: document messages checked, anything else as is.
/// `Err`: the message is malformed, and the connection should be closed.
///
/// Cancel safety: dropping the future drops the message (and, for a large one, lets its check
/// finish on the blocking thread unobserved).
pub(crate) async fn to_hub(
    conn: ConnId,
    msg: Message,
    limits: &Limits,
) -> Result<HubEvent, EngineError> {
    let size = match &msg {
        Message::Sync { data, .. } => data.len(),
        Message::Changes { changes, .. } => changes.iter().map(|c| c.len()).sum(),
        Message::Ack { .. } => 0,
        _ => return Ok(HubEvent::Frame { conn, msg }),
    };
    let inbound = if size > OFF_THREAD_BYTES {
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || check_message(msg, &limits))
            .await
            .map_err(|e| EngineError::BadSyncMessage {
                reason: format!("checking the message failed: {e}"),
            })??
    } else {
        check_message(msg, limits)?
    };
    Ok(HubEvent::Inbound { conn, inbound })
}
