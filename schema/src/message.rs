//! [`Message`]: one chat message, and the reads of a chat's `messages` map: all of them, the
//! last N, one by id, the ones changed since some heads. The crate docs ("Ordering") say why
//! messages live in a map keyed by [`MessageKey`] rather than in a list.

use std::collections::VecDeque;

use automerge::{ObjId, ObjType, ReadDoc, Value, ROOT};

use crate::error::{At, ReadError};
use crate::partial::{entry, Partial, Skips};
use crate::value::{f_bool, f_obj, f_parsed, f_str, f_text, f_u64, fields, req_obj};
use crate::{kind::kind_in, Hlc, Id, Kind, MessageKey, MAX_BODY_LEN, MAX_NAME_LEN, MAX_URL_LEN};

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Stable id, chosen by the writer.
    pub id: Id,
    /// The author's user id.
    pub author: String,
    /// The text; empty when the message is deleted.
    pub body: String,
    /// When it was written (hybrid logical clock).
    pub created_at: Hlc,
    /// When it was last edited, if ever.
    pub edited_at: Option<Hlc>,
    /// Whether it was deleted. Deletion is a tombstone: the message keeps its place.
    pub deleted: bool,
    /// The message this one replies to.
    pub reply_to: Option<Id>,
    /// A file attached to it.
    pub attachment: Option<Attachment>,
}

impl Message {
    /// Its place in display order (and its key in the `messages` map).
    pub fn key(&self) -> MessageKey {
        MessageKey {
            created_at: self.created_at,
            id: self.id.clone(),
        }
    }
}

/// Metadata of a file attached to a message (the bytes live elsewhere, at `url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Where the file is.
    pub url: String,
    /// Its media type, e.g. `image/jpeg`.
    pub mime_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its file name, if the app shows one.
    pub name: Option<String>,
}

/// Fails unless the document is a chat document (a conversation or a trip).
pub(crate) fn check_chat<D: ReadDoc>(doc: &D) -> Result<(), ReadError> {
    let kind = kind_in(doc)?;
    if !kind.has_chat() {
        return Err(ReadError::WrongKind {
            expected: Kind::Conversation,
            found: kind,
        });
    }
    Ok(())
}

/// The `messages` map of a chat document, which a write needs.
pub(crate) fn messages_obj<D: ReadDoc>(doc: &D) -> Result<ObjId, ReadError> {
    check_chat(doc)?;
    let root = At::Root;
    req_obj(
        doc,
        &ROOT,
        "messages",
        root.key("messages"),
        ObjType::Map,
        "a map of messages",
    )
}

/// The `messages` map of a chat document, for a read: `None` (skipped) when there is no map
/// there, which reads as no messages.
pub(crate) fn messages_in<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<Option<ObjId>, ReadError> {
    check_chat(doc)?;
    let root = At::Root;
    let at = root.key("messages");
    entry(
        req_obj(
            doc,
            &ROOT,
            "messages",
            at,
            ObjType::Map,
            "a map of messages",
        ),
        at,
        skips,
    )
}

