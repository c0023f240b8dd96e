//! [`WeftDevice`]: one data directory, its documents and messages. Sync is in `sync.rs`, the
//! listener in `listener.rs`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use weft_peer::automerge::Automerge;
use weft_peer::schema::{self, rules::record, Id, ReadError, WriteError};
use weft_peer::{ControlOp, DataDir, Device, DocId};

use crate::links::Links;
use crate::runtime::{on_runtime, OwnedTask};
use crate::types::{ChatMessage, DocumentInfo, FieldValue, RecordField, ShareRole};
use crate::WeftError;

/// Opens (creating if missing) the device in `data_dir`, acting for `user`. A directory
/// already used for another user is refused ([`WeftError::Refused`]); one another process
/// holds is [`WeftError::Busy`].
#[uniffi::export(async_runtime = "tokio")]
pub async fn open_device(data_dir: String, user: String) -> Result<Arc<WeftDevice>, WeftError> {
    if user.is_empty() {
        return Err(WeftError::invalid("user", "empty"));
    }
    on_runtime(async move {
        let dir = DataDir::new(data_dir);
        dir.init(Some(&user))?;
        let device = Device::open(dir).await?;
        Ok(Arc::new(WeftDevice {
            device,
            user,
            links: Mutex::new(Links::default()),
            paused: Arc::new(AtomicBool::new(false)),
            listener: Mutex::new(None),
        }))
    })
    .await
}

/// One device: a data directory acting for one user. Every write returns once it is durable
/// on disk, with or without a network. Methods may be called from any thread.
#[derive(uniffi::Object)]
pub struct WeftDevice {
    pub(crate) device: Device,
    pub(crate) user: String,
    pub(crate) links: Mutex<Links>,
    /// Set by `pause`, cleared by `resume` (the listener's task reads it for the status).
    pub(crate) paused: Arc<AtomicBool>,
    pub(crate) listener: Mutex<Option<OwnedTask>>,
}

impl std::fmt::Debug for WeftDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeftDevice")
            .field("device", &self.device)
            .field("user", &self.user)
            .finish()
    }
}

pub(crate) fn parse_doc(doc: &str) -> Result<DocId, WeftError> {
    doc.parse()
        .map_err(|_| WeftError::InvalidDocumentId { id: doc.to_owned() })
}

