//! Typed reads of single values with path-precise errors: the toolkit every model's reader
//! uses. Generic over [`ReadDoc`] so the same code reads an `Automerge` and an open
//! transaction.

use std::borrow::Cow;

use automerge::{ObjId, ObjType, Prop, ReadDoc, ScalarValue, Value, ROOT};

use crate::error::{At, ReadError};
use crate::partial::{entry, skip, Skips};

/// The winning value at `obj[prop]`.
pub(crate) fn get<'d, D: ReadDoc>(
    doc: &'d D,
    obj: &ObjId,
    prop: impl Into<Prop>,
) -> Result<Option<(Value<'d>, ObjId)>, ReadError> {
    Ok(doc.get(obj, prop)?)
}

/// A short description of a value for error messages.
pub(crate) fn describe(v: &Value<'_>) -> String {
    match v {
        Value::Object(ObjType::Map) => "a map".into(),
        Value::Object(ObjType::Table) => "a table".into(),
        Value::Object(ObjType::List) => "a list".into(),
        Value::Object(ObjType::Text) => "text".into(),
        Value::Scalar(s) => describe_scalar(s),
    }
}

fn describe_scalar(s: &ScalarValue) -> String {
    match s {
        ScalarValue::Str(s) if s.len() > 40 => format!("a string of {} bytes", s.len()),
        ScalarValue::Str(s) => format!("the string {:?}", s.as_str()),
        ScalarValue::Int(i) => format!("the integer {i}"),
        ScalarValue::Uint(u) => format!("the integer {u}"),
        ScalarValue::F64(f) => format!("the number {f}"),
        ScalarValue::Counter(_) => "a counter".into(),
        ScalarValue::Timestamp(_) => "a timestamp".into(),
        ScalarValue::Boolean(b) => format!("{b}"),
        ScalarValue::Bytes(b) => format!("{} bytes", b.len()),
        ScalarValue::Null => "null".into(),
        ScalarValue::Unknown { type_code, .. } => format!("a value of unknown type {type_code}"),
    }
}

/// A field's winning value and, for an object, its id: what [`get_field`] and [`fields`] give.
pub(crate) type Field = Option<(Value<'static>, ObjId)>;

/// The field `obj[prop]`.
pub(crate) fn get_field<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    prop: impl Into<Prop>,
) -> Result<Field, ReadError> {
    Ok(get(doc, obj, prop)?.map(|(v, id)| (owned(v), id)))
}

fn owned(v: Value<'_>) -> Value<'static> {
    match v {
        Value::Object(t) => Value::Object(t),
        Value::Scalar(s) => Value::Scalar(Cow::Owned(s.into_owned())),
    }
}

/// The fields `names` of the map `obj`, in one pass over it: Automerge resolves an object id
/// once per call, so one range read is several times cheaper than a `get` per field.
pub(crate) fn fields<D: ReadDoc, const N: usize>(
    doc: &D,
    obj: &ObjId,
    names: [&str; N],
) -> [Field; N] {
    let mut out: [Field; N] = std::array::from_fn(|_| None);
    for item in doc.map_range(obj, ..) {
        if let Some(i) = names.iter().position(|n| *n == item.key) {
            let id = match item.value {
                automerge::ValueRef::Object(_) => item.id(),
                automerge::ValueRef::Scalar(_) => ROOT,
            };
            out[i] = Some((item.value.into(), id));
        }
    }
    out
}

/// An object of type `ty` (a map also accepts a table); absent or null is `None`.
pub(crate) fn f_obj(
    f: &Field,
    at: At<'_>,
    ty: ObjType,
    expected: &'static str,
) -> Result<Option<ObjId>, ReadError> {
    match f {
        None => Ok(None),
        Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => Ok(None),
        Some((Value::Object(t), id)) if same_shape(*t, ty) => Ok(Some(id.clone())),
        Some((v, _)) => Err(at.invalid(expected, describe(v))),
    }
}

/// A non-empty string (a string scalar, or Text: see [`as_str`]); absent or null is `None`.
pub(crate) fn f_str<D: ReadDoc>(
    doc: &D,
    f: &Field,
    at: At<'_>,
    max: usize,
    expected: &'static str,
) -> Result<Option<String>, ReadError> {
    as_str(
        doc,
        f.as_ref().map(|(v, id)| (v, id)),
        at,
        max,
        true,
        expected,
    )
}

/// Collaborative text: a Text object, or a plain string (as schema v1 wrote titles and
/// bodies). Absent or null is `None`.
pub(crate) fn f_text<D: ReadDoc>(
    doc: &D,
    f: &Field,
    at: At<'_>,
    max: usize,
) -> Result<Option<String>, ReadError> {
    as_str(
        doc,
        f.as_ref().map(|(v, id)| (v, id)),
        at,
        max,
        false,
        "text or a string",
    )
}

/// A boolean; absent or null is `None`.
pub(crate) fn f_bool(f: &Field, at: At<'_>) -> Result<Option<bool>, ReadError> {
    match f {
        None => Ok(None),
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Null => Ok(None),
            ScalarValue::Boolean(b) => Ok(Some(*b)),
            other => Err(at.invalid("true or false", describe_scalar(other))),
        },
        Some((v, _)) => Err(at.invalid("true or false", describe(v))),
    }
}

