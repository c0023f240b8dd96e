//! What the relay keeps about a document beside the fields it shares with devices: the
//! extension of core's `DocMeta`, stored in the same `doc_meta` row.

use serde::{Deserialize, Serialize};
use weft_core::store::MetaExt;

/// A document's metadata as the relay keeps it.
pub type DocMeta = weft_core::store::DocMeta<RelayMeta>;

/// The relay's own metadata fields (stored beside core's shared ones, under the same names as
/// when they were fields of one struct).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RelayMeta {
    /// Bytes the document took in the store when last recorded (its owner's storage quota
    /// counts them).
    pub stored_bytes: u64,
}

impl MetaExt for RelayMeta {
    /// A deleted document's content is gone, and so are its bytes.
    fn tombstone(&self) -> Self {
        RelayMeta::default()
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
    /// the relay wrote then.
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

    const DOC: DocId = DocId::from_bytes([5; 16]);

    fn old_row(deleted_at_ms: Option<u64>) -> Vec<u8> {
        let old = OldDocMeta {
            kind: Some("conversation".into()),
            owner: Some("alice".into()),
            role: None,
            access: BTreeMap::from([("bob".into(), Role::ReadOnly)]),
            created_at_ms: 1,
            updated_at_ms: 2,
            deleted_at_ms,
            confirmed_heads: Vec::new(),
            last_sync_ms: None,
            revoked: deleted_at_ms.is_some(),
            stored_bytes: 12_345,
            actor_epoch: 0,
        };
        let mut row = vec![0x01];
        rmp_serde::encode::write_named(&mut row, &old).unwrap();
        row
    }

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
        let meta: DocMeta = decode_meta(DOC, &old_row(None)).unwrap();
        assert_eq!(meta.kind.as_deref(), Some("conversation"));
        assert_eq!(meta.owner.as_deref(), Some("alice"));
        assert_eq!(meta.access.get("bob"), Some(&Role::ReadOnly));
        assert_eq!((meta.created_at_ms, meta.updated_at_ms), (1, 2));
        assert_eq!(meta.ext.stored_bytes, 12_345);
        let again: DocMeta = decode_meta(DOC, &stored(&meta)).unwrap();
        assert_eq!(again, meta);
    }

    #[test]
    fn an_old_tombstone_reads_as_deleted() {
        let meta: DocMeta = decode_meta(DOC, &old_row(Some(3))).unwrap();
        assert_eq!(meta.deleted_at_ms, Some(3));
        assert_eq!(meta.owner.as_deref(), Some("alice"));
    }
}
