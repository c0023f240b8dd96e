//! [`RulesGate`]: the engine's gate that enforces identities and write rules.
//!
//! **Identity.** Each Automerge actor writes for one user: the first change a connection
//! sends from an actor binds the actor to the connection's user (a record the engine keeps with
//! the document, written before the change), and a change from an actor bound to another user
//! is refused. Devices use one actor per document (see the device runtime), so a user's
//! changes are attributable and nobody can write in another's name.
//!
//! **Write rules.** A change to a document of a known kind is checked against the kind
//! (`kinds/`, `eval/`) with its writer's user, whether the writer holds an `admin` token,
//! and the document's owner.

use std::sync::Arc;
use weft_core::hash::{shrink_if_sparse as shrink_map, HashMap};

use automerge::{ActorId, Change};
use weft_core::check::CheckedChange;
use weft_core::engine::{Accepted, ConnId, Gate};
use weft_core::{DocId, Document};

use super::eval::{self, DocRules, Writer};
use super::kinds::Kinds;
use super::notes::{NewMessage, Notes};

/// Most objects and root fields the gate follows for a document between two
/// materializations (a few hundred bytes each) before it asks the engine for one.
const MAX_FOLLOWED: usize = 16_384;

/// Most bindings learned from a relay ([`RulesGate::learn_binding`]) a document holds: a
/// hostile relay cannot grow a document's bindings without bound.
pub(super) const MAX_LEARNED_BINDINGS: usize = 16_384;

/// Most bindings learned for documents not loaded yet, over all documents, held until each
/// document loads.
pub(super) const MAX_PENDING_BINDINGS: usize = 16_384;

/// Who is behind a connection, as the driver authenticated it.
#[derive(Clone, Debug)]
struct Conn {
    user: String,
    admin: bool,
    /// Its changes are checked (else only followed).
    checked: bool,
    /// An actor already bound to another user is taken as that user's (a device's own peers,
    /// which forward what the relay accepted); else such a change is refused.
    trusts_bindings: bool,
}

/// Enforces identities and write rules. See the module docs.
pub struct RulesGate {
    kinds: Arc<Kinds>,
    conns: HashMap<ConnId, Conn>,
    /// Boxed: the map keeps its capacity (the most documents loaded at once) and a slot of an
    /// inline `DocRules` is a few hundred bytes.
    docs: HashMap<DocId, Box<DocRules>>,
    owners: HashMap<DocId, String>,
    /// Bindings learned from a relay for documents not loaded yet (a device asks for a
    /// document and its relay sends the bindings while the load is in flight): applied when
    /// the document opens, as the relay's word. At most [`MAX_PENDING_BINDINGS`] in all.
    pending: HashMap<DocId, HashMap<ActorId, String>>,
    /// How many bindings `pending` holds.
    pending_len: usize,
    /// The user changes made here write for (a device's user).
    local_user: Option<String>,
    /// New messages noted for the push hook, when asked ([`RulesGate::note_messages`]).
    notes: Option<Notes>,
}

impl RulesGate {
    /// A gate that knows `kinds`.
    pub fn new(kinds: Arc<Kinds>) -> RulesGate {
        RulesGate {
            kinds,
            conns: HashMap::default(),
            docs: HashMap::default(),
            owners: HashMap::default(),
            pending: HashMap::default(),
            pending_len: 0,
            local_user: None,
            notes: None,
        }
    }

    /// From now on, notes every message an accepted change creates (a record in a collection
    /// named `messages`), with its body when `bodies`, until taken with
    /// [`RulesGate::take_messages`].
    pub fn note_messages(&mut self, bodies: bool) {
        self.notes = Some(Notes::new(bodies));
    }

    /// The messages noted in `doc` since it was last asked, oldest first.
    pub fn take_messages(&mut self, doc: DocId) -> Vec<NewMessage> {
        self.notes.as_mut().map(|n| n.take(doc)).unwrap_or_default()
    }

