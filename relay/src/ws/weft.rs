//! A socket's `weft-…` messages (see `codec/weft.rs` and decision 0014): the hub already does
//! discovery, presence, sharing and token refresh for every connection; this file turns a
//! client's `weft-…` requests into the hub's messages and the hub's answers into `weft-…`
//! messages. It does no I/O: [`WeftState`] returns what to send, and the socket
//! (`translate.rs`) sends it in order. No rule lives here: share, unshare, delete and refresh are the hub's decisions,
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

use super::codec::{WeftRequest, MAX_STATUS_LEN};
use crate::auth::Verifier;

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

/// What the socket sends on behalf of a `weft-…` exchange, in order.
#[derive(Debug)]
pub(super) enum WeftOut {
    /// A `weft-…` message to the client.
    Client {
        kind: &'static str,
        fields: Vec<(&'static str, Value)>,
    },
    /// A message to the hub.
    Hub(Message),
}

/// What a `weft-…` exchange needs to know of its socket.
pub(super) struct Here<'a> {
    pub(super) user: &'a str,
    pub(super) device: DeviceId,
    pub(super) storage_id: &'a str,
    pub(super) verifier: &'a Verifier,
    /// A document's subscription on this socket: `None` when unknown, `Some(true)` when open,
    /// `Some(false)` while being subscribed.
    pub(super) subscription: &'a dyn Fn(DocId) -> Option<bool>,
}

impl Here<'_> {
    fn is_open(&self, doc: DocId) -> bool {
        (self.subscription)(doc) == Some(true)
    }

    fn is_known(&self, doc: DocId) -> bool {
        (self.subscription)(doc).is_some()
    }
}

fn weft(out: &mut Vec<WeftOut>, kind: &'static str, fields: Vec<(&'static str, Value)>) {
    out.push(WeftOut::Client { kind, fields });
}

fn reply(out: &mut Vec<WeftOut>, id: u64, doc: Option<DocId>, error: Option<(ErrorCode, String)>) {
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
    weft(out, "weft-reply", fields);
}

fn presence(
    out: &mut Vec<WeftOut>,
    doc: DocId,
    (user, device): (&str, DeviceId),
    online: bool,
    status: Option<&str>,
) {
    let mut fields = vec![
        doc_field(doc),
        ("user", text(user)),
        ("device", text(&device.to_string())),
        ("online", Value::Bool(online)),
    ];
    if let Some(status) = status {
        fields.push(("status", text(status)));
    }
    weft(out, "weft-presence", fields);
}

impl WeftState {
    /// A client's `weft-…` request.
    pub(super) fn on_request(
        &mut self,
        request: WeftRequest,
        here: &Here<'_>,
        out: &mut Vec<WeftOut>,
    ) {
        match request {
            WeftRequest::Hello => {
                self.hello = true;
                let welcome = vec![
                    ("user", text(here.user)),
                    ("device", text(&here.device.to_string())),
                    ("storageId", text(here.storage_id)),
                ];
                weft(out, "weft-welcome", welcome);
                // A listing still arriving from the hub is told whole once it ends.
                if self.listing_end.is_some() {
                    self.listing(out);
                }
            }
            WeftRequest::Presence { doc, status } => {
                // Presence is best-effort, like ephemeral data.
                if here.is_open(doc) {
                    out.push(WeftOut::Hub(Message::Ephemeral {
                        doc,
                        user: None,
                        device: None,
                        data: status_payload(&status),
                    }));
                }
            }
            WeftRequest::Share {
                id,
                doc,
                user,
                role,
            } => out.push(WeftOut::Hub(Message::Share {
                id,
                doc,
                user,
                role,
            })),
            WeftRequest::Unshare { id, doc, user } => {
                out.push(WeftOut::Hub(Message::Unshare { id, doc, user }))
            }
            WeftRequest::Delete { id, doc } => out.push(WeftOut::Hub(Message::Delete { id, doc })),
            WeftRequest::Token { id, token } => {
                // The hub decides (and closes the socket on a refused token, as for QUIC
                // devices); this check only lets the client hear "ok" or why not first.
                let verdict = match here.verifier.verify(&token, weft_core::clock::unix_secs()) {
                    Ok(claims) if claims.sub == here.user => None,
                    Ok(_) => Some("a refreshed token must be for the same user".to_owned()),
                    Err(e) => Some(format!("the refreshed token was refused: {e}")),
                };
                let error = verdict.map(|m| (ErrorCode::UNAUTHENTICATED, m));
                reply(out, id, None, error);
                out.push(WeftOut::Hub(Message::Token { token }));
            }
        }
    }

    /// The whole listing as one `weft-docs {full: true}`, then `weft-docs-end`.
    fn listing(&self, out: &mut Vec<WeftOut>) {
        let listing = entries(self.listing.iter().map(|(d, r)| (*d, *r)));
        let docs = vec![
            ("full", Value::Bool(true)),
            ("docs", listing),
            ("removed", Value::Array(Vec::new())),
        ];
        weft(out, "weft-docs", docs);
        let (total, truncated) = self.listing_end.unwrap_or_default();
        let end = vec![
            ("total", Value::Integer(total.into())),
            ("truncated", Value::Bool(truncated)),
        ];
        weft(out, "weft-docs-end", end);
    }

    /// A hub message of weft's own (discovery, presence, replies, statuses): `true` when it
    /// was handled here, `false` when it is not one.
    pub(super) fn on_hub(
        &mut self,
        msg: &Message,
        here: &Here<'_>,
        out: &mut Vec<WeftOut>,
    ) -> bool {
        match msg {
            Message::Docs {
                full,
                added,
                removed,
            } => {
                if *full {
                    self.listing.clear();
                    self.listing_end = None;
                }
                for DocEntry { doc, role } in added {
                    self.listing.insert(*doc, *role);
                }
                for doc in removed {
                    self.listing.remove(doc);
                }
                // Pieces of a full listing wait for its end; later deltas go out as they come.
                if self.hello && self.listing_end.is_some() {
                    let removed = removed.iter().map(|d| text(&d.to_string())).collect();
                    let fields = vec![
                        ("full", Value::Bool(*full)),
                        ("docs", entries(added.iter().map(|e| (e.doc, e.role)))),
                        ("removed", Value::Array(removed)),
                    ];
                    weft(out, "weft-docs", fields);
                }
            }
            Message::DocsEnd { total, truncated } => {
                self.listing_end = Some((*total, *truncated));
                if self.hello {
                    self.listing(out);
                }
            }
            Message::Presence {
                doc,
                user,
                device,
                online,
            } => {
                // The hub tells a newcomer who is here just before it answers the subscription.
                if self.hello && here.is_known(*doc) {
                    presence(out, *doc, (user, *device), *online, None);
                }
            }
            Message::Reply {
                id,
                doc,
                code,
                message,
            } => {
                let error = code.map(|c| (c, message.clone()));
                reply(out, *id, Some(*doc), error);
            }
            Message::Ephemeral {
                doc,
                user: Some(user),
                device: Some(device),
                data,
            } if self.hello => {
                let Some(status) = status_of(data) else {
                    return false;
                };
                if here.is_open(*doc) {
                    presence(out, *doc, (user, *device), true, Some(&status));
                }
            }
            _ => return false,
        }
        true
    }
}
