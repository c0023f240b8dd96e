//! The chat of a conversation or a trip: sending, editing and deleting messages, reactions and
//! read positions. Their merge semantics are in the crate docs.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value, ROOT};

use crate::error::{At, ReadError, WriteError};
use crate::message::{find_key, messages_obj, read_all, read_message, tail_above};
use crate::value::{describe, truncate};
use crate::write::{check_arg, write, Ctx};
use crate::{
    Attachment, Hlc, Id, Kind, Message, MessageKey, MAX_BODY_LEN, MAX_NAME_LEN, MAX_URL_LEN,
};

const CHAT_KINDS: &[Kind] = &[Kind::Conversation, Kind::Trip];

/// The longest reaction (an emoji or a short code), in bytes.
pub const MAX_REACTION_LEN: usize = 64;

/// Who reacted with what to one message: emoji -> users.
pub type Reactions = BTreeMap<String, BTreeSet<String>>;

/// A chat's whole state: what a conversation and a trip share.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chat {
    /// Every message, in display order.
    pub messages: Vec<Message>,
    /// Per user, the message read up to.
    pub read: BTreeMap<String, MessageKey>,
    /// Per message id, its reactions. Messages without reactions are absent.
    pub reactions: BTreeMap<Id, Reactions>,
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMessage {
    /// The author's user id.
    pub author: String,
    /// The text (may be empty when there is an attachment).
    pub body: String,
    /// The message this one replies to.
    pub reply_to: Option<Id>,
    /// A file attached to it.
    pub attachment: Option<Attachment>,
}

impl NewMessage {
    /// A plain text message.
    pub fn text(author: impl Into<String>, body: impl Into<String>) -> Self {
        NewMessage {
            author: author.into(),
            body: body.into(),
            reply_to: None,
            attachment: None,
        }
    }
}

impl Chat {
    pub(crate) fn read_in<D: ReadDoc>(doc: &D) -> Result<Chat, ReadError> {
        Ok(Chat {
            messages: read_all(doc)?,
            read: read_positions_in(doc)?,
            reactions: all_reactions_in(doc)?,
        })
    }
}

/// Every map at `obj[key]`: the winner and the conflicting losers, in Automerge's order.
/// Null is skipped; any other value is an error.
fn maps_at<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
    expected: &'static str,
) -> Result<Vec<ObjId>, ReadError> {
    let mut out = Vec::new();
    for (v, id) in doc.get_all(obj, key)? {
        match v {
            Value::Object(ObjType::Map | ObjType::Table) => out.push(id),
            Value::Scalar(s) if matches!(s.as_ref(), ScalarValue::Null) => {}
            v => return Err(at.invalid(expected, describe(&v))),
        }
    }
    Ok(out)
}

