//! `weft msg ...`: the chat of a conversation or trip. A message's author is the user this
//! device acts for.

use weft_core::DocId;
use weft_peer::Device;
use weft_schema as schema;

use super::args::MsgCmd;
use super::context::{check_exists, device_user, unix_ms};
use super::output::{read_failure, write_failure, Failure, Sink};

pub(super) async fn msg_cmd(device: &Device, cmd: MsgCmd, sink: &Sink) -> Result<(), Failure> {
    match cmd {
        MsgCmd::Send { doc, text } => {
            check_exists(device, doc).await?;
            let author = device_user(device)?;
            let id = new_id();
            let now = unix_ms();
            let msg = schema::NewMessage::text(author, text);
            let sent = device
                .change(doc, move |am| schema::send_message(am, &msg, id, now))
                .await?
                .map_err(write_failure)?;
            sink.out(format!("{}\n", sent.id)).await
        }
        MsgCmd::Edit { doc, msg, text } => {
            check_exists(device, doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am| schema::edit_message(am, &msg, &text, now))
                .await?
                .map_err(write_failure)
        }
        MsgCmd::Delete { doc, msg } => {
            check_exists(device, doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am| schema::delete_message(am, &msg, now))
                .await?
                .map_err(write_failure)
        }
        MsgCmd::List { doc, json, last } => list(device, doc, json, last, sink).await,
    }
}

fn new_id() -> schema::Id {
    schema::Id::from_bytes(rand::random())
}

async fn list(
    device: &Device,
    doc: DocId,
    json: bool,
    last: Option<usize>,
    sink: &Sink,
) -> Result<(), Failure> {
    check_exists(device, doc).await?;
    if let Some(n) = last {
        // The tail only: from the tail cached beside the document when it is at the stored
        // heads (no load), else a binary search of the sorted messages map, not a read of them
        // all.
        let read = device.last_messages(doc, n).await?.map_err(read_failure)?;
        report_skipped(&read.skipped, sink).await;
        if json {
            return sink.out(schema::messages_to_json(&read.value) + "\n").await;
        }
        return sink.out(text_lines(&read.value)).await;
    }
    if json {
        let read = device
            .read(doc, schema::messages_json)
            .await?
            .map_err(read_failure)?;
        report_skipped(&read.skipped, sink).await;
        return sink.out(read.value + "\n").await;
    }
    let read = device
        .read(doc, schema::messages)
        .await?
        .map_err(read_failure)?;
    report_skipped(&read.skipped, sink).await;
    sink.out(text_lines(&read.value)).await
}

fn text_lines(msgs: &[schema::Message]) -> String {
    let mut text = String::new();
    for m in msgs {
        let flag = if m.deleted {
            " (deleted)"
        } else if m.edited_at.is_some() {
            " (edited)"
        } else {
            ""
        };
        text.push_str(&format!(
            "{}  {}  {}: {}{flag}\n",
            m.created_at, m.id, m.author, m.body
        ));
    }
    text
}

/// Entries a read left out (another writer's malformed data): one line each on stderr, so
/// the valid rest still prints and the command succeeds.
async fn report_skipped(skipped: &[schema::Skipped], sink: &Sink) {
    for s in skipped {
        sink.err(s.to_string()).await;
    }
}
