//! [`Trip`]: a shared trip.
//!
//! Root fields (schema version 2): `kind: "trip"`, `schema_version: 2`, `title` (Text),
//! optional `start_date` / `end_date` (`YYYY-MM-DD`), `members` (map user id -> role, for
//! display only: access is decided by the relay's access list), `itinerary`, `tasks` and
//! `broadcasts` (maps keyed by [`Id`]), and a chat (`messages`, `read`, `reactions`, the same
//! as a conversation's).
//!
//! Records are maps keyed by id, so concurrent additions never collide and each field of a
//! record is its own register: a task's `done` flag or `title` written concurrently on two
//! devices resolves to one value, the same everywhere, and the other stays visible through
//! [`conflicts`](crate::conflicts) until the next write.

use std::collections::BTreeMap;
use std::fmt;

use automerge::transaction::{Transactable, Transaction};
use automerge::{Automerge, ObjId, ObjType, ReadDoc, Value, ROOT};

use crate::chat::Chat;
use crate::conversation::init_chat;
use crate::error::{At, ReadError, WriteError};
use crate::kind::expect_kind;
use crate::time::{is_iso_date, is_iso_date_time};
use crate::value::{
    describe, opt_bool, opt_parsed, opt_str, req_obj, req_parsed, req_str, req_text, truncate,
};
use crate::write::{check_arg, check_empty, transact, write, Ctx};
use crate::{Hlc, Id, Kind, MAX_BODY_LEN, MAX_NAME_LEN, MAX_TITLE_LEN};

/// A trip, read whole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trip {
    /// Its title (collaborative text).
    pub title: String,
    /// First day, `YYYY-MM-DD`.
    pub start_date: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: Option<String>,
    /// Members and their roles ("organizer", "member", ...), for display.
    pub members: BTreeMap<String, String>,
    /// Itinerary, ordered by (`starts_at`, id).
    pub itinerary: Vec<ItineraryItem>,
    /// Tasks, ordered by (`created_at`, id).
    pub tasks: Vec<Task>,
    /// Broadcasts to all members, ordered by (`created_at`, id).
    pub broadcasts: Vec<Broadcast>,
    /// The trip's chat.
    pub chat: Chat,
}

/// What a new trip starts with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTrip {
    /// Its title.
    pub title: String,
    /// First day, `YYYY-MM-DD`.
    pub start_date: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: Option<String>,
}

/// One stop of the itinerary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItineraryItem {
    /// Its id.
    pub id: Id,
    /// What happens.
    pub title: String,
    /// When: `YYYY-MM-DD`, optionally with a local time `THH:MM[:SS]`.
    pub starts_at: String,
    /// Where.
    pub location: Option<String>,
    /// Free notes.
    pub notes: Option<String>,
}

/// A task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Its id.
    pub id: Id,
    /// What to do.
    pub title: String,
    /// Who does it.
    pub assignee: Option<String>,
    /// Whether it is done.
    pub done: bool,
    /// When it was added.
    pub created_at: Hlc,
}

/// A message to every member, with a priority the app may use to notify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broadcast {
    /// Its id.
    pub id: Id,
    /// Who sent it.
    pub author: String,
    /// The text.
    pub body: String,
    /// How urgent it is.
    pub priority: Priority,
    /// When it was sent.
    pub created_at: Hlc,
}

/// The priority of a [`Broadcast`]. Values written by newer builds are kept as `Other`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `"low"`
    Low,
    /// `"normal"`
    Normal,
    /// `"high"`
    High,
    /// `"urgent"`
    Urgent,
    /// Any other string.
    Other(String),
}