pub(crate) fn parse_msg(id: &str) -> Result<Id, WeftError> {
    id.parse()
        .map_err(|_| WeftError::invalid("message_id", format!("{id:?} is not a message id")))
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A read error of `doc` as the app sees it: another kind than the call needs is
/// [`WeftError::WrongKind`].
pub(crate) fn read_error(doc: DocId, expected: &str, e: ReadError) -> WeftError {
    match e {
        ReadError::WrongKind { found, .. } => WeftError::WrongKind {
            doc: doc.to_string(),
            expected: expected.to_owned(),
            found: found.as_str().to_owned(),
        },
        ReadError::Untyped { found } => WeftError::WrongKind {
            doc: doc.to_string(),
            expected: expected.to_owned(),
            found: found.unwrap_or_else(|| "untyped".to_owned()),
        },
        other => other.into(),
    }
}

pub(crate) fn write_error(doc: DocId, expected: &str, e: WriteError) -> WeftError {
    match e {
        WriteError::Read { source } => read_error(doc, expected, source),
        other => other.into(),
    }
}

const CHAT: &str = "conversation or trip";

#[uniffi::export(async_runtime = "tokio")]
impl WeftDevice {
    /// This device's id (the fingerprint of its key), which peers allow.
    pub fn device_id(&self) -> String {
        self.device.id().to_string()
    }

    /// The user this device acts for.
    pub fn user(&self) -> String {
        self.user.clone()
    }

    /// Creates a conversation (a chat) and returns its id.
    pub async fn create_conversation(
        &self,
        title: String,
        participants: Vec<String>,
    ) -> Result<String, WeftError> {
        let device = self.device.clone();
        on_runtime(async move {
            let new = schema::NewConversation {
                title,
                participants,
            };
            let now = unix_ms();
            let (doc, r) = device
                .create(Some("conversation"), move |am: &mut Automerge| {
                    schema::Conversation::create(am, &new, now)
                })
                .await?;
            r?;
            Ok(doc.to_string())
        })
        .await
    }

    /// Creates a trip (members, itinerary, tasks and a chat) and returns its id. Dates are
    /// `YYYY-MM-DD`.
    pub async fn create_trip(
        &self,
        title: String,
        start_date: Option<String>,
        end_date: Option<String>,
    ) -> Result<String, WeftError> {
        let device = self.device.clone();
        on_runtime(async move {
            let new = schema::NewTrip {
                title,
                start_date,
                end_date,
            };
            let now = unix_ms();
            let (doc, r) = device
                .create(Some("trip"), move |am: &mut Automerge| {
                    schema::Trip::create(am, &new, now)
                })
                .await?;
            r?;
            Ok(doc.to_string())
        })
        .await
    }

    /// Creates a record of a kind the relay declared (learned at the first sync), with its
    /// fields, checked against the kind's rules first; returns its id.
    pub async fn create_record(
        &self,
        kind: String,
        fields: Vec<RecordField>,
    ) -> Result<String, WeftError> {
        let device = self.device.clone();
        let user = self.user.clone();
        on_runtime(async move {
            let kinds = device.dir().kinds();
            let Some(spec) = kinds
                .get(&kind)
                .filter(|_| kinds.is_declared(&kind))
                .cloned()
            else {
                return Err(WeftError::UnknownKind { kind });
            };
            let mut values = Vec::with_capacity(fields.len());
            for f in &fields {
                let v = record::parse_value(&spec, &f.name, &f.value.to_input())?;
                values.push((f.name.clone(), v));
            }
            let (check_spec, check_values) = (spec.clone(), values.clone());
            record::check_write(&kinds, &Automerge::new(), Some(&user), &user, |d| {
                record::create(d, &check_spec, &check_values)
            })?;
            let (doc, r) = device
                .create(Some(&kind), move |am: &mut Automerge| {
                    record::create(am, &spec, &values)
                })
                .await?;
            r?;
            Ok(doc.to_string())
        })
        .await
    }

    /// The documents this device holds.
    pub async fn list_documents(&self) -> Result<Vec<DocumentInfo>, WeftError> {
        let device = self.device.clone();
        on_runtime(async move {
            let list = device.list().await?;
            Ok(list
                .into_iter()
                .filter(|i| !i.deleted)
                .map(DocumentInfo::from)
                .collect())
        })
        .await
    }

    /// What the device knows of one document.
    pub async fn document_info(&self, doc: String) -> Result<DocumentInfo, WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        on_runtime(async move { Ok(device.info(doc).await?.into()) }).await
    }

    /// Sends a message to a conversation's or trip's chat as this device's user; returns it.
    pub async fn send_message(&self, doc: String, body: String) -> Result<ChatMessage, WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        let author = self.user.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let id = Id::from_bytes(rand::random());
            let now = unix_ms();
            let msg = schema::NewMessage::text(author, body);
            let sent = device
                .change(doc, move |am| schema::send_message(am, &msg, id, now))
                .await?
                .map_err(|e| write_error(doc, CHAT, e))?;
            Ok(ChatMessage::from(&sent))
        })
        .await
    }

    /// Replaces the body of one of this user's messages.
    pub async fn edit_message(
        &self,
        doc: String,
        message_id: String,
        body: String,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_msg(&message_id)?;
        let device = self.device.clone();
        let user = self.user.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am| -> Result<(), WeftError> {
                    let m = find(doc, am, &id)?;
                    if m.author != user {
                        return Err(WeftError::NotAuthor {
                            message_id: id.to_string(),
                            author: m.author,
                        });
                    }
                    schema::edit_message(am, &id, &body, now).map_err(|e| write_error(doc, CHAT, e))
                })
                .await?
        })
        .await
    }

    /// Deletes a message (this user's, or any in a document this user owns). Deleting a deleted
    /// message changes nothing.
    pub async fn delete_message(&self, doc: String, message_id: String) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_msg(&message_id)?;
        let device = self.device.clone();
        let user = self.user.clone();
        on_runtime(async move {
            let info = device.info(doc).await?;
            let owner = info.owner.as_deref() == Some(user.as_str());
            let now = unix_ms();
            device
                .change(doc, move |am| -> Result<(), WeftError> {
                    let m = find(doc, am, &id)?;
                    if m.author != user && !owner {
                        return Err(WeftError::NotAuthor {
                            message_id: id.to_string(),
                            author: m.author,
                        });
                    }
                    schema::delete_message(am, &id, now).map_err(|e| write_error(doc, CHAT, e))
                })
                .await?
        })
        .await
    }

    /// A chat's messages in display order: all of them, or only the last `last` (read from
    /// the tail kept beside the document when it is current, without loading the rest).
    /// Entries another writer malformed are left out.
    pub async fn list_messages(
        &self,
        doc: String,
        last: Option<u32>,
    ) -> Result<Vec<ChatMessage>, WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let read = match last {
                Some(n) => device.last_messages(doc, n as usize).await?,
                None => device.read(doc, schema::messages).await?,
            }
            .map_err(|e| read_error(doc, CHAT, e))?;
            Ok(read.value.iter().map(ChatMessage::from).collect())
        })
        .await
    }

    /// A record's fields (a document of a declared kind), by name.
    pub async fn read_record(&self, doc: String) -> Result<Vec<RecordField>, WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let kinds = Arc::new(device.dir().kinds());
            let v = device
                .read(doc, move |am| record::to_json(&kinds, am))
                .await?
                .ok_or_else(|| WeftError::WrongKind {
                    doc: doc.to_string(),
                    expected: "record of a declared kind".to_owned(),
                    found: "another kind".to_owned(),
                })?;
            let fields = v["fields"].as_object().cloned().unwrap_or_default();
            Ok(fields
                .iter()
                .map(|(name, value)| RecordField {
                    name: name.clone(),
                    value: FieldValue::from_json(value),
                })
                .collect())
        })
        .await
    }

    /// Sets one field of a record, checked against its kind's type and write rules first
    /// (a refused write changes nothing).
    pub async fn write_record_field(
        &self,
        doc: String,
        field: RecordField,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        let user = self.user.clone();
        on_runtime(async move {
            let info = device.info(doc).await?;
            let kinds = Arc::new(device.dir().kinds());
            device
                .change(doc, move |am: &mut Automerge| -> Result<(), WeftError> {
                    let spec = record::kind_of(&kinds, am).cloned().ok_or_else(|| {
                        WeftError::WrongKind {
                            doc: doc.to_string(),
                            expected: "record of a declared kind".to_owned(),
                            found: "another kind".to_owned(),
                        }
                    })?;
                    let v = record::parse_value(&spec, &field.name, &field.value.to_input())?;
                    let check = v.clone();
                    let name = field.name.clone();
                    record::check_write(&kinds, am, info.owner.as_deref(), &user, |d| {
                        record::set(d, &name, check)
                    })?;
                    Ok(record::set(am, &field.name, v)?)
                })
                .await?
        })
        .await
    }

    /// Shares `doc` with `user` (owner only). Queued durably and sent to the relay at the
    /// next sync; the relay's answer arrives as [`crate::DocumentNotice::RequestAnswered`].
    pub async fn share(&self, doc: String, user: String, role: ShareRole) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        self.control(ControlOp::Share {
            doc,
            user,
            role: role.into(),
        })
        .await
    }

    /// Takes `user` off `doc`'s access list (owner only); queued like [`WeftDevice::share`].
    pub async fn unshare(&self, doc: String, user: String) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        self.control(ControlOp::Unshare { doc, user }).await
    }

    /// Deletes `doc` for everyone (owner only); queued like [`WeftDevice::share`]. Every
    /// device erases its copy once the relay deleted it.
    pub async fn delete_document(&self, doc: String) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        self.control(ControlOp::Delete { doc }).await
    }

    /// Tells the others in `doc` that this user is typing (or stopped). Best effort, never
    /// stored.
    pub async fn set_typing(&self, doc: String, typing: bool) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        let data = crate::typing::payload(typing);
        on_runtime(async move { Ok(device.send_ephemeral(doc, data).await?) }).await
    }
}

impl WeftDevice {
    async fn control(&self, op: ControlOp) -> Result<(), WeftError> {
        let device = self.device.clone();
        on_runtime(async move {
            device.info(op.doc()).await?;
            // The answer comes as an event; the receiver is not needed here.
            let _answer = device.control(op).await?;
            Ok(())
        })
        .await
    }
}

/// Message `id` of `doc`, or why there is none.
fn find(doc: DocId, am: &Automerge, id: &Id) -> Result<schema::Message, WeftError> {
    schema::find_message(am, id)
        .map_err(|e| read_error(doc, CHAT, e))?
        .value
        .ok_or_else(|| WeftError::MessageNotFound {
            message_id: id.to_string(),
        })
}