    /// How many messages were not noted since it was last asked, because
    /// [`super::notes::MAX_NOTED`] were waiting to be taken.
    pub fn take_dropped_messages(&mut self) -> u64 {
        self.notes.as_mut().map_or(0, Notes::take_dropped)
    }

    /// The user changes made on this node write for (a device's user): its own actors are
    /// bound to it.
    pub fn set_local_user(&mut self, user: &str) {
        self.local_user = Some(user.to_string());
    }

    /// The user changes made on this node write for, when known.
    pub fn local_user(&self) -> Option<&str> {
        self.local_user.as_deref()
    }

    /// The kinds it checks against (declared kinds may change while it runs).
    pub fn set_kinds(&mut self, kinds: Arc<Kinds>) {
        self.kinds = kinds;
    }

    /// A connection whose changes are checked, written for `user` (`admin`: its token may
    /// moderate). `trusts_bindings`: see the type.
    pub fn connect(&mut self, conn: ConnId, user: &str, admin: bool, trusts_bindings: bool) {
        self.conns.insert(
            conn,
            Conn {
                user: user.to_string(),
                admin,
                checked: true,
                trusts_bindings,
            },
        );
    }

    /// The connection is gone (or its changes are no longer checked).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
    }

    /// `doc` is owned by `owner` (whoever first uploaded it).
    pub fn set_owner(&mut self, doc: DocId, owner: &str) {
        self.owners.insert(doc, owner.to_string());
        if let Some(st) = self.docs.get_mut(&doc) {
            st.owner = Some(owner.to_string());
        }
    }

    /// Forgets `doc`'s owner (the relay evicted it; it is set again before the document is next
    /// opened), so an evicted document leaves nothing here.
    pub fn forget_owner(&mut self, doc: DocId) {
        self.owners.remove(&doc);
    }

    /// `actor` writes for `user` in `doc` (learned from the relay): a device's gate takes
    /// changes its peers forward from that actor as that user's. The relay's word replaces
    /// what a peer bound the actor to. For a document not loaded yet the binding is held until
    /// it opens. Returns whether the binding was taken (new or changed, within a bound per
    /// document and, while held, in all): whether it is worth storing.
    pub fn learn_binding(&mut self, doc: DocId, actor: ActorId, user: &str) -> bool {
        if let Some(st) = self.docs.get_mut(&doc) {
            return learn(&mut st.bindings, actor, user);
        }
        if let Some(pending) = self.pending.get_mut(&doc) {
            if pending.contains_key(&actor) {
                return learn(pending, actor, user);
            }
        }
        if self.pending_len >= MAX_PENDING_BINDINGS {
            return false;
        }
        // A new actor, with room left in all: always taken.
        let taken = learn(self.pending.entry(doc).or_default(), actor, user);
        if taken {
            self.pending_len += 1;
        }
        taken
    }

    /// The bindings of a loaded `doc` the gate knows: actor and user.
    pub fn bindings(&self, doc: DocId) -> impl Iterator<Item = (&ActorId, &str)> {
        self.docs
            .get(&doc)
            .into_iter()
            .flat_map(|st| st.bindings.iter().map(|(a, u)| (a, u.as_str())))
    }

    /// Which user `actor` writes for in a loaded `doc`, as far as the gate knows.
    pub fn binding(&self, doc: DocId, actor: &ActorId) -> Option<&str> {
        self.docs.get(&doc)?.bindings.get(actor).map(String::as_str)
    }
}

/// Binds `actor` to `user` in `bindings` unless it already is, or `bindings` is full; whether
/// it did.
fn learn(bindings: &mut HashMap<ActorId, String>, actor: ActorId, user: &str) -> bool {
    let full = bindings.len() >= MAX_LEARNED_BINDINGS;
    match bindings.get_mut(&actor) {
        Some(u) if u == user => false,
        Some(u) => {
            *u = user.to_string();
            true
        }
        None if full => false,
        None => {
            bindings.insert(actor, user.to_string());
            true
        }
    }
}

