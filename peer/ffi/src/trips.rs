//! Trips through the binding: reading one (members, itinerary, tasks) and editing its
//! members, itinerary and tasks, backed by weft-schema's trip API.
//!
//! Every write is checked against the trip's write rules (the built-in `trip` kind, as the
//! relay judges it) before it is made: a write the relay would refuse is
//! [`WeftError::Forbidden`] here, and changes nothing, rather than a
//! [`crate::DocumentNotice::ChangesRejected`] later.

use std::sync::OnceLock;

use weft_peer::automerge::Automerge;
use weft_peer::schema::rules::record::{self, RecordError};
use weft_peer::schema::rules::Kinds;
use weft_peer::schema::{self, Id, WriteError};
use weft_peer::DocId;

use crate::device::{parse_doc, read_error, unix_ms, write_error, WeftDevice};
use crate::runtime::on_runtime;
use crate::WeftError;

const TRIP: &str = "trip";

/// A trip as it reads now. Entries another writer malformed are left out.
#[derive(Clone, Debug, PartialEq, uniffi::Record)]
pub struct Trip {
    /// Its title.
    pub title: String,
    /// First day, `YYYY-MM-DD`.
    pub start_date: Option<String>,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: Option<String>,
    /// Its members and their roles, sorted by user.
    pub members: Vec<TripMember>,
    /// The itinerary, in the order the schema reads it.
    pub itinerary: Vec<ItineraryItem>,
    /// The tasks, oldest first.
    pub tasks: Vec<TripTask>,
}

/// A member of a trip.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TripMember {
    /// The user.
    pub user: String,
    /// Their role in the trip (as the trip records it, e.g. `organizer`).
    pub role: String,
}

/// One entry of a trip's itinerary.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct ItineraryItem {
    /// Its id; empty when adding one (a new id is made).
    pub id: String,
    /// What.
    pub title: String,
    /// When: `YYYY-MM-DD[THH:MM[:SS]]`.
    pub starts_at: String,
    /// Where.
    pub location: Option<String>,
    /// Notes.
    pub notes: Option<String>,
}

/// One of a trip's tasks.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct TripTask {
    /// Its id.
    pub id: String,
    /// What to do.
    pub title: String,
    /// Who does it.
    pub assignee: Option<String>,
    /// Whether it is done.
    pub done: bool,
}

fn parse_id(field: &str, id: &str) -> Result<Id, WeftError> {
    id.parse()
        .map_err(|_| WeftError::invalid(field, format!("{id:?} is not an id")))
}

#[uniffi::export(async_runtime = "tokio")]
impl WeftDevice {
    /// A trip's title, dates, members, itinerary and tasks.
    pub async fn read_trip(&self, doc: String) -> Result<Trip, WeftError> {
        let doc = parse_doc(&doc)?;
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let t = device
                .read(doc, schema::Trip::read)
                .await?
                .map_err(|e| read_error(doc, TRIP, e))?
                .value;
            Ok(Trip {
                title: t.title,
                start_date: t.start_date,
                end_date: t.end_date,
                members: t
                    .members
                    .into_iter()
                    .map(|(user, role)| TripMember { user, role })
                    .collect(),
                itinerary: t
                    .itinerary
                    .into_iter()
                    .map(|i| ItineraryItem {
                        id: i.id.to_string(),
                        title: i.title,
                        starts_at: i.starts_at,
                        location: i.location,
                        notes: i.notes,
                    })
                    .collect(),
                tasks: t
                    .tasks
                    .into_iter()
                    .map(|t| TripTask {
                        id: t.id.to_string(),
                        title: t.title,
                        assignee: t.assignee,
                        done: t.done,
                    })
                    .collect(),
            })
        })
        .await
    }

    /// Adds an itinerary item (`item.id` empty) or updates the one with its id; returns the
    /// item's id.
    pub async fn put_itinerary_item(
        &self,
        doc: String,
        item: ItineraryItem,
    ) -> Result<String, WeftError> {
        let doc = parse_doc(&doc)?;
        let id = if item.id.is_empty() {
            Id::from_bytes(rand::random())
        } else {
            parse_id("item.id", &item.id)?
        };
        let out = id.to_string();
        let item = schema::ItineraryItem {
            id,
            title: item.title,
            starts_at: item.starts_at,
            location: item.location,
            notes: item.notes,
        };
        self.trip_write(doc, move |am, now| {
            schema::Trip::put_itinerary_item(am, &item, now)
        })
        .await?;
        Ok(out)
    }

    /// Removes an itinerary item.
    pub async fn remove_itinerary_item(
        &self,
        doc: String,
        item_id: String,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_id("item_id", &item_id)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::remove_itinerary_item(am, &id, now)
        })
        .await
    }

    /// Adds a task, not done, assigned to `assignee` or nobody; returns its id.
    pub async fn add_task(
        &self,
        doc: String,
        title: String,
        assignee: Option<String>,
    ) -> Result<String, WeftError> {
        let doc = parse_doc(&doc)?;
        let id = Id::from_bytes(rand::random());
        let task = schema::NewTask { title, assignee };
        let added = self
            .trip_write(doc, move |am, now| {
                schema::Trip::add_task(am, id.clone(), &task, now)
            })
            .await?;
        Ok(added.id.to_string())
    }

    /// Marks a task done or not done.
    pub async fn set_task_done(
        &self,
        doc: String,
        task_id: String,
        done: bool,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_id("task_id", &task_id)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::set_task_done(am, &id, done, now)
        })
        .await
    }

    /// Assigns a task to `assignee`, or to nobody.
    pub async fn assign_task(
        &self,
        doc: String,
        task_id: String,
        assignee: Option<String>,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_id("task_id", &task_id)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::assign_task(am, &id, assignee.as_deref(), now)
        })
        .await
    }

    /// Renames a task.
    pub async fn rename_task(
        &self,
        doc: String,
        task_id: String,
        title: String,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_id("task_id", &task_id)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::rename_task(am, &id, &title, now)
        })
        .await
    }

    /// Removes a task.
    pub async fn remove_task(&self, doc: String, task_id: String) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        let id = parse_id("task_id", &task_id)?;
        self.trip_write(doc, move |am, now| schema::Trip::remove_task(am, &id, now))
            .await
    }

    /// Adds `user` to the trip's members with `role` (e.g. `organizer`), or changes their
    /// role. Only the trip's owner (or an admin) may: anyone else gets
    /// [`WeftError::Forbidden`]. Membership here is what the trip records; who may read or
    /// write the document is [`WeftDevice::share`]'s.
    pub async fn set_trip_member(
        &self,
        doc: String,
        user: String,
        role: String,
    ) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::set_member(am, &user, &role, now)
        })
        .await
    }

    /// Takes `user` off the trip's members (absent: no change); owner (or admin) only, as
    /// [`WeftDevice::set_trip_member`].
    pub async fn remove_trip_member(&self, doc: String, user: String) -> Result<(), WeftError> {
        let doc = parse_doc(&doc)?;
        self.trip_write(doc, move |am, now| {
            schema::Trip::remove_member(am, &user, now)
        })
        .await
    }
}

