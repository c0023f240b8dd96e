//! The hub's side of the push hook: new messages, once durable, reported with the members who
//! have no live connection to their document.

use std::collections::BTreeSet;

use weft_core::DocId;

use super::Hub;
use crate::notify::MessageEvent;

impl Hub {
    /// `doc` changed durably: reports the messages the write rules noted in it.
    pub(super) fn notify_messages(&mut self, doc: DocId) {
        if self.notifier.is_none() {
            return;
        }
        let Some(rules) = self.rules() else { return };
        let made = rules.take_messages(doc);
        let dropped = rules.take_dropped_messages();
        let Some(notifier) = &self.notifier else {
            return;
        };
        if dropped > 0 {
            notifier.dropped(dropped);
        }
        if made.is_empty() {
            return;
        }
        let mut members: BTreeSet<&str> = BTreeSet::new();
        if let Some(meta) = self.metas.get(&doc) {
            members.extend(meta.owner.as_deref());
            members.extend(meta.access.keys().map(String::as_str));
        }
        if let Some(subs) = self.subscribers.get(&doc) {
            for conn in subs.keys() {
                if let Some(c) = self.conns.get(conn).filter(|c| !c.closing) {
                    members.remove(c.claims.sub.as_str());
                }
            }
        }
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for m in made {
            let offline = members
                .iter()
                .filter(|u| **u != m.author)
                .map(|u| u.to_string())
                .collect();
            notifier.send(MessageEvent {
                doc,
                kind: m.kind,
                message: m.key,
                author: m.author,
                offline,
                body: m.body,
                at_ms,
            });
        }
    }
}