/// The record of a binding: key = the actor's bytes, value = the user.
fn binding_record(actor: &ActorId, user: &str) -> (Vec<u8>, Vec<u8>) {
    (actor.to_bytes().to_vec(), user.as_bytes().to_vec())
}

impl Gate for RulesGate {
    fn checks(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.checked)
    }

    fn opened(&mut self, doc: DocId, document: &Document, records: &[(Vec<u8>, Vec<u8>)]) {
        let mut st = DocRules::default();
        for (actor, user) in records {
            if let Ok(user) = std::str::from_utf8(user) {
                st.bindings
                    .insert(ActorId::from(actor.as_slice()), user.to_string());
            }
        }
        // The relay's word, learned while the document loaded (it may not be in `records`
        // yet: the load may have read the store before they were written).
        if let Some(pending) = self.pending.remove(&doc) {
            self.pending_len -= pending.len();
            st.bindings.extend(pending);
        }
        st.owner = self.owners.get(&doc).cloned();
        st.materialized(document.automerge());
        self.docs.insert(doc, Box::new(st));
    }

    fn check(
        &mut self,
        doc: DocId,
        conn: ConnId,
        checked: &CheckedChange,
        document: &Document,
    ) -> Result<Accepted, String> {
        let change = &checked.change;
        let Some(c) = self.conns.get(&conn) else {
            return Err("the connection is not known".into());
        };
        let st = self.docs.entry(doc).or_default();
        let actor = change.actor_id();
        let (user, new_binding) = match st.bindings.get(actor) {
            Some(u) if *u == c.user => (c.user.clone(), false),
            Some(u) if c.trusts_bindings => (u.clone(), false),
            Some(_) => {
                return Err(format!(
                    "identity: actor {} writes for another user, not {}",
                    actor, c.user
                ))
            }
            None => (c.user.clone(), true),
        };
        if new_binding {
            st.bindings.insert(actor.clone(), user.clone());
        }
        let writer = Writer {
            user: &user,
            admin: c.admin,
        };
        let notes = self.notes.as_ref().map(|n| n.bodies);
        match eval::check(
            &self.kinds,
            st,
            document.automerge(),
            change,
            checked.expanded(),
            writer,
            notes,
        ) {
            Ok(made) => {
                if let (Some(notes), false) = (&mut self.notes, made.is_empty()) {
                    notes.add(doc, &user, st.kind.as_deref(), made);
                }
                Ok(Accepted {
                    records: if new_binding {
                        vec![binding_record(actor, &user)]
                    } else {
                        Vec::new()
                    },
                })
            }
            Err(rule) => {
                if new_binding {
                    st.bindings.remove(actor);
                }
                Err(rule)
            }
        }
    }

    fn materialized(&mut self, doc: DocId, document: &Document) {
        if let Some(st) = self.docs.get_mut(&doc) {
            st.materialized(document.automerge());
        }
    }

    fn observe(&mut self, doc: DocId, change: &Change, from: Option<ConnId>) {
        if let Some(st) = self.docs.get_mut(&doc) {
            // This device's own writes: its actors write for its user.
            if let (None, Some(user)) = (from, &self.local_user) {
                st.bindings
                    .entry(change.actor_id().clone())
                    .or_insert_with(|| user.clone());
            }
            st.follow(change);
        }
    }

    fn closed(&mut self, doc: DocId) {
        self.docs.remove(&doc);
        // What was noted and never made durable is not reported.
        if let Some(n) = &mut self.notes {
            n.take(doc);
        }
    }

    fn wants_materialized(&self, doc: DocId) -> bool {
        self.docs
            .get(&doc)
            .is_some_and(|st| st.followed() > MAX_FOLLOWED)
    }

    fn shrink(&mut self) {
        shrink_map(&mut self.docs);
        shrink_map(&mut self.owners);
        shrink_map(&mut self.pending);
        if let Some(n) = &mut self.notes {
            n.shrink();
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