impl WeftDevice {
    /// Applies `write` to trip `doc` with the wall clock, durably, once the trip's write rules
    /// allow it for this device's user (else nothing changes).
    async fn trip_write<T: Send + 'static>(
        &self,
        doc: DocId,
        write: impl Fn(&mut Automerge, u64) -> Result<T, WriteError> + Send + 'static,
    ) -> Result<T, WeftError> {
        let device = self.device.clone();
        let user = self.user.clone();
        on_runtime(async move {
            let owner = device.info(doc).await?.owner;
            let now = unix_ms();
            device
                .change(doc, move |am: &mut Automerge| -> Result<T, WeftError> {
                    check_rules(doc, am, owner.as_deref(), &user, |fork| write(fork, now))?;
                    write(am, now).map_err(|e| write_error(doc, TRIP, e))
                })
                .await?
        })
        .await
    }
}

/// The kinds trips are judged by: the built-in ones (a relay cannot redeclare `trip`).
fn builtin_kinds() -> &'static Kinds {
    static KINDS: OnceLock<Kinds> = OnceLock::new();
    KINDS.get_or_init(Kinds::builtin)
}

/// Whether the write rules let `user` make what `write` makes of `am` (`owner`: the trip's
/// owner, when known), judged on a copy: [`WeftError::Forbidden`] naming the rule when not,
/// and the write's own error when it fails by itself.
pub(crate) fn check_rules<T>(
    doc: DocId,
    am: &Automerge,
    owner: Option<&str>,
    user: &str,
    write: impl FnOnce(&mut Automerge) -> Result<T, WriteError>,
) -> Result<(), WeftError> {
    let mut failed = None;
    let judged = record::check_write(builtin_kinds(), am, owner, user, |fork| {
        write(fork).map(drop).map_err(|e| {
            failed = Some(e);
            // Stands for the write's own error, returned below.
            RecordError::NotARecord
        })
    });
    match failed {
        Some(e) => Err(write_error(doc, TRIP, e)),
        None => judged.map_err(WeftError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trip alice created, as every device holds it.
    fn alices_trip() -> Automerge {
        let mut am = Automerge::new();
        let new = schema::NewTrip {
            title: "Lisbon".into(),
            start_date: None,
            end_date: None,
        };
        schema::Trip::create(&mut am, &new, 1).expect("a trip");
        am
    }

    fn doc() -> DocId {
        DocId::random(&mut rand::rng())
    }

    #[test]
    fn a_member_edits_tasks_but_only_the_owner_changes_members() {
        let am = alices_trip();
        let heads = am.get_heads();
        let task = |am: &mut Automerge| {
            let new = schema::NewTask {
                title: "Book the hotel".into(),
                assignee: Some("alice".into()),
            };
            schema::Trip::add_task(am, Id::from_bytes([1; 16]), &new, 2)
        };
        let member = |am: &mut Automerge| schema::Trip::set_member(am, "carol", "guest", 2);
        assert!(check_rules(doc(), &am, Some("alice"), "bob", task).is_ok());
        assert!(check_rules(doc(), &am, Some("alice"), "alice", member).is_ok());
        match check_rules(doc(), &am, Some("alice"), "bob", member) {
            Err(WeftError::Forbidden { reason }) => assert!(reason.contains("owner"), "{reason}"),
            other => panic!("bob adding a member: {other:?}"),
        }
        // Judged on a copy: the trip is as it was.
        assert_eq!(am.get_heads(), heads);
    }

    #[test]
    fn a_write_that_fails_by_itself_is_its_own_error() {
        let am = alices_trip();
        let done =
            |am: &mut Automerge| schema::Trip::set_task_done(am, &Id::from_bytes([9; 16]), true, 2);
        assert!(matches!(
            check_rules(doc(), &am, Some("alice"), "bob", done),
            Err(WeftError::InvalidDocument { .. })
        ));
    }
}
