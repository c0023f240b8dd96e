//! Two to five devices make random concurrent changes to a conversation or a trip, syncing now
//! and then; once every device has every change they all show the same typed document and the
//! same `msg list --json` bytes.

mod common;

use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use weft_schema::automerge::Automerge;
use weft_schema::*;

#[derive(Clone, Debug)]
enum Op {
    Send(String),
    Edit(usize, String),
    Delete(usize),
    React(usize, usize, usize),
    Unreact(usize, usize, usize),
    MarkRead(usize, usize),
    AddTask,
    SetDone(usize, bool),
    RenameTask(usize, String),
    SetTitle(String),
    AddParticipant(usize),
    RemoveParticipant(usize),
    /// The device receives everything another device has.
    SyncFrom(usize),
    /// Its wall clock jumps (forwards or backwards).
    Clock(i64),
}

const USERS: &[&str] = &["alice", "bob", "carol"];
const EMOJI: &[&str] = &["👍", "❤️", "😂"];

fn op() -> impl Strategy<Value = Op> {
    let text = "[a-z ]{0,12}";
    prop_oneof![
        4 => text.prop_map(Op::Send),
        2 => (any::<usize>(), text).prop_map(|(i, s)| Op::Edit(i, s)),
        1 => any::<usize>().prop_map(Op::Delete),
        2 => (any::<usize>(), 0..EMOJI.len(), 0..USERS.len()).prop_map(|(m, e, u)| Op::React(m, e, u)),
        1 => (any::<usize>(), 0..EMOJI.len(), 0..USERS.len()).prop_map(|(m, e, u)| Op::Unreact(m, e, u)),
        1 => (0..USERS.len(), any::<usize>()).prop_map(|(u, m)| Op::MarkRead(u, m)),
        1 => Just(Op::AddTask),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(t, d)| Op::SetDone(t, d)),
        1 => (any::<usize>(), "[a-z]{1,6}").prop_map(|(t, s)| Op::RenameTask(t, s)),
        1 => text.prop_map(Op::SetTitle),
        1 => (0..USERS.len()).prop_map(Op::AddParticipant),
        1 => (0..USERS.len()).prop_map(Op::RemoveParticipant),
        2 => any::<usize>().prop_map(Op::SyncFrom),
        1 => (-600_000i64..600_000).prop_map(Op::Clock),
    ]
}

struct Device {
    doc: Automerge,
    wall: u64,
    next_id: u32,
    n: u32,
}

impl Device {
    fn fresh_id(&mut self) -> Id {
        self.next_id += 1;
        id(self.n * 100_000 + self.next_id)
    }
}

/// Applies `op` on device `d`; returns the id of a message it sent.
fn apply(devices: &mut [Device], d: usize, op: &Op) -> Option<Id> {
    let n = devices.len();
    if let Op::SyncFrom(other) = op {
        let other = other % n;
        if other != d {
            let mut src = devices[other].doc.clone();
            devices[d].doc.merge(&mut src).unwrap();
        }
        return None;
    }
    let dev = &mut devices[d];
    dev.wall += 7;
    let wall = dev.wall;
    let msgs = complete(messages(&dev.doc));
    let is_trip = kind(&dev.doc).unwrap() == Kind::Trip;
    let tasks = if is_trip {
        complete(Trip::read(&dev.doc)).tasks
    } else {
        Vec::new()
    };
    let pick_msg = |i: &usize| (!msgs.is_empty()).then(|| &msgs[i % msgs.len()]);
    match op {
        Op::Send(body) => {
            let id = dev.fresh_id();
            send_message(
                &mut dev.doc,
                &NewMessage::text(USERS[d % USERS.len()], body.as_str()),
                id.clone(),
                wall,
            )
            .unwrap();
            return Some(id);
        }
        Op::Edit(i, body) => {
            if let Some(m) = pick_msg(i) {
                match edit_message(&mut dev.doc, &m.id, body, wall) {
                    Ok(()) => {}
                    Err(WriteError::Deleted { .. }) => assert!(m.deleted),
                    Err(e) => panic!("edit failed: {e}"),
                }
            }
        }
        Op::Delete(i) => {
            if let Some(m) = pick_msg(i) {
                delete_message(&mut dev.doc, &m.id, wall).unwrap();
            }
        }
        Op::React(i, e, u) => {
            if let Some(m) = pick_msg(i) {
                react(&mut dev.doc, &m.id, EMOJI[*e], USERS[*u], wall).unwrap();
            }
        }
        Op::Unreact(i, e, u) => {
            if let Some(m) = pick_msg(i) {
                unreact(&mut dev.doc, &m.id, EMOJI[*e], USERS[*u], wall).unwrap();
            }
        }
        Op::MarkRead(u, i) => {
            if let Some(m) = pick_msg(i) {
                mark_read(&mut dev.doc, USERS[*u], &m.key(), wall).unwrap();
            }
        }
        Op::AddTask if !is_trip => {}
        Op::AddTask | Op::SetDone(..) | Op::RenameTask(..) => apply_task_op(dev, op, &tasks, wall),
        Op::SetTitle(t) => set_title(&mut dev.doc, t, wall).unwrap(),
        Op::AddParticipant(u) | Op::RemoveParticipant(u) if is_trip => {
            Trip::set_member(&mut dev.doc, USERS[*u], "member", wall).unwrap();
        }
        Op::AddParticipant(u) => {
            Conversation::add_participant(&mut dev.doc, USERS[*u], wall).unwrap()
        }
        Op::RemoveParticipant(u) => {
            Conversation::remove_participant(&mut dev.doc, USERS[*u], wall).unwrap()
        }
        Op::Clock(delta) => dev.wall = dev.wall.saturating_add_signed(*delta),
        Op::SyncFrom(_) => unreachable!("handled above"),
    }
    None
}

