//! The hub's loop: events from connection tasks, durable engine writes, finished background
//! tasks and timers. Each pass ends with the engine's output pumped (sent, awaited, loaded)
//! and every connection's batch flushed; once `events` closes, writes in flight are drained.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use weft_core::engine::Inbound;
use weft_core::host::{Action, Waiting};
use weft_core::store::StoreError;
use weft_core::wire::Message;

use super::{cluster::Durable, quota, Done, Hub, HubEvent};
use crate::metrics::Metrics;

/// How stale the hub's idea of the engine's next timer may get (see [`Hub::run`]).
const WAKE_RECHECK: Duration = Duration::from_millis(100);

/// Events the hub handles in one pass of its loop when they are already queued (see
/// [`Hub::on_events`]). Bounds the delay a burst adds to the first event's output: a pass of this
/// many frames takes well under a millisecond.
const EVENTS_PER_PASS: usize = 32;

/// What ended the hub's wait.
enum Woke {
    Event(HubEvent),
    Committed(Vec<(Waiting, Result<(), StoreError>)>),
    Task(Result<Done, tokio::task::JoinError>),
    Timer,
    Housekeeping,
}

impl Hub {
    /// Runs until `events` closes (every connection task and the acceptor are gone), then
    /// waits for every write in flight. Cancel safety: dropping the future loses no acknowledged
    /// write (acks are sent only after commits), but in-flight commits are not awaited.
    pub async fn run(mut self, mut events: mpsc::Receiver<HubEvent>) {
        self.index_upgrade().await;
        self.count_usage().await;
        let mut resync_timer = tokio::time::interval(Duration::from_millis(500));
        resync_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The engine keeps its timers indexed, but bringing the index up to date costs
        // O(peers) per document touched since the last time, and every ack touches one: asked
        // after every event, that was a few O(peers) scans per delivery. It is asked at most
        // once per WAKE_RECHECK; events in between may move a timer earlier, so the loop looks
        // again WAKE_RECHECK after them (the engine's timers are a second or more).
        let mut wake: Option<Instant> = None;
        let mut checked_at: Option<Instant> = None;
        let mut moved = false;
        self.pump_actions();
        self.flush();
        loop {
            let now = Instant::now();
            if checked_at.is_none_or(|t| now >= t + WAKE_RECHECK) {
                wake = self.host.next_wakeup().map(|ms| self.clock.instant(ms));
                checked_at = Some(now);
                moved = false;
            }
            let recheck = checked_at.map(|t| t + WAKE_RECHECK).filter(|_| moved);
            let deadline = [wake, recheck, self.presence.due()]
                .into_iter()
                .flatten()
                .min();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let woke = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => Woke::Event(ev),
                    None => break,
                },
                done = std::future::poll_fn(|cx| Self::poll_commits(&mut self.commits, cx)), if !self.commits.is_empty() => Woke::Committed(done),
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => Woke::Task(done),
                _ = sleep => Woke::Timer,
                _ = resync_timer.tick() => Woke::Housekeeping,
            };
            // One pass: what woke the hub, then everything it produced sent and written.
            let started = Instant::now();
            match woke {
                Woke::Event(ev) => self.on_events(ev, &mut events),
                Woke::Committed(done) => {
                    for (what, result) in done {
                        self.host.committed(self.now_ms(), what, result);
                    }
                }
                Woke::Task(Ok(done)) => self.on_done(done),
                Woke::Task(Err(e)) => tracing::error!(error = %e, "hub task failed"),
                Woke::Timer => {
                    if self.presence.due().is_some_and(|d| Instant::now() >= d) {
                        self.flush_presence();
                    }
                    if wake.is_some_and(|w| Instant::now() >= w) {
                        let now = self.now_ms();
                        self.host.tick(now);
                    }
                    checked_at = None;
                }
                Woke::Housekeeping => self.housekeeping(),
            }
            self.pump_actions();
            self.flush();
            self.metrics.observe_hub_turn(started.elapsed());
            moved = true;
        }
        self.drain().await;
    }

    /// Counts what the quotas count in the store (a scan of its metadata, on a blocking
    /// thread, before the hub serves anything).
    async fn count_usage(&mut self) {
        let store = self.host.store().clone();
        match tokio::task::spawn_blocking(move || quota::Usage::scan(store.as_ref())).await {
            Ok(usage) => self.usage = usage,
            Err(e) => tracing::error!(error = %e, "counting the store's usage failed"),
        }
    }

    /// Handles `first`, then the events already queued behind it (at most [`EVENTS_PER_PASS`]
    /// in all). Under load the pass's fixed costs (the `select!`, the clock, pumping and
    /// flushing) are paid per burst instead of per frame, and each connection's frames of the
    /// burst go out as one batch.
    fn on_events(&mut self, first: HubEvent, events: &mut mpsc::Receiver<HubEvent>) {
        self.on_event(first);
        for _ in 1..EVENTS_PER_PASS {
            let Ok(ev) = events.try_recv() else { break };
            if matches!(ev, HubEvent::Closed { .. }) {
                // Output already produced reaches the connection's queue before it is
                // forgotten, as it did one event per pass.
                self.pump_actions();
                self.flush();
            }
            self.on_event(ev);
        }
    }

    /// Once `events` closed: every write in flight completes before the hub returns.
    async fn drain(&mut self) {
        tracing::info!(
            writes = self.commits.len(),
            tasks = self.tasks.len(),
            "every connection is gone; finishing the writes in flight"
        );
        loop {
            if let Some((what, ticket)) = self.commits.pop_front() {
                let result = ticket.await;
                self.host.committed(self.now_ms(), what, result);
            } else if let Some(done) = self.tasks.join_next().await {
                if let Ok(done) = done {
                    self.on_done(done);
                }
            } else {
                break;
            }
            self.pump_actions();
            self.flush();
        }
        self.record_sizes();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                self.on_done(done);
            }
        }
        self.flush();
    }

    /// Waits for the oldest engine write in flight, then takes every later one that is also
    /// durable. The group-commit writer completes tickets in submission order, so polling the
    /// front is enough: one wake-up serves a whole group commit, where a task per ticket cost
    /// a spawn and a wake-up per change.
    fn poll_commits(
        commits: &mut VecDeque<(Waiting, Durable)>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Vec<(Waiting, Result<(), StoreError>)>> {
        let mut done = Vec::new();
        while let Some((_, ticket)) = commits.front_mut() {
            match std::future::Future::poll(std::pin::Pin::new(ticket), cx) {
                std::task::Poll::Ready(result) => {
                    let (what, _) = commits.pop_front().expect("front exists");
                    done.push((what, result));
                }
                std::task::Poll::Pending => break,
            }
        }
        if done.is_empty() {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(done)
        }
    }

    fn on_event(&mut self, ev: HubEvent) {
        match ev {
            HubEvent::Open {
                conn,
                device,
                claims,
                protocol,
                out,
            } => self.open_conn(conn, device, claims, protocol, out),
            HubEvent::Frame { conn, msg } => {
                if let Some(doc) = msg.doc() {
                    Metrics::inc(&self.metrics.messages_in);
                    if matches!(msg, Message::Changes { .. }) {
                        self.arrivals.insert(doc, Instant::now());
                    }
                }
                self.on_frame(conn, msg)
            }
            HubEvent::Inbound { conn, inbound } => {
                Metrics::inc(&self.metrics.messages_in);
                if matches!(inbound, Inbound::Changes { .. }) {
                    self.arrivals.insert(inbound.doc(), Instant::now());
                }
                self.on_inbound(conn, inbound)
            }
            // WebSocket hook (begin)
            HubEvent::SyncOnly { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.sync_only = true;
                    self.host.set_sync_only(self.now_ms(), conn);
                }
            }
            HubEvent::SubscribeExisting { conn, doc } => {
                if self.conns.get(&conn).is_some_and(|c| !c.closing) {
                    Metrics::inc(&self.metrics.messages_in);
                    self.subscribe(conn, doc, false);
                }
            }
            // WebSocket hook (end)
            HubEvent::Closed { conn } => self.on_closed(conn),
            HubEvent::Cluster(imported) => self.on_imported(imported),
        }
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Nothing => {}
            Done::Loaded(doc, result) => self.loaded(doc, *result),
            Done::Saved(saved) => self.saved(saved.map(|s| *s)),
            Done::Subscribe {
                conn,
                doc,
                created,
                result,
            } => self.subscription_recorded(conn, doc, created, result),
            Done::Control {
                doc,
                request,
                change,
                result,
            } => {
                if result.is_ok() {
                    self.mark_dirty(doc); // Postgres checkpoints: access or deletion changed
                }
                self.control_committed(doc, request, *change, result)
            }
            Done::Erased { doc, result } => {
                if let Err(e) = result {
                    tracing::error!(%doc, error = %e, "erasing a deleted document's content failed; it is erased at the next start");
                }
            }
        }
    }

    /// Carries out what the engine asked for: messages delivered, writes awaited, loads
    /// queued, and its reports about documents.
    ///
    /// A sync message to a WebSocket client goes on its queue at once rather than with the
    /// pass's batch: the engine generates the sync messages of a document's readers one per
    /// poll (`Engine::poll_output`), so the first reader's leaves while the next one's is made.
    /// Other connections' frames wait for the pass's end and go out as one batch each.
    fn pump_actions(&mut self) {
        let mut last = None;
        while let Some(action) = self.host.poll_action() {
            match action {
                Action::Send {
                    conn,
                    msg: msg @ Message::Sync { .. },
                } if self.conns.get(&conn).is_some_and(|c| c.sync_only) => {
                    self.deliver(conn, msg, &mut last);
                    self.flush_conn(conn);
                }
                Action::Send { conn, msg } => self.deliver(conn, msg, &mut last),
                Action::Wait { what, ticket } => {
                    self.commits.push_back((what, Durable::store(ticket)))
                }
                Action::LogThenWrite { what, batch, log } => {
                    let durable = self.durable_changes(batch, log);
                    self.commits.push_back((what, durable));
                }
                Action::Load { doc } => self.queue_load(doc),
                Action::Save(job) => self.queue_save(job),
                Action::Event(output) => self.on_output(output),
                _ => {}
            }
        }
    }

    /// Gives back what documents and connections that left held in the hub's maps, the
    /// engine's and the gate's: each keeps the capacity of its fullest moment otherwise, a
    /// slot per document that was ever loaded at once.
    fn shrink(&mut self) {
        use weft_core::hash::{shrink_if_sparse, shrink_set_if_sparse};
        self.host.shrink();
        shrink_if_sparse(&mut self.conns);
        shrink_if_sparse(&mut self.subscribers);
        shrink_if_sparse(&mut self.metas);
        shrink_if_sparse(&mut self.users);
        shrink_if_sparse(&mut self.controls);
        shrink_if_sparse(&mut self.arrivals);
        shrink_set_if_sparse(&mut self.loading);
        shrink_set_if_sparse(&mut self.erased);
        self.usage.shrink();
        crate::allocator::release_freed_memory();
        self.peak_since_trim = self.host.loaded_docs();
        self.metrics
            .memory_trims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every half second: metrics, the memory budget, document sizes, expired tokens, lagging
    /// peers whose queues drained, discovery that waited for room, and the presence of a
    /// cluster's silent relays.
    fn housekeeping(&mut self) {
        self.arrivals
            .retain(|_, t| t.elapsed() < Duration::from_secs(10));
        let loaded = self.host.loaded_docs() as u64;
        self.metrics
            .documents_loaded
            .store(loaded, std::sync::atomic::Ordering::Relaxed);
        self.peak_since_trim = self.peak_since_trim.max(loaded as usize);
        self.enforce_memory_budget();
        self.passes_since_sizes += 1;
        if self.passes_since_sizes >= 20 {
            self.passes_since_sizes = 0;
            self.record_sizes();
            self.shrink();
        } else if self.peak_since_trim >= 64 && (loaded as usize) <= self.peak_since_trim / 2 {
            // Half the documents left since the last trim (an eviction sweep, a crowd gone):
            // give their memory back now rather than at the next ten-second pass.
            self.shrink();
        }
        self.metrics.chunks_quarantined.store(
            self.host.quarantined(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.close_expired();
        self.resync_drained();
        self.retry_discovery();
        self.forget_silent_relays();
        self.expire_orphans();
    }
}