/// Reads the message stored at `messages[key]`, whose value is `value`.
pub(crate) fn read_message<D: ReadDoc>(
    doc: &D,
    key: &str,
    value: &Value<'_>,
    obj: &ObjId,
    at: At<'_>,
) -> Result<Message, ReadError> {
    let parsed: MessageKey = key.parse().map_err(|_| {
        at.invalid(
            "a message key ({created_at}_{id})",
            format!("{:?}", crate::value::truncate(key)),
        )
    })?;
    if !matches!(value, Value::Object(ObjType::Map | ObjType::Table)) {
        return Err(at.invalid("a message map", crate::value::describe(value)));
    }
    let [id_f, created_f, author_f, deleted_f, body_f, edited_f, reply_f, attach_f] = fields(
        doc,
        obj,
        [
            "id",
            "created_at",
            "author",
            "deleted",
            "body",
            "edited_at",
            "reply_to",
            "attachment",
        ],
    );
    let id: Id = f_parsed(doc, &id_f, at.key("id"), "an id", |s| s.parse().ok())?
        .ok_or_else(|| at.key("id").missing("an id"))?;
    if id != parsed.id {
        return Err(at
            .key("id")
            .invalid("the id in the message's key", format!("{id}")));
    }
    let created_at: Hlc = f_parsed(doc, &created_f, at.key("created_at"), "a timestamp", |s| {
        s.parse().ok()
    })?
    .ok_or_else(|| at.key("created_at").missing("a timestamp"))?;
    if created_at != parsed.created_at {
        return Err(at
            .key("created_at")
            .invalid("the timestamp in the message's key", created_at.to_string()));
    }
    let author = f_str(doc, &author_f, at.key("author"), MAX_NAME_LEN, "a user id")?
        .ok_or_else(|| at.key("author").missing("a user id"))?;
    let deleted = f_bool(&deleted_f, at.key("deleted"))?.unwrap_or(false);
    let body = f_text(doc, &body_f, at.key("body"), MAX_BODY_LEN)?
        .ok_or_else(|| at.key("body").missing("text or a string"))?;
    let edited_at = f_parsed(doc, &edited_f, at.key("edited_at"), "a timestamp", |s| {
        s.parse().ok()
    })?;
    let reply_to = f_parsed(doc, &reply_f, at.key("reply_to"), "an id", |s| {
        s.parse().ok()
    })?;
    let attachment = match f_obj(
        &attach_f,
        at.key("attachment"),
        ObjType::Map,
        "an attachment map",
    )? {
        Some(a) => Some(read_attachment(doc, &a, at.key("attachment"))?),
        None => None,
    };
    Ok(Message {
        id,
        author,
        body: if deleted { String::new() } else { body },
        created_at,
        edited_at,
        deleted,
        reply_to,
        attachment,
    })
}

fn read_attachment<D: ReadDoc>(doc: &D, obj: &ObjId, at: At<'_>) -> Result<Attachment, ReadError> {
    let [url, mime, size, name] = fields(doc, obj, ["url", "mime_type", "size", "name"]);
    Ok(Attachment {
        url: f_str(doc, &url, at.key("url"), MAX_URL_LEN, "a URL")?
            .ok_or_else(|| at.key("url").missing("a URL"))?,
        mime_type: f_str(
            doc,
            &mime,
            at.key("mime_type"),
            MAX_NAME_LEN,
            "a media type",
        )?
        .ok_or_else(|| at.key("mime_type").missing("a media type"))?,
        size: f_u64(&size, at.key("size"))?
            .ok_or_else(|| at.key("size").missing("a size in bytes"))?,
        name: f_str(doc, &name, at.key("name"), MAX_NAME_LEN, "a file name")?,
    })
}

/// Every message of a chat (a conversation's or a trip's), in display order, and the entries
/// of `messages` that aren't messages (skipped). Reading never writes.
pub fn messages(doc: &automerge::Automerge) -> Result<Partial<Vec<Message>>, ReadError> {
    let mut skips = Skips::new();
    let all = read_all(doc, &mut skips)?;
    Ok(Partial::new(all, skips))
}

pub(crate) fn read_all<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<Vec<Message>, ReadError> {
    let Some(obj) = messages_in(doc, skips)? else {
        return Ok(Vec::new());
    };
    let root = At::Root;
    let base = root.key("messages");
    let mut out = Vec::new();
    for item in doc.map_range(&obj, ..) {
        let v: Value<'_> = item.value.clone().into();
        let at = base.key(&item.key);
        let m = read_message(doc, &item.key, &v, &item.id(), at);
        out.extend(entry(m, at, skips)?);
    }
    Ok(out)
}

