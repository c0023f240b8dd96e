//! Kinds an operator declares in TOML (`weft-relay serve --kinds FILE`), parsed and checked
//! for sense before any document is judged by them.
//!
//! The TOML form (see `../shared/CONTRACT.md`, "Write rules and app-defined kinds"):
//!
//! ```toml
//! [escrow.fields]
//! buyer  = { type = "user", fixed = true }     # fixed: set at creation, never changed
//! amount = { type = "int", fixed = true }
//! note   = { type = "string" }                 # any member with rw may write it
//! status = { type = "enum", values = ["pending", "funded"], initial = "pending" }
//!
//! [[escrow.transitions]]                       # a field with transitions changes only through them
//! field = "status"
//! from = ["pending"]
//! to = "funded"
//! by = ["buyer"]                               # "owner", "member", "admin", or a field of type user
//! ```
//!
//! Fields also take `by = [...]` (who may write them; default any member with rw). A kind may
//! declare collections of records inside the document:
//!
//! ```toml
//! [job.collections.notes]                      # notes {id: {author, text}}
//! key = "id"                                   # "id", "message_key", "writer" or "any"
//! author = "author"                            # this field of a record is its writer, fixed
//! delete = ["author", "owner"]
//! [job.collections.notes.fields]
//! text = { type = "string", by = ["author"] }
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Collection, Entry, FieldSpec, FieldType, KeyRule, KindSpec, Kinds, KindsError, Transition, Who,
};

