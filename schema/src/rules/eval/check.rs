//! One change checked: the kind it is judged by, each operation placed and judged.

use weft_core::hash::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, Op, OpId, OpType};
use automerge::{ActorId, Automerge, Change, ExpandedChange, ObjType, ScalarValue};

use super::collection::collection;
use super::kind::kind_written;
use super::root::{inside_field, root_field};
use super::state::{Ctx, DocRules, Seg, Writer};
use crate::rules::kinds::{KindSpec, Kinds};

/// Most bytes of a new message's body kept for the push hook ([`MessageMade::body`]).
const MAX_NOTED_BODY: usize = 1024;

/// A record the change creates in a collection named `messages` (what the relay's push hook
/// reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MessageMade {
    /// Its key in the collection.
    pub(crate) key: String,
    /// Its `body` field as the change writes it (a string, or text typed in the same change),
    /// cut to [`MAX_NOTED_BODY`] bytes; only when asked for.
    pub(crate) body: Option<String>,
}

/// Checks `change` by `writer` against the document's kind, then follows it. `Err`: a sentence
/// naming the rule it breaks. `expanded`: the change already expanded, when the caller has it.
/// `Ok`: the messages it creates (see [`MessageMade`]) when `notes` asks for them (`Some`),
/// their bodies read when `notes` is `Some(true)`.
pub(crate) fn check(
    kinds: &Kinds,
    st: &mut DocRules,
    doc: &Automerge,
    change: &Change,
    expanded: Option<&ExpandedChange>,
    writer: Writer<'_>,
    notes: Option<bool>,
) -> Result<Vec<MessageMade>, String> {
    let decoded;
    let ops: &[Op] = match expanded {
        Some(e) => &e.operations,
        None => {
            decoded = change.decode();
            &decoded.operations
        }
    };
    let start = change.start_op().get();
    let actor = change.actor_id().clone();
    // The kind this change is judged by: the document's, or the one it sets.
    let mut kind = st.kind.clone();
    if let Some(written) = kind_written(ops, start, &actor) {
        if st.kind.is_some() || st.kind_text.is_some() {
            return Err("the document's kind is fixed once set".into());
        }
        if st.owner.as_deref().is_some_and(|o| o != writer.user) {
            return Err("only the document's owner sets its kind".into());
        }
        kind = Some(written?);
    }
    // Characters typed into a kind written as text change the kind.
    if let Some(text) = &st.kind_text {
        if ops
            .iter()
            .any(|op| matches!(&op.obj, ObjectId::Id(o) if o == text))
        {
            return Err("the document's kind is fixed once set".into());
        }
    }
    let spec = kind.as_deref().and_then(|k| kinds.get(k));
    let mut made = Vec::new();
    if let Some(spec) = spec {
        let mut ctx = Ctx {
            doc,
            writer,
            created: HashSet::default(),
            authors_due: Vec::new(),
            author_texts: HashMap::default(),
            messages_made: Vec::new(),
            noting: notes.is_some(),
        };
        let creating_doc = st.kind.is_none();
        let mut prev: Option<&Op> = None;
        for (i, op) in ops.iter().enumerate() {
            if prev.is_some_and(|p| same_verdict(&ctx, p, op)) {
                // Judged, and followed, exactly as the operation before it.
                continue;
            }
            let id = OpId(start + i as u64, actor.clone());
            judge(&mut ctx, st, spec, creating_doc, &id, op)?;
            st.follow_op(&id, &op.obj, &op.key, &op.action);
            if matches!(op.action, OpType::Make(_)) {
                ctx.created.insert(id);
            }
            prev = Some(op);
        }
        for (text, what) in ctx.author_texts.values() {
            if text != ctx.writer.user {
                return Err(format!("{what} is its writer ({})", ctx.writer.user));
            }
        }
        for (record, field) in &ctx.authors_due {
            let set = ops.iter().any(|op| {
                matches!(&op.obj, ObjectId::Id(o) if o == record)
                    && matches!(&op.key, Key::Map(k) if k.as_str() == field)
            });
            if !set {
                return Err(format!(
                    "a new record must name its writer ({}) in {field}",
                    ctx.writer.user
                ));
            }
        }
        made = ctx
            .messages_made
            .into_iter()
            .map(|(key, record)| MessageMade {
                key,
                body: (notes == Some(true))
                    .then(|| body_written(ops, start, &actor, &record))
                    .flatten(),
            })
            .collect();
    } else {
        for (i, op) in ops.iter().enumerate() {
            let id = OpId(start + i as u64, actor.clone());
            st.follow_op(&id, &op.obj, &op.key, &op.action);
        }
    }
    if st.kind.is_none() {
        st.kind = kind;
    }
    Ok(made)
}

