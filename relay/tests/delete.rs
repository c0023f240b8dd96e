//! Hard delete in the hub over real redb: what a deletion removes from the relay's store, even
//! a write that was on its way to the store when the deletion committed, and that the store's
//! file holds none of it once reopened.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use common::hub::{decode_frames, test_secret, HubConn};
use common::{now, open_subscribed, RELAY};
use tokio::sync::{mpsc, oneshot};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ReadDoc, ROOT};
use weft_core::engine::{Engine, EngineConfig, Output};
use weft_core::store::docs as docstore;
use weft_core::store::{erase, BatchOp, GroupCommit, KvStore, RedbStore, StagingLimits};
use weft_core::wire::{ErrorCode, Message};
use weft_core::{DocId, Document, Role, StoreError, Table, WriteBatch};
use weft_relay::{Claims, Hub, HubConfig, HubEvent, Outbound, Verifier};

/// The relay's redb store, whose first write that deletes a document's chunks (a deletion
/// being committed) can be held until the test releases it; every batch written after that
/// one is recorded.
struct Gate {
    inner: Arc<RedbStore>,
    hold: Mutex<Option<(oneshot::Sender<()>, std_mpsc::Receiver<()>)>>,
    deleted: AtomicBool,
    after_delete: Mutex<Vec<BatchOp>>,
}

impl KvStore for Gate {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(table, key)
    }

    fn scan_prefix(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(table, prefix)
    }

    fn scan_keys(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.scan_keys(table, prefix)
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        let deletes_chunks = batch
            .ops()
            .iter()
            .any(|op| matches!(op, BatchOp::DeletePrefix { table, .. } if *table == Table::CHUNKS));
        if deletes_chunks {
            let hold = self.hold.lock().unwrap().take();
            if let Some((held, release)) = hold {
                let _ = held.send(());
                let _ = release.recv();
            }
        }
        if self.deleted.load(Ordering::SeqCst) {
            self.after_delete
                .lock()
                .unwrap()
                .extend(batch.ops().iter().cloned());
        }
        let result = self.inner.write(batch);
        if deletes_chunks {
            self.deleted.store(true, Ordering::SeqCst);
        }
        result
    }
}

/// One device on the in-process hub: an engine and what the relay told it.
struct Device {
    hub: HubConn,
    engine: Engine,
    errors: Vec<(ErrorCode, Option<DocId>)>,
    replies: Vec<(u64, Option<ErrorCode>)>,
}

crate::extends!(Device, hub: HubConn);

impl Device {
    async fn connect(events: &mpsc::Sender<HubEvent>, id: u64, claims: Claims) -> Device {
        let hub = HubConn::open(events, id, claims, 1024).await;
        let mut d = Device {
            hub,
            engine: Engine::new(EngineConfig::device()),
            errors: Vec::new(),
            replies: Vec::new(),
        };
        d.engine.add_conn(RELAY);
        d
    }

    async fn next(&mut self) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        match tokio::time::timeout(Duration::from_secs(20), self.inbox.recv())
            .await
            .expect("relay went silent")
        {
            Some(
                out @ (Outbound::Frame(_)
                | Outbound::Ephemeral(_)
                | Outbound::EphemeralBatch { .. }
                | Outbound::Chunks(_)),
            ) => {
                self.pending
                    .extend(decode_frames(&out.bytes().unwrap_or_default()));
                self.pending.pop_front()
            }
            Some(Outbound::Close { .. }) | None => None,
        }
    }

    fn put(&mut self, doc: DocId, key: &str) {
        self.engine
            .change(doc, |am| {
                let mut tx = am.transaction();
                tx.put(ROOT, key, true).unwrap();
                tx.commit();
            })
            .unwrap();
    }

    async fn flush(&mut self) {
        loop {
            let mut sent = false;
            while let Some(o) = self.engine.poll_output() {
                match o {
                    Output::Send { msg, .. } => {
                        self.hub.send(msg).await;
                        sent = true;
                    }
                    Output::Persist { id, .. } => self.engine.persisted(id),
                    Output::Load { doc } => self.engine.loaded(doc, None),
                    _ => {}
                }
            }
            if !sent {
                return;
            }
        }
    }

    async fn until(&mut self, mut done: impl FnMut(&mut Device) -> bool) {
        self.flush().await;
        while !done(self) {
            let Some(msg) = self.next().await else {
                panic!("the relay closed the connection");
            };
            match msg {
                Message::Subscribed { doc, role } => open_subscribed(&mut self.engine, doc, role),
                Message::Error { code, doc, .. } => self.errors.push((code, doc)),
                Message::Reply { id, code, .. } => self.replies.push((id, code)),
                m @ (Message::Sync { .. } | Message::Changes { .. } | Message::Ack { .. }) => {
                    // A document erased here may still have frames in flight.
                    let _ = self.engine.handle(RELAY, m);
                }
                _ => {}
            }
            self.flush().await;
        }
    }

    /// Creates `doc` with `key` and uploads it.
    async fn create(&mut self, doc: DocId, key: &str) {
        self.engine.create(doc, Document::new());
        self.put(doc, key);
        self.hub.send(Message::Subscribe { doc }).await;
        self.until(|d| d.engine.is_synced(RELAY, doc)).await;
    }

    fn keys(&mut self, doc: DocId) -> Vec<String> {
        self.engine
            .read(doc, |d| d.automerge().keys(ROOT).collect())
            .unwrap_or_default()
    }
}

fn file_holds(path: &std::path::Path, text: &str) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.windows(text.len()).any(|w| w == text.as_bytes())
}

