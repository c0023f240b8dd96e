//! `weft doc ...`: creating, listing and showing documents and their heads; sharing and
//! deletion are handed to [`super::sharing`].

use weft_core::automerge::Automerge;
use weft_core::DocId;
use weft_peer::{ControlOp, Device};
use weft_schema as schema;

use super::args::DocCmd;
use super::context::{check_exists, unix_ms};
use super::output::{exit, read_failure, rfc3339, write_failure, Failure, Sink};
use super::{rec, sharing};

/// The built-in kinds `weft doc new` creates.
#[derive(Debug, Clone, Copy)]
enum DocKind {
    /// A chat.
    Conversation,
    /// A trip: members, itinerary, tasks and a chat.
    Trip,
}

pub(super) async fn doc_cmd(device: &Device, cmd: DocCmd, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        DocCmd::New { kind, title, set } => new_doc(device, &kind, title, &set, sink).await,
        DocCmd::List { json } => list(device, json, sink).await,
        DocCmd::Show { doc, json } => show(device, doc, json, sink).await,
        DocCmd::Heads { doc } => heads(device, doc, sink).await,
        DocCmd::Share { doc, user, role } => {
            sharing::control(device, ControlOp::Share { doc, user, role }, sink).await
        }
        DocCmd::Unshare { doc, user } => {
            sharing::control(device, ControlOp::Unshare { doc, user }, sink).await
        }
        DocCmd::Delete { doc } => sharing::control(device, ControlOp::Delete { doc }, sink).await,
    }
}

/// `weft doc new`: a conversation or a trip here, a declared kind in [`rec::new_record`].
async fn new_doc(
    device: &Device,
    kind: &str,
    title: Option<String>,
    set: &[String],
    sink: &Sink,
) -> Result<(), Failure> {
    let kind = match kind {
        "conversation" => DocKind::Conversation,
        "trip" => DocKind::Trip,
        other => return rec::new_record(device, other, set, sink).await,
    };
    if !set.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            "--set is for kinds the relay declared; conversations and trips take --title",
        ));
    }
    let title = title.unwrap_or_default();
    let now = unix_ms();
    let (kind_name, result) = match kind {
        DocKind::Conversation => {
            let new = schema::NewConversation {
                title,
                participants: Vec::new(),
            };
            let (doc, r) = device
                .create(Some("conversation"), move |am: &mut Automerge| {
                    schema::Conversation::create(am, &new, now)
                })
                .await?;
            ("conversation", r.map(|_| doc))
        }
        DocKind::Trip => {
            let new = schema::NewTrip {
                title,
                start_date: None,
                end_date: None,
            };
            let (doc, r) = device
                .create(Some("trip"), move |am: &mut Automerge| {
                    schema::Trip::create(am, &new, now)
                })
                .await?;
            ("trip", r.map(|_| doc))
        }
    };
    let doc = result.map_err(write_failure)?;
    tracing::debug!(%doc, kind = kind_name, "created");
    sink.out(format!("{doc}\n")).await
}

async fn list(device: &Device, json: bool, sink: &Sink) -> Result<(), Failure> {
    let list = device.list().await?;
    let mut rows = Vec::new();
    for info in list {
        let title = device.read(info.id, title_of).await.ok().flatten();
        rows.push((info, title));
    }
    if json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|(i, title)| {
                serde_json::json!({
                    "id": i.id.to_string(),
                    "kind": i.kind,
                    "title": title,
                    "role": i.role.map(|r| r.as_str()),
                    "shared": !i.revoked,
                    "deleted": i.deleted,
                    "last_sync": i.last_sync_ms.map(rfc3339),
                })
            })
            .collect();
        sink.out(format!("{}\n", serde_json::Value::Array(v))).await
    } else {
        let mut text = String::new();
        for (i, title) in rows {
            text.push_str(&format!(
                "{}  {:<12}  {}{}\n",
                i.id,
                i.kind.as_deref().unwrap_or("-"),
                title.unwrap_or_default(),
                if i.deleted {
                    "  (deleted)"
                } else if i.revoked {
                    "  (no longer shared)"
                } else {
                    ""
                }
            ));
        }
        sink.out(text).await
    }
}

fn title_of(am: &Automerge) -> Option<String> {
    match schema::read_typed(am).ok()?.value {
        schema::TypedDoc::Conversation(c) => Some(c.title),
        schema::TypedDoc::Trip(t) => Some(t.title),
        _ => None,
    }
}

async fn show(device: &Device, doc: DocId, json: bool, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, doc).await?;
    let (value, typed) = device
        .read(doc, |am| {
            (schema::to_json(am), schema::read_typed(am).map(|r| r.value))
        })
        .await?;
    let value = value.map_err(read_failure)?;
    if json {
        return sink.out(format!("{value}\n")).await;
    }
    let text = match typed {
        Ok(schema::TypedDoc::Conversation(c)) => {
            let n = device
                .read(doc, |am| schema::messages(am).map(|m| m.value.len()))
                .await?;
            format!(
                "conversation {doc}\ntitle: {}\nparticipants: {}\nmessages: {}\n",
                c.title,
                c.participants.join(", "),
                n.unwrap_or(0)
            )
        }
        Ok(schema::TypedDoc::Trip(t)) => format!(
            "trip {doc}\ntitle: {}\nmembers: {}\ntasks: {}\n",
            t.title,
            t.members.keys().cloned().collect::<Vec<_>>().join(", "),
            t.tasks.len()
        ),
        _ => format!(
            "{}\n",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        ),
    };
    sink.out(text).await
}

async fn heads(device: &Device, doc: DocId, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, doc).await?;
    let heads = device.read(doc, |am| am.get_heads()).await?;
    let mut hex: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
    hex.sort();
    let text: String = hex.into_iter().map(|h| h + "\n").collect();
    sink.out(text).await
}
