//! Checking one change against its document's kind: every operation is placed in the document
//! (which field, which record, who created that record) and judged by the field's spec.
//!
//! Where an operation lands comes from the objects it targets. An object id names the
//! operation that created it, so an object created since the gate last saw the document
//! materialized is found in [`DocRules::objects`] (kept from the changes themselves), an older
//! one through the document (`Automerge::parents`). A record's author is the user its creating
//! actor is bound to, which the creating change must also have written into its author field.

use weft_core::hash::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Automerge, Change, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};

use super::spec::{Collection, Entry, FieldSpec, FieldType, KeyRule, KindSpec, Kinds, Who};
use crate::MessageKey;

/// What the gate keeps per document.
#[derive(Debug, Default)]
pub(crate) struct DocRules {
    /// The document's owner, as the relay recorded it.
    pub(crate) owner: Option<String>,
    /// Which user each actor writes for.
    pub(crate) bindings: HashMap<ActorId, String>,
    /// Objects created since the document was last seen materialized.
    objects: HashMap<OpId, ObjInfo>,
    /// Root fields written since then: the latest write of each.
    root: HashMap<String, (OpId, Option<ScalarValue>)>,
    /// The document's kind, once known.
    pub(crate) kind: Option<String>,
    /// The text object holding the kind, when it was written as text (as JavaScript writes
    /// strings): nothing may write into it once the kind is set.
    kind_text: Option<OpId>,
    /// Places of older objects found through the document (an object never moves), so the
    /// container every change writes into (`messages`) is looked up once, not per change.
    /// Bounded: emptied when full.
    placed: HashMap<OpId, Vec<Seg>>,
}

/// Most places [`DocRules::placed`] keeps.
const MAX_PLACED: usize = 4096;

#[derive(Debug, Clone)]
struct ObjInfo {
    parent: ObjectId,
    /// The map key it sits under (`None` in a list or text).
    key: Option<String>,
}

/// Who is writing.
#[derive(Debug, Clone)]
pub(crate) struct Writer<'a> {
    pub(crate) user: &'a str,
    pub(crate) admin: bool,
}

/// One step of an object's place: the key it sits under and its id.
#[derive(Debug, Clone)]
struct Seg {
    key: Option<String>,
    id: OpId,
}