/// The last `n` messages of a chat in display order, reading only those `n` messages (and at
/// most 64 x `n` keys), however long the chat is.
///
/// Validation covers what is read: entries among (or after) the last `n` messages that aren't
/// messages are skipped and reported, and the read reaches further back to still return `n`
/// messages when there are that many. A malformed entry further back is not noticed here (it
/// is by [`messages`]).
pub fn last_messages(
    doc: &automerge::Automerge,
    n: usize,
) -> Result<Partial<Vec<Message>>, ReadError> {
    let mut skips = Skips::new();
    let Some(obj) = messages_in(doc, &mut skips)? else {
        return Ok(Partial::new(Vec::new(), skips));
    };
    if n == 0 {
        return Ok(Partial::new(Vec::new(), skips));
    }
    let root = At::Root;
    let base = root.key("messages");
    let mut want = n;
    loop {
        let window = tail(doc, &obj, want);
        let exhausted = window.len() < want;
        // Each message with its place in the window, and each skipped entry with its place.
        let mut good: Vec<(usize, Message)> = Vec::new();
        let mut bad: Vec<(usize, crate::Skipped)> = Vec::new();
        for (i, (key, v, id)) in window.iter().enumerate() {
            let at = base.key(key);
            let mut one = Skips::new();
            match entry(read_message(doc, key, v, id, at), at, &mut one)? {
                Some(m) => good.push((i, m)),
                None => bad.extend(one.into_iter().map(|s| (i, s))),
            }
        }
        if good.len() >= n || exhausted {
            let first = good.len().saturating_sub(n);
            // Skipped entries older than every returned message are not reported, unless
            // the window holds all there is.
            let from = match good.get(first) {
                Some((i, _)) if good.len() >= n => *i,
                _ => 0,
            };
            skips.extend(bad.into_iter().filter(|(i, _)| *i >= from).map(|(_, s)| s));
            let msgs = good.into_iter().skip(first).map(|(_, m)| m).collect();
            return Ok(Partial::new(msgs, skips));
        }
        // Some entries didn't read: look twice as far back (a geometric growth keeps a tail of
        // many bad entries to a few searches).
        want = want.saturating_add(want.max(n - good.len()));
    }
}

/// The message with this id, or `None`; an entry with this id that isn't a message is
/// skipped (and the result is `None`). Costs a scan of the keys (not the messages), so it
/// grows with the chat. [`edit_message`](crate::edit_message) and
/// [`delete_message`](crate::delete_message) find their message the same way.
pub fn find_message(
    doc: &automerge::Automerge,
    id: &Id,
) -> Result<Partial<Option<Message>>, ReadError> {
    let mut skips = Skips::new();
    let Some(obj) = messages_in(doc, &mut skips)? else {
        return Ok(Partial::new(None, skips));
    };
    let root = At::Root;
    let base = root.key("messages");
    let found = match find_key(doc, &obj, id) {
        Some((key, v, mid)) => {
            let at = base.key(&key);
            entry(read_message(doc, &key, &v, &mid, at), at, &mut skips)?
        }
        None => None,
    };
    Ok(Partial::new(found, skips))
}

/// The entry of the message with this id: its key, value and object id. Only well-formed keys
/// count, so a malformed key that happens to end with the id doesn't hide the message.
pub(crate) fn find_key<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    id: &Id,
) -> Option<(String, Value<'static>, ObjId)> {
    let suffix = id.as_str();
    doc.map_range(obj, ..).find_map(|item| {
        let k: &str = &item.key;
        let hit = k.len() == crate::hlc::HLC_STR_LEN + 1 + suffix.len()
            && k.ends_with(suffix)
            && k.as_bytes()[crate::hlc::HLC_STR_LEN] == b'_'
            && k.parse::<MessageKey>().is_ok();
        hit.then(|| (k.to_owned(), item.value.clone().into(), item.id()))
    })
}

/// The last `n` entries of a map keyed by [`MessageKey`]s, in key order.
///
/// Binary search over the 64-bit space of (milliseconds, counter) key prefixes for the largest
/// prefix with at least `n` keys at or after it; each probe seeks once and reads at most `n`
/// keys. Keys that sort before every timestamp (malformed ones) are not seen.
pub(crate) fn tail<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    n: usize,
) -> Vec<(String, Value<'static>, ObjId)> {
    tail_above(doc, obj, n, 0)
}