/// A non-negative integer (signed or unsigned in the document); absent or null is `None`.
pub(crate) fn f_u64(f: &Field, at: At<'_>) -> Result<Option<u64>, ReadError> {
    const EXPECTED: &str = "a non-negative integer";
    match f {
        None => Ok(None),
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Null => Ok(None),
            ScalarValue::Uint(u) => Ok(Some(*u)),
            ScalarValue::Int(i) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| at.invalid(EXPECTED, format!("the integer {i}"))),
            other => Err(at.invalid(EXPECTED, describe_scalar(other))),
        },
        Some((v, _)) => Err(at.invalid(EXPECTED, describe(v))),
    }
}

/// A string parsed with `parse`; `expected` names the form in errors.
pub(crate) fn f_parsed<D: ReadDoc, T>(
    doc: &D,
    f: &Field,
    at: At<'_>,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ReadError> {
    let Some(s) = f_str(doc, f, at, 256, expected)? else {
        return Ok(None);
    };
    parse(&s)
        .map(Some)
        .ok_or_else(|| at.invalid(expected, format!("{:?}", truncate(&s))))
}

/// A required object of type `ty` (a map also accepts a table).
pub(crate) fn req_obj<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    ty: ObjType,
    expected: &'static str,
) -> Result<ObjId, ReadError> {
    opt_obj(doc, obj, key, at, ty, expected)?.ok_or_else(|| at.missing(expected))
}

/// An optional object of type `ty`: absent or null is `None`.
pub(crate) fn opt_obj<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    ty: ObjType,
    expected: &'static str,
) -> Result<Option<ObjId>, ReadError> {
    f_obj(&get_field(doc, obj, key)?, at, ty, expected)
}

fn same_shape(found: ObjType, wanted: ObjType) -> bool {
    found == wanted || (wanted == ObjType::Map && found == ObjType::Table)
}

/// Checks a string's size and, for non-empty fields, that it isn't empty.
fn check_str(s: &str, at: At<'_>, max: usize, non_empty: bool) -> Result<(), ReadError> {
    if s.len() > max {
        return Err(at.too_large(s.len(), max));
    }
    if non_empty && s.is_empty() {
        return Err(at.invalid("a non-empty string", "an empty string"));
    }
    Ok(())
}

/// A string from a value already fetched (with its object id, for Text): a string scalar,
/// or a Text object read as its string. JavaScript's Automerge writes every string as Text
/// unless told otherwise, so a document written there has Text wherever the schema has a
/// string, and reads the same as one written here.
pub(crate) fn as_str<D: ReadDoc>(
    doc: &D,
    v: Option<(&Value<'_>, &ObjId)>,
    at: At<'_>,
    max: usize,
    non_empty: bool,
    expected: &'static str,
) -> Result<Option<String>, ReadError> {
    match v {
        None => Ok(None),
        Some((Value::Object(ObjType::Text), id)) => {
            let s = doc.text(id)?;
            check_str(&s, at, max, non_empty)?;
            Ok(Some(s))
        }
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Null => Ok(None),
            ScalarValue::Str(s) => {
                check_str(s, at, max, non_empty)?;
                Ok(Some(s.to_string()))
            }
            _ => Err(at.invalid(expected, describe_scalar(s))),
        },
        Some((v, _)) => Err(at.invalid(expected, describe(v))),
    }
}