impl DocRules {
    /// The gate now sees the document with every change it accepted or observed: what it kept
    /// of them is in the document.
    pub(crate) fn materialized(&mut self, doc: &Automerge) {
        self.objects.clear();
        self.root.clear();
        self.kind = match doc.get(ROOT, "kind") {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(k) => Some(k.to_string()),
                _ => None,
            },
            Ok(Some((Value::Object(ObjType::Text), id))) => doc.text(&id).ok(),
            _ => None,
        };
        self.kind_text = match doc.get(ROOT, "kind") {
            Ok(Some((Value::Object(ObjType::Text), automerge::ObjId::Id(c, a, _)))) => {
                Some(OpId(c, a))
            }
            _ => None,
        };
    }

    /// Follows a change that entered the document (accepted or unchecked).
    pub(crate) fn follow(&mut self, change: &Change) {
        let start = change.start_op().get();
        let ops = change.decode().operations;
        if let Some(Ok(k)) = kind_written(&ops, start, change.actor_id()) {
            self.kind.get_or_insert(k);
        }
        for (i, op) in ops.into_iter().enumerate() {
            let id = OpId(start + i as u64, change.actor_id().clone());
            self.follow_op(&id, &op.obj, &op.key, &op.action);
        }
    }

    fn follow_op(&mut self, id: &OpId, obj: &ObjectId, key: &Key, action: &OpType) {
        let map_key = match key {
            Key::Map(k) => Some(k.to_string()),
            Key::Seq(_) => None,
        };
        if let (ObjectId::Root, Some("kind"), OpType::Make(ObjType::Text)) =
            (obj, map_key.as_deref(), action)
        {
            self.kind_text = Some(id.clone());
        }
        if let OpType::Make(_) = action {
            self.objects.insert(
                id.clone(),
                ObjInfo {
                    parent: obj.clone(),
                    key: map_key.clone(),
                },
            );
        }
        if let (ObjectId::Root, Some(k)) = (obj, &map_key) {
            let value = match action {
                OpType::Put(v) => Some(v.clone()),
                _ => None,
            };
            if k == "kind" {
                if let Some(ScalarValue::Str(s)) = &value {
                    self.kind.get_or_insert_with(|| s.to_string());
                }
            }
            self.root.insert(k.clone(), (id.clone(), value));
        }
    }

    /// Where object `id` sits, root first; `None` if neither the gate nor the document knows it.
    fn place(&mut self, doc: &Automerge, id: &OpId) -> Option<Vec<Seg>> {
        let mut segs = Vec::new();
        let mut at = id.clone();
        loop {
            if let Some(info) = self.objects.get(&at) {
                segs.push(Seg {
                    key: info.key.clone(),
                    id: at.clone(),
                });
                match &info.parent {
                    ObjectId::Root => break,
                    ObjectId::Id(p) => at = p.clone(),
                }
                if segs.len() > 64 {
                    return None;
                }
                continue;
            }
            if let Some(known) = self.placed.get(&at) {
                segs.extend(known.iter().rev().cloned());
                break;
            }
            // Older: the document knows where it is.
            let (exid, _) = doc
                .import(&format!("{}@{}", at.0, at.1.to_hex_string()))
                .ok()?;
            let path = doc.parents(&exid).ok()?.path();
            let mut ids: Vec<OpId> = path
                .iter()
                .skip(1)
                .filter_map(|(o, _)| match o {
                    automerge::ObjId::Id(c, a, _) => Some(OpId(*c, a.clone())),
                    automerge::ObjId::Root => None,
                })
                .collect();
            ids.push(at.clone());
            let found: Vec<Seg> = path
                .iter()
                .zip(ids)
                .map(|((_, prop), id)| Seg {
                    key: match prop {
                        Prop::Map(k) => Some(k.to_string()),
                        Prop::Seq(_) => None,
                    },
                    id,
                })
                .collect();
            segs.extend(found.iter().rev().cloned());
            if self.placed.len() >= MAX_PLACED {
                self.placed.clear();
            }
            self.placed.insert(at.clone(), found);
            break;
        }
        segs.reverse();
        Some(segs)
    }

    /// The current value of a root field, and the operation that wrote it.
    fn root_value(&self, doc: &Automerge, field: &str) -> Option<(OpId, Option<ScalarValue>)> {
        if let Some(v) = self.root.get(field) {
            return Some(v.clone());
        }
        let (value, exid) = doc.get(ROOT, field).ok()??;
        let op = match &exid {
            automerge::ObjId::Id(c, a, _) => OpId(*c, a.clone()),
            automerge::ObjId::Root => return None,
        };
        let scalar = match value {
            Value::Scalar(s) => Some(s.into_owned()),
            // What a JavaScript client makes of a string.
            Value::Object(ObjType::Text) => {
                doc.text(&exid).ok().map(|t| ScalarValue::Str(t.into()))
            }
            Value::Object(_) => None,
        };
        Some((op, scalar))
    }

    fn root_string(&self, doc: &Automerge, field: &str) -> Option<String> {
        match self.root_value(doc, field)?.1? {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }
}

/// The context of one change's check.
struct Ctx<'a> {
    doc: &'a Automerge,
    writer: Writer<'a>,
    /// Objects this change creates.
    created: HashSet<OpId>,
    /// Records this change creates whose author field must be the writer: (record, field).
    authors_due: Vec<(OpId, String)>,
    /// Author fields this change writes as text: the characters so far, and what to call them.
    author_texts: HashMap<OpId, (String, String)>,
}

