//! Reactions to chat messages: `reactions {message id: {emoji: {user: true}}}`, a set of
//! users per (message, emoji). Containers created concurrently by two writers both survive
//! as a conflict; reads take the union of all of them, so no reaction is lost.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjId, ReadDoc, ROOT};

use crate::error::{At, ReadError, WriteError};
use crate::kind::CHAT_KINDS;
use crate::message::check_chat;
use crate::partial::{skip, Partial, Skips};
use crate::value::{describe, maps_at, truncate};
use crate::write::{check_arg, ensure_map, write};
use crate::{Id, MAX_NAME_LEN};

/// The longest reaction (an emoji or a short code), in bytes.
pub const MAX_REACTION_LEN: usize = 64;

/// Who reacted with what to one message: emoji -> users.
pub type Reactions = BTreeMap<String, BTreeSet<String>>;

/// Adds to `out` the reactions to the message `id` found in every container of `containers`
/// (the maps at `reactions`); what doesn't fit is skipped at the finest level (one user, one
/// emoji, one message's map), keeping every other reaction.
fn reactions_of<D: ReadDoc>(
    doc: &D,
    containers: &[ObjId],
    id: &str,
    at: At<'_>,
    out: &mut Reactions,
    skips: &mut Skips,
) -> Result<(), ReadError> {
    let at = at.key(id);
    for per_msg in containers {
        for per_msg in maps_at(doc, per_msg, id, at, "a map of reactions", skips)? {
            for emoji in doc.keys(&per_msg) {
                let at = at.key(&emoji);
                if emoji.is_empty() || emoji.len() > MAX_REACTION_LEN {
                    let why = at.invalid("a reaction", format!("{:?}", truncate(&emoji)));
                    skip(at, why, skips);
                    continue;
                }
                for users in maps_at(doc, &per_msg, &emoji, at, "a map of users", skips)? {
                    for item in doc.map_range(&users, ..) {
                        let at = at.key(&item.key);
                        if item.key.is_empty() || item.key.len() > MAX_NAME_LEN {
                            let why = at.invalid("a user id", format!("{:?}", truncate(&item.key)));
                            skip(at, why, skips);
                            continue;
                        }
                        match item.value {
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(
                                true,
                            )) => {
                                out.entry(emoji.clone())
                                    .or_default()
                                    .insert(item.key.to_string());
                            }
                            automerge::ValueRef::Scalar(automerge::ScalarValueRef::Boolean(
                                false,
                            )) => {}
                            v => skip(at, at.invalid("true", describe(&v.into())), skips),
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Every message's reactions (messages without any are absent).
pub(crate) fn all_reactions_in<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<BTreeMap<Id, Reactions>, ReadError> {
    let root = At::Root;
    let at = root.key("reactions");
    let containers = maps_at(doc, &ROOT, "reactions", at, "a map of reactions", skips)?;
    let mut ids = BTreeSet::new();
    for c in &containers {
        ids.extend(doc.keys(c));
    }
    let mut out = BTreeMap::new();
    for id in ids {
        let Ok(parsed) = id.parse::<Id>() else {
            let at = at.key(&id);
            skip(
                at,
                at.invalid("a message id", format!("{:?}", truncate(&id))),
                skips,
            );
            continue;
        };
        let mut r = Reactions::new();
        reactions_of(doc, &containers, &id, at, &mut r, skips)?;
        if !r.is_empty() {
            out.insert(parsed, r);
        }
    }
    Ok(out)
}

/// The reactions to one message, and the entries under it that aren't reactions (skipped).
pub fn reactions(doc: &Automerge, id: &Id) -> Result<Partial<Reactions>, ReadError> {
    check_chat(doc)?;
    let mut skips = Skips::new();
    let r = reactions_in(doc, id, &mut skips)?;
    Ok(Partial::new(r, skips))
}

fn reactions_in<D: ReadDoc>(doc: &D, id: &Id, skips: &mut Skips) -> Result<Reactions, ReadError> {
    let root = At::Root;
    let at = root.key("reactions");
    let containers = maps_at(doc, &ROOT, "reactions", at, "a map of reactions", skips)?;
    let mut r = Reactions::new();
    reactions_of(doc, &containers, id.as_str(), at, &mut r, skips)?;
    Ok(r)
}

/// Adds `user`'s reaction `emoji` to the message `id`. The message is not looked up (a
/// reaction may arrive before its message), only the id's form is checked. Malformed
/// reactions don't stop it: a value that isn't a map where this reaction goes is replaced.
pub fn react(
    doc: &mut Automerge,
    id: &Id,
    emoji: &str,
    user: &str,
    wall_ms: u64,
) -> Result<(), WriteError> {
    check_arg("reaction", emoji, MAX_REACTION_LEN, true)?;
    check_arg("user", user, MAX_NAME_LEN, true)?;
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let r = reactions_in(tx, id, &mut Skips::new())?;
        if r.get(emoji).is_some_and(|u| u.contains(user)) {
            return Ok(());
        }
        let all = ensure_map(tx, &ROOT, "reactions")?;
        let per_msg = ensure_map(tx, &all, id.as_str())?;
        let users = ensure_map(tx, &per_msg, emoji)?;
        tx.put(&users, user, true)?;
        Ok(())
    })
}

/// Removes `user`'s reaction `emoji` from the message `id`, from every concurrent copy of the
/// containers. Removing an absent reaction makes no change.
pub fn unreact(
    doc: &mut Automerge,
    id: &Id,
    emoji: &str,
    user: &str,
    wall_ms: u64,
) -> Result<(), WriteError> {
    write(doc, CHAT_KINDS, wall_ms, |tx, _ctx| {
        let root = At::Root;
        let at = root.key("reactions");
        let at_msg = at.key(id.as_str());
        let at_emoji = at_msg.key(emoji);
        // What isn't a map here holds no reaction to remove.
        let ignored = &mut Skips::new();
        let mut targets = Vec::new();
        for all in maps_at(tx, &ROOT, "reactions", at, "a map", ignored)? {
            for per_msg in maps_at(tx, &all, id.as_str(), at_msg, "a map", ignored)? {
                for users in maps_at(tx, &per_msg, emoji, at_emoji, "a map", ignored)? {
                    if tx.get(&users, user)?.is_some() {
                        targets.push(users);
                    }
                }
            }
        }
        for users in targets {
            tx.delete(&users, user)?;
        }
        Ok(())
    })
}
