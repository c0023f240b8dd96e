//! The app's listener: one task per device reads the device's events and status and calls
//! the listener, in order, on the device's runtime.
//!
//! A `Changed` event carries Automerge patches; they are summarized as an app shows them:
//! which messages appeared, were edited or deleted (read as they are now, so the author is
//! known), and which other top-level fields changed. Presence comes from the relay; typing is
//! an ephemeral message with a small tagged payload (`crate::typing`).

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use weft_peer::automerge::{Patch, PatchAction, Prop};
use weft_peer::schema::{self, MessageKey};
use weft_peer::{Device, DocId, Event, EventOrigin};

use crate::device::WeftDevice;
use crate::runtime::{spawn, OwnedTask};
use crate::types::{
    ChangeOrigin, ChatMessage, DocumentChange, DocumentNotice, PresenceChange, SyncStatus,
    TypingChange,
};
use crate::typing;
use crate::WeftError;

/// Messages one change reports at most (the newest): the first change seen of a document
/// since the device opened is reported from the empty document, i.e. all of it.
const MAX_REPORTED_MESSAGES: usize = 500;

/// What the app is told. Called on a background thread, one call at a time, in order; return
/// quickly (hand the value to the UI thread). An exception thrown is logged and ignored.
#[uniffi::export(callback_interface)]
pub trait WeftListener: Send + Sync {
    /// A document changed, and the change is durable.
    fn on_document_changed(&self, change: DocumentChange);
    /// The sync status changed.
    fn on_status_changed(&self, status: SyncStatus);
    /// Someone's device joined or left a document.
    fn on_presence_changed(&self, presence: PresenceChange);
    /// Someone started or stopped typing.
    fn on_typing_changed(&self, typing: TypingChange);
    /// The relay said something about a document or a request.
    fn on_notice(&self, notice: DocumentNotice);
}

#[uniffi::export]
impl WeftDevice {
    /// Sets the listener (replacing the one set before). It is told the current status at
    /// once, then every change from now on.
    pub fn set_listener(&self, listener: Box<dyn WeftListener>) -> Result<(), WeftError> {
        let device = self.device.clone();
        let paused = self.paused.clone();
        // Subscribed before the task starts: nothing after this call is missed.
        let events = device.events();
        let task = spawn(run(device, paused, Arc::from(listener), events))?;
        let old = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(OwnedTask(task));
        drop(old);
        Ok(())
    }

    /// Removes the listener.
    pub fn clear_listener(&self) {
        drop(self.take_listener());
    }
}

