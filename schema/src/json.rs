//! The two JSON views, [`to_json`] and [`messages_json`], and [`conflicts`].

use automerge::{Automerge, ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::error::{At, ReadError};
use crate::message::read_all;
use crate::partial::{Partial, Skips};
use crate::time::format_rfc3339_ms;
use crate::value::describe;
use crate::Message;

/// The deepest nesting of objects [`to_json`] renders.
pub const MAX_JSON_DEPTH: usize = 100;

/// The whole document as JSON.
///
/// Every field, known or not, typed or untyped document alike (`weft doc show --json`, the
/// checkpoint's `doc` column). Maps become objects (keys in Automerge's sorted order), lists
/// arrays, and for each key the winning value of a conflict. Scalars:
///
/// | Automerge | JSON |
/// |---|---|
/// | Text, string | string |
/// | int, uint | number (exact; readers in JavaScript lose precision past 2^53) |
/// | f64 | number; NaN and infinities as `null` |
/// | counter | number: its current value |
/// | timestamp | string, RFC 3339 UTC with milliseconds (`2025-06-01T12:00:00.000Z`) for years 0000-9999, else the number of milliseconds |
/// | bytes | string, standard base64 with padding |
/// | boolean, null | `true` / `false`, `null` |
/// | a type from a future Automerge | `null` |
///
/// Nesting deeper than [`MAX_JSON_DEPTH`] is [`ReadError::TooDeep`] rather than a stack
/// overflow. Deleted messages keep whatever their stored body holds (empty unless a concurrent
/// edit left characters in it); the typed view shows them empty.
///
/// Reading never writes.
pub fn to_json(doc: &Automerge) -> Result<Json, ReadError> {
    obj_json(doc, &ROOT, ObjType::Map, At::Root, 0)
}

fn obj_json(
    doc: &Automerge,
    obj: &ObjId,
    ty: ObjType,
    at: At<'_>,
    depth: usize,
) -> Result<Json, ReadError> {
    if depth >= MAX_JSON_DEPTH {
        return Err(ReadError::TooDeep {
            path: at.to_path(),
            max: MAX_JSON_DEPTH,
        });
    }
    Ok(match ty {
        ObjType::Text => Json::String(doc.text(obj)?),
        ObjType::Map | ObjType::Table => {
            let mut out = Map::new();
            for item in doc.map_range(obj, ..) {
                let v = match item.value {
                    automerge::ValueRef::Object(t) => {
                        obj_json(doc, &item.id(), t, at.key(&item.key), depth + 1)?
                    }
                    s @ automerge::ValueRef::Scalar(_) => value_ref_json(s),
                };
                out.insert(item.key.to_string(), v);
            }
            Json::Object(out)
        }
        ObjType::List => {
            let mut out = Vec::new();
            for item in doc.list_range(obj, ..) {
                out.push(match item.value {
                    automerge::ValueRef::Object(t) => {
                        obj_json(doc, &item.id(), t, at.index(item.index), depth + 1)?
                    }
                    s @ automerge::ValueRef::Scalar(_) => value_ref_json(s),
                });
            }
            Json::Array(out)
        }
    })
}

fn value_json(doc: &Automerge, v: &Value<'_>, id: &ObjId, at: At<'_>) -> Result<Json, ReadError> {
    match v {
        Value::Object(t) => obj_json(doc, id, *t, at, 0),
        Value::Scalar(s) => Ok(scalar_json(s)),
    }
}

fn value_ref_json(v: automerge::ValueRef<'_>) -> Json {
    match Value::from(v) {
        Value::Scalar(s) => scalar_json(&s),
        Value::Object(_) => Json::Null,
    }
}

fn scalar_json(s: &ScalarValue) -> Json {
    match s {
        ScalarValue::Str(s) => Json::String(s.to_string()),
        ScalarValue::Int(i) => Json::from(*i),
        ScalarValue::Uint(u) => Json::from(*u),
        ScalarValue::F64(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        ScalarValue::Counter(c) => Json::from(i64::from(c)),
        ScalarValue::Timestamp(ms) => format_rfc3339_ms(*ms).map_or(Json::from(*ms), Json::String),
        ScalarValue::Boolean(b) => Json::Bool(*b),
        ScalarValue::Bytes(b) => Json::String(base64(b)),
        ScalarValue::Null | ScalarValue::Unknown { .. } => Json::Null,
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One element of [`messages_json`]: exactly the fields the contract lists, in its order.
#[derive(Serialize)]
struct MessageJson<'a> {
    id: &'a str,
    author: &'a str,
    body: &'a str,
    created_at: String,
    edited_at: Option<String>,
    deleted: bool,
}

impl<'a> From<&'a Message> for MessageJson<'a> {
    fn from(m: &'a Message) -> Self {
        MessageJson {
            id: m.id.as_str(),
            author: &m.author,
            body: if m.deleted { "" } else { &m.body },
            created_at: m.created_at.to_rfc3339(),
            edited_at: m.edited_at.map(|e| e.to_rfc3339()),
            deleted: m.deleted,
        }
    }
}

/// The chat's messages as the JSON array `weft msg list --json` prints and the checkpoint's
/// `weft_messages` rows follow.
///
/// An array of `{"id", "author", "body", "created_at", "edited_at", "deleted"}` in display
/// order, with keys in that order, compact (no whitespace): the same heads give the same bytes
/// on every device. `created_at` and `edited_at` are the physical part of the timestamp as
/// RFC 3339 UTC with milliseconds (`edited_at` `null` when never edited); a deleted message
/// has `"body": ""`. Nothing device-specific appears. Entries of `messages` that aren't
/// messages are left out of the array and returned as skipped (see
/// [`messages`](crate::messages)).
///
/// Reading never writes.
pub fn messages_json(doc: &Automerge) -> Result<Partial<String>, ReadError> {
    let mut skips = Skips::new();
    let all = read_all(doc, &mut skips)?;
    Ok(Partial::new(messages_to_json(&all), skips))
}

/// Some messages (a tail, a page) in the form of [`messages_json`].
pub fn messages_to_json(messages: &[Message]) -> String {
    let rows: Vec<MessageJson<'_>> = messages.iter().map(MessageJson::from).collect();
    // Serializing strings, bools and options into a Vec cannot fail.
    serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned())
}

/// Every value written concurrently at `path` that no later write replaced, as JSON, in
/// Automerge's order (the same on every replica; the winner, which typed reads return, is the
/// last). One value means no conflict; none means nothing is there. Each step of `path` but
/// the last follows the winning value.
///
/// ```
/// # use weft_schema::{conflicts, Trip, NewTrip, NewTask, Id};
/// # use weft_schema::automerge::{Automerge, Prop};
/// # let mut doc = Automerge::new();
/// # Trip::create(&mut doc, &NewTrip { title: "Lisbon".into(), ..Default::default() }, 0).unwrap();
/// let id = Id::from_bytes([1; 16]);
/// Trip::add_task(&mut doc, id.clone(), &NewTask { title: "Book hotel".into(), assignee: None }, 0).unwrap();
/// let path: [Prop; 3] = ["tasks".into(), id.as_str().into(), "done".into()];
/// assert_eq!(conflicts(&doc, &path).unwrap(), vec![serde_json::json!(false)]);
/// ```
pub fn conflicts(doc: &Automerge, path: &[Prop]) -> Result<Vec<Json>, ReadError> {
    let Some((last, init)) = path.split_last() else {
        return Ok(vec![obj_json(doc, &ROOT, ObjType::Map, At::Root, 0)?]);
    };
    let mut obj = ROOT;
    for (i, prop) in init.iter().enumerate() {
        match doc.get(&obj, prop.clone())? {
            Some((Value::Object(_), id)) => obj = id,
            Some((v, _)) => {
                return Err(ReadError::Invalid {
                    path: crate::Path::from_props(&init[..=i]),
                    expected: "a map or a list",
                    found: describe(&v),
                })
            }
            None => return Ok(Vec::new()),
        }
    }
    let mut out = Vec::new();
    for (v, id) in doc.get_all(&obj, last.clone())? {
        out.push(value_json(doc, &v, &id, At::Root)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
    }
}