/// Checks `change` by `writer` against the document's kind, then follows it. `Err`: a sentence
/// naming the rule it breaks.
pub(crate) fn check(
    kinds: &Kinds,
    st: &mut DocRules,
    doc: &Automerge,
    change: &Change,
    writer: Writer<'_>,
) -> Result<(), String> {
    let ops = change.decode().operations;
    let start = change.start_op().get();
    let actor = change.actor_id().clone();
    // The kind this change is judged by: the document's, or the one it sets.
    let mut kind = st.kind.clone();
    if let Some(written) = kind_written(&ops, start, &actor) {
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
    if let Some(spec) = spec {
        let mut ctx = Ctx {
            doc,
            writer,
            created: HashSet::default(),
            authors_due: Vec::new(),
            author_texts: HashMap::default(),
        };
        let creating_doc = st.kind.is_none();
        for (i, op) in ops.iter().enumerate() {
            let id = OpId(start + i as u64, actor.clone());
            judge(&mut ctx, st, spec, creating_doc, &id, op)?;
            st.follow_op(&id, &op.obj, &op.key, &op.action);
            if matches!(op.action, OpType::Make(_)) {
                ctx.created.insert(id);
            }
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
    } else {
        for (i, op) in ops.iter().enumerate() {
            let id = OpId(start + i as u64, actor.clone());
            st.follow_op(&id, &op.obj, &op.key, &op.action);
        }
    }
    if st.kind.is_none() {
        st.kind = kind;
    }
    Ok(())
}

/// Longest kind name a change may write.
const MAX_KIND_LEN: usize = 64;

/// The kind `ops` write at the root: `None` when they don't touch it, else the string they
/// set (a string scalar, or a text object created and filled in the same change, as JavaScript
/// writes strings) or why it is not one.
fn kind_written(
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

fn root_field(
    ctx: &mut Ctx<'_>,
    st: &DocRules,
    spec: &KindSpec,
    creating_doc: bool,
    name: &str,
    op: &automerge::legacy::Op,
) -> Result<(), String> {
    match name {
        "kind" => return Ok(()),
        "schema_version" => {
            return match &op.action {
                OpType::Put(ScalarValue::Int(_) | ScalarValue::Uint(_)) => Ok(()),
                _ => Err("schema_version must be a number".into()),
            }
        }
        _ => {}
    }
    if let Some(col) = spec.collections.get(name) {
        let exists = st.root_value(ctx.doc, name).is_some()
            || ctx.doc.get(ROOT, name).ok().flatten().is_some();
        return match &op.action {
            OpType::Make(ObjType::Map | ObjType::Table) if !exists || creating_doc => {
                let _ = col;
                Ok(())
            }
            _ => Err(format!(
                "{name} is a collection: it is created once and never replaced"
            )),
        };
    }
    let Some(f) = spec.fields.get(name) else {
        return Err(format!("{name} is not a field of a {}", spec.name));
    };
    let current = st.root_value(ctx.doc, name);
    let first_write = current.is_none() || creating_doc;
    if f.fixed && !first_write {
        return Err(format!("{name} is fixed once the {} is created", spec.name));
    }
    type_check(f, name, &op.action)?;
    if first_write {
        if let (Some(init), OpType::Put(ScalarValue::Str(v))) = (&f.initial, &op.action) {
            if v.as_str() != init {
                return Err(format!("{name} starts as {init:?}"));
            }
        }
        return Ok(());
    }
    if !f.transitions.is_empty() {
        let from = current.as_ref().and_then(|(_, v)| match v {
            Some(ScalarValue::Str(s)) => Some(s.to_string()),
            _ => None,
        });
        let to = match &op.action {
            OpType::Put(ScalarValue::Str(s)) => s.to_string(),
            _ => return Err(format!("{name} changes only through its transitions")),
        };
        // The write must replace the value it moves from, not race another write.
        if let Some((cur, _)) = &current {
            if !op.pred.iter().any(|p| p == cur) {
                return Err(format!("{name} was changed concurrently; write it again"));
            }
        }
        let from = from.unwrap_or_default();
        let t = f
            .transitions
            .iter()
            .find(|t| t.from.contains(&from) && t.to == to)
            .ok_or_else(|| format!("{name} may not go from {from:?} to {to:?}"))?;
        if !allowed(ctx, st, &t.by, None) {
            return Err(format!(
                "{name} may go from {from:?} to {to:?} only by {}",
                names(&t.by)
            ));
        }
        return Ok(());
    }
    let clearing = matches!(op.action, OpType::Delete);
    if allowed(ctx, st, &f.by, None) || (clearing && allowed(ctx, st, &f.clear, None)) {
        Ok(())
    } else {
        Err(format!("{name} may be written only by {}", names(&f.by)))
    }
}

/// An operation inside the object of field `name` (text characters, list items, a map's keys).
fn inside_field(
    ctx: &mut Ctx<'_>,
    st: &DocRules,
    f: &FieldSpec,
    name: &str,
    created_here: bool,
    author: Option<&str>,
    op: &automerge::legacy::Op,
) -> Result<(), String> {
    if created_here {
        return Ok(());
    }
    if f.fixed {
        return Err(format!("{name} is fixed once created"));
    }
    let clearing = matches!(op.action, OpType::Delete);
    if allowed(ctx, st, &f.by, author) || (clearing && allowed(ctx, st, &f.clear, author)) {
        Ok(())
    } else {
        Err(format!("{name} may be written only by {}", names(&f.by)))
    }
}

/// An operation at `rest` inside collection `col` (named `name`): `rest[0]` is the entry.
fn collection(
    ctx: &mut Ctx<'_>,
    st: &DocRules,
    col: &Collection,
    name: &str,
    rest: &[Seg],
    in_object: bool,
    op: &automerge::legacy::Op,
) -> Result<(), String> {
    let Some(entry_seg) = rest.first() else {
        return Err(format!("{name} is a collection: it is never written whole"));
    };
    let Some(key) = &entry_seg.key else {
        return Err(format!("{name} is a map of entries"));
    };
    let entry_created_here = ctx.created.contains(&entry_seg.id);
    let at_entry = rest.len() == 1 && !in_object;
    if at_entry || entry_created_here {
        check_key(ctx, col.key, name, key)?;
    }
    match &col.entry {
        Entry::Value(f) => {
            if rest.len() > 1 || in_object {
                // Inside a value written as an object (text): a write of the value.
                if col.key == KeyRule::Writer && key != ctx.writer.user {
                    return Err(format!("{name}: each member writes only their own entry"));
                }
                return Ok(());
            }
            if !matches!(op.action, OpType::Delete) {
                type_check(f, name, &op.action)?;
            }
            if col.key == KeyRule::Writer || allowed(ctx, st, &f.by, None) {
                Ok(())
            } else {
                Err(format!("{name} may be written only by {}", names(&f.by)))
            }
        }
        Entry::Nested(inner) => {
            if at_entry {
                return match &op.action {
                    OpType::Make(ObjType::Map | ObjType::Table) | OpType::Delete => Ok(()),
                    _ => Err(format!("{name}: each entry is a map")),
                };
            }
            collection(ctx, st, inner, name, &rest[1..], in_object, op)
        }
        Entry::Record {
            fields,
            author,
            create,
            delete,
        } => {
            if at_entry {
                return match &op.action {
                    OpType::Make(ObjType::Map | ObjType::Table) => {
                        if !allowed(ctx, st, create, None) {
                            return Err(format!(
                                "{name}: records are created only by {}",
                                names(create)
                            ));
                        }
                        if let Some(a) = author {
                            ctx.authors_due.push((entry_seg.id.clone(), a.clone()));
                        }
                        Ok(())
                    }
                    OpType::Delete => {
                        let by = record_author(st, &entry_seg.id).or_else(|| {
                            author
                                .as_deref()
                                .and_then(|a| field_of(ctx.doc, &entry_seg.id, a))
                        });
                        if allowed(ctx, st, delete, by.as_deref()) {
                            Ok(())
                        } else {
                            Err(format!(
                                "{name}: a record is deleted only by {}",
                                names(delete)
                            ))
                        }
                    }
                    _ => Err(format!("{name}: each record is a map")),
                };
            }
            let Some(field) = rest.get(1).and_then(|s| s.key.clone()) else {
                return Err(format!("{name}: a record is a map of fields"));
            };
            let Some(f) = fields.get(&field) else {
                return Err(format!("{field} is not a field of {name}"));
            };
            let rec_author = record_author(st, &entry_seg.id).or_else(|| {
                author
                    .as_deref()
                    .and_then(|a| field_of(ctx.doc, &entry_seg.id, a))
            });
            if rest.len() == 2 && !in_object {
                // The field itself.
                if !matches!(op.action, OpType::Delete) {
                    type_check(f, &field, &op.action)?;
                }
                if author.as_deref() == Some(field.as_str()) {
                    // Written as text (what JavaScript makes of a string), its characters
                    // follow in this change: they must spell the writer, checked at its end.
                    if entry_created_here && matches!(op.action, OpType::Make(ObjType::Text)) {
                        ctx.author_texts.insert(
                            id_of_slot(rest),
                            (String::new(), format!("{field} of a record in {name}")),
                        );
                        return Ok(());
                    }
                    let ok = entry_created_here
                        && matches!(&op.action, OpType::Put(ScalarValue::Str(s)) if s.as_str() == ctx.writer.user);
                    return if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "{field} of a record in {name} is its writer ({}), set when it is created",
                            ctx.writer.user
                        ))
                    };
                }
                if entry_created_here {
                    return Ok(());
                }
                if f.fixed && !matches!(op.action, OpType::Delete) {
                    return Err(format!(
                        "{field} is fixed once a record of {name} is created"
                    ));
                }
                if f.one_way {
                    if !matches!(op.action, OpType::Put(ScalarValue::Boolean(true))) {
                        return Err(format!("{field} only ever turns true"));
                    }
                    return if allowed(ctx, st, &f.by, rec_author.as_deref()) {
                        Ok(())
                    } else {
                        Err(format!("{field} may be set only by {}", names(&f.by)))
                    };
                }
                let clearing = matches!(op.action, OpType::Delete);
                return if allowed(ctx, st, &f.by, rec_author.as_deref())
                    || (clearing && allowed(ctx, st, &f.clear, rec_author.as_deref()))
                {
                    Ok(())
                } else {
                    Err(format!("{field} may be written only by {}", names(&f.by)))
                };
            }
            // Inside the field's object.
            if let Some(field_obj) = rest.get(1) {
                if let Some((text, _)) = ctx.author_texts.get_mut(&field_obj.id) {
                    // The characters of an author field written as text.
                    match &op.action {
                        OpType::Put(ScalarValue::Str(c)) if op.insert => text.push_str(c),
                        _ => {
                            return Err(format!(
                                "{field} is written once, when its record is created"
                            ))
                        }
                    }
                    return Ok(());
                }
            }
            let created_here =
                entry_created_here || rest.get(1).is_some_and(|s| ctx.created.contains(&s.id));
            inside_field(ctx, st, f, &field, created_here, rec_author.as_deref(), op)
        }
    }
}