/// A required string scalar.
pub(crate) fn req_str<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    max: usize,
    expected: &'static str,
) -> Result<String, ReadError> {
    opt_str(doc, obj, key, at, max, expected)?.ok_or_else(|| at.missing(expected))
}

/// An optional string scalar: absent or null is `None`.
pub(crate) fn opt_str<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    max: usize,
    expected: &'static str,
) -> Result<Option<String>, ReadError> {
    f_str(doc, &get_field(doc, obj, key)?, at, max, expected)
}

/// Optional collaborative text (see [`f_text`]).
pub(crate) fn opt_text<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    max: usize,
) -> Result<Option<String>, ReadError> {
    f_text(doc, &get_field(doc, obj, key)?, at, max)
}

/// Required collaborative text (see [`f_text`]).
pub(crate) fn req_text<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    max: usize,
) -> Result<String, ReadError> {
    opt_text(doc, obj, key, at, max)?.ok_or_else(|| at.missing("text or a string"))
}

/// An optional boolean: absent or null is `None`.
pub(crate) fn opt_bool<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
) -> Result<Option<bool>, ReadError> {
    f_bool(&get_field(doc, obj, key)?, at)
}

/// An optional non-negative integer (signed or unsigned in the document).
pub(crate) fn opt_u64<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
) -> Result<Option<u64>, ReadError> {
    f_u64(&get_field(doc, obj, key)?, at)
}

/// A string field parsed with `parse`; `expected` names the form in errors.
pub(crate) fn opt_parsed<D: ReadDoc, T>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, ReadError> {
    f_parsed(doc, &get_field(doc, obj, key)?, at, expected, parse)
}

/// A required string field parsed with `parse`.
pub(crate) fn req_parsed<D: ReadDoc, T>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, ReadError> {
    opt_parsed(doc, obj, key, at, expected, parse)?.ok_or_else(|| at.missing(expected))
}

/// The first 40 characters of `s`, for error messages.
pub(crate) fn truncate(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(40) {
        Some((i, _)) => Cow::Owned(format!("{}...", &s[..i])),
        None => Cow::Borrowed(s),
    }
}

/// The strings of a list, each validated; `at` names the list. An item that isn't one is
/// skipped.
pub(crate) fn str_list<D: ReadDoc>(
    doc: &D,
    list: &ObjId,
    at: At<'_>,
    max: usize,
    expected: &'static str,
    skips: &mut Skips,
) -> Result<Vec<String>, ReadError> {
    let mut out = Vec::new();
    for item in doc.list_range(list, ..) {
        let at = at.index(item.index);
        let id = match item.value {
            automerge::ValueRef::Object(_) => item.id(),
            automerge::ValueRef::Scalar(_) => ROOT,
        };
        let v: Value<'_> = item.value.into();
        let s = as_str(doc, Some((&v, &id)), at, max, true, expected)
            .and_then(|s| s.ok_or_else(|| at.invalid(expected, "null")));
        out.extend(entry(s, at, skips)?);
    }
    Ok(out)
}

/// Every map at `obj[key]`: the winner and the conflicting losers, in Automerge's order.
/// Null is nothing; any other value is skipped.
pub(crate) fn maps_at<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    expected: &'static str,
    skips: &mut Skips,
) -> Result<Vec<ObjId>, ReadError> {
    let mut out = Vec::new();
    for (v, id) in doc.get_all(obj, key)? {
        match v {
            Value::Object(ObjType::Map | ObjType::Table) => out.push(id),
            Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Null) => {}
            v => skip(at, at.invalid(expected, describe(&v)), skips),
        }
    }
    Ok(out)
}
