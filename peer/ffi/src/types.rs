//! The plain values that cross the boundary: records and enums, copied out of the device's
//! own types.

use weft_peer::schema;
use weft_peer::{DocInfo, LinkState, Role, Status, SyncState};

/// A user's role on a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ShareRole {
    /// May read.
    ReadOnly,
    /// May read and write.
    ReadWrite,
}

impl From<ShareRole> for Role {
    fn from(r: ShareRole) -> Role {
        match r {
            ShareRole::ReadOnly => Role::ReadOnly,
            ShareRole::ReadWrite => Role::ReadWrite,
        }
    }
}

impl From<Role> for ShareRole {
    fn from(r: Role) -> ShareRole {
        match r {
            Role::ReadOnly => ShareRole::ReadOnly,
            Role::ReadWrite => ShareRole::ReadWrite,
        }
    }
}

/// A document this device holds.
#[derive(Clone, Debug, uniffi::Record)]
pub struct DocumentInfo {
    /// Its id (automerge-repo's bs58check form).
    pub id: String,
    /// `conversation`, `trip`, a declared kind, or none when not yet known.
    pub kind: Option<String>,
    /// This user's role, once a relay told it.
    pub role: Option<ShareRole>,
    /// Its owner, when known.
    pub owner: Option<String>,
    /// The relay no longer shares it with this user (the copy stays, read-only).
    pub revoked: bool,
    /// When a relay or peer last confirmed it in sync (ms since the Unix epoch).
    pub last_sync_ms: Option<u64>,
}

impl From<DocInfo> for DocumentInfo {
    fn from(i: DocInfo) -> Self {
        DocumentInfo {
            id: i.id.to_string(),
            kind: i.kind,
            role: i.role.map(ShareRole::from),
            owner: i.owner,
            revoked: i.revoked,
            last_sync_ms: i.last_sync_ms,
        }
    }
}

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct ChatMessage {
    /// Its id.
    pub id: String,
    /// Its author (a user id).
    pub author: String,
    /// Its text (empty once deleted).
    pub body: String,
    /// When it was written: a hybrid logical clock string; display order is `(created_at, id)`.
    pub created_at: String,
    /// When it was last edited, if ever.
    pub edited_at: Option<String>,
    /// Whether it was deleted.
    pub deleted: bool,
    /// The message it answers.
    pub reply_to: Option<String>,
}

impl From<&schema::Message> for ChatMessage {
    fn from(m: &schema::Message) -> Self {
        ChatMessage {
            id: m.id.to_string(),
            author: m.author.clone(),
            body: m.body.clone(),
            created_at: m.created_at.to_string(),
            edited_at: m.edited_at.as_ref().map(ToString::to_string),
            deleted: m.deleted,
            reply_to: m.reply_to.as_ref().map(ToString::to_string),
        }
    }
}

/// A field of a record (a document of a kind the relay declared).
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct RecordField {
    /// The field's name.
    pub name: String,
    /// Its value.
    pub value: FieldValue,
}

/// A record field's value.
#[derive(Clone, Debug, PartialEq, uniffi::Enum)]
pub enum FieldValue {
    /// No value.
    Null,
    /// A boolean.
    Bool {
        /// The value.
        value: bool,
    },
    /// A whole number.
    Int {
        /// The value.
        value: i64,
    },
    /// A number with a fraction.
    Float {
        /// The value.
        value: f64,
    },
    /// Text.
    Text {
        /// The value.
        value: String,
    },
}

impl FieldValue {
    pub(crate) fn from_json(v: &serde_json::Value) -> FieldValue {
        match v {
            serde_json::Value::Null => FieldValue::Null,
            serde_json::Value::Bool(b) => FieldValue::Bool { value: *b },
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => FieldValue::Int { value: i },
                None => FieldValue::Float {
                    value: n.as_f64().unwrap_or(f64::NAN),
                },
            },
            serde_json::Value::String(s) => FieldValue::Text { value: s.clone() },
            other => FieldValue::Text {
                value: other.to_string(),
            },
        }
    }

    /// The value as a command line would type it, for the kind's own parser.
    pub(crate) fn to_input(&self) -> String {
        match self {
            FieldValue::Null => String::new(),
            FieldValue::Bool { value } => value.to_string(),
            FieldValue::Int { value } => value.to_string(),
            FieldValue::Float { value } => value.to_string(),
            FieldValue::Text { value } => value.clone(),
        }
    }
}

