//! [`CommitTicket`]: how a caller learns that its batch is durable, awaited or blocked on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::store::StoreError;

/// Completes when a submitted batch is durable, or has failed.
///
/// Wait for it with [`CommitTicket::wait`] on a thread that may block, or `.await` it in async
/// code (no `spawn_blocking` needed).
///
/// # Cancel safety
///
/// Dropping a ticket, or a future awaiting it, does not cancel the write: the batch is already
/// queued and will be written. Only the news of its outcome is lost, so a caller that needs to
/// know whether its data is durable must keep the ticket until it completes.
#[must_use = "dropping a ticket does not cancel the write, but leaves you not knowing if it is durable"]
#[derive(Debug)]
pub struct CommitTicket {
    state: TicketState,
}

#[derive(Debug)]
enum TicketState {
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
    Ready(Result<(), StoreError>),
    Taken,
}

impl CommitTicket {
    /// A ticket the writer thread will complete through `receiver`.
    pub(super) fn waiting(receiver: oneshot::Receiver<Result<(), StoreError>>) -> CommitTicket {
        CommitTicket {
            state: TicketState::Waiting(receiver),
        }
    }

    /// A ticket complete with `result`.
    pub(super) fn ready(result: Result<(), StoreError>) -> CommitTicket {
        CommitTicket {
            state: TicketState::Ready(result),
        }
    }

    /// A ticket for a write that needs nothing of the store (complete at once).
    pub fn done() -> CommitTicket {
        CommitTicket {
            state: TicketState::Ready(Ok(())),
        }
    }

    /// Block until the batch is durable (`Ok`) or has failed.
    ///
    /// [`StoreError::Closed`] means the writer thread died before reporting; the batch may or
    /// may not have been written.
    pub fn wait(self) -> Result<(), StoreError> {
        block_on(self)
    }
}

impl Future for CommitTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = match std::mem::replace(&mut self.state, TicketState::Taken) {
            TicketState::Waiting(mut receiver) => match Pin::new(&mut receiver).poll(cx) {
                Poll::Pending => {
                    self.state = TicketState::Waiting(receiver);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(result)) => result,
                // The writer dropped the sender without answering: it panicked.
                Poll::Ready(Err(oneshot::RecvError)) => Err(StoreError::Closed),
            },
            TicketState::Ready(result) => result,
            // Polled again after completing: a misuse, answered rather than panicking.
            TicketState::Taken => Err(StoreError::Closed),
        };
        Poll::Ready(result)
    }
}

/// Polls `future` on this thread, parking between wake-ups. Works whether or not the future
/// was polled by an executor before, which `oneshot::Receiver::recv` does not allow.
pub(super) fn block_on<F: Future + Unpin>(mut future: F) -> F::Output {
    struct Unparker(Thread);
    impl Wake for Unparker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unparker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
            return output;
        }
        thread::park();
    }
}