impl WeftDevice {
    pub(crate) fn take_listener(&self) -> Option<OwnedTask> {
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Calls the listener; a foreign exception (a panic here) is logged, not propagated.
fn call(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::warn!(what, "the app's listener failed");
    }
}

async fn run(
    device: Device,
    paused: Arc<std::sync::atomic::AtomicBool>,
    listener: Arc<dyn WeftListener>,
    mut events: tokio::sync::broadcast::Receiver<Event>,
) {
    let mut status = device.status();
    let mut last: Option<SyncStatus> = None;
    let mut status_open = true;
    loop {
        let now = {
            let s = status.borrow_and_update();
            SyncStatus::from_status(&s, paused.load(std::sync::atomic::Ordering::Relaxed))
        };
        if last.as_ref() != Some(&now) {
            last = Some(now.clone());
            call("status", || listener.on_status_changed(now));
        }
        tokio::select! {
            changed = status.changed(), if status_open => {
                status_open = changed.is_ok();
            }
            event = events.recv() => match event {
                Ok(e) => handle(&device, listener.as_ref(), e).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "the listener fell behind; events skipped");
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
}

async fn handle(device: &Device, listener: &dyn WeftListener, event: Event) {
    match event {
        Event::Changed {
            doc,
            origin,
            patches,
            authors,
            ..
        } => {
            let origin = match origin {
                EventOrigin::Local => ChangeOrigin::Local,
                EventOrigin::Remote => ChangeOrigin::Remote,
            };
            let change = summarize(device, doc, origin, authors, &patches).await;
            call("change", || listener.on_document_changed(change));
        }
        Event::Presence {
            doc,
            user,
            device,
            online,
        } => {
            let p = PresenceChange {
                doc: doc.to_string(),
                user,
                device: device.to_string(),
                online,
            };
            call("presence", || listener.on_presence_changed(p));
        }
        Event::Ephemeral {
            doc, user, data, ..
        } => {
            let Some(typing) = typing::parse(&data) else {
                return;
            };
            let t = TypingChange {
                doc: doc.to_string(),
                user,
                typing,
            };
            call("typing", || listener.on_typing_changed(t));
        }
        Event::Refused { doc, reason } => call("notice", || {
            listener.on_notice(DocumentNotice::Refused {
                doc: doc.to_string(),
                reason,
            })
        }),
        Event::Deleted { doc } => call("notice", || {
            listener.on_notice(DocumentNotice::Deleted {
                doc: doc.to_string(),
            })
        }),
        Event::Rejected { doc, .. } => call("notice", || {
            listener.on_notice(DocumentNotice::ChangesRejected {
                doc: doc.to_string(),
            })
        }),
        Event::Control { op, result } => call("notice", || {
            listener.on_notice(DocumentNotice::RequestAnswered {
                doc: op.doc().to_string(),
                error: result.err(),
            })
        }),
        _ => {}
    }
}

/// What the patches touched: message keys (and which of them are new) and other top-level
/// fields.
#[derive(Default, Debug, PartialEq)]
struct Touched {
    added: BTreeSet<String>,
    messages: BTreeSet<String>,
    fields: BTreeSet<String>,
}

fn touched(patches: &[Patch]) -> Touched {
    let mut t = Touched::default();
    for p in patches {
        let top = match (p.path.first(), &p.action) {
            (Some((_, Prop::Map(top))), _) => top.as_str(),
            (None, PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key }) => {
                if key != "messages" {
                    t.fields.insert(key.clone());
                }
                continue;
            }
            _ => continue,
        };
        if top != "messages" {
            t.fields.insert(top.to_owned());
            continue;
        }
        match (p.path.get(1), &p.action) {
            (Some((_, Prop::Map(key))), _) => {
                t.messages.insert(key.clone());
            }
            (None, PatchAction::PutMap { key, .. }) => {
                t.added.insert(key.clone());
                t.messages.insert(key.clone());
            }
            _ => {}
        }
    }
    t
}

async fn summarize(
    device: &Device,
    doc: DocId,
    origin: ChangeOrigin,
    authors: Vec<String>,
    patches: &[Patch],
) -> DocumentChange {
    let t = touched(patches);
    let kind = device.info(doc).await.ok().and_then(|i| i.kind);
    let mut change = DocumentChange {
        doc: doc.to_string(),
        kind,
        origin,
        authors,
        messages_added: Vec::new(),
        messages_edited: Vec::new(),
        messages_deleted: Vec::new(),
        fields_changed: t.fields.into_iter().collect(),
    };
    if t.messages.is_empty() {
        return change;
    }
    let keys: Vec<MessageKey> = t
        .messages
        .iter()
        .rev()
        .filter_map(|k| k.parse().ok())
        .take(MAX_REPORTED_MESSAGES)
        .collect();
    let read = device
        .read(doc, move |am| {
            keys.iter()
                .rev()
                .filter_map(|k| schema::find_message(am, &k.id).ok()?.value)
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
    for m in &read {
        let msg = ChatMessage::from(m);
        if t.added.contains(&m.key().to_string()) {
            change.messages_added.push(msg);
        } else if m.deleted {
            change.messages_deleted.push(msg);
        } else {
            change.messages_edited.push(msg);
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_peer::automerge::Automerge;

    #[test]
    fn a_new_message_an_edit_and_a_title_are_told_apart() {
        let mut am = Automerge::new();
        schema::Conversation::create(
            &mut am,
            &schema::NewConversation {
                title: "Lunch".into(),
                participants: vec![],
            },
            1,
        )
        .expect("create");
        let first = schema::send_message(
            &mut am,
            &schema::NewMessage::text("sam", "noon?"),
            schema::Id::from_bytes([1; 16]),
            2,
        )
        .expect("send");
        let before = am.get_heads();
        let second = schema::send_message(
            &mut am,
            &schema::NewMessage::text("sam", "or one?"),
            schema::Id::from_bytes([2; 16]),
            3,
        )
        .expect("send");
        schema::edit_message(&mut am, &first.id, "noon!", 4).expect("edit");
        schema::set_title(&mut am, "Lunch at noon", 5).expect("title");
        let t = touched(&am.diff(&before, &am.get_heads()));
        assert_eq!(t.added, BTreeSet::from([second.key().to_string()]));
        assert_eq!(
            t.messages,
            BTreeSet::from([first.key().to_string(), second.key().to_string()])
        );
        assert_eq!(t.fields, BTreeSet::from(["title".to_owned()]));
    }
}