impl Priority {
    /// The stored string.
    pub fn as_str(&self) -> &str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
            Priority::Urgent => "urgent",
            Priority::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Priority {
        match s {
            "low" => Priority::Low,
            "normal" => Priority::Normal,
            "high" => Priority::High,
            "urgent" => Priority::Urgent,
            s => Priority::Other(s.to_owned()),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Each entry of the record map `root[field]`, keyed by an [`Id`], as (id, object, path).
fn records<D: ReadDoc>(
    doc: &D,
    field: &'static str,
    expected: &'static str,
) -> Result<Vec<(Id, ObjId, String)>, ReadError> {
    let root = At::Root;
    let at = root.key(field);
    let obj = req_obj(doc, &ROOT, field, at, ObjType::Map, expected)?;
    let mut out = Vec::new();
    for item in doc.map_range(&obj, ..) {
        let at = at.key(&item.key);
        let id: Id = item
            .key
            .parse()
            .map_err(|_| at.invalid("an id", format!("{:?}", truncate(&item.key))))?;
        match item.value {
            automerge::ValueRef::Object(ObjType::Map | ObjType::Table) => {
                out.push((id, item.id(), item.key.to_string()))
            }
            v => return Err(at.invalid("a map", describe(&v.into()))),
        }
    }
    Ok(out)
}

fn read_tasks<D: ReadDoc>(doc: &D) -> Result<Vec<Task>, ReadError> {
    let root = At::Root;
    let base = root.key("tasks");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "tasks", "a map of tasks")? {
        let at = base.key(&key);
        out.push(Task {
            title: req_str(
                doc,
                &obj,
                "title",
                at.key("title"),
                MAX_TITLE_LEN,
                "a title",
            )?,
            assignee: opt_str(
                doc,
                &obj,
                "assignee",
                at.key("assignee"),
                MAX_NAME_LEN,
                "a user id",
            )?,
            done: opt_bool(doc, &obj, "done", at.key("done"))?.unwrap_or(false),
            created_at: req_parsed(
                doc,
                &obj,
                "created_at",
                at.key("created_at"),
                "a timestamp",
                |s| s.parse().ok(),
            )?,
            id,
        });
    }
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

fn read_broadcasts<D: ReadDoc>(doc: &D) -> Result<Vec<Broadcast>, ReadError> {
    let root = At::Root;
    let base = root.key("broadcasts");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "broadcasts", "a map of broadcasts")? {
        let at = base.key(&key);
        out.push(Broadcast {
            author: req_str(
                doc,
                &obj,
                "author",
                at.key("author"),
                MAX_NAME_LEN,
                "a user id",
            )?,
            body: req_text(doc, &obj, "body", at.key("body"), MAX_BODY_LEN)?,
            priority: Priority::parse(&req_str(
                doc,
                &obj,
                "priority",
                at.key("priority"),
                MAX_NAME_LEN,
                "a priority",
            )?),
            created_at: req_parsed(
                doc,
                &obj,
                "created_at",
                at.key("created_at"),
                "a timestamp",
                |s| s.parse().ok(),
            )?,
            id,
        });
    }
    out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    Ok(out)
}

fn read_itinerary<D: ReadDoc>(doc: &D) -> Result<Vec<ItineraryItem>, ReadError> {
    let root = At::Root;
    let base = root.key("itinerary");
    let mut out = Vec::new();
    for (id, obj, key) in records(doc, "itinerary", "a map of itinerary items")? {
        let at = base.key(&key);
        out.push(ItineraryItem {
            title: req_str(
                doc,
                &obj,
                "title",
                at.key("title"),
                MAX_TITLE_LEN,
                "a title",
            )?,
            starts_at: req_parsed(
                doc,
                &obj,
                "starts_at",
                at.key("starts_at"),
                "a date (YYYY-MM-DD[THH:MM[:SS]])",
                |s| is_iso_date_time(s).then(|| s.to_owned()),
            )?,
            location: opt_str(
                doc,
                &obj,
                "location",
                at.key("location"),
                MAX_TITLE_LEN,
                "a place",
            )?,
            notes: crate::value::opt_text(doc, &obj, "notes", at.key("notes"), MAX_BODY_LEN)?,
            id,
        });
    }
    out.sort_by(|a, b| (&a.starts_at, &a.id).cmp(&(&b.starts_at, &b.id)));
    Ok(out)
}

fn read_members<D: ReadDoc>(doc: &D) -> Result<BTreeMap<String, String>, ReadError> {
    let root = At::Root;
    let at = root.key("members");
    let obj = req_obj(doc, &ROOT, "members", at, ObjType::Map, "a map of members")?;
    let mut out = BTreeMap::new();
    for user in doc.keys(&obj) {
        let at = at.key(&user);
        if user.is_empty() || user.len() > MAX_NAME_LEN {
            return Err(at.invalid("a user id", format!("{:?}", truncate(&user))));
        }
        let role = req_str(doc, &obj, &user, at, MAX_NAME_LEN, "a role")?;
        out.insert(user, role);
    }
    Ok(out)
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
    let last = match field {
        "tasks" => read_tasks(tx)?.into_iter().map(|t| t.created_at).max(),
        _ => read_broadcasts(tx)?.into_iter().map(|b| b.created_at).max(),
    };
    Ok(ctx.now(last))
}

/// A task to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTask {
    /// What to do.
    pub title: String,
    /// Who does it.
    pub assignee: Option<String>,
}

/// A broadcast to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBroadcast {
    /// Who sends it.
    pub author: String,
    /// The text.
    pub body: String,
    /// How urgent it is.
    pub priority: Priority,
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

    /// Reads the whole trip. Reading never writes.
    pub fn read(doc: &Automerge) -> Result<Trip, ReadError> {
        expect_kind(doc, Kind::Trip)?;
        let root = At::Root;
        let date = |key: &'static str| {
            opt_parsed(doc, &ROOT, key, root.key(key), "a date (YYYY-MM-DD)", |s| {
                is_iso_date(s).then(|| s.to_owned())
            })
        };
        Ok(Trip {
            title: req_text(doc, &ROOT, "title", root.key("title"), MAX_TITLE_LEN)?,
            start_date: date("start_date")?,
            end_date: date("end_date")?,
            members: read_members(doc)?,
            itinerary: read_itinerary(doc)?,
            tasks: read_tasks(doc)?,
            broadcasts: read_broadcasts(doc)?,
            chat: Chat::read_in(doc)?,
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
            let old = read_itinerary(tx)?.into_iter().find(|i| i.id == item.id);
            let obj = match &old {
                Some(_) => record(tx, "itinerary", "itinerary item", &item.id)?,
                None => new_record(tx, "itinerary", "itinerary item", &item.id)?,
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
