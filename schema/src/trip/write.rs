//! The writes of a [`Trip`]: its dates, members, itinerary, tasks and broadcasts. Each is one
//! change; a record (task, item, broadcast) is found by id, so malformed records elsewhere in
//! the trip don't stop it.

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};

use super::read;
use super::{Broadcast, ItineraryItem, NewBroadcast, NewTask, NewTrip, Task, Trip};
use crate::conversation::init_chat;
use crate::error::{At, WriteError};
use crate::partial::Skips;
use crate::time::{is_iso_date, is_iso_date_time};
use crate::tx::transact;
use crate::value::{describe, req_obj, truncate};
use crate::write::{check_arg, check_empty, write, Ctx};
use crate::{Hlc, Id, Kind, MAX_BODY_LEN, MAX_NAME_LEN, MAX_TITLE_LEN};

const TRIP: &[Kind] = &[Kind::Trip];

fn check_date(field: &'static str, d: Option<&str>) -> Result<(), WriteError> {
    match d {
        Some(d) if !is_iso_date(d) => Err(WriteError::InvalidInput {
            field,
            reason: format!("{:?} is not a YYYY-MM-DD date", truncate(d)),
        }),
        _ => Ok(()),
    }
}

fn put_opt(
    tx: &mut Transaction<'_>,
    obj: &ObjId,
    key: &str,
    v: Option<&str>,
) -> Result<(), WriteError> {
    match v {
        Some(v) => tx.put(obj, key, v)?,
        None if tx.get(obj, key)?.is_some() => tx.delete(obj, key)?,
        None => {}
    }
    Ok(())
}

/// The record `root[field][id]`, inside a write.
fn record(
    tx: &Transaction<'_>,
    field: &'static str,
    what: &'static str,
    id: &Id,
) -> Result<ObjId, WriteError> {
    let root = At::Root;
    let obj = req_obj(tx, &ROOT, field, root.key(field), ObjType::Map, "a map")?;
    match tx.get(&obj, id.as_str())? {
        Some((Value::Object(ObjType::Map | ObjType::Table), rec)) => Ok(rec),
        Some((v, _)) => Err(root
            .key(field)
            .key(id.as_str())
            .invalid("a map", describe(&v))
            .into()),
        None => Err(WriteError::NotFound {
            what,
            id: id.clone(),
        }),
    }
}

/// Adds a record keyed by `id` to `root[field]`, refusing a taken id.
fn new_record(
    tx: &mut Transaction<'_>,
    field: &'static str,
    what: &'static str,
    id: &Id,
) -> Result<ObjId, WriteError> {
    let root = At::Root;
    let obj = req_obj(tx, &ROOT, field, root.key(field), ObjType::Map, "a map")?;
    if tx.get(&obj, id.as_str())?.is_some() {
        return Err(WriteError::DuplicateId {
            what,
            id: id.clone(),
        });
    }
    Ok(tx.put_object(&obj, id.as_str(), ObjType::Map)?)
}

/// A timestamp later than every `created_at` in `root[field]`.
fn stamp(tx: &Transaction<'_>, ctx: &Ctx, field: &'static str) -> Result<Hlc, WriteError> {
    let last = read::created_ats(tx, field)?.into_iter().max();
    Ok(ctx.now(last))
}

impl Trip {
    /// Makes an empty document a trip, in one change.
    pub fn create(doc: &mut Automerge, new: &NewTrip, wall_ms: u64) -> Result<(), WriteError> {
        check_empty(doc)?;
        check_arg("title", &new.title, MAX_TITLE_LEN, false)?;
        check_date("start_date", new.start_date.as_deref())?;
        check_date("end_date", new.end_date.as_deref())?;
        transact(doc, wall_ms, Some("weft: create trip"), |tx| {
            init_chat(tx, Kind::Trip, &new.title)?;
            put_opt(tx, &ROOT, "start_date", new.start_date.as_deref())?;
            put_opt(tx, &ROOT, "end_date", new.end_date.as_deref())?;
            for field in ["members", "itinerary", "tasks", "broadcasts"] {
                tx.put_object(ROOT, field, ObjType::Map)?;
            }
            Ok(())
        })
    }

