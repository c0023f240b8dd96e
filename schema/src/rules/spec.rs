//! What a kind of document allows: its fields, their types, who may write them, and how
//! status-like fields may move. Built-in kinds (conversation, trip, profile) and the kinds an
//! operator declares in TOML (`weft-relay serve --kinds FILE`) are the same structures, checked
//! by the same code (`eval.rs`).
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

/// Who may do something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// The document's owner.
    Owner,
    /// Any member who may write the document.
    Member,
    /// A token with `admin`.
    Admin,
    /// The user who created the record (collections only).
    Author,
    /// The user named in this root field (of type user).
    Field(String),
}

impl Who {
    fn parse(s: &str) -> Who {
        match s {
            "owner" => Who::Owner,
            "member" => Who::Member,
            "admin" => Who::Admin,
            "author" => Who::Author,
            field => Who::Field(field.to_string()),
        }
    }

    fn list(v: &[&str]) -> Vec<Who> {
        v.iter().map(|s| Who::parse(s)).collect()
    }
}

/// What a field holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A string. Written as collaborative text (what JavaScript clients make of a string), it
    /// is taken too.
    String,
    /// Collaborative text; a plain string is taken too.
    Text,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A user id (a string).
    User,
    /// One of these strings.
    Enum(Vec<String>),
    /// A map of anything.
    Map,
    /// A list of anything.
    List,
    /// Anything.
    Any,
}

/// A move of an enum field: from one of `from` to `to`, by one of `by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Values it moves from.
    pub from: Vec<String>,
    /// The value it moves to.
    pub to: String,
    /// Who may make it.
    pub by: Vec<Who>,
}

/// One field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    /// What it holds.
    pub ty: FieldType,
    /// Set when its document (or record) is created, never changed.
    pub fixed: bool,
    /// Who may write it (after creation).
    pub by: Vec<Who>,
    /// Who may also remove its content (delete characters of a text, delete the field), without
    /// writing new content: moderation.
    pub clear: Vec<Who>,
    /// The value it must have at creation.
    pub initial: Option<String>,
    /// If any: the field changes only through these.
    pub transitions: Vec<Transition>,
    /// It only ever turns from `false` to `true` (after creation).
    pub one_way: bool,
}

impl FieldSpec {
    /// A field of `ty` any member may write.
    pub fn new(ty: FieldType) -> FieldSpec {
        FieldSpec {
            ty,
            fixed: false,
            by: vec![Who::Member],
            clear: Vec::new(),
            initial: None,
            transitions: Vec::new(),
            one_way: false,
        }
    }

    fn fixed(mut self) -> Self {
        self.fixed = true;
        self
    }

    fn by(mut self, who: &[&str]) -> Self {
        self.by = Who::list(who);
        self
    }

    fn clear(mut self, who: &[&str]) -> Self {
        self.clear = Who::list(who);
        self
    }

    fn one_way(mut self) -> Self {
        self.one_way = true;
        self
    }
}

/// What keys of a collection must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRule {
    /// Any string.
    Any,
    /// A record id (letters, digits, `-`, `_`; at most 64 bytes).
    Id,
    /// A message key, `{created_at}_{id}`.
    MessageKey,
    /// The writer's own user id: each member writes only their own entry.
    Writer,
}

/// What each entry of a collection is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A map of fields.
    Record {
        /// Its fields.
        fields: BTreeMap<String, FieldSpec>,
        /// The field naming the record's writer: set to the writer's user when the record is
        /// created, never changed.
        author: Option<String>,
        /// Who may create a record.
        create: Vec<Who>,
        /// Who may delete a record (delete its key, or set its one-way `deleted` field).
        delete: Vec<Who>,
    },
    /// One value.
    Value(FieldSpec),
    /// A collection again (a map of maps).
    Nested(Box<Collection>),
}

/// A map of entries at the root of a document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Collection {
    /// What its keys look like.
    pub key: KeyRule,
    /// What its entries are.
    pub entry: Entry,
}

/// One kind of document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindSpec {
    /// Its `kind` string.
    pub name: String,
    /// Its root fields (besides `kind`, fixed, and `schema_version`).
    pub fields: BTreeMap<String, FieldSpec>,
    /// Its collections.
    pub collections: BTreeMap<String, Collection>,
}

/// Every kind a relay or device knows: the built-in ones and those declared to the relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kinds {
    kinds: BTreeMap<String, KindSpec>,
    /// The TOML they were declared in (what a relay hands its devices).
    declared: String,
}

/// Why a kinds file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KindsError {
    /// Not TOML, or not of the expected form.
    #[error("the kinds file does not parse: {0}")]
    Parse(String),
    /// A kind or field that does not make sense.
    #[error("kind {kind}: {problem}")]
    Invalid {
        /// The kind.
        kind: String,
        /// What is wrong.
        problem: String,
    },
}

