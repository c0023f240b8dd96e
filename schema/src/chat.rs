//! The chat of a conversation or a trip: sending, editing and deleting messages, and read
//! positions (reactions are in [`crate::reactions`]). Their merge semantics are in the crate
//! docs.

use std::collections::BTreeMap;

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};

use crate::error::{At, ReadError, WriteError};
use crate::kind::CHAT_KINDS;
use crate::message::{check_chat, find_key, messages_obj, read_all, read_message, tail_above};
use crate::partial::{entry, skip, Partial, Skips};
use crate::reactions::all_reactions_in;
use crate::value::{as_str, maps_at, truncate};
use crate::write::{check_arg, ensure_map, write, Ctx};
use crate::{
    Attachment, Hlc, Id, Message, MessageKey, Reactions, MAX_BODY_LEN, MAX_NAME_LEN, MAX_URL_LEN,
};

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
    pub(crate) fn read_in<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<Chat, ReadError> {
        Ok(Chat {
            messages: read_all(doc, skips)?,
            read: read_positions_in(doc, skips)?,
            reactions: all_reactions_in(doc, skips)?,
        })
    }
}

/// Per user, the greatest position any replica wrote; a position that isn't a message key
/// (or a user id that isn't one) is skipped.
fn read_positions_in<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<BTreeMap<String, MessageKey>, ReadError> {
    let root = At::Root;
    let at = root.key("read");
    let mut out: BTreeMap<String, MessageKey> = BTreeMap::new();
    for read in maps_at(doc, &ROOT, "read", at, "a map of read positions", skips)? {
        for user in doc.keys(&read) {
            let at = at.key(&user);
            if user.is_empty() || user.len() > MAX_NAME_LEN {
                let why = at.invalid("a user id", format!("{:?}", truncate(&user)));
                skip(at, why, skips);
                continue;
            }
            for (v, id) in doc.get_all(&read, user.as_str())? {
                let key =
                    as_str(doc, Some((&v, &id)), at, 256, true, "a message key").and_then(|s| {
                        s.map(|s| {
                            s.parse::<MessageKey>().map_err(|_| {
                                at.invalid("a message key", format!("{:?}", truncate(&s)))
                            })
                        })
                        .transpose()
                    });
                let Some(Some(key)) = entry(key, at, skips)? else {
                    continue;
                };
                let e = out.entry(user.clone()).or_insert_with(|| key.clone());
                if key > *e {
                    *e = key;
                }
            }
        }
    }
    Ok(out)
}

/// Per user, the message read up to (the greatest position any replica wrote), and the
/// positions that don't read (skipped).
pub fn read_positions(doc: &Automerge) -> Result<Partial<BTreeMap<String, MessageKey>>, ReadError> {
    check_chat(doc)?;
    let mut skips = Skips::new();
    let r = read_positions_in(doc, &mut skips)?;
    Ok(Partial::new(r, skips))
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
        let newer: Vec<String> = tx
            .map_range(&obj, Hlc::prefix(ctx.wall_ms, 0)..)
            .take(SCAN)
            .map(|item| item.key.to_string())
            .collect();
        // Keys that aren't message keys (another writer's junk) say nothing about time.
        let last = if newer.len() == SCAN {
            newest_key(tx, &obj, ctx.wall_ms)
        } else {
            newer
                .iter()
                .rev()
                .find_map(|k| k.parse::<MessageKey>().ok())
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

/// The greatest well-formed message key at or after `floor_ms`, or else anywhere: the tail
/// is searched for one, looking twice as far back each time it holds only malformed keys.
fn newest_key<D: ReadDoc>(doc: &D, obj: &ObjId, floor_ms: u64) -> Option<MessageKey> {
    let mut n = 1;
    loop {
        let window = tail_above(doc, obj, n, floor_ms);
        if let Some(k) = window.iter().rev().find_map(|(k, _, _)| k.parse().ok()) {
            return Some(k);
        }
        if window.len() < n {
            return None;
        }
        n = n.saturating_mul(2);
    }
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
        if read_positions_in(tx, &mut Skips::new())?
            .get(user)
            .is_some_and(|cur| cur >= key)
        {
            return Ok(false);
        }
        let read = ensure_map(tx, &ROOT, "read")?;
        tx.put(&read, user, k)?;
        Ok(true)
    })
}

/// The last message of a chat, if any, for an app's conversation list: entries that don't
/// read are passed over (see [`last_messages`](crate::last_messages) to have them reported).
pub fn last_message(doc: &Automerge) -> Result<Option<Message>, ReadError> {
    Ok(crate::last_messages(doc, 1)?.value.pop())
}