    /// Sets (or, with `None`, removes) the trip's dates.
    pub fn set_dates(
        doc: &mut Automerge,
        start: Option<&str>,
        end: Option<&str>,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_date("start_date", start)?;
        check_date("end_date", end)?;
        write(doc, TRIP, wall_ms, |tx, _| {
            put_opt(tx, &ROOT, "start_date", start)?;
            put_opt(tx, &ROOT, "end_date", end)
        })
    }

    /// Adds a member or changes their role.
    pub fn set_member(
        doc: &mut Automerge,
        user: &str,
        role: &str,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_arg("user", user, MAX_NAME_LEN, true)?;
        check_arg("role", role, MAX_NAME_LEN, true)?;
        write(doc, TRIP, wall_ms, |tx, _| {
            let root = At::Root;
            let obj = req_obj(
                tx,
                &ROOT,
                "members",
                root.key("members"),
                ObjType::Map,
                "a map of members",
            )?;
            tx.put(&obj, user, role)?;
            Ok(())
        })
    }

    /// Removes a member (absent: no change).
    pub fn remove_member(doc: &mut Automerge, user: &str, wall_ms: u64) -> Result<(), WriteError> {
        write(doc, TRIP, wall_ms, |tx, _| {
            let root = At::Root;
            let obj = req_obj(
                tx,
                &ROOT,
                "members",
                root.key("members"),
                ObjType::Map,
                "a map of members",
            )?;
            if tx.get(&obj, user)?.is_some() {
                tx.delete(&obj, user)?;
            }
            Ok(())
        })
    }

    /// Adds an itinerary item, or updates the one with the same id (writing only the fields
    /// that differ).
    pub fn put_itinerary_item(
        doc: &mut Automerge,
        item: &ItineraryItem,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_arg("title", &item.title, MAX_TITLE_LEN, true)?;
        if !is_iso_date_time(&item.starts_at) {
            return Err(WriteError::InvalidInput {
                field: "starts_at",
                reason: format!(
                    "{:?} is not YYYY-MM-DD[THH:MM[:SS]]",
                    truncate(&item.starts_at)
                ),
            });
        }
        if let Some(l) = &item.location {
            check_arg("location", l, MAX_TITLE_LEN, true)?;
        }
        if let Some(n) = &item.notes {
            check_arg("notes", n, MAX_BODY_LEN, false)?;
        }
        write(doc, TRIP, wall_ms, |tx, _| {
            // An item that doesn't read counts as absent: every field is written, repairing it.
            let old = read::itinerary(tx, &mut Skips::new())?
                .into_iter()
                .find(|i| i.id == item.id);
            let obj = match record(tx, "itinerary", "itinerary item", &item.id) {
                Ok(obj) => obj,
                Err(WriteError::NotFound { .. }) => {
                    new_record(tx, "itinerary", "itinerary item", &item.id)?
                }
                Err(e) => return Err(e),
            };
            if old.as_ref().map(|o| &o.title) != Some(&item.title) {
                tx.put(&obj, "title", item.title.as_str())?;
            }
            if old.as_ref().map(|o| &o.starts_at) != Some(&item.starts_at) {
                tx.put(&obj, "starts_at", item.starts_at.as_str())?;
            }
            if old.as_ref().map(|o| &o.location) != Some(&item.location) {
                put_opt(tx, &obj, "location", item.location.as_deref())?;
            }
            if old.as_ref().map(|o| &o.notes) != Some(&item.notes) {
                match (&item.notes, tx.get(&obj, "notes")?) {
                    (Some(n), Some((Value::Object(ObjType::Text), t))) => tx.update_text(&t, n)?,
                    (Some(n), _) => {
                        let t = tx.put_object(&obj, "notes", ObjType::Text)?;
                        tx.splice_text(&t, 0, 0, n)?;
                    }
                    (None, Some(_)) => tx.delete(&obj, "notes")?,
                    (None, None) => {}
                }
            }
            Ok(())
        })
    }

    /// Removes an itinerary item.
    pub fn remove_itinerary_item(
        doc: &mut Automerge,
        id: &Id,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        remove_record(doc, "itinerary", "itinerary item", id, wall_ms)
    }

