//! Root fields, and operations inside a root field's object.

use automerge::legacy::OpType;
use automerge::{ObjType, ReadDoc, ScalarValue, ROOT};

use super::allow::{allowed, names, type_check};
use super::state::{Ctx, DocRules};
use crate::rules::kinds::{FieldSpec, KindSpec};

pub(super) fn root_field(
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
pub(super) fn inside_field(
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