/// The string in field `field` of the object `id` has in `doc`: a record's author field, for a
/// record whose creating actor has no binding (written before bindings existed, or by an actor
/// of this device's user that the gate never saw).
fn field_of(doc: &Automerge, id: &OpId, field: &str) -> Option<String> {
    let (exid, _) = doc
        .import(&format!("{}@{}", id.0, id.1.to_hex_string()))
        .ok()?;
    match doc.get(&exid, field).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        (Value::Object(ObjType::Text), t) => doc.text(&t).ok(),
        _ => None,
    }
}

/// The user who created record `id` (the user its creating actor writes for).
fn record_author(st: &DocRules, id: &OpId) -> Option<String> {
    st.bindings.get(&id.1).cloned()
}

fn check_key(ctx: &Ctx<'_>, rule: KeyRule, name: &str, key: &str) -> Result<(), String> {
    let ok = match rule {
        KeyRule::Any => !key.is_empty() && key.len() <= 256,
        KeyRule::Id => {
            !key.is_empty()
                && key.len() <= 64
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }
        KeyRule::MessageKey => key.parse::<MessageKey>().is_ok(),
        KeyRule::Writer => key == ctx.writer.user,
    };
    if ok {
        Ok(())
    } else {
        Err(match rule {
            KeyRule::Writer => format!("{name}: each member writes only their own entry"),
            KeyRule::MessageKey => format!("{name}: {key:?} is not a message key"),
            _ => format!("{name}: {key:?} is not a valid key"),
        })
    }
}

