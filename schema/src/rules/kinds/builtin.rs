//! The built-in kinds: conversation, trip and profile (the chat the first two share).

use std::collections::BTreeMap;

use super::{Collection, Entry, FieldSpec, FieldType, KeyRule, KindSpec, Kinds, Who};

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