    /// Adds a task, not done.
    pub fn add_task(
        doc: &mut Automerge,
        id: Id,
        task: &NewTask,
        wall_ms: u64,
    ) -> Result<Task, WriteError> {
        check_arg("title", &task.title, MAX_TITLE_LEN, true)?;
        if let Some(a) = &task.assignee {
            check_arg("assignee", a, MAX_NAME_LEN, true)?;
        }
        write(doc, TRIP, wall_ms, |tx, ctx| {
            let created_at = stamp(tx, ctx, "tasks")?;
            let obj = new_record(tx, "tasks", "task", &id)?;
            tx.put(&obj, "title", task.title.as_str())?;
            put_opt(tx, &obj, "assignee", task.assignee.as_deref())?;
            tx.put(&obj, "done", false)?;
            tx.put(&obj, "created_at", created_at.to_string())?;
            Ok(Task {
                id,
                title: task.title.clone(),
                assignee: task.assignee.clone(),
                done: false,
                created_at,
            })
        })
    }

    /// Marks a task done or not done. Concurrent writes resolve to one value everywhere; the
    /// other is visible through [`conflicts`](crate::conflicts).
    pub fn set_task_done(
        doc: &mut Automerge,
        id: &Id,
        done: bool,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        write(doc, TRIP, wall_ms, |tx, _| {
            let obj = record(tx, "tasks", "task", id)?;
            tx.put(&obj, "done", done)?;
            Ok(())
        })
    }

    /// Assigns a task to a user, or (with `None`) to nobody.
    pub fn assign_task(
        doc: &mut Automerge,
        id: &Id,
        assignee: Option<&str>,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        if let Some(a) = assignee {
            check_arg("assignee", a, MAX_NAME_LEN, true)?;
        }
        write(doc, TRIP, wall_ms, |tx, _| {
            let obj = record(tx, "tasks", "task", id)?;
            put_opt(tx, &obj, "assignee", assignee)
        })
    }

    /// Replaces a task's title wholesale (a register, not collaborative text).
    pub fn rename_task(
        doc: &mut Automerge,
        id: &Id,
        title: &str,
        wall_ms: u64,
    ) -> Result<(), WriteError> {
        check_arg("title", title, MAX_TITLE_LEN, true)?;
        write(doc, TRIP, wall_ms, |tx, _| {
            let obj = record(tx, "tasks", "task", id)?;
            tx.put(&obj, "title", title)?;
            Ok(())
        })
    }

    /// Removes a task.
    pub fn remove_task(doc: &mut Automerge, id: &Id, wall_ms: u64) -> Result<(), WriteError> {
        remove_record(doc, "tasks", "task", id, wall_ms)
    }

    /// Sends a broadcast to every member.
    pub fn broadcast(
        doc: &mut Automerge,
        id: Id,
        b: &NewBroadcast,
        wall_ms: u64,
    ) -> Result<Broadcast, WriteError> {
        check_arg("author", &b.author, MAX_NAME_LEN, true)?;
        check_arg("body", &b.body, MAX_BODY_LEN, false)?;
        check_arg("priority", b.priority.as_str(), MAX_NAME_LEN, true)?;
        write(doc, TRIP, wall_ms, |tx, ctx| {
            let created_at = stamp(tx, ctx, "broadcasts")?;
            let obj = new_record(tx, "broadcasts", "broadcast", &id)?;
            tx.put(&obj, "author", b.author.as_str())?;
            tx.put(&obj, "body", b.body.as_str())?;
            tx.put(&obj, "priority", b.priority.as_str())?;
            tx.put(&obj, "created_at", created_at.to_string())?;
            Ok(Broadcast {
                id,
                author: b.author.clone(),
                body: b.body.clone(),
                priority: b.priority.clone(),
                created_at,
            })
        })
    }
}

fn remove_record(
    doc: &mut Automerge,
    field: &'static str,
    what: &'static str,
    id: &Id,
    wall_ms: u64,
) -> Result<(), WriteError> {
    write(doc, TRIP, wall_ms, |tx, _| {
        record(tx, field, what, id)?;
        let root = At::Root;
        let obj = req_obj(tx, &ROOT, field, root.key(field), ObjType::Map, "a map")?;
        tx.delete(&obj, id.as_str())?;
        Ok(())
    })
}
