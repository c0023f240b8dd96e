//! `weft watch DOC`: one JSON line per change of a document, local or remote, with its
//! Automerge patches, until killed.

use weft_core::automerge::{Patch, PatchAction, Prop};
use weft_core::DocId;
use weft_peer::{Device, DeviceError, Event, EventOrigin};

use super::context::check_exists;
use super::output::{Failure, Sink};

pub(super) async fn watch(device: &Device, doc: DocId, sink: &Sink) -> Result<(), Failure> {
    check_exists(device, doc).await?;
    let mut events = device.events();
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::Changed { doc: d, heads, origin, patches, authors }) if d == doc => {
                    let mut hex: Vec<String> = heads.iter().map(weft_core::hash_hex).collect();
                    hex.sort();
                    let line = serde_json::json!({
                        "type": "change",
                        "doc": doc.to_string(),
                        "origin": match origin { EventOrigin::Local => "local", EventOrigin::Remote => "remote" },
                        "heads": hex,
                        "authors": authors,
                        "patches": patches.iter().map(patch_json).collect::<Vec<_>>(),
                    });
                    sink.out(format!("{line}\n")).await?;
                }
                Ok(Event::Deleted { doc: d }) if d == doc => {
                    return Err(DeviceError::Deleted(doc).into());
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    sink.err(format!("watch fell {n} events behind; some changes were not printed")).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            _ = sink.closed() => return Ok(()),
        }
    }
}

/// A patch as one JSON object: its path, its action and what the action names (key or index,
/// count, text).
fn patch_json(p: &Patch) -> serde_json::Value {
    let path: Vec<serde_json::Value> = p
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => serde_json::Value::from(k.as_str()),
            Prop::Seq(i) => serde_json::Value::from(*i),
        })
        .collect();
    let (action, extra) = match &p.action {
        PatchAction::PutMap { key, .. } => ("put", serde_json::json!({"key": key})),
        PatchAction::PutSeq { index, .. } => ("put", serde_json::json!({"index": index})),
        PatchAction::Insert { index, values, .. } => (
            "insert",
            serde_json::json!({"index": index, "count": values.len()}),
        ),
        PatchAction::SpliceText { index, value, .. } => (
            "splice",
            serde_json::json!({"index": index, "text": value.make_string()}),
        ),
        PatchAction::Increment { prop, value } => (
            "increment",
            serde_json::json!({"prop": prop.to_string(), "by": value}),
        ),
        PatchAction::Conflict { prop } => {
            ("conflict", serde_json::json!({"prop": prop.to_string()}))
        }
        PatchAction::DeleteMap { key } => ("delete", serde_json::json!({"key": key})),
        PatchAction::DeleteSeq { index, length } => (
            "delete",
            serde_json::json!({"index": index, "length": length}),
        ),
        PatchAction::Mark { marks } => ("mark", serde_json::json!({"count": marks.len()})),
    };
    let mut v = serde_json::json!({"path": path, "action": action});
    if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
        o.extend(e);
    }
    v
}
