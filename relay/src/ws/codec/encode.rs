//! Writing the relay's messages as CBOR maps.

use ciborium::Value;

use super::messages::ToClient;

/// Encodes a message for the client with peer id `target`.
pub(crate) fn encode(msg: &ToClient<'_>, sender: &str, target: &str) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.to_owned());
    let mut fields = vec![
        (text("senderId"), text(sender)),
        (text("targetId"), text(target)),
    ];
    let kind = match msg {
        ToClient::Peer { storage_id } => {
            let metadata = vec![
                (text("storageId"), text(storage_id)),
                (text("isEphemeral"), Value::Bool(false)),
            ];
            fields.push((text("peerMetadata"), Value::Map(metadata)));
            fields.push((
                text("selectedProtocolVersion"),
                text(crate::ws::PROTOCOL_VERSION),
            ));
            "peer"
        }
        ToClient::Sync { doc, data } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            fields.push((text("data"), Value::Bytes(data.to_vec())));
            "sync"
        }
        ToClient::DocUnavailable { doc } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            "doc-unavailable"
        }
        ToClient::Ephemeral {
            doc,
            data,
            session,
            count,
        } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            fields.push((text("data"), Value::Bytes(data.to_vec())));
            fields.push((text("sessionId"), text(session)));
            fields.push((text("count"), Value::Integer((*count).into())));
            "ephemeral"
        }
        ToClient::RemoteHeads {
            doc,
            storage_id,
            heads,
            timestamp,
        } => {
            fields.push((text("documentId"), text(&doc.to_string())));
            let heads = Value::Array(heads.iter().map(|h| text(h)).collect());
            let entry = vec![
                (text("heads"), heads),
                (text("timestamp"), Value::Integer((*timestamp).into())),
            ];
            fields.push((
                text("newHeads"),
                Value::Map(vec![(text(storage_id), Value::Map(entry))]),
            ));
            "remote-heads-changed"
        }
        ToClient::Weft { kind, fields: more } => {
            for (name, value) in more {
                fields.push((text(name), value.clone()));
            }
            *kind
        }
        ToClient::Error { message } => {
            fields.push((text("message"), text(message)));
            "error"
        }
    };
    fields.insert(0, (text("type"), text(kind)));
    let mut out = Vec::new();
    // Invariant: writing a `Value` into a `Vec` cannot fail (no IO error, no unsupported type).
    ciborium::into_writer(&Value::Map(fields), &mut out).expect("CBOR encoding into a Vec");
    out
}
