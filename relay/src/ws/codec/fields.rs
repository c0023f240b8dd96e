//! A client message's fields, read by name with their types checked.

use ciborium::Value;
use weft_core::DocId;

use super::error::CodecError;

/// A message's fields; `null` and `undefined` (both decoded as `Null`) count as absent.
pub(super) struct Fields<'a>(pub(super) &'a [(Value, Value)]);

impl<'a> Fields<'a> {
    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.0
            .iter()
            .find(|(k, _)| matches!(k, Value::Text(t) if t == name))
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::Null))
    }

    pub(super) fn text(&self, field: &'static str) -> Result<Option<&'a str>, CodecError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Text(t)) => Ok(Some(t)),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a string",
            }),
        }
    }

    pub(super) fn bytes(&self, field: &'static str) -> Result<Vec<u8>, CodecError> {
        match self.get(field) {
            None => Err(CodecError::Missing { field }),
            Some(Value::Bytes(b)) => Ok(b.clone()),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a byte string",
            }),
        }
    }

    /// An optional number, integer or float.
    pub(super) fn number(&self, field: &'static str) -> Result<(), CodecError> {
        match self.get(field) {
            None | Some(Value::Integer(_)) | Some(Value::Float(_)) => Ok(()),
            Some(_) => Err(CodecError::WrongType {
                field,
                expected: "a number",
            }),
        }
    }

    /// An optional array of strings (absent is empty).
    pub(super) fn text_array(&self, field: &'static str) -> Result<Vec<String>, CodecError> {
        let wrong = CodecError::WrongType {
            field,
            expected: "an array of strings",
        };
        match self.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::Text(t) => Ok(t.clone()),
                    _ => Err(wrong.clone()),
                })
                .collect(),
            Some(_) => Err(wrong),
        }
    }

    pub(super) fn doc_id(&self) -> Result<DocId, CodecError> {
        const FIELD: &str = "documentId";
        let text = self
            .text(FIELD)?
            .ok_or(CodecError::Missing { field: FIELD })?;
        text.parse()
            .map_err(|_| CodecError::BadDocId { field: FIELD })
    }
}
