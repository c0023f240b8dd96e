//! The kind a change writes at the document's root.

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, ObjType, ScalarValue};

/// Longest kind name a change may write.
const MAX_KIND_LEN: usize = 64;

/// The kind `ops` write at the root: `None` when they don't touch it, else the string they
/// set (a string scalar, or a text object created and filled in the same change, as JavaScript
/// writes strings) or why it is not one.
pub(super) fn kind_written(
    ops: &[automerge::legacy::Op],
    start: u64,
    actor: &ActorId,
) -> Option<Result<String, String>> {
    let mut written = None;
    for (i, op) in ops.iter().enumerate() {
        if !matches!((&op.obj, &op.key), (ObjectId::Root, Key::Map(k)) if k.as_str() == "kind") {
            continue;
        }
        written = Some(match &op.action {
            OpType::Put(ScalarValue::Str(s)) => Ok(s.to_string()),
            OpType::Make(ObjType::Text) => {
                text_written(ops, start, actor, &OpId(start + i as u64, actor.clone()))
            }
            _ => Err("kind must be a string".into()),
        });
    }
    written
}

/// The characters `ops` (a change starting at op `start` of `actor`) insert into the new text
/// object `text`, in order. Every insertion of one change has a higher counter than the ones
/// before it, so inserting each right after the element it names gives the text's order.
fn text_written(
    ops: &[automerge::legacy::Op],
    start: u64,
    actor: &ActorId,
    text: &OpId,
) -> Result<String, String> {
    use automerge::legacy::ElementId;
    let plain = || "kind must be a plain string".to_string();
    let mut chars: Vec<(u64, String)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        if !matches!(&op.obj, ObjectId::Id(o) if o == text) {
            continue;
        }
        let (OpType::Put(ScalarValue::Str(c)), true, Key::Seq(after)) =
            (&op.action, op.insert, &op.key)
        else {
            return Err(plain());
        };
        let at = match after {
            ElementId::Head => 0,
            ElementId::Id(OpId(counter, a)) if a == actor => {
                match chars.iter().position(|(id, _)| id == counter) {
                    Some(p) => p + 1,
                    None => return Err(plain()),
                }
            }
            ElementId::Id(_) => return Err(plain()),
        };
        if chars.len() >= MAX_KIND_LEN {
            return Err(format!("kind is at most {MAX_KIND_LEN} characters"));
        }
        chars.insert(at, (start + i as u64, c.to_string()));
    }
    Ok(chars.into_iter().map(|(_, c)| c).collect())
}
