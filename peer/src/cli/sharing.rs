//! `weft doc share`, `weft doc unshare` and `weft doc delete`: requests the relay answers. They
//! are queued durably on the device and sent at the next sync, or at once when a running
//! `sync --watch` holds the directory.

use std::time::Duration;

use weft_peer::{ControlOp, Device, LinkState};

use super::context::check_exists;
use super::output::{exit, Failure, Sink};

/// Queues a sharing or deletion request. When a relay connection is up (a running
/// `sync --watch` holds the directory), waits for the relay's answer; otherwise it goes at the
/// next sync.
pub(super) async fn control(device: &Device, op: ControlOp, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, op.doc()).await?;
    let online = device
        .status()
        .borrow()
        .links
        .values()
        .any(|l| l.state == LinkState::Online && l.name.starts_with("relay "));
    let answer = device.control(op).await?;
    if !online {
        sink.err("queued: takes effect at the next sync").await;
        return Ok(());
    }
    match tokio::time::timeout(Duration::from_secs(15), answer).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(Failure::new(
            exit::REFUSED,
            format!("the relay refused: {why}"),
        )),
        Ok(Err(_)) | Err(_) => {
            sink.err("queued: the relay has not answered yet; it takes effect at the next sync")
                .await;
            Ok(())
        }
    }
}
