//! What the gate keeps per document, and where each object of it sits.

use weft_core::hash::{HashMap, HashSet};

use automerge::legacy::{Key, ObjectId, OpId, OpType};
use automerge::{ActorId, Automerge, Change, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};

use super::kind::kind_written;

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
    pub(super) kind_text: Option<OpId>,
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
pub(super) struct Seg {
    pub(super) key: Option<String>,
    pub(super) id: OpId,
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

    /// How many objects and root fields it follows since the document was last materialized.
    pub(crate) fn followed(&self) -> usize {
        self.objects.len() + self.root.len()
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

    pub(super) fn follow_op(&mut self, id: &OpId, obj: &ObjectId, key: &Key, action: &OpType) {
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
    pub(super) fn place(&mut self, doc: &Automerge, id: &OpId) -> Option<Vec<Seg>> {
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
    pub(super) fn root_value(
        &self,
        doc: &Automerge,
        field: &str,
    ) -> Option<(OpId, Option<ScalarValue>)> {
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

    pub(super) fn root_string(&self, doc: &Automerge, field: &str) -> Option<String> {
        match self.root_value(doc, field)?.1? {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        }
    }
}

/// The context of one change's check.
pub(super) struct Ctx<'a> {
    pub(super) doc: &'a Automerge,
    pub(super) writer: Writer<'a>,
    /// Objects this change creates.
    pub(super) created: HashSet<OpId>,
    /// Records this change creates whose author field must be the writer: (record, field).
    pub(super) authors_due: Vec<(OpId, String)>,
    /// Author fields this change writes as text: the characters so far, and what to call them.
    pub(super) author_texts: HashMap<OpId, (String, String)>,
    /// Records this change creates in a collection named `messages`: (key, record), when
    /// `noting`.
    pub(super) messages_made: Vec<(String, OpId)>,
    pub(super) noting: bool,
}