fn type_check(f: &FieldSpec, name: &str, action: &OpType) -> Result<(), String> {
    let ok = match (&f.ty, action) {
        (_, OpType::Delete) => true,
        (FieldType::Any, _) => true,
        (FieldType::String | FieldType::User, OpType::Put(ScalarValue::Str(_))) => true,
        // What a JavaScript client makes of a string.
        (FieldType::String | FieldType::Text | FieldType::User, OpType::Make(ObjType::Text)) => {
            true
        }
        (FieldType::Text, OpType::Put(ScalarValue::Str(_))) => true,
        (FieldType::Int, OpType::Put(ScalarValue::Int(_) | ScalarValue::Uint(_))) => true,
        (FieldType::Bool, OpType::Put(ScalarValue::Boolean(_))) => true,
        (FieldType::Enum(values), OpType::Put(ScalarValue::Str(s))) => {
            values.iter().any(|v| v == s.as_str())
        }
        (FieldType::Map, OpType::Make(ObjType::Map | ObjType::Table)) => true,
        (FieldType::List, OpType::Make(ObjType::List)) => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{name} must be {}", describe(&f.ty)))
    }
}

fn describe(ty: &FieldType) -> String {
    match ty {
        FieldType::String => "a string".into(),
        FieldType::Text => "text".into(),
        FieldType::Int => "an integer".into(),
        FieldType::Bool => "true or false".into(),
        FieldType::User => "a user id".into(),
        FieldType::Enum(v) => format!("one of {}", v.join(", ")),
        FieldType::Map => "a map".into(),
        FieldType::List => "a list".into(),
        FieldType::Any => "anything".into(),
    }
}

fn allowed(ctx: &Ctx<'_>, st: &DocRules, who: &[Who], author: Option<&str>) -> bool {
    who.iter().any(|w| match w {
        Who::Member => true,
        Who::Admin => ctx.writer.admin,
        Who::Owner => st.owner.as_deref() == Some(ctx.writer.user),
        Who::Author => author == Some(ctx.writer.user),
        Who::Field(f) => st.root_string(ctx.doc, f).as_deref() == Some(ctx.writer.user),
    })
}

fn names(who: &[Who]) -> String {
    let v: Vec<String> = who
        .iter()
        .map(|w| match w {
            Who::Owner => "the owner".to_string(),
            Who::Member => "a member".to_string(),
            Who::Admin => "an admin".to_string(),
            Who::Author => "its author".to_string(),
            Who::Field(f) => format!("the {f}"),
        })
        .collect();
    v.join(" or ")
}

/// The id of the object a slot creates: the operation writing it (the last segment's id).
fn id_of_slot(rest: &[Seg]) -> OpId {
    rest.last()
        .map_or(OpId(0, ActorId::from(&[][..])), |s| s.id.clone())
}
