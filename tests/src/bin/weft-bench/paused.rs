//! `paused-device`: the memory of a device holding 1,000 documents, in use and once its app
//! went to the background (links stopped, [`Device::trim_memory`]), against the same device
//! holding none (the baseline, measured first in the same process).
//!
//! Each document is a conversation with a few messages, created and written on the device
//! (a device that used them has them loaded). Resident set sizes are read after the allocator
//! gave back what it freed, so they count what is held.

use std::time::Instant;

use serde_json::{json, Value};
use weft_peer::schema::{self, NewConversation, NewMessage};
use weft_peer::{DataDir, Device};

use crate::large_change::{release_freed_memory, statm_rss_kib};

const MESSAGES: usize = 5;

/// The process's resident set once freed memory went back, in KiB.
fn held_kib() -> u64 {
    release_freed_memory();
    statm_rss_kib().unwrap_or(0)
}

pub(crate) fn paused_device_workload(clients: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let docs = 1_000;
    let dir = tempfile::tempdir()?;
    let (empty_kib, active_kib, paused_kib, closed_kib, trimmed, took, trim_took) = clients
        .block_on(async {
            let device = Device::open(DataDir::new(dir.path())).await?;
            let empty_kib = held_kib();
            let t = Instant::now();
            for d in 0..docs {
                let new = NewConversation {
                    title: format!("trip chat {d}"),
                    participants: vec!["alice".into(), "bob".into()],
                };
                let (doc, r) = device
                    .create(Some("conversation"), move |am| {
                        schema::Conversation::create(am, &new, 1_700_000_000_000)
                    })
                    .await?;
                r?;
                for m in 0..MESSAGES {
                    let msg =
                        NewMessage::text("alice", format!("message {m}: see you at the station"));
                    let id = schema::Id::from_bytes(rand::random());
                    device
                        .change(doc, move |am| {
                            schema::send_message(am, &msg, id, 1_700_000_000_000 + m as u64)
                        })
                        .await??;
                }
            }
            let took = t.elapsed();
            let active_kib = held_kib();
            let t = Instant::now();
            let trimmed = device.trim_memory().await?;
            let trim_took = t.elapsed();
            let paused_kib = held_kib();
            device.close().await;
            let closed_kib = held_kib();
            anyhow::Ok((
                empty_kib, active_kib, paused_kib, closed_kib, trimmed, took, trim_took,
            ))
        })?;
    let per_doc = |kib: u64| kib.saturating_sub(empty_kib) as f64 * 1024.0 / docs as f64;
    eprintln!(
        "paused-device: {docs} conversations of {MESSAGES} messages written in {:.1} s",
        took.as_secs_f64()
    );
    eprintln!(
        "  device RSS: empty {empty_kib} KiB, in use {active_kib} KiB ({:.0} B per document), \
         paused {paused_kib} KiB ({:.0} B per document); trim took {:.1} ms ({trimmed} documents left memory)",
        per_doc(active_kib),
        per_doc(paused_kib),
        trim_took.as_secs_f64() * 1e3
    );
    eprintln!(
        "  closed: {closed_kib} KiB (what the paused device held above it is mostly the store's \
         page cache, bounded at 16 MiB, and the staging index)"
    );
    anyhow::ensure!(trimmed == docs, "{trimmed} of {docs} documents left memory");
    Ok(json!({
        "workload": "paused-device",
        "documents": docs,
        "messages_per_document": MESSAGES,
        "in_use_kib": active_kib,
        "paused_kib": paused_kib,
        "closed_kib": closed_kib,
        "in_use_bytes_per_document": per_doc(active_kib).round(),
        "paused_bytes_per_document": per_doc(paused_kib).round(),
        "trim_ms": (trim_took.as_secs_f64() * 1e3 * 10.0).round() / 10.0,
        "baseline": {"empty_device_kib": empty_kib},
    }))
}