impl Kinds {
    /// The built-in kinds: conversation, trip and profile.
    pub fn builtin() -> Kinds {
        let mut kinds = BTreeMap::new();
        for k in [conversation(), trip(), profile()] {
            kinds.insert(k.name.clone(), k);
        }
        Kinds {
            kinds,
            declared: String::new(),
        }
    }

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

    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&KindSpec> {
        self.kinds.get(name)
    }

    /// The declared (not built-in) kinds' TOML, as given.
    pub fn declared_toml(&self) -> &str {
        &self.declared
    }

    /// Whether `name` is a declared (not built-in) kind.
    pub fn is_declared(&self, name: &str) -> bool {
        self.kinds.contains_key(name) && !matches!(name, "conversation" | "trip" | "profile")
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
        let invalid = |problem: String| KindsError::Invalid {
            kind: kind.to_string(),
            problem,
        };
        let ty = match self.ty.as_str() {
            "string" => FieldType::String,
            "text" => FieldType::Text,
            "int" => FieldType::Int,
            "bool" => FieldType::Bool,
            "user" => FieldType::User,
            "enum" => {
                if self.values.is_empty() {
                    return Err(invalid(format!("enum field {name} lists no values")));
                }
                FieldType::Enum(self.values.clone())
            }
            "map" => FieldType::Map,
            "list" => FieldType::List,
            "any" => FieldType::Any,
            other => return Err(invalid(format!("field {name} has unknown type {other:?}"))),
        };
        if let (Some(init), FieldType::Enum(values)) = (&self.initial, &ty) {
            if !values.contains(init) {
                return Err(invalid(format!(
                    "field {name}: initial value {init:?} is not one of its values"
                )));
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
        let invalid = |problem: String| KindsError::Invalid {
            kind: name.to_string(),
            problem,
        };
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("a kind's name has 1 to 64 bytes".into()));
        }
        let mut fields = BTreeMap::new();
        for (f, spec) in self.fields {
            if RESERVED.contains(&f.as_str()) {
                return Err(invalid(format!("{f} is reserved")));
            }
            let spec = spec.into_spec(name, &f)?;
            fields.insert(f, spec);
        }
        for t in self.transitions {
            let Some(field) = fields.get_mut(&t.field) else {
                return Err(invalid(format!(
                    "a transition names unknown field {}",
                    t.field
                )));
            };
            let FieldType::Enum(values) = &field.ty else {
                return Err(invalid(format!(
                    "transitions of {} need an enum field",
                    t.field
                )));
            };
            for v in t.from.iter().chain([&t.to]) {
                if !values.contains(v) {
                    return Err(invalid(format!(
                        "a transition of {} names {v:?}, not one of its values",
                        t.field
                    )));
                }
            }
            field.transitions.push(Transition {
                from: t.from,
                to: t.to,
                by: t.by.iter().map(|s| Who::parse(s)).collect(),
            });
        }
        let mut collections = BTreeMap::new();
        for (c, col) in self.collections {
            if RESERVED.contains(&c.as_str()) || fields.contains_key(&c) {
                return Err(invalid(format!("collection {c} clashes with a field")));
            }
            let key = match col.key.as_str() {
                "any" => KeyRule::Any,
                "id" => KeyRule::Id,
                "message_key" => KeyRule::MessageKey,
                "writer" => KeyRule::Writer,
                other => {
                    return Err(invalid(format!(
                        "collection {c}: unknown key rule {other:?}"
                    )))
                }
            };
            let mut entry_fields = BTreeMap::new();
            for (f, spec) in col.fields {
                let spec = spec.into_spec(name, &f)?;
                entry_fields.insert(f, spec);
            }
            if let Some(a) = &col.author {
                entry_fields
                    .entry(a.clone())
                    .or_insert_with(|| FieldSpec::new(FieldType::User).fixed());
            }
            collections.insert(
                c,
                Collection {
                    key,
                    entry: Entry::Record {
                        fields: entry_fields,
                        author: col.author,
                        create: col
                            .create
                            .map(|v| v.iter().map(|s| Who::parse(s)).collect())
                            .unwrap_or_else(|| vec![Who::Member]),
                        delete: col
                            .delete
                            .map(|v| v.iter().map(|s| Who::parse(s)).collect())
                            .unwrap_or_else(|| vec![Who::Author, Who::Owner, Who::Admin]),
                    },
                },
            );
        }
        // Fields named in `by` must be user fields.
        for (f, spec) in &fields {
            let named = spec
                .by
                .iter()
                .chain(spec.transitions.iter().flat_map(|t| t.by.iter()));
            for who in named {
                if let Who::Field(u) = who {
                    if !matches!(fields.get(u).map(|s| &s.ty), Some(FieldType::User)) {
                        return Err(invalid(format!(
                            "field {f} names {u:?} as a writer, which is not a user field"
                        )));
                    }
                }
            }
        }
        Ok(KindSpec {
            name: name.to_string(),
            fields,
            collections,
        })
    }
}

