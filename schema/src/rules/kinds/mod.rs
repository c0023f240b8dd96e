//! What a kind of document allows: its fields, their types, who may write them, and how
//! status-like fields may move. Built-in kinds (conversation, trip, profile) and the kinds an
//! operator declares in TOML (`weft-relay serve --kinds FILE`) are the same structures, checked
//! by the same code (`eval/`).
//!
//! - `mod.rs`: the types ([`Kinds`], [`KindSpec`], [`FieldSpec`], [`Collection`], ...).
//! - `declared.rs`: kinds declared in TOML, parsed and checked for sense.
//! - `builtin.rs`: the built-in kinds' declarations.

use std::collections::BTreeMap;

mod builtin;
mod declared;

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
    /// The kind named `name`.
    pub fn get(&self, name: &str) -> Option<&KindSpec> {
        self.kinds.get(name)
    }

    /// Every kind, built-in and declared, by name.
    pub fn specs(&self) -> impl Iterator<Item = &KindSpec> {
        self.kinds.values()
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
