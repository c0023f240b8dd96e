//! Documents of declared kinds as records: creating one with its fields, setting a field from a
//! command-line value, reading the fields as JSON, and checking a write against the rules
//! before making it (what `weft doc new --kind K --set F=V`, `weft rec set` and `weft rec show`
//! do).

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ScalarValue, Value, ROOT};
use serde_json::{json, Map};

use super::eval::{self, DocRules, Writer};
use super::kinds::{Entry, FieldSpec, FieldType, KindSpec, Kinds};

/// Why a record write was refused before it was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The kind is not known to this device.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The kind has no such field.
    #[error("{kind} has no field {field}")]
    UnknownField {
        /// The kind.
        kind: String,
        /// The field.
        field: String,
    },
    /// The value does not fit the field's type.
    #[error("{field} must be {expected}, not {value:?}")]
    BadValue {
        /// The field.
        field: String,
        /// What it takes.
        expected: String,
        /// What was given.
        value: String,
    },
    /// The document is not of a declared kind.
    #[error("the document is not of a declared kind")]
    NotARecord,
    /// A write rule forbids it.
    #[error("{0}")]
    Forbidden(String),
}

/// `value` (as typed on a command line) as what field `field` of `spec` holds.
pub fn parse_value(spec: &KindSpec, field: &str, value: &str) -> Result<ScalarValue, RecordError> {
    let f = spec
        .fields
        .get(field)
        .ok_or_else(|| RecordError::UnknownField {
            kind: spec.name.clone(),
            field: field.to_string(),
        })?;
    let bad = |expected: &str| RecordError::BadValue {
        field: field.to_string(),
        expected: expected.to_string(),
        value: value.to_string(),
    };
    Ok(match &f.ty {
        FieldType::Int => ScalarValue::Int(value.parse().map_err(|_| bad("an integer"))?),
        FieldType::Bool => ScalarValue::Boolean(value.parse().map_err(|_| bad("true or false"))?),
        FieldType::Enum(values) => {
            if !values.iter().any(|v| v == value) {
                return Err(bad(&format!("one of {}", values.join(", "))));
            }
            ScalarValue::Str(value.into())
        }
        FieldType::Map | FieldType::List => return Err(bad("set through its own commands")),
        _ => ScalarValue::Str(value.into()),
    })
}

/// Writes a new document of kind `spec` with `sets` (an enum field not given takes its initial
/// value).
pub fn create(
    doc: &mut Automerge,
    spec: &KindSpec,
    sets: &[(String, ScalarValue)],
) -> Result<(), RecordError> {
    let mut fields: BTreeMap<&str, ScalarValue> = BTreeMap::new();
    for (name, f) in &spec.fields {
        if let Some(init) = &f.initial {
            fields.insert(name, ScalarValue::Str(init.as_str().into()));
        }
    }
    for (name, v) in sets {
        fields.insert(name, v.clone());
    }
    let mut tx = doc.transaction();
    let r: Result<(), automerge::AutomergeError> = (|| {
        tx.put(ROOT, "kind", spec.name.as_str())?;
        for (name, v) in &fields {
            tx.put(ROOT, *name, v.clone())?;
        }
        for name in spec.collections.keys() {
            tx.put_object(ROOT, name.as_str(), ObjType::Map)?;
        }
        Ok(())
    })();
    match r {
        Ok(()) => {
            tx.commit();
            Ok(())
        }
        Err(e) => {
            tx.rollback();
            Err(RecordError::Forbidden(e.to_string()))
        }
    }
}

/// Sets field `field` of a record document.
pub fn set(doc: &mut Automerge, field: &str, value: ScalarValue) -> Result<(), RecordError> {
    let mut tx = doc.transaction();
    match tx.put(ROOT, field, value) {
        Ok(()) => {
            tx.commit();
            Ok(())
        }
        Err(e) => {
            tx.rollback();
            Err(RecordError::Forbidden(e.to_string()))
        }
    }
}

/// The declared kind of `doc`, if it is one.
pub fn kind_of<'k>(kinds: &'k Kinds, doc: &Automerge) -> Option<&'k KindSpec> {
    let name = match doc.get(ROOT, "kind").ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => s.to_string(),
            _ => return None,
        },
        (Value::Object(ObjType::Text), id) => doc.text(&id).ok()?,
        _ => return None,
    };
    kinds.is_declared(&name).then(|| kinds.get(&name)).flatten()
}

/// The declared fields of a record document as JSON: its root fields, and each collection as
/// an object of its records (their declared fields). `None` when it is not of a declared kind.
pub fn to_json(kinds: &Kinds, doc: &Automerge) -> Option<serde_json::Value> {
    let spec = kind_of(kinds, doc)?;
    let mut out = fields_json(doc, &automerge::ROOT, &spec.fields);
    for (name, col) in &spec.collections {
        let Ok(Some((Value::Object(_), id))) = doc.get(ROOT, name.as_str()) else {
            continue;
        };
        let mut records = Map::new();
        for key in doc.keys(&id) {
            let Ok(Some((Value::Object(_), rid))) = doc.get(&id, key.as_str()) else {
                continue;
            };
            if let Entry::Record { fields, .. } = &col.entry {
                records.insert(
                    key,
                    serde_json::Value::Object(fields_json(doc, &rid, fields)),
                );
            }
        }
        out.insert(name.clone(), serde_json::Value::Object(records));
    }
    Some(json!({ "kind": spec.name, "fields": out }))
}

fn fields_json(
    doc: &Automerge,
    obj: &automerge::ObjId,
    fields: &BTreeMap<String, FieldSpec>,
) -> Map<String, serde_json::Value> {
    let mut out = Map::new();
    for name in fields.keys() {
        let v = match doc.get(obj, name.as_str()) {
            Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                ScalarValue::Str(s) => json!(s.as_str()),
                ScalarValue::Int(i) => json!(i),
                ScalarValue::Uint(u) => json!(u),
                ScalarValue::F64(f) => json!(f),
                ScalarValue::Boolean(b) => json!(b),
                _ => continue,
            },
            Ok(Some((Value::Object(ObjType::Text), id))) => match doc.text(&id) {
                Ok(t) => json!(t),
                Err(_) => continue,
            },
            _ => continue,
        };
        out.insert(name.clone(), v);
    }
    out
}

/// Checks what `write` would change in `doc` against the kinds' rules, as `user` (`owner`: the
/// document's owner, when known), without changing `doc`: the refusal names the rule.
pub fn check_write(
    kinds: &Kinds,
    doc: &Automerge,
    owner: Option<&str>,
    user: &str,
    write: impl FnOnce(&mut Automerge) -> Result<(), RecordError>,
) -> Result<(), RecordError> {
    let mut fork = doc.fork();
    let before = fork.get_heads();
    write(&mut fork)?;
    let mut st = DocRules::default();
    st.owner = owner.map(str::to_string);
    st.bindings
        .insert(fork.get_actor().clone(), user.to_string());
    st.materialized(doc);
    for change in fork.get_changes(&before) {
        eval::check(
            kinds,
            &mut st,
            doc,
            &change,
            None,
            Writer { user, admin: false },
            None,
        )
        .map_err(RecordError::Forbidden)?;
    }
    Ok(())
}
