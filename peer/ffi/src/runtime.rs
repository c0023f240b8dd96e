//! The tokio runtime the device lives on. uniffi polls an async call's future on the foreign
//! side's executor (with a tokio context through `async_runtime = "tokio"`); the device's own
//! tasks (driver, links, listener) must outlive any one call, so the work runs here and the
//! call awaits its result.
//!
//! Cancel safety: a call the app cancels (a Kotlin coroutine cancelled, a Swift task) stops
//! waiting, but the work it started runs to its end on this runtime, so a write is either
//! durable or not made, never half done.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use crate::WeftError;

static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();

/// Two workers: the device's driver and its connections are a few tasks, and a phone has
/// little to spare.
fn runtime() -> Result<&'static Runtime, WeftError> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("weft")
                .enable_all()
                .build()
                .map_err(|e| tracing::error!(error = %e, "cannot start the tokio runtime"))
                .ok()
        })
        .as_ref()
        .ok_or(WeftError::Storage {
            reason: "cannot start the runtime".to_owned(),
        })
}

/// Runs `fut` on the device's runtime and waits for it. A panic inside becomes an error.
pub(crate) async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, WeftError>> + Send + 'static,
) -> Result<T, WeftError> {
    runtime()?
        .spawn(fut)
        .await
        .map_err(|e| WeftError::Storage {
            reason: format!("internal task failed: {e}"),
        })?
}

/// Spawns `fut` on the device's runtime without waiting (for tasks owned by a handle).
pub(crate) fn spawn(
    fut: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, WeftError> {
    Ok(runtime()?.spawn(fut))
}

/// A task owned by a handle: dropping the handle stops the task.
pub(crate) struct OwnedTask(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
