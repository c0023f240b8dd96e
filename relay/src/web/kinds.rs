//! The kinds a relay enforces, as the JSON `GET /kinds` answers (docs/decisions/0015): every
//! kind, built-in and declared, with its fields, collections and who may write what, so a web
//! app writes what the relay will accept without parsing the operator's TOML.
//!
//! ```text
//! {"kinds": {NAME: {"declared": bool, "fields": {FIELD: field}, "collections": {NAME: collection}}},
//!  "declared_toml": "..."}
//! field      = {"type": "string"|"text"|"int"|"bool"|"user"|"enum"|"map"|"list"|"any",
//!               "values"?: [..] (enum), "fixed": bool, "by": [who], "clear": [who],
//!               "initial"?: "..", "transitions": [{"from": [..], "to": "..", "by": [who]}],
//!               "one_way": bool}
//! collection = {"key": "any"|"id"|"message_key"|"writer", "entry": {"record": {"fields": {..},
//!               "author"?: "..", "create": [who], "delete": [who]}} | {"value": field} |
//!               {"nested": collection}}
//! who        = "owner" | "member" | "admin" | "author" | the name of a user field
//! ```

use serde_json::{json, Map, Value};
use weft_schema::rules::{Collection, Entry, FieldSpec, FieldType, KeyRule, Kinds, Who};

/// Every kind of `kinds` as JSON.
pub(crate) fn kinds_json(kinds: &Kinds) -> Value {
    let mut out = Map::new();
    for spec in kinds.specs() {
        let fields: Map<String, Value> = spec
            .fields
            .iter()
            .map(|(name, f)| (name.clone(), field_json(f)))
            .collect();
        let collections: Map<String, Value> = spec
            .collections
            .iter()
            .map(|(name, c)| (name.clone(), collection_json(c)))
            .collect();
        out.insert(
            spec.name.clone(),
            json!({
                "declared": kinds.is_declared(&spec.name),
                "fields": fields,
                "collections": collections,
            }),
        );
    }
    json!({"kinds": out, "declared_toml": kinds.declared_toml()})
}

fn who_json(who: &[Who]) -> Value {
    who.iter()
        .map(|w| match w {
            Who::Owner => "owner".to_string(),
            Who::Member => "member".to_string(),
            Who::Admin => "admin".to_string(),
            Who::Author => "author".to_string(),
            Who::Field(f) => f.clone(),
        })
        .collect()
}

fn field_json(f: &FieldSpec) -> Value {
    let ty = match &f.ty {
        FieldType::String => "string",
        FieldType::Text => "text",
        FieldType::Int => "int",
        FieldType::Bool => "bool",
        FieldType::User => "user",
        FieldType::Enum(_) => "enum",
        FieldType::Map => "map",
        FieldType::List => "list",
        FieldType::Any => "any",
    };
    let mut out = json!({
        "type": ty,
        "fixed": f.fixed,
        "by": who_json(&f.by),
        "clear": who_json(&f.clear),
        "transitions": f.transitions.iter().map(|t| json!({
            "from": t.from,
            "to": t.to,
            "by": who_json(&t.by),
        })).collect::<Vec<_>>(),
        "one_way": f.one_way,
    });
    if let FieldType::Enum(values) = &f.ty {
        out["values"] = json!(values);
    }
    if let Some(initial) = &f.initial {
        out["initial"] = json!(initial);
    }
    out
}

fn collection_json(c: &Collection) -> Value {
    let key = match c.key {
        KeyRule::Any => "any",
        KeyRule::Id => "id",
        KeyRule::MessageKey => "message_key",
        KeyRule::Writer => "writer",
    };
    let entry = match &c.entry {
        Entry::Record {
            fields,
            author,
            create,
            delete,
        } => {
            let fields: Map<String, Value> = fields
                .iter()
                .map(|(name, f)| (name.clone(), field_json(f)))
                .collect();
            let mut record = json!({
                "fields": fields,
                "create": who_json(create),
                "delete": who_json(delete),
            });
            if let Some(a) = author {
                record["author"] = json!(a);
            }
            json!({ "record": record })
        }
        Entry::Value(f) => json!({ "value": field_json(f) }),
        Entry::Nested(inner) => json!({ "nested": collection_json(inner) }),
    };
    json!({"key": key, "entry": entry})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_declared_kinds_are_described() {
        let toml = r#"
[escrow.fields]
buyer  = { type = "user", fixed = true }
status = { type = "enum", values = ["pending", "funded"], initial = "pending" }

[[escrow.transitions]]
field = "status"
from = ["pending"]
to = "funded"
by = ["buyer"]
"#;
        let kinds = Kinds::with_declared(toml).unwrap();
        let j = kinds_json(&kinds);
        assert_eq!(j["declared_toml"], toml);
        let conv = &j["kinds"]["conversation"];
        assert_eq!(conv["declared"], false);
        assert_eq!(conv["collections"]["messages"]["key"], "message_key");
        let msg = &conv["collections"]["messages"]["entry"]["record"];
        assert_eq!(msg["author"], "author");
        assert_eq!(msg["fields"]["body"]["type"], "text");
        assert_eq!(msg["fields"]["body"]["by"], json!(["author"]));
        let escrow = &j["kinds"]["escrow"];
        assert_eq!(escrow["declared"], true);
        assert_eq!(escrow["fields"]["buyer"]["type"], "user");
        assert_eq!(escrow["fields"]["buyer"]["fixed"], true);
        let status = &escrow["fields"]["status"];
        assert_eq!(status["values"], json!(["pending", "funded"]));
        assert_eq!(status["initial"], "pending");
        assert_eq!(status["transitions"][0]["by"], json!(["buyer"]));
    }
}