impl Kinds {
    /// The built-in kinds and those declared in `toml`.
    pub fn with_declared(toml: &str) -> Result<Kinds, KindsError> {
        let mut kinds = Kinds::builtin();
        let file: BTreeMap<String, KindToml> =
            toml::from_str(toml).map_err(|e| KindsError::Parse(e.to_string()))?;
        for (name, k) in file {
            if kinds.kinds.contains_key(&name) {
                return Err(KindsError::Invalid {
                    kind: name,
                    problem: "is a built-in kind".into(),
                });
            }
            let spec = k.into_spec(&name)?;
            kinds.kinds.insert(name, spec);
        }
        kinds.declared = toml.to_string();
        Ok(kinds)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KindToml {
    #[serde(default)]
    fields: BTreeMap<String, FieldToml>,
    #[serde(default)]
    transitions: Vec<TransitionToml>,
    #[serde(default)]
    collections: BTreeMap<String, CollectionToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldToml {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    fixed: bool,
    #[serde(default)]
    by: Option<Vec<String>>,
    #[serde(default)]
    values: Vec<String>,
    #[serde(default)]
    initial: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionToml {
    field: String,
    from: Vec<String>,
    to: String,
    by: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionToml {
    #[serde(default = "any_key")]
    key: String,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    create: Option<Vec<String>>,
    #[serde(default)]
    delete: Option<Vec<String>>,
    #[serde(default)]
    fields: BTreeMap<String, FieldToml>,
}

fn any_key() -> String {
    "any".into()
}

const RESERVED: [&str; 2] = ["kind", "schema_version"];

impl FieldToml {
    fn into_spec(self, kind: &str, name: &str) -> Result<FieldSpec, KindsError> {
        let ty = match self.ty.as_str() {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "int" => FieldType::Int,
            "bool" => FieldType::Bool,
            "user" => FieldType::User,
            "enum" => {
                if self.values.is_empty() {
                    return Err(invalid(kind, format!("enum field {name} lists no values")));
                }
                FieldType::Enum(self.values.clone())
            }
            "map" => FieldType::Map,
            "list" => FieldType::List,
            "any" => FieldType::Any,
            other => {
                return Err(invalid(
                    kind,
                    format!("field {name} has unknown type {other:?}"),
                ))
            }
        };
        if let (Some(init), FieldType::Enum(values)) = (&self.initial, &ty) {
            if !values.contains(init) {
                return Err(invalid(
                    kind,
                    format!("field {name}: initial value {init:?} is not one of its values"),
                ));
            }
        }
        let by = self
            .by
            .map(|b| b.iter().map(|s| Who::parse(s)).collect())
            .unwrap_or_else(|| vec![Who::Member]);
        Ok(FieldSpec {
            ty,
            fixed: self.fixed,
            by,
            clear: Vec::new(),
            initial: self.initial,
            transitions: Vec::new(),
            one_way: false,
        })
    }
}

impl KindToml {
    fn into_spec(self, name: &str) -> Result<KindSpec, KindsError> {
        if name.is_empty() || name.len() > 64 {
            return Err(invalid(name, "a kind's name has 1 to 64 bytes".into()));
        }
        let mut fields = BTreeMap::new();
        for (f, spec) in self.fields {
            if RESERVED.contains(&f.as_str()) {
                return Err(invalid(name, format!("{f} is reserved")));
            }
            let spec = spec.into_spec(name, &f)?;
            fields.insert(f, spec);
        }
        for t in self.transitions {
            add_transition(&mut fields, t, name)?;
        }
        let mut collections = BTreeMap::new();
        for (c, col) in self.collections {
            if RESERVED.contains(&c.as_str()) || fields.contains_key(&c) {
                return Err(invalid(
                    name,
                    format!("collection {c} clashes with a field"),
                ));
            }
            let col = col.into_spec(name, &c)?;
            collections.insert(c, col);
        }
        writers_are_user_fields(&fields, name)?;
        Ok(KindSpec {
            name: name.to_string(),
            fields,
            collections,
        })
    }
}

/// Why kind `kind` was refused.
fn invalid(kind: &str, problem: String) -> KindsError {
    KindsError::Invalid {
        kind: kind.to_string(),
        problem,
    }
}

/// Adds transition `t` to its enum field, every value it names being one of the field's.
fn add_transition(
    fields: &mut BTreeMap<String, FieldSpec>,
    t: TransitionToml,
    kind: &str,
) -> Result<(), KindsError> {
    let Some(field) = fields.get_mut(&t.field) else {
        return Err(invalid(
            kind,
            format!("a transition names unknown field {}", t.field),
        ));
    };
    let FieldType::Enum(values) = &field.ty else {
        return Err(invalid(
            kind,
            format!("transitions of {} need an enum field", t.field),
        ));
    };
    for v in t.from.iter().chain([&t.to]) {
        if !values.contains(v) {
            return Err(invalid(
                kind,
                format!(
                    "a transition of {} names {v:?}, not one of its values",
                    t.field
                ),
            ));
        }
    }
    field.transitions.push(Transition {
        from: t.from,
        to: t.to,
        by: t.by.iter().map(|s| Who::parse(s)).collect(),
    });
    Ok(())
}

impl CollectionToml {
    /// Collection `name` of kind `kind`: a collection of records.
    fn into_spec(self, kind: &str, name: &str) -> Result<Collection, KindsError> {
        let key = match self.key.as_str() {
            "any" => KeyRule::Any,
            "id" => KeyRule::Id,
            "message_key" => KeyRule::MessageKey,
            "writer" => KeyRule::Writer,
            other => {
                return Err(invalid(
                    kind,
                    format!("collection {name}: unknown key rule {other:?}"),
                ))
            }
        };
        let mut entry_fields = BTreeMap::new();
        for (f, spec) in self.fields {
            let spec = spec.into_spec(kind, &f)?;
            entry_fields.insert(f, spec);
        }
        if let Some(a) = &self.author {
            entry_fields
                .entry(a.clone())
                .or_insert_with(|| FieldSpec::new(FieldType::User).fixed());
        }
        Ok(Collection {
            key,
            entry: Entry::Record {
                fields: entry_fields,
                author: self.author,
                create: self
                    .create
                    .map(|v| v.iter().map(|s| Who::parse(s)).collect())
                    .unwrap_or_else(|| vec![Who::Member]),
                delete: self
                    .delete
                    .map(|v| v.iter().map(|s| Who::parse(s)).collect())
                    .unwrap_or_else(|| vec![Who::Author, Who::Owner, Who::Admin]),
            },
        })
    }
}

/// Fields named in `by` (of a field or a transition) must be user fields.
fn writers_are_user_fields(
    fields: &BTreeMap<String, FieldSpec>,
    kind: &str,
) -> Result<(), KindsError> {
    for (f, spec) in fields {
        let named = spec
            .by
            .iter()
            .chain(spec.transitions.iter().flat_map(|t| t.by.iter()));
        for who in named {
            if let Who::Field(u) = who {
                if !matches!(fields.get(u).map(|s| &s.ty), Some(FieldType::User)) {
                    return Err(invalid(
                        kind,
                        format!("field {f} names {u:?} as a writer, which is not a user field"),
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESCROW: &str = include_str!("../../../tests/fixtures/escrow.toml");

    #[test]
    fn the_contract_form_parses() {
        let kinds = Kinds::with_declared(ESCROW).unwrap();
        let escrow = kinds.get("escrow").unwrap();
        assert!(escrow.fields["buyer"].fixed);
        assert_eq!(escrow.fields["status"].transitions.len(), 4);
        assert_eq!(
            escrow.fields["status"].transitions[0].by,
            vec![Who::Field("buyer".into())]
        );
        assert!(kinds.get("conversation").is_some());
        assert!(kinds.is_declared("escrow"));
        assert!(!kinds.is_declared("trip"));
        assert_eq!(kinds.declared_toml(), ESCROW);
    }

    #[test]
    fn nonsense_is_refused_with_a_reason() {
        for (toml, says) in [
            ("[x.fields]\na = { type = \"float\" }", "unknown type"),
            ("[x.fields]\nkind = { type = \"string\" }", "reserved"),
            ("[conversation.fields]\na = { type = \"string\" }", "built-in"),
            (
                "[x.fields]\ns = { type = \"enum\", values = [\"a\"] }\n[[x.transitions]]\nfield = \"s\"\nfrom = [\"a\"]\nto = \"b\"\nby = [\"member\"]",
                "not one of its values",
            ),
            (
                "[x.fields]\ns = { type = \"string\", by = [\"s\"] }",
                "not a user field",
            ),
            ("[x]\nwhat = 1", "parse"),
        ] {
            let err = Kinds::with_declared(toml).unwrap_err().to_string();
            assert!(err.contains(says), "{toml}: {err}");
        }
    }
}
