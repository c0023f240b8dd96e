//! Trips through the binding: reading one (members, itinerary, tasks) and editing its
//! itinerary and tasks, backed by weft-schema's trip API.

use weft_peer::automerge::Automerge;
use weft_peer::schema::{self, Id};

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
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let out = id.to_string();
            let item = schema::ItineraryItem {
                id,
                title: item.title,
                starts_at: item.starts_at,
                location: item.location,
                notes: item.notes,
            };
            let now = unix_ms();
            device
                .change(doc, move |am: &mut Automerge| {
                    schema::Trip::put_itinerary_item(am, &item, now)
                })
                .await?
                .map_err(|e| write_error(doc, TRIP, e))?;
            Ok(out)
        })
        .await
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
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let id = Id::from_bytes(rand::random());
            let task = schema::NewTask { title, assignee };
            let now = unix_ms();
            let added = device
                .change(doc, move |am: &mut Automerge| {
                    schema::Trip::add_task(am, id, &task, now)
                })
                .await?
                .map_err(|e| write_error(doc, TRIP, e))?;
            Ok(added.id.to_string())
        })
        .await
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
}

impl WeftDevice {
    /// Applies `write` to trip `doc` with the wall clock, durably.
    async fn trip_write(
        &self,
        doc: weft_peer::DocId,
        write: impl FnOnce(&mut Automerge, u64) -> Result<(), schema::WriteError> + Send + 'static,
    ) -> Result<(), WeftError> {
        let device = self.device.clone();
        on_runtime(async move {
            device.info(doc).await?;
            let now = unix_ms();
            device
                .change(doc, move |am: &mut Automerge| write(am, now))
                .await?
                .map_err(|e| write_error(doc, TRIP, e))
        })
        .await
    }
}
