//! [`migrate`]: bringing documents written by older builds to the current schema version.
//!
//! Architecture invariant: the migration's output depends only on the document at its heads.
//! Changing what it writes requires changing [`MIGRATION_TAG`], or two builds could write
//! different changes under one actor and sequence number.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::error::{ReadError, WriteError};
use crate::kind::{kind_in, version_in};
use crate::tx::transact;
use crate::{Kind, SCHEMA_VERSION};

/// Mixed into the migration actor id; change it whenever the migration's output changes.
const MIGRATION_TAG: &[u8] = b"weft-schema migrate v1->v2 r1";

/// Brings the document to [`SCHEMA_VERSION`], as one change. Returns whether it changed
/// anything (`false` for a current document). Untyped documents are [`ReadError::Untyped`]
/// (wrapped), newer ones [`WriteError::TooNew`].
///
/// # Versions
/// - **1**, the first release: `title` and message `body` were plain strings, and chat
///   documents had no `read` or `reactions`. Everything else was as in 2.
/// - **2** (current): `title` and `body` are collaborative Text; `read` and `reactions` exist.
///
/// # When
/// Reading never writes: a version 1 document reads as it is (plain strings are accepted
/// where Text is expected, missing `read` / `reactions` read as empty). The first typed write
/// migrates it, in a change of its own before the write's, or the app calls [`migrate`].
/// A document newer than this build is read (unknown fields ignored) but never written:
/// [`WriteError::TooNew`].
///
/// # Concurrent migrations converge
/// Two devices may migrate the same document before they sync. The migration is a pure
/// function of the document's heads: same operations in the same order, committed with time
/// 0, a fixed message, and an actor id derived from the heads (`blake3` of a tag and the sorted
/// heads). Two devices migrating from the same heads therefore produce *byte-identical*
/// changes with the same hash, and syncing them is a no-op: nothing is duplicated, not even a
/// conflict. Devices migrating from different heads (one had seen more) write the same keys
/// (`title`, each `body`, `read`, `reactions`, `schema_version`) with the same content, so they
/// conflict on those keys rather than duplicate anything, and every replica resolves each
/// conflict to the same winner. Edits made to the losing copy of a body after the migration but before the
/// sync are in the document's history and visible via [`conflicts`](crate::conflicts).
pub fn migrate(doc: &mut Automerge) -> Result<bool, WriteError> {
    let kind = kind_in(doc)?;
    let version = version_in(doc)?;
    if version > SCHEMA_VERSION {
        return Err(WriteError::TooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(false);
    }
    let plan = plan_v1_to_v2(doc, kind)?;
    let mut heads = doc.get_heads();
    heads.sort_unstable();
    let mut h = blake3::Hasher::new();
    h.update(MIGRATION_TAG);
    for head in &heads {
        h.update(&head.0);
    }
    let actor = ActorId::from(&h.finalize().as_bytes()[..16]);

    let own = doc.get_actor().clone();
    doc.set_actor(actor);
    let r = transact(doc, 0, Some("weft: migrate schema v1 to v2"), |tx| {
        if let Some(title) = &plan.title {
            let t = tx.put_object(ROOT, "title", ObjType::Text)?;
            tx.splice_text(&t, 0, 0, title)?;
        }
        for (msg, body) in &plan.bodies {
            let t = tx.put_object(msg, "body", ObjType::Text)?;
            tx.splice_text(&t, 0, 0, body)?;
        }
        if kind.has_chat() {
            for key in ["read", "reactions"] {
                if tx.get(ROOT, key)?.is_none() {
                    tx.put_object(ROOT, key, ObjType::Map)?;
                }
            }
        }
        tx.put(ROOT, "schema_version", SCHEMA_VERSION as i64)?;
        Ok(())
    });
    doc.set_actor(own);
    r.map(|()| true)
}

/// What a v1 -> v2 migration rewrites, read before the transaction opens.
struct Plan {
    title: Option<String>,
    bodies: Vec<(ObjId, String)>,
}

fn plain_str(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        Value::Object(_) => None,
    }
}

fn plan_v1_to_v2(doc: &Automerge, kind: Kind) -> Result<Plan, ReadError> {
    let mut plan = Plan {
        title: None,
        bodies: Vec::new(),
    };
    if !kind.has_chat() {
        return Ok(plan);
    }
    plan.title = doc.get(ROOT, "title")?.and_then(|(v, _)| plain_str(&v));
    // Malformed entries are left as they are: migration converts, it doesn't repair.
    if let Some((Value::Object(ObjType::Map), messages)) = doc.get(ROOT, "messages")? {
        for item in doc.map_range(&messages, ..) {
            if let automerge::ValueRef::Object(ObjType::Map) = item.value {
                let m = item.id();
                if let Some(body) = doc.get(&m, "body")?.and_then(|(v, _)| plain_str(&v)) {
                    plan.bodies.push((m, body));
                }
            }
        }
    }
    Ok(plan)
}
