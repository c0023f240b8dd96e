//! [`Tail`]: the last messages of a chat with the heads they were read at, and its stored
//! form, for a display cache kept beside the document (a device shows a conversation's tail
//! from it without loading the document).
//!
//! A tail is a function of the heads alone (the same heads are the same document, and
//! [`last_messages`] reads in the map's key order, the same on every replica), so a cached tail
//! is right exactly when its heads equal the document's. Only complete reads are kept: a tail
//! with skipped entries is not cached, so the read that reports them runs instead.

use std::str::FromStr;

use automerge::{Automerge, ChangeHash};
use serde::{Deserialize, Serialize};

use crate::message::{last_messages, Attachment, Message};
use crate::partial::Partial;
use crate::{Hlc, Id};

/// Format byte of an encoded [`Tail`].
const TAIL_FORMAT: u8 = 0x01;

/// The last messages of a chat at some heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tail {
    /// The document's heads the messages were read at, sorted.
    pub heads: Vec<ChangeHash>,
    /// How many messages were asked for: fewer in `messages` means the chat holds no more.
    pub asked: usize,
    /// The last `asked` messages (or all of them), in display order.
    pub messages: Vec<Message>,
}

/// Why stored tail bytes do not decode. A reader treats any of them as "no cache".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TailError {
    /// No bytes at all.
    #[error("the stored tail is empty")]
    Empty,
    /// A format this build does not know.
    #[error("the stored tail has unknown format {0}")]
    UnknownFormat(u8),
    /// The body does not decode.
    #[error("the stored tail does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// A field does not parse as what it holds.
    #[error("the stored tail's {0} does not parse")]
    Field(&'static str),
}

impl Tail {
    /// The last `asked` messages of `doc` at its current heads, or `None` when `doc` is not a
    /// chat or the read skipped an entry (such a tail is not cached).
    pub fn read(doc: &Automerge, asked: usize) -> Option<Tail> {
        let read = last_messages(doc, asked).ok()?;
        if !read.is_complete() {
            return None;
        }
        let mut heads = doc.get_heads();
        heads.sort_unstable();
        Some(Tail {
            heads,
            asked,
            messages: read.value,
        })
    }

    /// The last `n` messages as [`last_messages`] would read them at these heads, or `None`
    /// when this tail holds fewer than `n` and the chat may hold more.
    pub fn last(&self, n: usize) -> Option<Partial<Vec<Message>>> {
        if n > self.messages.len() && self.messages.len() >= self.asked {
            return None;
        }
        let from = self.messages.len().saturating_sub(n);
        Some(Partial::new(self.messages[from..].to_vec(), Vec::new()))
    }

    /// The stored form: a format byte, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        let stored = Stored {
            heads: self.heads.iter().map(ToString::to_string).collect(),
            asked: self.asked,
            messages: self.messages.iter().map(StoredMessage::from).collect(),
        };
        let mut out = vec![TAIL_FORMAT];
        // Strings, integers, booleans and options of them: serializing into a Vec cannot fail.
        serde_json::to_writer(&mut out, &stored)
            .expect("a tail of strings and integers serializes to JSON");
        out
    }

    /// Reads [`Tail::encode`]'s output back.
    pub fn decode(bytes: &[u8]) -> Result<Tail, TailError> {
        let (&format, body) = bytes.split_first().ok_or(TailError::Empty)?;
        if format != TAIL_FORMAT {
            return Err(TailError::UnknownFormat(format));
        }
        let stored: Stored = serde_json::from_slice(body)?;
        let heads = stored
            .heads
            .iter()
            .map(|h| ChangeHash::from_str(h).map_err(|_| TailError::Field("heads")))
            .collect::<Result<Vec<_>, _>>()?;
        let messages = stored
            .messages
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        if messages.len() > stored.asked {
            return Err(TailError::Field("asked"));
        }
        Ok(Tail {
            heads,
            asked: stored.asked,
            messages,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    heads: Vec<String>,
    asked: usize,
    messages: Vec<StoredMessage>,
}

#[derive(Serialize, Deserialize)]
struct StoredMessage {
    id: String,
    author: String,
    body: String,
    created_at: String,
    edited_at: Option<String>,
    deleted: bool,
    reply_to: Option<String>,
    attachment: Option<StoredAttachment>,
}

#[derive(Serialize, Deserialize)]
struct StoredAttachment {
    url: String,
    mime_type: String,
    size: u64,
    name: Option<String>,
}

impl From<&Message> for StoredMessage {
    fn from(m: &Message) -> Self {
        StoredMessage {
            id: m.id.to_string(),
            author: m.author.clone(),
            body: m.body.clone(),
            created_at: m.created_at.to_string(),
            edited_at: m.edited_at.as_ref().map(ToString::to_string),
            deleted: m.deleted,
            reply_to: m.reply_to.as_ref().map(ToString::to_string),
            attachment: m.attachment.as_ref().map(|a| StoredAttachment {
                url: a.url.clone(),
                mime_type: a.mime_type.clone(),
                size: a.size,
                name: a.name.clone(),
            }),
        }
    }
}

impl TryFrom<StoredMessage> for Message {
    type Error = TailError;

    fn try_from(m: StoredMessage) -> Result<Self, TailError> {
        let hlc = |s: &str, what| Hlc::from_str(s).map_err(|_| TailError::Field(what));
        let id = |s: &str, what| Id::from_str(s).map_err(|_| TailError::Field(what));
        Ok(Message {
            id: id(&m.id, "message id")?,
            author: m.author,
            body: m.body,
            created_at: hlc(&m.created_at, "created_at")?,
            edited_at: m
                .edited_at
                .as_deref()
                .map(|s| hlc(s, "edited_at"))
                .transpose()?,
            deleted: m.deleted,
            reply_to: m
                .reply_to
                .as_deref()
                .map(|s| id(s, "reply_to"))
                .transpose()?,
            attachment: m.attachment.map(|a| Attachment {
                url: a.url,
                mime_type: a.mime_type,
                size: a.size,
                name: a.name,
            }),
        })
    }
}

#[cfg(test)]
mod tests;
