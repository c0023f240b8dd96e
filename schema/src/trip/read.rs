//! The reads of a [`Trip`](super::Trip)'s collections: members, itinerary, tasks and
//! broadcasts. Each entry that doesn't fit the schema is skipped (see
//! [`Partial`](crate::Partial)), so one bad record hides nothing else.

use std::collections::BTreeMap;

use automerge::{ObjId, ObjType, ReadDoc, ROOT};

use super::{Broadcast, ItineraryItem, Priority, Task};
use crate::error::{At, ReadError};
use crate::partial::{entry, skip, Skips};
use crate::time::is_iso_date_time;
use crate::value::{
    describe, opt_bool, opt_parsed, opt_str, opt_text, req_obj, req_parsed, req_str, req_text,
    truncate,
};
use crate::{Id, MAX_BODY_LEN, MAX_NAME_LEN, MAX_TITLE_LEN};

/// Each entry of the record map `root[field]`, keyed by an [`Id`], as (id, object, key).
/// An entry whose key isn't an id or whose value isn't a map is skipped, and so is the field
/// when it isn't a map (no records).
fn records<D: ReadDoc>(
    doc: &D,
    field: &'static str,
    expected: &'static str,
    skips: &mut Skips,
) -> Result<Vec<(Id, ObjId, String)>, ReadError> {
    let root = At::Root;
    let at = root.key(field);
    let obj = req_obj(doc, &ROOT, field, at, ObjType::Map, expected);
    let Some(obj) = entry(obj, at, skips)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for item in doc.map_range(&obj, ..) {
        let at = at.key(&item.key);
        let Ok(id) = item.key.parse::<Id>() else {
            let why = at.invalid("an id", format!("{:?}", truncate(&item.key)));
            skip(at, why, skips);
            continue;
        };
        match item.value {
            automerge::ValueRef::Object(ObjType::Map | ObjType::Table) => {
                out.push((id, item.id(), item.key.to_string()))
            }
            v => skip(at, at.invalid("a map", describe(&v.into())), skips),
        }
    }
    Ok(out)
}

fn task<D: ReadDoc>(doc: &D, id: Id, obj: &ObjId, at: At<'_>) -> Result<Task, ReadError> {
    Ok(Task {
        title: req_str(doc, obj, "title", at.key("title"), MAX_TITLE_LEN, "a title")?,
        assignee: opt_str(
            doc,
            obj,
            "assignee",
            at.key("assignee"),
            MAX_NAME_LEN,
            "a user id",
        )?,
        done: opt_bool(doc, obj, "done", at.key("done"))?.unwrap_or(false),
        created_at: req_parsed(
            doc,
            obj,
            "created_at",
            at.key("created_at"),
            "a timestamp",
            |s| s.parse().ok(),
        )?,
        id,
    })
}

/// The tasks that read, ordered by (`created_at`, id).
pub(super) fn tasks<D: ReadDoc>(doc: &D, skips: &mut Skips) -> Result<Vec<Task>, ReadError> {
    let root = At::Root;
    let base = root.key("tasks");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "tasks", "a map of tasks", skips)? {
        let at = base.key(&key);
        out.extend(entry(task(doc, id, &obj, at), at, skips)?);
    }
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

fn broadcast<D: ReadDoc>(doc: &D, id: Id, obj: &ObjId, at: At<'_>) -> Result<Broadcast, ReadError> {
    Ok(Broadcast {
        author: req_str(
            doc,
            obj,
            "author",
            at.key("author"),
            MAX_NAME_LEN,
            "a user id",
        )?,
        body: req_text(doc, obj, "body", at.key("body"), MAX_BODY_LEN)?,
        priority: Priority::parse(&req_str(
            doc,
            obj,
            "priority",
            at.key("priority"),
            MAX_NAME_LEN,
            "a priority",
        )?),
        created_at: req_parsed(
            doc,
            obj,
            "created_at",
            at.key("created_at"),
            "a timestamp",
            |s| s.parse().ok(),
        )?,
        id,
    })
}

/// The broadcasts that read, ordered by (`created_at`, id).
pub(super) fn broadcasts<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<Vec<Broadcast>, ReadError> {
    let root = At::Root;
    let base = root.key("broadcasts");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "broadcasts", "a map of broadcasts", skips)? {
        let at = base.key(&key);
        out.extend(entry(broadcast(doc, id, &obj, at), at, skips)?);
    }
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

fn itinerary_item<D: ReadDoc>(
    doc: &D,
    id: Id,
    obj: &ObjId,
    at: At<'_>,
) -> Result<ItineraryItem, ReadError> {
    Ok(ItineraryItem {
        title: req_str(doc, obj, "title", at.key("title"), MAX_TITLE_LEN, "a title")?,
        starts_at: req_parsed(
            doc,
            obj,
            "starts_at",
            at.key("starts_at"),
            "a date (YYYY-MM-DD[THH:MM[:SS]])",
            |s| is_iso_date_time(s).then(|| s.to_owned()),
        )?,
        location: opt_str(
            doc,
            obj,
            "location",
            at.key("location"),
            MAX_TITLE_LEN,
            "a place",
        )?,
        notes: opt_text(doc, obj, "notes", at.key("notes"), MAX_BODY_LEN)?,
        id,
    })
}

/// The itinerary items that read, ordered by (`starts_at`, id).
pub(super) fn itinerary<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<Vec<ItineraryItem>, ReadError> {
    let root = At::Root;
    let base = root.key("itinerary");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "itinerary", "a map of itinerary items", skips)? {
        let at = base.key(&key);
        out.extend(entry(itinerary_item(doc, id, &obj, at), at, skips)?);
    }
    out.sort_by(|a, b| (&a.starts_at, &a.id).cmp(&(&b.starts_at, &b.id)));
    Ok(out)
}

/// The members that read (user id -> role).
pub(super) fn members<D: ReadDoc>(
    doc: &D,
    skips: &mut Skips,
) -> Result<BTreeMap<String, String>, ReadError> {
    let root = At::Root;
    let at = root.key("members");
    let obj = req_obj(doc, &ROOT, "members", at, ObjType::Map, "a map of members");
    let Some(obj) = entry(obj, at, skips)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for user in doc.keys(&obj) {
        let at = at.key(&user);
        if user.is_empty() || user.len() > MAX_NAME_LEN {
            let why = at.invalid("a user id", format!("{:?}", truncate(&user)));
            skip(at, why, skips);
            continue;
        }
        let role = req_str(doc, &obj, &user, at, MAX_NAME_LEN, "a role");
        if let Some(role) = entry(role, at, skips)? {
            out.insert(user, role);
        }
    }
    Ok(out)
}

/// The readable records of `field` ("tasks" or "broadcasts"): their `created_at`s, for a
/// write that must stamp a later one. Records that don't read are passed over.
pub(super) fn created_ats<D: ReadDoc>(
    doc: &D,
    field: &'static str,
) -> Result<Vec<crate::Hlc>, ReadError> {
    let ignored = &mut Skips::new();
    let root = At::Root;
    let base = root.key(field);
    let mut out = Vec::new();
    for (_, obj, key) in records(doc, field, "a map", ignored)? {
        let at = base.key(&key);
        let c = opt_parsed(doc, &obj, "created_at", at, "a timestamp", |s| {
            s.parse::<crate::Hlc>().ok()
        });
        out.extend(entry(c, at, ignored)?.flatten());
    }
    Ok(out)
}
