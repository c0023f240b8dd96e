//! [`Conversation`]: a chat between participants.
//!
//! Root fields (schema version 2): `kind: "conversation"`, `schema_version: 2`, `title`
//! (Text), `participants` (list of user ids, for display only: access is decided by the
//! relay's access list, never by document content), `messages`, `read`, `reactions` (see
//! [`crate::chat`] and [`crate::message`]).

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjType, ReadDoc, Value, ROOT};

use crate::chat::Chat;
use crate::error::{At, ReadError, WriteError};
use crate::kind::expect_kind;
use crate::partial::{entry, Partial, Skips};
use crate::tx::transact;
use crate::value::{req_obj, req_text, str_list};
use crate::write::{check_arg, check_empty, write};
use crate::{Kind, MAX_NAME_LEN, MAX_TITLE_LEN, SCHEMA_VERSION};

/// A conversation, read whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// Its title (collaborative text).
    pub title: String,
    /// Who takes part, for display, in list order without duplicates.
    pub participants: Vec<String>,
    /// Its messages, read positions and reactions.
    pub chat: Chat,
}

/// What a new conversation starts with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewConversation {
    /// Its title.
    pub title: String,
    /// Its participants.
    pub participants: Vec<String>,
}

/// Writes the header and empty containers shared by chat documents.
pub(crate) fn init_chat(
    tx: &mut Transaction<'_>,
    kind: Kind,
    title: &str,
) -> Result<(), WriteError> {
    tx.put(ROOT, "kind", kind.as_str())?;
    tx.put(ROOT, "schema_version", SCHEMA_VERSION as i64)?;
    let t = tx.put_object(ROOT, "title", ObjType::Text)?;
    tx.splice_text(&t, 0, 0, title)?;
    tx.put_object(ROOT, "messages", ObjType::Map)?;
    tx.put_object(ROOT, "read", ObjType::Map)?;
    tx.put_object(ROOT, "reactions", ObjType::Map)?;
    Ok(())
}

impl Conversation {
    /// Makes an empty document a conversation, in one change.
    pub fn create(
        doc: &mut Automerge,
        new: &NewConversation,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_empty(doc)?;
        check_arg("title", &new.title, MAX_TITLE_LEN, false)?;
        for p in &new.participants {
            check_arg("participant", p, MAX_NAME_LEN, true)?;
        }
        transact(doc, wall_ms, Some("weft: create conversation"), |tx| {
            init_chat(tx, Kind::Conversation, &new.title)?;
            let list = tx.put_object(ROOT, "participants", ObjType::List)?;
            let mut seen = std::collections::BTreeSet::new();
            for p in new.participants.iter().filter(|p| seen.insert(p.as_str())) {
                let n = tx.length(&list);
                tx.insert(&list, n, p.as_str())?;
            }
            Ok(())
        })
    }

    /// Reads the whole conversation, every message included (see
    /// [`last_messages`](crate::last_messages) for a partial read), and what doesn't fit the
    /// schema (skipped; see [`Partial`]). Reading never writes.
    pub fn read(doc: &Automerge) -> Result<Partial<Conversation>, ReadError> {
        let mut skips = Skips::new();
        let c = Conversation::read_in(doc, &mut skips)?;
        Ok(Partial::new(c, skips))
    }

    pub(crate) fn read_in(doc: &Automerge, skips: &mut Skips) -> Result<Conversation, ReadError> {
        expect_kind(doc, Kind::Conversation)?;
        Ok(Conversation {
            title: title_in(doc, skips)?,
            participants: participants_in(doc, skips)?,
            chat: Chat::read_in(doc, skips)?,
        })
    }

    /// Adds a participant at the end of the list, unless present. Two devices adding the same
    /// user concurrently leave two entries, which reads fold into one.
    pub fn add_participant(
        doc: &mut Automerge,
        user: &str,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_arg("participant", user, MAX_NAME_LEN, true)?;
        write(doc, &[Kind::Conversation], wall_ms, |tx, _| {
            let root = At::Root;
            let list = req_obj(
                tx,
                &ROOT,
                "participants",
                root.key("participants"),
                ObjType::List,
                "a list of user ids",
            )?;
            if participants_in(tx, &mut Skips::new())?
                .iter()
                .any(|p| p == user)
            {
                return Ok(());
            }
            let n = tx.length(&list);
            tx.insert(&list, n, user)?;
            Ok(())
        })
    }

    /// Removes every entry of a participant.
    pub fn remove_participant(
        doc: &mut Automerge,
        user: &str,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        write(doc, &[Kind::Conversation], wall_ms, |tx, _| {
            let root = At::Root;
            let list = req_obj(
                tx,
                &ROOT,
                "participants",
                root.key("participants"),
                ObjType::List,
                "a list of user ids",
            )?;
            // An entry is a string, or Text as JavaScript writes strings.
            let mut hits = Vec::new();
            for item in tx.list_range(&list, ..) {
                let hit = match &item.value {
                    automerge::ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => s == user,
                    automerge::ValueRef::Object(ObjType::Text) => tx.text(item.id())? == user,
                    _ => false,
                };
                if hit {
                    hits.push(item.index);
                }
            }
            for i in hits.into_iter().rev() {
                tx.delete(&list, i)?;
            }
            Ok(())
        })
    }
}

/// The title of a conversation or a trip: empty (and skipped) when it isn't text.
pub(crate) fn title_in<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<String, ReadError> {
    let root = At::Root;
    let at = root.key("title");
    let title = req_text(doc, &ROOT, "title", at, MAX_TITLE_LEN);
    Ok(entry(title, at, skips)?.unwrap_or_default())
}

/// The participants, each once; entries that aren't user ids are skipped.
fn participants_in<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<Vec<String>, ReadError> {
    let root = At::Root;
    let at = root.key("participants");
    let list = req_obj(
        doc,
        &ROOT,
        "participants",
        at,
        ObjType::List,
        "a list of user ids",
    );
    let Some(list) = entry(list, at, skips)? else {
        return Ok(Vec::new());
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut out = str_list(doc, &list, at, MAX_NAME_LEN, "a user id", skips)?;
    out.retain(|p| seen.insert(p.clone()));
    Ok(out)
}

/// Changes the title of a conversation or a trip by a minimal text splice, so concurrent edits
/// merge as text. A title that isn't text (it reads as empty) is replaced by text.
pub fn set_title(doc: &mut Automerge, title: &str, wall_ms: u64) -> Result<(), WriteError> {
    check_arg("title", title, MAX_TITLE_LEN, false)?;
    write(doc, &[Kind::Conversation, Kind::Trip], wall_ms, |tx, _| {
        match tx.get(ROOT, "title")? {
            Some((Value::Object(ObjType::Text), t)) => tx.update_text(&t, title)?,
            _ => {
                let t = tx.put_object(ROOT, "title", ObjType::Text)?;
                tx.splice_text(&t, 0, 0, title)?;
            }
        }
        Ok(())
    })
}
