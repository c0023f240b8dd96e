//! What a connection's messages do. Each `Frame` goes to the part of the hub that owns it
//! (subscriptions, token refresh, control requests); document messages, checked by the
//! connection's task (`crate::inbound`) or here, go to the engine for a subscribed connection.

use weft_core::engine::{ConnId, EngineError, Inbound};
use weft_core::wire::{Encoding, ErrorCode, Message};
use weft_core::DocId;

use super::docs::forbidden;
use super::Hub;
use crate::metrics::Metrics;
use crate::sharing;

impl Hub {
    /// A message from `conn` that is not a checked document message.
    pub(super) fn on_frame(&mut self, conn: ConnId, msg: Message) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        match msg {
            Message::Subscribe { doc } => self.on_subscribe(conn, doc),
            Message::Unsubscribe { doc } => {
                self.unsubscribe(conn, doc);
            }
            Message::Sync { doc, .. } | Message::Changes { doc, .. } | Message::Ack { doc, .. } => {
                let limits = &self.cfg.engine.limits;
                match weft_core::engine::check_message(msg, limits) {
                    Ok(inbound) => self.on_inbound(conn, inbound),
                    Err(e) => self.malformed(conn, doc, &e),
                }
            }
            Message::Ephemeral { doc, data, .. } => {
                if !c.docs.contains_key(&doc) {
                    self.send(conn, &forbidden(doc));
                    return;
                }
                let fwd = Message::Ephemeral {
                    doc,
                    user: Some(c.claims.sub.clone()),
                    device: Some(c.device),
                    data,
                };
                if self.batches_presence(doc) {
                    // Ephemeral bodies are the same in every encoding: one frame for all.
                    if let Some(frame) = self.encode(&fwd, Encoding::Named) {
                        self.batch_presence(doc, conn, frame);
                    }
                } else {
                    self.broadcast(doc, Some(conn), &fwd);
                }
                self.publish(&fwd);
            }
            Message::Token { token } => self.refresh_token(conn, token),
            Message::Share {
                id,
                doc,
                user,
                role,
            } => self.on_control(conn, id, doc, sharing::Control::Share { user, role }),
            Message::Unshare { id, doc, user } => {
                self.on_control(conn, id, doc, sharing::Control::Unshare { user })
            }
            Message::Delete { id, doc } => self.on_control(conn, id, doc, sharing::Control::Delete),
            Message::Hello { .. } => {
                self.close(conn, ErrorCode::MALFORMED, "hello sent twice".into())
            }
            other => {
                tracing::info!(
                    conn = conn.0,
                    ?other,
                    "closing a connection that sent an unexpected message"
                );
                self.close(conn, ErrorCode::MALFORMED, "unexpected message".into());
            }
        }
    }

    /// A checked document message: handed to the engine if `conn` is subscribed to its
    /// document. A panic inside Automerge on it costs that connection and reloads the
    /// document, never the relay.
    pub(super) fn on_inbound(&mut self, conn: ConnId, inbound: Inbound) {
        let doc = inbound.doc();
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        if c.closing {
            return;
        }
        if !c.docs.contains_key(&doc) {
            self.send(conn, &forbidden(doc));
            return;
        }
        if !self.within_user_bytes(conn, &inbound) {
            return;
        }
        let now = self.now_ms();
        let host = &mut self.host;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            host.handle_inbound(now, conn, inbound)
        }));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.malformed(conn, doc, &e),
            Err(_) => {
                tracing::error!(conn = conn.0, %doc, "automerge panicked on a peer's message: closing that connection and reloading the document");
                Metrics::inc(&self.metrics.protocol_errors);
                self.close(
                    conn,
                    ErrorCode::MALFORMED,
                    format!("the relay could not process a message for document {doc}"),
                );
                self.reload_after_panic(doc, conn);
            }
        }
    }

    fn malformed(&mut self, conn: ConnId, doc: DocId, e: &EngineError) {
        tracing::info!(conn = conn.0, %doc, error = %e, "closing a connection that sent an invalid message");
        Metrics::inc(&self.metrics.protocol_errors);
        self.close(
            conn,
            ErrorCode::MALFORMED,
            format!("invalid message for document {doc}"),
        );
    }
}