/// A task op on device `dev`'s trip, whose tasks are `tasks`.
fn apply_task_op(dev: &mut Device, op: &Op, tasks: &[Task], wall: u64) {
    let pick_task = |i: &usize| (!tasks.is_empty()).then(|| &tasks[i % tasks.len()]);
    match op {
        Op::AddTask => {
            let id = dev.fresh_id();
            Trip::add_task(
                &mut dev.doc,
                id,
                &NewTask {
                    title: "task".into(),
                    assignee: None,
                },
                wall,
            )
            .unwrap();
        }
        Op::SetDone(t, done) => {
            if let Some(t) = pick_task(t) {
                Trip::set_task_done(&mut dev.doc, &t.id, *done, wall).unwrap();
            }
        }
        Op::RenameTask(t, title) => {
            if let Some(t) = pick_task(t) {
                Trip::rename_task(&mut dev.doc, &t.id, title, wall).unwrap();
            }
        }
        _ => unreachable!("not a task op"),
    }
}

fn scenario() -> impl Strategy<Value = (bool, Vec<i64>, Vec<(usize, Op)>)> {
    (2usize..=5).prop_flat_map(|n| {
        (
            any::<bool>(),
            proptest::collection::vec(-3_600_000i64..3_600_000, n),
            proptest::collection::vec((0..n, op()), 0..40),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn replicas_converge_to_identical_typed_values((is_trip, skews, ops) in scenario()) {
        let base = if is_trip { trip("Lisbon") } else { conversation("Lunch") };
        let mut devices: Vec<Device> = skews
            .iter()
            .enumerate()
            .map(|(i, skew)| Device {
                doc: fork(&base, i as u8 + 1),
                wall: T0.saturating_add_signed(*skew),
                next_id: 0,
                n: i as u32,
            })
            .collect();
        let mut sent = BTreeSet::new();
        for (d, op) in &ops {
            if let Some(id) = apply(&mut devices, *d, op) {
                sent.insert(id);
            }
        }
        let mut docs: Vec<Automerge> = devices.into_iter().map(|d| d.doc).collect();
        merge_all(&mut docs);

        let typed = complete(read_typed(&docs[0]));
        let chat = match &typed {
            TypedDoc::Trip(t) => t.chat.clone(),
            TypedDoc::Conversation(c) => c.chat.clone(),
            other => panic!("unexpected {other:?}"),
        };
        let json = complete(messages_json(&docs[0]));
        for d in &docs[1..] {
            prop_assert_eq!(heads(d), heads(&docs[0]));
            prop_assert_eq!(&complete(read_typed(d)), &typed);
            prop_assert_eq!(&complete(messages_json(d)), &json);
            prop_assert_eq!(to_json(d).unwrap(), to_json(&docs[0]).unwrap());
        }
        // Every message sent anywhere is there once, in (created_at, id) order.
        let ids: Vec<Id> = chat.messages.iter().map(|m| m.id.clone()).collect();
        prop_assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), sent);
        let mut keys: Vec<MessageKey> = chat.messages.iter().map(Message::key).collect();
        keys.sort();
        prop_assert_eq!(keys, chat.messages.iter().map(Message::key).collect::<Vec<_>>());
        // The tail read agrees with the full read.
        let n = chat.messages.len();
        prop_assert_eq!(complete(last_messages(&docs[0], 5)), chat.messages[n.saturating_sub(5)..].to_vec());
    }
}
