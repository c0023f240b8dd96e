//! The staging log's format: the `staged_log` table and its encoded entries, each a put or a
//! tombstone, starting with a tag byte.

use ::redb::TableDefinition;

use super::{ikey, staged_keys, Index};
use crate::store::Table;

/// The log table: sequence number to encoded [`Entry`].
pub(in crate::store) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("staged_log");

/// One log entry.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::store) enum Entry<'a> {
    Put {
        table: Table,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        table: Table,
        key: &'a [u8],
    },
    DeletePrefix {
        table: Table,
        prefix: &'a [u8],
    },
}

/// Why a staged entry does not decode.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::store) enum DecodeError {
    /// It names a table the store was not opened with.
    UnknownTable(String),
    /// Its bytes are damaged; what is wrong.
    Damaged(String),
}

impl From<&str> for DecodeError {
    fn from(reason: &str) -> Self {
        DecodeError::Damaged(reason.to_string())
    }
}

impl From<String> for DecodeError {
    fn from(reason: String) -> Self {
        DecodeError::Damaged(reason)
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::UnknownTable(name) => {
                write!(f, "a staged entry names an unknown table {name:?}")
            }
            DecodeError::Damaged(reason) => f.write_str(reason),
        }
    }
}

const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;
const TAG_DELETE_PREFIX: u8 = 2;

impl<'a> Entry<'a> {
    /// `tag (1) ++ table name length (1) ++ table name ++ key length (u16 BE) ++ key ++ value`;
    /// tombstones have no value.
    pub(in crate::store) fn encode(&self) -> Vec<u8> {
        let (tag, table, key, value): (u8, Table, &[u8], &[u8]) = match *self {
            Entry::Put { table, key, value } => (TAG_PUT, table, key, value),
            Entry::Delete { table, key } => (TAG_DELETE, table, key, &[]),
            Entry::DeletePrefix { table, prefix } => (TAG_DELETE_PREFIX, table, prefix, &[]),
        };
        let name = table.name().as_bytes();
        let mut out = Vec::with_capacity(4 + name.len() + key.len() + value.len());
        out.push(tag);
        // Invariants: table names are 1 to 255 bytes (checked when the store opens); a put's key passed
        // `StagingLimits::stages`, and a tombstone is only written for a key (or a prefix of
        // one) that is staged, so every key here fits a u16.
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
        out
    }

    /// The inverse of [`Entry::encode`]; an error names what is wrong.
    /// Only `tables` are known: an entry of any other table is [`DecodeError::UnknownTable`].
    pub(in crate::store) fn decode(
        bytes: &'a [u8],
        tables: &[Table],
    ) -> Result<Entry<'a>, DecodeError> {
        let (&tag, rest) = bytes.split_first().ok_or("an empty staged entry")?;
        let (&name_len, rest) = rest.split_first().ok_or("a staged entry cut short")?;
        let name_len = usize::from(name_len);
        if rest.len() < name_len + 2 {
            return Err("a staged entry cut short".into());
        }
        let (name, rest) = rest.split_at(name_len);
        let table = tables
            .iter()
            .copied()
            .find(|t| t.name().as_bytes() == name)
            .ok_or_else(|| DecodeError::UnknownTable(String::from_utf8_lossy(name).into_owned()))?;
        let key_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        if rest.len() < key_len {
            return Err("a staged entry's key is cut short".into());
        }
        let (key, value) = rest.split_at(key_len);
        match tag {
            TAG_PUT => Ok(Entry::Put { table, key, value }),
            TAG_DELETE | TAG_DELETE_PREFIX if !value.is_empty() => {
                Err("a staged tombstone carries a value".into())
            }
            TAG_DELETE => Ok(Entry::Delete { table, key }),
            TAG_DELETE_PREFIX => Ok(Entry::DeletePrefix { table, prefix: key }),
            other => Err(format!("a staged entry has unknown tag {other}").into()),
        }
    }

    /// Apply to `index` as if this entry, with sequence number `seq`, were just appended.
    pub(in crate::store) fn replay(&self, seq: u64, index: &mut Index) {
        match *self {
            Entry::Put { table, key, .. } => {
                index.insert(ikey(table, key), seq);
            }
            Entry::Delete { table, key } => {
                index.remove(&*ikey(table, key));
            }
            Entry::DeletePrefix { table, prefix } => {
                for key in staged_keys(index, table, prefix) {
                    index.remove(&ikey(table, &key));
                }
            }
        }
    }
}