fn read_positions_in<D: ReadDoc>(doc: &D) -> Result<BTreeMap<String, MessageKey>, ReadError> {
    let root = At::Root;
    let at = root.key("read");
    let mut out: BTreeMap<String, MessageKey> = BTreeMap::new();
    for read in maps_at(doc, &ROOT, "read", at, "a map of read positions")? {
        for user in doc.keys(&read) {
            let at = at.key(&user);
            if user.is_empty() || user.len() > MAX_NAME_LEN {
                return Err(at.invalid("a user id", format!("{:?}", truncate(&user))));
            }
            for (v, _) in doc.get_all(&read, user.as_str())? {
                let key = match &v {
                    Value::Scalar(s) => match s.as_ref() {
                        ScalarValue::Str(s) => s.parse::<MessageKey>().ok(),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| at.invalid("a message key", describe(&v)))?;
                let e = out.entry(user.clone()).or_insert_with(|| key.clone());
                if key > *e {
                    *e = key;
                }
            }
        }
    }
    Ok(out)
}

/// Per user, the message read up to (the greatest position any replica wrote).
pub fn read_positions(doc: &Automerge) -> Result<BTreeMap<String, MessageKey>, ReadError> {
    messages_obj(doc)?;
    read_positions_in(doc)
}

fn reactions_of<D: ReadDoc>(
    doc: &D,
    containers: &[ObjId],
    id: &str,
    at: At<'_>,
    out: &mut Reactions,
) -> Result<(), ReadError> {
    let at = at.key(id);
    for per_msg in containers {
        for per_msg in maps_at(doc, per_msg, id, at, "a map of reactions")? {
            for emoji in doc.keys(&per_msg) {
                let at = at.key(&emoji);
                if emoji.is_empty() || emoji.len() > MAX_REACTION_LEN {
                    return Err(at.invalid("a reaction", format!("{:?}", truncate(&emoji))));
                }
                for users in maps_at(doc, &per_msg, &emoji, at, "a map of users")? {
                    for item in doc.map_range(&users, ..) {
                        let at = at.key(&item.key);
                        if item.key.is_empty() || item.key.len() > MAX_NAME_LEN {
                            return Err(
                                at.invalid("a user id", format!("{:?}", truncate(&item.key)))
                            );
                        }
                        match item.value {
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(
                                true,
                            )) => {
                                out.entry(emoji.clone())
                                    .or_default()
                                    .insert(item.key.to_string());
                            }
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(
                                false,
                            )) => {}
                            v => return Err(at.invalid("true", describe(&v.into()))),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn all_reactions_in<D: ReadDoc>(doc: &D) -> Result<BTreeMap<Id, Reactions>, ReadError> {
    let root = At::Root;
    let at = root.key("reactions");
    let containers = maps_at(doc, &ROOT, "reactions", at, "a map of reactions")?;
    let mut ids = BTreeSet::new();
    for c in &containers {
        ids.extend(doc.keys(c));
    }
    let mut out = BTreeMap::new();
    for id in ids {
        let parsed: Id = id.parse().map_err(|_| {
            at.key(&id)
                .invalid("a message id", format!("{:?}", truncate(&id)))
        })?;
        let mut r = Reactions::new();
        reactions_of(doc, &containers, &id, at, &mut r)?;
        if !r.is_empty() {
            out.insert(parsed, r);
        }
    }
    Ok(out)
}

/// The reactions to one message.
pub fn reactions(doc: &Automerge, id: &Id) -> Result<Reactions, ReadError> {
    messages_obj(doc)?;
    let root = At::Root;
    let at = root.key("reactions");
    let containers = maps_at(doc, &ROOT, "reactions", at, "a map of reactions")?;
    let mut r = Reactions::new();
    reactions_of(doc, &containers, id.as_str(), at, &mut r)?;
    Ok(r)
}

fn check_new_message(msg: &NewMessage) -> Result<(), WriteError> {
    check_arg("author", &msg.author, MAX_NAME_LEN, true)?;
    check_arg("body", &msg.body, MAX_BODY_LEN, false)?;
    if let Some(a) = &msg.attachment {
        check_arg("attachment url", &a.url, MAX_URL_LEN, true)?;
        check_arg("attachment mime_type", &a.mime_type, MAX_NAME_LEN, true)?;
        if let Some(n) = &a.name {
            check_arg("attachment name", n, MAX_NAME_LEN, true)?;
        }
    }
    Ok(())
}

/// Sends a message into a conversation's or a trip's chat, as one change that adds one key to
/// `messages`. `id` comes from the caller ([`Id::random`] with its RNG); `wall_ms` is its wall
/// clock in Unix milliseconds. The message's `created_at` is later than every message already
/// in the chat, so it shows last, even when the writer's clock is behind.
pub fn send_message(
    doc: &mut Automerge,
    msg: &NewMessage,
    id: Id,
    wall_ms: u64,
) -> Result<Message, WriteError> {
    check_new_message(msg)?;
    write(doc, CHAT_KINDS, wall_ms, |tx, ctx| {
        let obj = messages_obj(tx)?;
        // The new message must sort after every message already here. Usually they are all
        // older than the wall clock, which one probe shows; otherwise the few newer keys are
        // read, and only a pathological pile of them costs a binary search.
        const SCAN: usize = 256;
        let mut newer: Vec<String> = tx
            .map_range(&obj, Hlc::prefix(ctx.wall_ms, 0)..)
            .take(SCAN)
            .map(|item| item.key.to_string())
            .collect();
        let newest = if newer.len() == SCAN {
            tail_above(tx, &obj, 1, ctx.wall_ms)
                .pop()
                .map(|(k, _, _)| k)
        } else {
            newer.pop()
        };
        let last = match newest {
            Some(key) => Some(key.parse::<MessageKey>().map_err(|_| {
                let root = At::Root;
                let at = root.key("messages");
                at.key(&key).invalid(
                    "a message key ({created_at}_{id})",
                    format!("{:?}", truncate(&key)),
                )
            })?),
            None => None,
        };
        let created_at = ctx.now(last.map(|k| k.created_at));
        let key = MessageKey {
            created_at,
            id: id.clone(),
        }
        .to_string();
        if tx.get(&obj, key.as_str())?.is_some() {
            return Err(WriteError::DuplicateId {
                what: "message",
                id,
            });
        }
        let m = tx.put_object(&obj, key.as_str(), ObjType::Map)?;
        tx.put(&m, "id", id.as_str())?;
        tx.put(&m, "author", msg.author.as_str())?;
        tx.put(&m, "created_at", created_at.to_string())?;
        let body = tx.put_object(&m, "body", ObjType::Text)?;
        tx.splice_text(&body, 0, 0, &msg.body)?;
        tx.put(&m, "deleted", false)?;
        if let Some(r) = &msg.reply_to {
            tx.put(&m, "reply_to", r.as_str())?;
        }
        if let Some(a) = &msg.attachment {
            let obj = tx.put_object(&m, "attachment", ObjType::Map)?;
            tx.put(&obj, "url", a.url.as_str())?;
            tx.put(&obj, "mime_type", a.mime_type.as_str())?;
            tx.put(&obj, "size", i64::try_from(a.size).unwrap_or(i64::MAX))?;
            if let Some(n) = &a.name {
                tx.put(&obj, "name", n.as_str())?;
            }
        }
        Ok(Message {
            id,
            author: msg.author.clone(),
            body: msg.body.clone(),
            created_at,
            edited_at: None,
            deleted: false,
            reply_to: msg.reply_to.clone(),
            attachment: msg.attachment.clone(),
        })
    })
}

/// The message with `id`, read inside a write: its object and its typed value.
fn load(tx: &Transaction<'_>, id: &Id) -> Result<(ObjId, Message), WriteError> {
    let obj = messages_obj(tx)?;
    let (key, v, m) = find_key(tx, &obj, id).ok_or_else(|| WriteError::NotFound {
        what: "message",
        id: id.clone(),
    })?;
    let root = At::Root;
    let at = root.key("messages");
    let msg = read_message(tx, &key, &v, &m, at.key(&key))?;
    Ok((m, msg))
}

/// Replaces the body of `msg` with `body` by a minimal text splice, so that concurrent edits
/// merge.
fn set_body(tx: &mut Transaction<'_>, msg: &ObjId, body: &str) -> Result<(), WriteError> {
    match tx.get(msg, "body")? {
        Some((Value::Object(ObjType::Text), text)) => tx.update_text(&text, body)?,
        _ => {
            let text = tx.put_object(msg, "body", ObjType::Text)?;
            tx.splice_text(&text, 0, 0, body)?;
        }
    }
    Ok(())
}

fn edit_stamp(ctx: &Ctx, m: &Message) -> Hlc {
    ctx.now(Some(
        m.edited_at.map_or(m.created_at, |e| e.max(m.created_at)),
    ))
}

/// Edits a message's body. Concurrent edits merge as text. Editing a deleted message is
/// [`WriteError::Deleted`]; an edit that changes nothing makes no change.
pub fn edit_message(
    doc: &mut Automerge,
    id: &Id,
    body: &str,
    wall_ms: u64,
) -> Result<(), WriteError> {
    check_arg("body", body, MAX_BODY_LEN, false)?;
    write(doc, CHAT_KINDS, wall_ms, |tx, ctx| {
        let (obj, msg) = load(tx, id)?;
        if msg.deleted {
            return Err(WriteError::Deleted { id: id.clone() });
        }
        if msg.body == body {
            return Ok(());
        }
        set_body(tx, &obj, body)?;
        tx.put(&obj, "edited_at", edit_stamp(ctx, &msg).to_string())?;
        Ok(())
    })
}

/// Deletes a message: a tombstone that keeps its place (and id) in the chat, with the body
/// cleared and the attachment dropped. Deleting a deleted message makes no change.
pub fn delete_message(doc: &mut Automerge, id: &Id, wall_ms: u64) -> Result<(), WriteError> {
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let (obj, msg) = load(tx, id)?;
        if msg.deleted {
            return Ok(());
        }
        tx.put(&obj, "deleted", true)?;
        set_body(tx, &obj, "")?;
        if tx.get(&obj, "attachment")?.is_some() {
            tx.delete(&obj, "attachment")?;
        }
        Ok(())
    })
}

/// The winning map at `obj[key]`, created when absent.
fn ensure_map(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    at: At<'_>,
) -> Result<ObjId, WriteError> {
    match tx.get(obj, key)? {
        Some((Value::Object(ObjType::Map | ObjType::Table), id)) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
        Some((Value::Scalar(s), _)) if matches!(s.as_ref(), ScalarValue::Null) => {
            Ok(tx.put_object(obj, key, ObjType::Map)?)
        }
        Some((v, _)) => Err(at.invalid("a map", describe(&v)).into()),
    }
}

/// Adds `user`'s reaction `emoji` to the message `id`. The message is not looked up (a
/// reaction may arrive before its message), only the id's form is checked.
pub fn react(
    doc: &mut Automerge,
    id: &Id,
    emoji: &str,
    user: &str,
    wall_ms: u64,
) -> Result<(), WriteError> {
    check_arg("reaction", emoji, MAX_REACTION_LEN, true)?;
    check_arg("user", user, MAX_NAME_LEN, true)?;
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let root = At::Root;
        let at = root.key("reactions");
        let mut r = Reactions::new();
        let containers = maps_at(tx, &ROOT, "reactions", at, "a map of reactions")?;
        reactions_of(tx, &containers, id.as_str(), at, &mut r)?;
        if r.get(emoji).is_some_and(|u| u.contains(user)) {
            return Ok(());
        }
        let all = ensure_map(tx, &ROOT, "reactions", at)?;
        let at = at.key(id.as_str());
        let per_msg = ensure_map(tx, &all, id.as_str(), at)?;
        let users = ensure_map(tx, &per_msg, emoji, at.key(emoji))?;
        tx.put(&users, user, true)?;
        Ok(())
    })
}

/// Removes `user`'s reaction `emoji` from the message `id`, from every concurrent copy of the
/// containers. Removing an absent reaction makes no change.
pub fn unreact(
    doc: &mut Automerge,
    id: &Id,
    emoji: &str,
    user: &str,
    wall_ms: u64,
) -> Result<(), WriteError> {
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let root = At::Root;
        let at = root.key("reactions");
        let at_msg = at.key(id.as_str());
        let at_emoji = at_msg.key(emoji);
        let mut targets = Vec::new();
        for all in maps_at(tx, &ROOT, "reactions", at, "a map of reactions")? {
            for per_msg in maps_at(tx, &all, id.as_str(), at_msg, "a map of reactions")? {
                for users in maps_at(tx, &per_msg, emoji, at_emoji, "a map of users")? {
                    if tx.get(&users, user)?.is_some() {
                        targets.push(users);
                    }
                }
            }
        }
        for users in targets {
            tx.delete(&users, user)?;
        }
        Ok(())
    })
}

/// Records that `user` has read up to the message at `key` (which must exist). Positions only
/// move forward: returns `false`, making no change, when `user` had already read as far.
pub fn mark_read(
    doc: &mut Automerge,
    user: &str,
    key: &MessageKey,
    wall_ms: u64,
) -> Result<bool, WriteError> {
    check_arg("user", user, MAX_NAME_LEN, true)?;
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let obj = messages_obj(tx)?;
        let k = key.to_string();
        if tx.get(&obj, k.as_str())?.is_none() {
            return Err(WriteError::NotFound {
                what: "message",
                id: key.id.clone(),
            });
        }
        if read_positions_in(tx)?
            .get(user)
            .is_some_and(|cur| cur >= key)
        {
            return Ok(false);
        }
        let root = At::Root;
        let read = ensure_map(tx, &ROOT, "read", root.key("read"))?;
        tx.put(&read, user, k)?;
        Ok(true)
    })
}

/// The last message of a chat, if any (for an app's conversation list).
pub fn last_message(doc: &Automerge) -> Result<Option<Message>, ReadError> {
    Ok(crate::last_messages(doc, 1)?.pop())
}
