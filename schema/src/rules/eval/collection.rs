//! Collections: entries, records and their fields.

use std::collections::BTreeMap;

use automerge::legacy::{OpId, OpType};
use automerge::{ActorId, Automerge, ObjType, ReadDoc, ScalarValue, Value};

use super::allow::{allowed, names, type_check};
use super::root::inside_field;
use super::state::{Ctx, DocRules, Seg};
use crate::rules::kinds::{Collection, Entry, FieldSpec, KeyRule, Who};
use crate::MessageKey;

/// An operation at `rest` inside collection `col` (named `name`): `rest[0]` is the entry.
pub(super) fn collection(
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
            let at = At {
                name,
                key,
                entry: &entry_seg.id,
                created_here: entry_created_here,
                rest,
                in_object,
                op,
            };
            if at_entry {
                return record_made_or_deleted(ctx, st, create, delete, author, &at);
            }
            record_field(ctx, st, fields, author, &at)
        }
    }
}

/// An operation inside a record of a collection.
struct At<'a> {
    /// The collection's name.
    name: &'a str,
    /// The record's key in the collection.
    key: &'a str,
    /// The record.
    entry: &'a OpId,
    /// Whether this change creates the record.
    created_here: bool,
    /// The place below the collection: `rest[0]` is the record.
    rest: &'a [Seg],
    in_object: bool,
    op: &'a automerge::legacy::Op,
}

/// The record itself created or deleted (its key in the collection written).
fn record_made_or_deleted(
    ctx: &mut Ctx<'_>,
    st: &DocRules,
    create: &[Who],
    delete: &[Who],
    author: &Option<String>,
    at: &At<'_>,
) -> Result<(), String> {
    let name = at.name;
    match &at.op.action {
        OpType::Make(ObjType::Map | ObjType::Table) => {
            if !allowed(ctx, st, create, None) {
                return Err(format!(
                    "{name}: records are created only by {}",
                    names(create)
                ));
            }
            if let Some(a) = author {
                ctx.authors_due.push((at.entry.clone(), a.clone()));
            }
            if ctx.noting && name == "messages" {
                ctx.messages_made
                    .push((at.key.to_string(), at.entry.clone()));
            }
            Ok(())
        }
        OpType::Delete => {
            let by = record_author(st, at.entry).or_else(|| {
                author
                    .as_deref()
                    .and_then(|a| field_of(ctx.doc, at.entry, a))
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
    }
}

/// A field of a record written, or an operation inside that field's object.
fn record_field(
    ctx: &mut Ctx<'_>,
    st: &DocRules,
    fields: &BTreeMap<String, FieldSpec>,
    author: &Option<String>,
    at: &At<'_>,
) -> Result<(), String> {
    let (name, rest, op) = (at.name, at.rest, at.op);
    let Some(field) = rest.get(1).and_then(|s| s.key.clone()) else {
        return Err(format!("{name}: a record is a map of fields"));
    };
    let Some(f) = fields.get(&field) else {
        return Err(format!("{field} is not a field of {name}"));
    };
    let rec_author = record_author(st, at.entry).or_else(|| {
        author
            .as_deref()
            .and_then(|a| field_of(ctx.doc, at.entry, a))
    });
    if rest.len() == 2 && !at.in_object {
        // The field itself.
        if !matches!(op.action, OpType::Delete) {
            type_check(f, &field, &op.action)?;
        }
        if author.as_deref() == Some(field.as_str()) {
            return author_field(ctx, &field, at);
        }
        return field_written(ctx, st, f, &field, rec_author.as_deref(), at);
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
    let created_here = at.created_here || rest.get(1).is_some_and(|s| ctx.created.contains(&s.id));
    inside_field(ctx, st, f, &field, created_here, rec_author.as_deref(), op)
}

/// The record's author field itself written: only as the record is created, naming its writer.
fn author_field(ctx: &mut Ctx<'_>, field: &str, at: &At<'_>) -> Result<(), String> {
    let (name, op) = (at.name, at.op);
    // Written as text (what JavaScript makes of a string), its characters
    // follow in this change: they must spell the writer, checked at its end.
    if at.created_here && matches!(op.action, OpType::Make(ObjType::Text)) {
        ctx.author_texts.insert(
            id_of_slot(at.rest),
            (String::new(), format!("{field} of a record in {name}")),
        );
        return Ok(());
    }
    let ok = at.created_here
        && matches!(&op.action, OpType::Put(ScalarValue::Str(s)) if s.as_str() == ctx.writer.user);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} of a record in {name} is its writer ({}), set when it is created",
            ctx.writer.user
        ))
    }
}

/// A record's field (not its author field) itself written, its type already checked.
fn field_written(
    ctx: &Ctx<'_>,
    st: &DocRules,
    f: &FieldSpec,
    field: &str,
    rec_author: Option<&str>,
    at: &At<'_>,
) -> Result<(), String> {
    let (name, op) = (at.name, at.op);
    if at.created_here {
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
        return if allowed(ctx, st, &f.by, rec_author) {
            Ok(())
        } else {
            Err(format!("{field} may be set only by {}", names(&f.by)))
        };
    }
    let clearing = matches!(op.action, OpType::Delete);
    if allowed(ctx, st, &f.by, rec_author) || (clearing && allowed(ctx, st, &f.clear, rec_author)) {
        Ok(())
    } else {
        Err(format!("{field} may be written only by {}", names(&f.by)))
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

/// The id of the object a slot creates: the operation writing it (the last segment's id).
fn id_of_slot(rest: &[Seg]) -> OpId {
    rest.last()
        .map_or(OpId(0, ActorId::from(&[][..])), |s| s.id.clone())
}
