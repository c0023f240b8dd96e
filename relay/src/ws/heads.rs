//! automerge-repo's remote heads for one socket: the relay's heads of each document the
//! socket syncs, told to the client (`remote-heads-changed`, keyed by the relay's storage id)
//! once it subscribes to that storage id (`remote-subscription-change`), and on every change
//! after that. This is how a stock client learns what the relay has ("saved on the relay").
//!
//! The relay's heads are read from the sync messages it sends the client: every Automerge sync
//! message starts with its sender's heads, so no question to the hub is needed and the heads
//! told are exactly those the client is being synced to.

use std::collections::HashMap;

use weft_core::DocId;

/// The leading byte of an Automerge sync message (0x43: with capabilities, same header).
const SYNC_MESSAGE_TYPES: [u8; 2] = [0x42, 0x43];
/// Heads read from one message, at most (a document with more is told nothing new).
const MAX_HEADS: u64 = 1024;

/// One socket's remote-heads state.
#[derive(Default)]
pub(super) struct RemoteHeads {
    /// The client subscribed to the relay's storage id.
    subscribed: bool,
    /// The relay's last heads of each document, bs58check-encoded as automerge-repo writes them.
    heads: HashMap<DocId, Vec<String>>,
}

impl RemoteHeads {
    /// Applies a `remote-subscription-change`: `true` when the client just subscribed to
    /// `storage_id` (it is then owed the heads known so far).
    pub(super) fn change_subscription(
        &mut self,
        storage_id: &str,
        add: &[String],
        remove: &[String],
    ) -> bool {
        let was = self.subscribed;
        if add.iter().any(|s| s == storage_id) {
            self.subscribed = true;
        }
        if remove.iter().any(|s| s == storage_id) {
            self.subscribed = false;
        }
        self.subscribed && !was
    }

    /// Notes the heads of a sync message the relay sends for `doc`: the new heads when they
    /// changed and the client is subscribed, so they are to be told.
    pub(super) fn observe(&mut self, doc: DocId, sync_data: &[u8]) -> Option<Vec<String>> {
        let heads = sync_heads(sync_data)?;
        let slot = self.heads.entry(doc).or_default();
        if *slot == heads {
            return None;
        }
        *slot = heads;
        self.subscribed.then(|| slot.clone())
    }

    /// Every document's known heads (what a new subscriber is told at once).
    pub(super) fn known(&self) -> Vec<(DocId, Vec<String>)> {
        self.heads.iter().map(|(d, h)| (*d, h.clone())).collect()
    }

    /// Forgets `doc` (no longer served to this socket).
    pub(super) fn forget(&mut self, doc: DocId) {
        self.heads.remove(&doc);
    }
}

/// The heads at the start of an Automerge sync message, bs58check-encoded; `None` for data
/// that does not start like one (the relay's own messages always do).
fn sync_heads(data: &[u8]) -> Option<Vec<String>> {
    let (kind, mut rest) = data.split_first()?;
    if !SYNC_MESSAGE_TYPES.contains(kind) {
        return None;
    }
    let count = read_uleb(&mut rest)?;
    if count > MAX_HEADS {
        return None;
    }
    let mut heads = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (hash, tail) = rest.split_at_checked(32)?;
        heads.push(bs58::encode(hash).with_check().into_string());
        rest = tail;
    }
    Some(heads)
}

/// An unsigned LEB128 number (at most 64 bits) from the front of `data`.
fn read_uleb(data: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = data.split_first()?;
        *data = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Milliseconds since the Unix epoch (automerge-repo's timestamps).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::automerge::sync::{self, SyncDoc};
    use weft_core::automerge::transaction::Transactable;
    use weft_core::automerge::{AutoCommit, ROOT};

    #[test]
    fn heads_are_read_from_a_sync_message_and_told_once_subscribed() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "k", "v").unwrap();
        let expected: Vec<String> = doc
            .get_heads()
            .iter()
            .map(|h| bs58::encode(h.0).with_check().into_string())
            .collect();
        let msg = doc
            .sync()
            .generate_sync_message(&mut sync::State::new())
            .unwrap()
            .encode();
        assert_eq!(sync_heads(&msg), Some(expected.clone()));

        let id = DocId::from_bytes([3; 16]);
        let mut remote = RemoteHeads::default();
        // Not subscribed: remembered, not told.
        assert_eq!(remote.observe(id, &msg), None);
        assert!(!remote.change_subscription("relay", &["other".into()], &[]));
        assert!(remote.change_subscription("relay", &["relay".into()], &[]));
        assert_eq!(remote.known(), vec![(id, expected.clone())]);
        // Unchanged heads are not told again; garbage is no heads.
        assert_eq!(remote.observe(id, &msg), None);
        assert_eq!(sync_heads(&[0x42, 0x05, 1, 2]), None);
        assert_eq!(sync_heads(&[]), None);
    }
}