/// The chat conversations and trips share: messages, read positions, reactions.
fn chat(collections: &mut BTreeMap<String, Collection>) {
    let s = || FieldSpec::new(FieldType::String);
    let message = Entry::Record {
        fields: BTreeMap::from([
            ("id".into(), s().fixed()),
            ("author".into(), FieldSpec::new(FieldType::User).fixed()),
            ("created_at".into(), s().fixed()),
            (
                "body".into(),
                FieldSpec::new(FieldType::Text)
                    .by(&["author"])
                    .clear(&["owner", "admin"]),
            ),
            ("edited_at".into(), s().by(&["author"])),
            (
                "deleted".into(),
                FieldSpec::new(FieldType::Bool)
                    .by(&["author", "owner", "admin"])
                    .one_way(),
            ),
            ("reply_to".into(), s().fixed()),
            (
                "attachment".into(),
                FieldSpec::new(FieldType::Map)
                    .fixed()
                    .clear(&["author", "owner", "admin"]),
            ),
        ]),
        author: Some("author".into()),
        create: vec![Who::Member],
        delete: vec![Who::Author, Who::Owner, Who::Admin],
    };
    collections.insert(
        "messages".into(),
        Collection {
            key: KeyRule::MessageKey,
            entry: message,
        },
    );
    collections.insert(
        "read".into(),
        Collection {
            key: KeyRule::Writer,
            entry: Entry::Value(FieldSpec::new(FieldType::String)),
        },
    );
    // reactions {message id: {emoji: {user: true}}}: each member adds and removes only their own.
    collections.insert(
        "reactions".into(),
        Collection {
            key: KeyRule::Any,
            entry: Entry::Nested(Box::new(Collection {
                key: KeyRule::Any,
                entry: Entry::Nested(Box::new(Collection {
                    key: KeyRule::Writer,
                    entry: Entry::Value(FieldSpec::new(FieldType::Bool)),
                })),
            })),
        },
    );
}

fn conversation() -> KindSpec {
    let mut collections = BTreeMap::new();
    chat(&mut collections);
    KindSpec {
        name: "conversation".into(),
        fields: BTreeMap::from([
            ("title".into(), FieldSpec::new(FieldType::Text)),
            ("participants".into(), FieldSpec::new(FieldType::List)),
        ]),
        collections,
    }
}

fn trip() -> KindSpec {
    let s = || FieldSpec::new(FieldType::String);
    let mut collections = BTreeMap::new();
    chat(&mut collections);
    collections.insert(
        "members".into(),
        Collection {
            key: KeyRule::Any,
            entry: Entry::Value(s().by(&["owner", "admin"])),
        },
    );
    let record = |fields: Vec<(&str, FieldSpec)>, author: Option<&str>| Entry::Record {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        author: author.map(str::to_string),
        create: vec![Who::Member],
        delete: if author.is_some() {
            vec![Who::Author, Who::Owner, Who::Admin]
        } else {
            vec![Who::Member]
        },
    };
    collections.insert(
        "itinerary".into(),
        Collection {
            key: KeyRule::Id,
            entry: record(
                vec![
                    ("title", s()),
                    ("starts_at", s()),
                    ("location", s()),
                    ("notes", FieldSpec::new(FieldType::Text)),
                ],
                None,
            ),
        },
    );
    collections.insert(
        "tasks".into(),
        Collection {
            key: KeyRule::Id,
            entry: record(
                vec![
                    ("title", s()),
                    ("assignee", FieldSpec::new(FieldType::User)),
                    ("done", FieldSpec::new(FieldType::Bool)),
                    ("created_at", s().fixed()),
                ],
                None,
            ),
        },
    );
    collections.insert(
        "broadcasts".into(),
        Collection {
            key: KeyRule::Id,
            entry: record(
                vec![
                    ("author", FieldSpec::new(FieldType::User).fixed()),
                    ("body", s().by(&["author"])),
                    ("priority", s().by(&["author"])),
                    ("created_at", s().fixed()),
                ],
                Some("author"),
            ),
        },
    );
    KindSpec {
        name: "trip".into(),
        fields: BTreeMap::from([
            ("title".into(), FieldSpec::new(FieldType::Text)),
            ("start_date".into(), s()),
            ("end_date".into(), s()),
        ]),
        collections,
    }
}

fn profile() -> KindSpec {
    let s = || FieldSpec::new(FieldType::String).by(&["user"]);
    KindSpec {
        name: "profile".into(),
        fields: BTreeMap::from([
            ("user".into(), FieldSpec::new(FieldType::User).fixed()),
            ("display_name".into(), s()),
            ("avatar_url".into(), s()),
            ("status".into(), s()),
        ]),
        collections: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESCROW: &str = include_str!("../../tests/fixtures/escrow.toml");

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