/// A hub over a redb store at `path` behind a [`Gate`]: the store, the gate, the hub's
/// events and its task.
fn gated_hub(
    path: &std::path::Path,
) -> (
    Arc<RedbStore>,
    Arc<Gate>,
    mpsc::Sender<HubEvent>,
    tokio::task::JoinHandle<()>,
) {
    let store = Arc::new(
        RedbStore::open_with_tables(path, &weft_relay::TABLES, Default::default()).unwrap(),
    );
    let gate = Arc::new(Gate {
        inner: store.clone(),
        hold: Mutex::new(None),
        deleted: AtomicBool::new(false),
        after_delete: Mutex::new(Vec::new()),
    });
    let group = Arc::new(GroupCommit::new(gate.clone() as Arc<dyn KvStore>).unwrap());
    let hub = Hub::new(
        HubConfig::default(),
        group,
        Verifier::new(&test_secret()),
        Default::default(),
    );
    let (events, rx) = mpsc::channel(1024);
    (store, gate, events, tokio::spawn(hub.run(rx)))
}

/// The race happened (a write of `doc` landed after its deletion), and nothing of `doc` is
/// left in `store` but its tombstone.
fn assert_late_write_left_only_a_tombstone(gate: &Gate, store: &RedbStore, doc: DocId) {
    // The race happened: the in-flight change was written after the deletion.
    let late_chunk = gate.after_delete.lock().unwrap().iter().any(|op| {
        matches!(op, BatchOp::Put { table, key, .. }
            if *table == Table::CHUNKS && key.starts_with(doc.as_bytes()))
    });
    assert!(
        late_chunk,
        "no write of the document landed after its deletion"
    );
    // And nothing of the document is left but its tombstone.
    for table in [Table::CHUNKS, Table::SYNC_STATES] {
        assert_eq!(
            store.scan_keys(table, doc.as_bytes()).unwrap(),
            Vec::<Vec<u8>>::new(),
            "{table} still holds the deleted document"
        );
    }
    let meta: weft_relay::RelayDocMeta = docstore::load_meta(store, doc).unwrap().unwrap();
    assert!(meta.deleted_at_ms.is_some());
    assert_eq!(meta.owner.as_deref(), Some("alice"));
    assert!(erase::leftovers(store).unwrap().0.is_empty());
}

/// Alice deletes a conversation while a change of hers to it is still on its way to the
/// store (its write queued behind the deletion's), and while Bob is subscribed (closing his
/// subscription would persist his sync state). Once the deletion is durable, nothing of the
/// document is left in the store but its tombstone, her other document is intact, and after
/// a reopen the file's bytes hold none of the deleted text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_when_a_deletion_commits_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.redb");
    let (store, gate, events, hub) = gated_hub(&path);

    let (doc, other, stranger) = (
        DocId::from_bytes([1; 16]),
        DocId::from_bytes([2; 16]),
        DocId::from_bytes([3; 16]),
    );
    let mut alice = Device::connect(
        &events,
        1,
        Claims::new("alice", now(), 3600).with_create(true),
    )
    .await;
    alice.create(doc, "secret-before-delete").await;
    alice.create(other, "other-doc-survives").await;
    let mut bob = Device::connect(
        &events,
        2,
        Claims::new("bob", now(), 3600).with_doc(doc, Role::ReadWrite),
    )
    .await;
    bob.engine.load(doc);
    bob.flush().await;
    bob.hub.send(Message::Subscribe { doc }).await;
    bob.until(|b| b.keys(doc).contains(&"secret-before-delete".to_string()))
        .await;

    // The deletion's write is held at the store.
    let (held_tx, held) = oneshot::channel();
    let (release, release_rx) = std_mpsc::channel();
    *gate.hold.lock().unwrap() = Some((held_tx, release_rx));
    alice.hub.send(Message::Delete { id: 7, doc }).await;
    tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .expect("the deletion never reached the store")
        .unwrap();

    // Meanwhile Alice's next change arrives: the relay accepts it and submits its write,
    // which queues behind the deletion's. The refusal of a frame for a document she never
    // opened comes back after the hub has submitted everything her earlier frames caused.
    alice.put(doc, "written-while-deleting");
    alice.flush().await;
    alice
        .hub
        .send(Message::Ack {
            doc: stranger,
            heads: Vec::new(),
        })
        .await;
    alice
        .until(|a| a.errors.contains(&(ErrorCode::FORBIDDEN, Some(stranger))))
        .await;
    release.send(()).unwrap();

    alice.until(|a| a.replies.contains(&(7, None))).await;
    bob.until(|b| b.errors.contains(&(ErrorCode::DELETED, Some(doc))))
        .await;

    // Everything the hub wrote completes before it returns.
    for d in [&alice, &bob] {
        d.hub
            .events
            .send(HubEvent::Closed { conn: d.hub.conn })
            .await
            .unwrap();
    }
    drop((alice, bob, events));
    tokio::time::timeout(Duration::from_secs(30), hub)
        .await
        .expect("the hub never stopped")
        .unwrap();

    assert_late_write_left_only_a_tombstone(&gate, &store, doc);

    // The file still holds the deleted text until the store is opened again.
    drop(gate);
    drop(store);
    assert!(
        file_holds(&path, "secret-before-delete"),
        "the deleted text is not in the file before the rewrite: this test shows nothing"
    );
    let store = erase::open_redb(&path, &weft_relay::TABLES, StagingLimits::default()).unwrap();
    for text in ["secret-before-delete", "written-while-deleting"] {
        assert!(!file_holds(&path, text), "{text:?} is still in relay.redb");
    }
    let kept = weft_core::host::load(&store, other).unwrap().unwrap();
    let keys: Vec<String> = kept.doc.automerge().keys(ROOT).collect();
    assert_eq!(keys, vec!["other-doc-survives".to_string()]);
    assert!(weft_core::host::load(&store, doc).unwrap().is_none());
}
