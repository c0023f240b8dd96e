//! A socket's `weft-…` messages (see `codec/weft.rs` and decision 0014): the hub already does
//! discovery, presence, sharing and token refresh for every connection; this file turns a
//! client's `weft-…` requests into the hub's messages and the hub's answers into `weft-…`
//! messages. No rule lives here: share, unshare, delete and refresh are the hub's decisions,
//! exactly as for QUIC devices.
//!
//! The hub sends the discovery listing right after the connection opens, before the client can
//! say `weft-hello`; the socket keeps it (and its deltas) so `weft-hello` is answered with the
//! current list, then forwards deltas live. Presence statuses travel between clients as
//! ephemeral data `{"weft-status": STATUS}` (CBOR), which stock clients see as an ordinary
//! ephemeral message and `weft-hello` clients receive as `weft-presence`.

use std::collections::BTreeMap;

use ciborium::Value;
use weft_core::wire::{DocEntry, ErrorCode, Message};
use weft_core::{DeviceId, DocId, Role};

use super::codec::{ToClient, WeftRequest, MAX_STATUS_LEN};
use super::frames::SocketEnd;
use super::translate::Socket;

/// The ephemeral payload key of a presence status.
const STATUS_KEY: &str = "weft-status";

/// What one socket keeps for its `weft-…` messages.
#[derive(Default)]
pub(super) struct WeftState {
    /// The client said `weft-hello`: discovery and presence are forwarded.
    hello: bool,
    /// The user's readable documents, as the hub last listed them.
    listing: BTreeMap<DocId, Role>,
    /// The end of the hub's last full listing: its total and whether it was cut short (`None`
    /// while a full listing is arriving).
    listing_end: Option<(u64, bool)>,
}

fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn doc_field(doc: DocId) -> (&'static str, Value) {
    ("documentId", text(&doc.to_string()))
}

fn entries(docs: impl Iterator<Item = (DocId, Role)>) -> Value {
    Value::Array(
        docs.map(|(d, r)| {
            Value::Map(vec![
                (text("documentId"), text(&d.to_string())),
                (text("role"), text(r.as_str())),
            ])
        })
        .collect(),
    )
}

/// The ephemeral payload carrying `status`.
fn status_payload(status: &str) -> Vec<u8> {
    let mut out = Vec::new();
    // Invariant: writing a `Value` into a `Vec` cannot fail.
    ciborium::into_writer(
        &Value::Map(vec![(text(STATUS_KEY), text(status))]),
        &mut out,
    )
    .expect("CBOR encoding into a Vec");
    out
}

/// The status an ephemeral payload carries, if it is a presence status.
fn status_of(data: &[u8]) -> Option<String> {
    if data.len() > MAX_STATUS_LEN + 32 {
        return None;
    }
    let Ok(Value::Map(entries)) = ciborium::from_reader::<Value, _>(data) else {
        return None;
    };
    match entries.as_slice() {
        [(Value::Text(k), Value::Text(status))] if k == STATUS_KEY => Some(status.clone()),
        _ => None,
    }
}