/// The `body` field of `record` as `ops` (the change's, from operation `start` by `actor`)
/// write it: a string, or a text object with its characters inserted in order.
fn body_written(ops: &[Op], start: u64, actor: &ActorId, record: &OpId) -> Option<String> {
    let mut text: Option<OpId> = None;
    let mut body = String::new();
    for (i, op) in ops.iter().enumerate() {
        match (&op.obj, &op.key, &op.action) {
            (ObjectId::Id(o), Key::Map(k), action) if o == record && k.as_str() == "body" => {
                match action {
                    OpType::Put(ScalarValue::Str(s)) => {
                        body = s.to_string();
                        text = None;
                    }
                    OpType::Make(ObjType::Text) => {
                        body.clear();
                        text = Some(OpId(start + i as u64, actor.clone()));
                    }
                    _ => return None,
                }
            }
            (ObjectId::Id(o), Key::Seq(_), OpType::Put(ScalarValue::Str(c)))
                if op.insert && text.as_ref() == Some(o) =>
            {
                body.push_str(c)
            }
            _ => {}
        }
        if body.len() > MAX_NOTED_BODY {
            break;
        }
    }
    if body.len() > MAX_NOTED_BODY {
        let mut end = MAX_NOTED_BODY;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    Some(body)
}

/// Whether `op` is judged as `prev`, the operation before it, was (accepted), and following
/// it changes nothing: both insert or delete in the same list or text object (typing: one
/// operation per character) with values of the same type, outside an author field written as
/// text (whose characters are collected one by one). Such runs are judged once, so a change of
/// a million characters costs one judgement, not a million.
fn same_verdict(ctx: &Ctx<'_>, prev: &Op, op: &Op) -> bool {
    let ObjectId::Id(obj) = &op.obj else {
        return false;
    };
    if prev.obj != op.obj || ctx.author_texts.contains_key(obj) {
        return false;
    }
    if !matches!((&prev.key, &op.key), (Key::Seq(_), Key::Seq(_))) || prev.insert != op.insert {
        return false;
    }
    match (&prev.action, &op.action) {
        (OpType::Put(a), OpType::Put(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        (OpType::Delete, OpType::Delete) => true,
        _ => false,
    }
}

fn judge(
    ctx: &mut Ctx<'_>,
    st: &mut DocRules,
    spec: &KindSpec,
    creating_doc: bool,
    id: &OpId,
    op: &automerge::legacy::Op,
) -> Result<(), String> {
    let mut path = match &op.obj {
        ObjectId::Root => Vec::new(),
        ObjectId::Id(o) => st
            .place(ctx.doc, o)
            .ok_or_else(|| "it writes to an object the document does not have".to_string())?,
    };
    let leaf_key = match &op.key {
        Key::Map(k) => Some(k.to_string()),
        Key::Seq(_) => None,
    };
    // The slot written: the map key, or (in a list or text) the object itself.
    let in_object = leaf_key.is_none();
    if let Some(k) = &leaf_key {
        path.push(Seg {
            key: Some(k.clone()),
            id: id.clone(),
        });
    }
    let Some(first) = path.first().and_then(|s| s.key.clone()) else {
        return Err("it writes outside any field".into());
    };
    if path.len() == 1 && !in_object {
        return root_field(ctx, st, spec, creating_doc, &first, op);
    }
    if first == "kind" {
        // The characters of a kind this change writes as text (`kind_written` read them).
        return if ctx.created.contains(&path[0].id) {
            Ok(())
        } else {
            Err("the document's kind is fixed once set".into())
        };
    }
    if let Some(f) = spec.fields.get(&first) {
        // Inside a root field's object (a title's text, a list's items).
        let created_here = ctx.created.contains(&path[0].id);
        return inside_field(ctx, st, f, &first, created_here, None, op);
    }
    let Some(col) = spec.collections.get(&first) else {
        return Err(format!("{first} is not a field of a {}", spec.name));
    };
    collection(ctx, st, col, &first, &path[1..], in_object, op)
}
