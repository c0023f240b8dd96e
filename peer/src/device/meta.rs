//! What the device keeps about a document beside the fields it shares with the relay: the
//! extension of core's `DocMeta`, stored in the same `doc_meta` row.

use serde::{Deserialize, Serialize};
use weft_core::store::MetaExt;

/// A document's metadata as the device keeps it.
pub(crate) type DocMeta = weft_core::store::DocMeta<DeviceMeta>;

/// The device's own metadata fields (stored beside core's shared ones, under the same names
/// as when they were fields of one struct).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct DeviceMeta {
    /// The heads the relay or a peer last confirmed holding (lowercase hex).
    pub(crate) confirmed_heads: Vec<String>,
    /// When a relay or peer last confirmed this document in sync (ms since the Unix epoch).
    pub(crate) last_sync_ms: Option<u64>,
    /// The relay no longer lets this device's user read the document (unshared or deleted);
    /// the local copy is kept, read-only.
    pub(crate) revoked: bool,
    /// Moved on each time the relay refuses this device's changes and the document returns to
    /// the relay's version; the device writes with a new actor from then.
    pub(crate) actor_epoch: u32,
}

impl MetaExt for DeviceMeta {
    /// A deleted document is no longer readable: revoked, nothing about its content.
    fn tombstone(&self) -> Self {
        DeviceMeta {
            revoked: true,
            ..DeviceMeta::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use weft_core::store::docs::{decode_meta, put_meta};
    use weft_core::store::{BatchOp, WriteBatch};
    use weft_core::{DocId, Role};

    /// `DocMeta` as it was when it held the device's and the relay's fields alike: the rows
    /// the device wrote then.
    #[derive(Serialize)]
    struct OldDocMeta {
        kind: Option<String>,
        owner: Option<String>,
        role: Option<Role>,
        access: BTreeMap<String, Role>,
        created_at_ms: u64,
        updated_at_ms: u64,
        deleted_at_ms: Option<u64>,
        confirmed_heads: Vec<String>,
        last_sync_ms: Option<u64>,
        revoked: bool,
        stored_bytes: u64,
        actor_epoch: u32,
    }

    fn old_row() -> Vec<u8> {
        let old = OldDocMeta {
            kind: Some("conversation".into()),
            owner: Some("alice".into()),
            role: Some(Role::ReadWrite),
            access: BTreeMap::from([("bob".into(), Role::ReadOnly)]),
            created_at_ms: 1,
            updated_at_ms: 2,
            deleted_at_ms: None,
            confirmed_heads: vec!["ab".into()],
            last_sync_ms: Some(4),
            revoked: true,
            stored_bytes: 0,
            actor_epoch: 6,
        };
        let mut row = vec![0x01];
        rmp_serde::encode::write_named(&mut row, &old).unwrap();
        row
    }

    const DOC: DocId = DocId::from_bytes([5; 16]);

    fn stored(meta: &DocMeta) -> Vec<u8> {
        let mut b = WriteBatch::new();
        put_meta(&mut b, DOC, meta);
        match &b.ops()[0] {
            BatchOp::Put { value, .. } => value.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_row_written_in_the_old_shape_reads_and_round_trips() {
        let meta: DocMeta = decode_meta(DOC, &old_row()).unwrap();
        assert_eq!(meta.kind.as_deref(), Some("conversation"));
        assert_eq!(meta.owner.as_deref(), Some("alice"));
        assert_eq!(meta.role, Some(Role::ReadWrite));
        assert_eq!(meta.access.get("bob"), Some(&Role::ReadOnly));
        assert_eq!((meta.created_at_ms, meta.updated_at_ms), (1, 2));
        assert_eq!(
            meta.ext,
            DeviceMeta {
                confirmed_heads: vec!["ab".into()],
                last_sync_ms: Some(4),
                revoked: true,
                actor_epoch: 6,
            }
        );
        let again: DocMeta = decode_meta(DOC, &stored(&meta)).unwrap();
        assert_eq!(again, meta);
    }
}
