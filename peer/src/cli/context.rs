//! What commands read before they act: the user this device acts for, whether it holds a
//! document, the clock.

use weft_core::DocId;
use weft_peer::Device;

use super::output::{exit, Failure};

/// The user this device acts for: the author of its messages.
pub(super) fn device_user(device: &Device) -> Result<String, Failure> {
    device.dir().name().ok_or_else(|| {
        Failure::new(
            exit::FAILURE,
            "this device does not know which user it acts for yet: run `weft init --name USER`, or sync once with a token",
        )
    })
}

/// Fails unless this device holds `doc` (and its owner has not deleted it).
pub(super) async fn check_exists(device: &Device, doc: DocId) -> Result<(), Failure> {
    device.info(doc).await?;
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(super) use weft_core::clock::unix_ms;
