//! `weft status`: per document its heads, role, the local changes the relay or peer has not
//! confirmed and the last successful sync; per connection its state.

use weft_core::automerge::ReadDoc;
use weft_core::DeviceId;
use weft_peer::{Device, DocInfo, LinkState, Status};

use super::output::{rfc3339, Failure, Sink};

/// One document's line.
struct Row {
    info: DocInfo,
    /// Lowercase hex, sorted.
    heads: Vec<String>,
    /// Local changes not yet confirmed.
    unconfirmed: usize,
    /// Its state on each connection that syncs it.
    links: Vec<serde_json::Value>,
}

pub(super) async fn status(device: &Device, json: bool, sink: &Sink) -> Result<(), Failure> {
    let list = device.list().await?;
    let live = device.status().borrow().clone();
    let mut rows = Vec::new();
    for info in list {
        rows.push(doc_row(device, info, &live).await?);
    }
    let text = if json {
        to_json(device.id(), &rows, &live)
    } else {
        to_text(device.id(), &rows, &live)
    };
    sink.out(text).await
}

async fn doc_row(device: &Device, info: DocInfo, live: &Status) -> Result<Row, Failure> {
    let confirmed = info.confirmed_heads.clone();
    let (heads, unconfirmed) = device
        .read(info.id, move |am| {
            let mut hex: Vec<String> = am.get_heads().iter().map(weft_core::hash_hex).collect();
            hex.sort();
            let known: Vec<_> = confirmed
                .iter()
                .filter_map(|h| h.parse::<weft_core::automerge::ChangeHash>().ok())
                .filter(|h| am.get_change_by_hash(h).is_some())
                .collect();
            let unconfirmed = if known.len() == confirmed.len() {
                am.get_changes(&known).len()
            } else {
                am.get_changes(&[]).len()
            };
            (hex, unconfirmed)
        })
        .await?;
    let links: Vec<serde_json::Value> = live
        .links
        .values()
        .filter_map(|l| {
            l.docs.get(&info.id).map(|d| {
                serde_json::json!({"link": l.name, "state": d.state, "role": d.role.map(|r| r.as_str())})
            })
        })
        .collect();
    Ok(Row {
        info,
        heads,
        unconfirmed,
        links,
    })
}

fn to_json(device: DeviceId, rows: &[Row], live: &Status) -> String {
    let docs: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let i = &row.info;
            serde_json::json!({
                "doc": i.id.to_string(),
                "kind": i.kind,
                "heads": row.heads,
                "role": i.role.map(|r| r.as_str()),
                "shared": !i.revoked,
                "unconfirmed": row.unconfirmed,
                "last_sync": i.last_sync_ms.map(rfc3339),
                "links": row.links,
            })
        })
        .collect();
    let conns: Vec<serde_json::Value> = live
        .links
        .values()
        .map(|l| serde_json::json!({"link": l.name, "state": l.state, "user": l.user, "error": l.last_error}))
        .collect();
    let v = serde_json::json!({"device": device.to_string(), "docs": docs, "connections": conns});
    format!("{v}\n")
}

fn to_text(device: DeviceId, rows: &[Row], live: &Status) -> String {
    let mut text = format!("device {device}\n");
    for l in live.links.values() {
        text.push_str(&format!(
            "{}: {}{}\n",
            l.name,
            match l.state {
                LinkState::Online => "online",
                LinkState::Connecting => "connecting",
                LinkState::Offline => "offline",
            },
            l.last_error
                .as_ref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    for row in rows {
        let i = &row.info;
        text.push_str(&format!(
            "{}  {:<12}  role {:<2}  unconfirmed {:<5}  last sync {}  heads {}\n",
            i.id,
            i.kind.as_deref().unwrap_or("-"),
            i.role.map_or("-", |r| r.as_str()),
            row.unconfirmed,
            i.last_sync_ms.map_or_else(|| "never".to_owned(), rfc3339),
            row.heads
                .iter()
                .map(|h| &h[..8.min(h.len())])
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    text
}
