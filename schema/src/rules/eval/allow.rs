//! Type checks, and who is allowed.

use automerge::legacy::OpType;
use automerge::{ObjType, ScalarValue};

use super::state::{Ctx, DocRules};
use crate::rules::kinds::{FieldSpec, FieldType, Who};

pub(super) fn type_check(f: &FieldSpec, name: &str, action: &OpType) -> Result<(), String> {
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

pub(super) fn allowed(ctx: &Ctx<'_>, st: &DocRules, who: &[Who], author: Option<&str>) -> bool {
    who.iter().any(|w| match w {
        Who::Member => true,
        Who::Admin => ctx.writer.admin,
        Who::Owner => st.owner.as_deref() == Some(ctx.writer.user),
        Who::Author => author == Some(ctx.writer.user),
        Who::Field(f) => st.root_string(ctx.doc, f).as_deref() == Some(ctx.writer.user),
    })
}

pub(super) fn names(who: &[Who]) -> String {
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
