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

mod read;
mod write;

use std::collections::BTreeMap;
use std::fmt;

use automerge::{Automerge, ROOT};

use crate::chat::Chat;
use crate::conversation::title_in;
use crate::error::{At, ReadError};
use crate::kind::expect_kind;
use crate::partial::{entry, Partial, Skips};
use crate::time::is_iso_date;
use crate::value::opt_parsed;
use crate::{Hlc, Id, Kind};

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
    /// Reads the whole trip, and what doesn't fit the schema (skipped; see [`Partial`]: a
    /// task, itinerary item, broadcast or member that doesn't read is left out). Reading never
    /// writes.
    pub fn read(doc: &Automerge) -> Result<Partial<Trip>, ReadError> {
        let mut skips = Skips::new();
        let t = Trip::read_in(doc, &mut skips)?;
        Ok(Partial::new(t, skips))
    }

    pub(crate) fn read_in(doc: &Automerge, skips: &mut Skips) -> Result<Trip, ReadError> {
        expect_kind(doc, Kind::Trip)?;
        let root = At::Root;
        let mut date = |key: &'static str| {
            let at = root.key(key);
            let d = opt_parsed(doc, &ROOT, key, at, "a date (YYYY-MM-DD)", |s| {
                is_iso_date(s).then(|| s.to_owned())
            });
            entry(d, at, skips).map(Option::flatten)
        };
        let start_date = date("start_date")?;
        let end_date = date("end_date")?;
        Ok(Trip {
            title: title_in(doc, skips)?,
            start_date,
            end_date,
            members: read::members(doc, skips)?,
            itinerary: read::itinerary(doc, skips)?,
            tasks: read::tasks(doc, skips)?,
            broadcasts: read::broadcasts(doc, skips)?,
            chat: Chat::read_in(doc, skips)?,
        })
    }
}