impl Socket<'_> {
    async fn send_weft(
        &mut self,
        kind: &'static str,
        fields: Vec<(&'static str, Value)>,
    ) -> Result<(), SocketEnd> {
        self.send_client(ToClient::Weft { kind, fields }).await
    }

    async fn reply(
        &mut self,
        id: u64,
        doc: Option<DocId>,
        error: Option<(ErrorCode, String)>,
    ) -> Result<(), SocketEnd> {
        let mut fields = vec![
            ("id", Value::Integer(id.into())),
            ("ok", Value::Bool(error.is_none())),
        ];
        if let Some(doc) = doc {
            fields.push(doc_field(doc));
        }
        if let Some((code, message)) = error {
            fields.push(("code", Value::Integer(code.0.into())));
            fields.push(("message", text(&message)));
        }
        self.send_weft("weft-reply", fields).await
    }

    /// A client's `weft-…` request.
    pub(super) async fn on_weft(&mut self, request: WeftRequest) -> Result<(), SocketEnd> {
        match request {
            WeftRequest::Hello => {
                self.weft.hello = true;
                let welcome = vec![
                    ("user", text(&self.user)),
                    ("device", text(&self.device.to_string())),
                    ("storageId", text(&self.shared.storage_id)),
                ];
                self.send_weft("weft-welcome", welcome).await?;
                // A listing still arriving from the hub is told whole once it ends.
                match self.weft.listing_end {
                    Some(_) => self.send_listing().await,
                    None => Ok(()),
                }
            }
            WeftRequest::Presence { doc, status } => {
                if !self.is_open(doc) {
                    // Presence is best-effort, like ephemeral data.
                    return Ok(());
                }
                let data = status_payload(&status);
                self.tell_hub(Message::Ephemeral {
                    doc,
                    user: None,
                    device: None,
                    data,
                })
                .await
            }
            WeftRequest::Share {
                id,
                doc,
                user,
                role,
            } => {
                self.tell_hub(Message::Share {
                    id,
                    doc,
                    user,
                    role,
                })
                .await
            }
            WeftRequest::Unshare { id, doc, user } => {
                self.tell_hub(Message::Unshare { id, doc, user }).await
            }
            WeftRequest::Delete { id, doc } => self.tell_hub(Message::Delete { id, doc }).await,
            WeftRequest::Token { id, token } => {
                // The hub decides (and closes the socket on a refused token, as for QUIC
                // devices); this check only lets the client hear "ok" or why not first.
                let verdict = match self
                    .shared
                    .verifier
                    .verify(&token, weft_core::clock::unix_secs())
                {
                    Ok(claims) if claims.sub == self.user => None,
                    Ok(_) => Some("a refreshed token must be for the same user".to_owned()),
                    Err(e) => Some(format!("the refreshed token was refused: {e}")),
                };
                let error = verdict.map(|m| (ErrorCode::UNAUTHENTICATED, m));
                self.reply(id, None, error).await?;
                self.tell_hub(Message::Token { token }).await
            }
        }
    }

    /// The whole listing as one `weft-docs {full: true}`, then `weft-docs-end`.
    async fn send_listing(&mut self) -> Result<(), SocketEnd> {
        let listing = entries(self.weft.listing.iter().map(|(d, r)| (*d, *r)));
        let docs = vec![
            ("full", Value::Bool(true)),
            ("docs", listing),
            ("removed", Value::Array(Vec::new())),
        ];
        self.send_weft("weft-docs", docs).await?;
        let (total, truncated) = self.weft.listing_end.unwrap_or_default();
        let end = vec![
            ("total", Value::Integer(total.into())),
            ("truncated", Value::Bool(truncated)),
        ];
        self.send_weft("weft-docs-end", end).await
    }

    /// A hub message of weft's own (discovery, presence, replies, statuses): `Ok(true)` when
    /// it was handled here, `Ok(false)` when it is not one.
    pub(super) async fn on_hub_weft(&mut self, msg: &Message) -> Result<bool, SocketEnd> {
        match msg {
            Message::Docs {
                full,
                added,
                removed,
            } => {
                if *full {
                    self.weft.listing.clear();
                    self.weft.listing_end = None;
                }
                for DocEntry { doc, role } in added {
                    self.weft.listing.insert(*doc, *role);
                }
                for doc in removed {
                    self.weft.listing.remove(doc);
                }
                // Pieces of a full listing wait for its end; later deltas go out as they come.
                if self.weft.hello && self.weft.listing_end.is_some() {
                    let removed = removed.iter().map(|d| text(&d.to_string())).collect();
                    let fields = vec![
                        ("full", Value::Bool(*full)),
                        ("docs", entries(added.iter().map(|e| (e.doc, e.role)))),
                        ("removed", Value::Array(removed)),
                    ];
                    self.send_weft("weft-docs", fields).await?;
                }
            }
            Message::DocsEnd { total, truncated } => {
                self.weft.listing_end = Some((*total, *truncated));
                if self.weft.hello {
                    self.send_listing().await?;
                }
            }
            Message::Presence {
                doc,
                user,
                device,
                online,
            } => {
                // The hub tells a newcomer who is here just before it answers the subscription.
                if self.weft.hello && self.is_known(*doc) {
                    self.send_presence(*doc, user, *device, *online, None)
                        .await?;
                }
            }
            Message::Reply {
                id,
                doc,
                code,
                message,
            } => {
                let error = code.map(|c| (c, message.clone()));
                self.reply(*id, Some(*doc), error).await?;
            }
            Message::Ephemeral {
                doc,
                user: Some(user),
                device: Some(device),
                data,
            } if self.weft.hello => {
                let Some(status) = status_of(data) else {
                    return Ok(false);
                };
                if self.is_open(*doc) {
                    self.send_presence(*doc, user, *device, true, Some(&status))
                        .await?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    async fn send_presence(
        &mut self,
        doc: DocId,
        user: &str,
        device: DeviceId,
        online: bool,
        status: Option<&str>,
    ) -> Result<(), SocketEnd> {
        let mut fields = vec![
            doc_field(doc),
            ("user", text(user)),
            ("device", text(&device.to_string())),
            ("online", Value::Bool(online)),
        ];
        if let Some(status) = status {
            fields.push(("status", text(status)));
        }
        self.send_weft("weft-presence", fields).await
    }
}