/// Like [`tail`], searching only above `floor_ms`: the caller expects at least `n` keys at or
/// after that millisecond (if there aren't, the whole range is searched).
pub(crate) fn tail_above<D: ReadDoc>(
    doc: &D,
    obj: &ObjId,
    n: usize,
    floor_ms: u64,
) -> Vec<(String, Value<'static>, ObjId)> {
    if n == 0 {
        return Vec::new();
    }
    let prefix = |p: u64| Hlc::prefix(p >> 16, (p & 0xffff) as u16);
    let enough = |p: u64| doc.map_range(obj, prefix(p)..).take(n).count() >= n;
    let max_p = (crate::MAX_HLC_MS << 16) | 0xffff;
    let floor = floor_ms.min(crate::MAX_HLC_MS) << 16;
    let floor = if floor > 0 && enough(floor) { floor } else { 0 };
    let start = if floor == 0 && !enough(0) {
        0
    } else if enough(max_p) {
        max_p
    } else {
        // Invariant: enough(lo) && !enough(hi).
        let (mut lo, mut hi) = (floor, max_p);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if enough(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    };
    let mut out = VecDeque::with_capacity(n + 1);
    for item in doc.map_range(obj, prefix(start)..) {
        out.push_back((item.key.to_string(), item.value.clone().into(), item.id()));
        if out.len() > n {
            out.pop_front();
        }
    }
    out.into()
}

/// What changed in a chat's messages since some earlier heads: what the checkpoint's
/// `weft_messages` rows need to follow edits, deletions and new messages incrementally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessageChanges {
    /// Messages added or modified (body, tombstone, anything inside them), in display order.
    /// A touched entry that no longer reads as a message is not here but among the read's
    /// skipped entries ([`Skipped::message_key`](crate::Skipped::message_key) gives its key).
    pub changed: Vec<Message>,
    /// Keys whose entry is gone from `messages` (weft never removes one; another writer might).
    pub removed: Vec<MessageKey>,
}

/// The messages touched by the changes the document has beyond `since` (heads it had
/// earlier). The cost follows the size of those changes, not of the chat: each operation's
/// object is traced up to its message. Heads `since` that the document doesn't know are
/// treated as absent, so everything after the common history is reported.
pub fn messages_changed_since(
    doc: &automerge::Automerge,
    since: &[automerge::ChangeHash],
) -> Result<Partial<MessageChanges>, ReadError> {
    use std::collections::{BTreeMap, BTreeSet};

    let mut skips = Skips::new();
    let Some(obj) = messages_in(doc, &mut skips)? else {
        return Ok(Partial::new(MessageChanges::default(), skips));
    };
    let known: Vec<_> = since
        .iter()
        .copied()
        .filter(|h| doc.get_change_meta_by_hash(h).is_some())
        .collect();
    let msgs_str = obj.to_string();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    for change in doc.get_changes(&known) {
        for op in change.decode().operations {
            let o = op.obj.to_string();
            if o == msgs_str {
                if let automerge::legacy::Key::Map(k) = &op.key {
                    keys.insert(k.to_string());
                }
                continue;
            }
            if let Some(k) = seen.get(&o) {
                keys.extend(k.clone());
                continue;
            }
            let key = match doc.import(&o) {
                Ok((id, _)) => doc
                    .parents(&id)
                    .ok()
                    .and_then(|mut ps| ps.find(|p| p.obj == obj))
                    .and_then(|p| match p.prop {
                        automerge::Prop::Map(k) => Some(k),
                        automerge::Prop::Seq(_) => None,
                    }),
                Err(_) => None,
            };
            keys.extend(key.clone());
            seen.insert(o, key);
        }
    }
    let root = At::Root;
    let at = root.key("messages");
    let mut out = MessageChanges::default();
    for key in keys {
        match doc.get(&obj, key.as_str())? {
            Some((v, m)) => {
                let at = at.key(&key);
                out.changed
                    .extend(entry(read_message(doc, &key, &v, &m, at), at, &mut skips)?);
            }
            None => {
                if let Ok(k) = key.parse() {
                    out.removed.push(k);
                }
            }
        }
    }
    Ok(Partial::new(out, skips))
}