/// The device's sync state, all links together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum SyncPhase {
    /// No link is up (none started, paused, or all waiting to retry).
    Offline,
    /// A link is connecting, or a document is exchanging changes.
    Syncing,
    /// Every link is up and every document on them is synced (or refused).
    Synced,
}

/// One relay or peer link.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct LinkInfo {
    /// `relay HOST:PORT` or `peer ...`.
    pub name: String,
    /// Whether it is connected.
    pub online: bool,
    /// The last connection error, when it is not online.
    pub last_error: Option<String>,
    /// Whether that error was a refusal (bad token, key mismatch).
    pub refused: bool,
}

/// What an app shows about syncing.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// Offline, syncing or synced.
    pub phase: SyncPhase,
    /// Documents with local changes no relay or peer has confirmed yet (among those on a
    /// link; documents never synced count too).
    pub unconfirmed_documents: u32,
    /// The last time any document was confirmed in sync (ms since the Unix epoch).
    pub last_sync_ms: Option<u64>,
    /// Whether the device is paused (see `WeftDevice.pause`).
    pub paused: bool,
    /// The links.
    pub links: Vec<LinkInfo>,
}

impl SyncStatus {
    pub(crate) fn from_status(s: &Status, paused: bool) -> SyncStatus {
        let links: Vec<LinkInfo> = s
            .links
            .values()
            .map(|l| LinkInfo {
                name: l.name.clone(),
                online: l.state == LinkState::Online,
                last_error: l.last_error.clone(),
                refused: l.refused,
            })
            .collect();
        let phase = if paused || s.links.values().all(|l| l.state == LinkState::Offline) {
            SyncPhase::Offline
        } else if s.links.values().all(|l| l.settled()) {
            SyncPhase::Synced
        } else {
            SyncPhase::Syncing
        };
        let mut unconfirmed = std::collections::BTreeSet::new();
        let mut last_sync_ms = None;
        for l in s.links.values() {
            for (doc, d) in &l.docs {
                if matches!(d.state, SyncState::Syncing | SyncState::Offline) {
                    unconfirmed.insert(*doc);
                }
                last_sync_ms = last_sync_ms.max(d.last_sync_ms);
            }
        }
        SyncStatus {
            phase,
            unconfirmed_documents: u32::try_from(unconfirmed.len()).unwrap_or(u32::MAX),
            last_sync_ms,
            paused,
            links,
        }
    }
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum ChangeOrigin {
    /// Made on this device.
    Local,
    /// Received from a relay or a peer.
    Remote,
}

/// What one durable change to a document did, for an app to show ("Sam edited a message",
/// "the itinerary changed").
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct DocumentChange {
    /// The document.
    pub doc: String,
    /// Its kind, when known.
    pub kind: Option<String>,
    /// Local or remote.
    pub origin: ChangeOrigin,
    /// The users who wrote it, sorted, each once ("Sam edited the itinerary"). Empty on a
    /// document's first change this device tells of, and when the writers are not known.
    pub authors: Vec<String>,
    /// Messages that appeared, as they read now.
    pub messages_added: Vec<ChatMessage>,
    /// Messages whose body changed, as they read now (`author` says whose).
    pub messages_edited: Vec<ChatMessage>,
    /// Messages deleted.
    pub messages_deleted: Vec<ChatMessage>,
    /// Other parts of the document that changed: top-level fields (`title`, `itinerary`,
    /// `tasks`, a record's field name), sorted, each once.
    pub fields_changed: Vec<String>,
}

/// Someone's device came online or went offline on a document.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PresenceChange {
    /// The document.
    pub doc: String,
    /// The user.
    pub user: String,
    /// Their device.
    pub device: String,
    /// Joined (true) or left.
    pub online: bool,
}

/// Someone is typing (or stopped) in a document's chat.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TypingChange {
    /// The document.
    pub doc: String,
    /// The user, when the relay names them.
    pub user: Option<String>,
    /// Typing now, or stopped.
    pub typing: bool,
}

/// Something the relay said about a document or a request.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum DocumentNotice {
    /// The relay refused the document (not permitted, no longer shared).
    Refused {
        /// The document.
        doc: String,
        /// Why, in a sentence.
        reason: String,
    },
    /// The owner deleted the document; this device erased its copy.
    Deleted {
        /// The document.
        doc: String,
    },
    /// The relay refused this device's changes to the document; they were kept aside and
    /// the document took the relay's version.
    ChangesRejected {
        /// The document.
        doc: String,
    },
    /// A share, unshare or delete request was answered.
    RequestAnswered {
        /// The document.
        doc: String,
        /// `None` when done; otherwise why not.
        error: Option<String>,
    },
}
