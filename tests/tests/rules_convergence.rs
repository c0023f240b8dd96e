//! Several users write to one conversation through a relay that enforces the write rules,
//! over a faulty network: some changes are allowed (a message of one's own, editing or deleting
//! it, the owner moderating), some forbidden (a message in another's name, editing or deleting
//! another's message, a key that breaks the schema, changing the kind). Devices whose changes
//! the relay refuses take its version back, as the device runtime does. Once the network heals,
//! every device holds the relay's document, and every rule holds in it.
//!
//! `WEFT_PROPTEST_CASES` raises the number of cases for long runs (default 32).

use proptest::prelude::*;
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{Automerge, ObjId, ReadDoc, ROOT};
use weft_core::engine::EngineConfig;
use weft_core::DocId;
use weft_schema::rules::{Kinds, RulesGate};
use weft_schema::{Conversation, Id, MessageKey, NewConversation, NewMessage};
use weft_tests::sim::{Faults, Sim};

const DOC: DocId = DocId::from_bytes([6; 16]);
/// Node 0 is the relay; devices 1..=4 act for these users (Alice twice).
const USERS: [&str; 4] = ["alice", "bob", "carol", "alice"];
const T: u64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    /// A message, in the writer's name or (forbidden) another's.
    Send {
        dev: usize,
        own_name: bool,
    },
    /// Edit the n-th message the device shows (allowed only for its author).
    Edit {
        dev: usize,
        nth: usize,
    },
    /// Delete the n-th message (its author, or Alice the owner).
    Delete {
        dev: usize,
        nth: usize,
    },
    /// A key that is not a message key in `messages`.
    Break {
        dev: usize,
    },
    /// Change the kind.
    Rekind {
        dev: usize,
    },
    Partition {
        dev: usize,
    },
    Heal,
    Run {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 1usize..=4;
    prop_oneof![
        4 => (dev.clone(), any::<bool>()).prop_map(|(dev, own_name)| Op::Send { dev, own_name }),
        2 => (dev.clone(), 0usize..8).prop_map(|(dev, nth)| Op::Edit { dev, nth }),
        2 => (dev.clone(), 0usize..8).prop_map(|(dev, nth)| Op::Delete { dev, nth }),
        1 => dev.clone().prop_map(|dev| Op::Break { dev }),
        // Members other than the owner (the owner may create the document as another kind).
        1 => (2usize..=3).prop_map(|dev| Op::Rekind { dev }),
        1 => dev.prop_map(|dev| Op::Partition { dev }),
        1 => Just(Op::Heal),
        2 => (1u64..2_000).prop_map(|ms| Op::Run { ms }),
    ]
}

fn cases() -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

fn message_ids(sim: &mut Sim, dev: usize) -> Vec<Id> {
    sim.read(dev, DOC, |am| {
        weft_schema::messages(am)
            .map(|m| m.value.into_iter().map(|m| m.id).collect())
            .unwrap_or_default()
    })
}

fn apply(sim: &mut Sim, op: &Op, step: usize) {
    let t = T + step as u64;
    match *op {
        Op::Send { dev, own_name } => {
            let me = USERS[dev - 1];
            let author = if own_name {
                me
            } else if me == "bob" {
                "carol"
            } else {
                "bob"
            };
            let id = Id::from_bytes(rand_id(step, dev));
            sim.change(dev, DOC, |am| {
                let _ = weft_schema::send_message(am, &NewMessage::text(author, "hi"), id, t);
            });
        }
        Op::Edit { dev, nth } => {
            let ids = message_ids(sim, dev);
            if let Some(id) = ids.get(nth % ids.len().max(1)).cloned() {
                sim.change(dev, DOC, |am| {
                    let _ = weft_schema::edit_message(am, &id, &format!("edit {step}"), t);
                });
            }
        }
        Op::Delete { dev, nth } => {
            let ids = message_ids(sim, dev);
            if let Some(id) = ids.get(nth % ids.len().max(1)).cloned() {
                sim.change(dev, DOC, |am| {
                    let _ = weft_schema::delete_message(am, &id, t);
                });
            }
        }
        Op::Break { dev } => {
            sim.change(dev, DOC, |am| {
                if let Ok(Some((_, m))) = am.get(ROOT, "messages") {
                    let mut tx = am.transaction();
                    let _ = tx.put(&m, "zzz", 42);
                    tx.commit();
                }
            });
        }
        Op::Rekind { dev } => {
            sim.change(dev, DOC, |am| {
                let mut tx = am.transaction();
                let _ = tx.put(ROOT, "kind", "trip");
                tx.commit();
            });
        }
        Op::Partition { dev } => sim.partition(0, dev, true),
        Op::Heal => sim.heal_all(),
        Op::Run { ms } => sim.run_for(ms, 20_000),
    }
}

fn rand_id(step: usize, dev: usize) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(step as u64).to_be_bytes());
    b[8] = dev as u8;
    b[15] = 1;
    b
}

/// Every rule the relay enforces, read back from its document.
fn rules_hold(sim: &mut Sim) -> Result<(), String> {
    let (kind, entries) = sim.read(0, DOC, |am| {
        let kind = match am.get(ROOT, "kind") {
            Ok(Some((v, _))) => v.to_string(),
            _ => String::new(),
        };
        let mut entries = Vec::new();
        if let Ok(Some((_, m))) = am.get(ROOT, "messages") {
            for key in am.keys(&m) {
                let (value, obj) = am.get(&m, key.as_str()).unwrap().unwrap();
                let author = match am.get(&obj, "author") {
                    Ok(Some((v, _))) => v.to_string(),
                    _ => String::new(),
                };
                let actor = match &obj {
                    ObjId::Id(_, a, _) => Some(a.clone()),
                    ObjId::Root => None,
                };
                entries.push((key, value.is_object(), author, actor));
            }
        }
        (kind, entries)
    });
    if kind != "\"conversation\"" {
        return Err(format!("the kind became {kind}"));
    }
    let gate = sim.nodes[0]
        .host
        .gate_mut()
        .and_then(|g| g.as_any_mut().downcast_mut::<RulesGate>())
        .ok_or("the relay has no gate")?;
    for (key, is_object, author, actor) in entries {
        if key.parse::<MessageKey>().is_err() || !is_object {
            return Err(format!("messages holds {key:?}"));
        }
        let Some(actor) = actor else { continue };
        // Bindings live while the document is loaded; an evicted one is judged when reloaded.
        if let Some(writer) = gate.binding(DOC, &actor) {
            if author != format!("\"{writer}\"") {
                return Err(format!("{key} says {author} but {writer} wrote it"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn every_device_converges_on_a_document_where_every_rule_holds(
        ops in proptest::collection::vec(op(), 1..40),
        seed in any::<u64>(),
        loss in 0.0..0.2f64,
    ) {
        let mut configs = vec![EngineConfig::relay()];
        configs.extend((0..USERS.len()).map(|_| EngineConfig::device()));
        let mut sim = Sim::new(configs, vec![DOC], seed);
        sim.faults = Faults { loss, duplicate: 0.05, max_delay: 30, store_failure: 0.0 };
        let mut gate = RulesGate::new(std::sync::Arc::new(Kinds::builtin()));
        gate.set_owner(DOC, "alice");
        sim.set_gate(0, Box::new(gate));
        for (i, u) in USERS.iter().enumerate() {
            sim.users.insert(i + 1, u.to_string());
        }
        // Alice creates the conversation before anyone connects.
        sim.change(1, DOC, |am: &mut Automerge| {
            Conversation::create(
                am,
                &NewConversation { title: "Plans".into(), participants: vec![] },
                T,
            )
            .unwrap();
        });
        sim.run_until_quiet(10_000);
        for dev in 1..=USERS.len() {
            sim.connect(0, dev);
        }
        for (step, op) in ops.iter().enumerate() {
            apply(&mut sim, op, step);
        }
        sim.faults = Faults::default();
        sim.heal_all();
        prop_assert!(sim.run_until_quiet(400_000), "the network never went quiet");
        let relay = sim.heads(0, DOC);
        for dev in 1..=USERS.len() {
            prop_assert_eq!(sim.heads(dev, DOC), relay.clone(), "device {} differs", dev);
        }
        if let Err(e) = rules_hold(&mut sim) {
            prop_assert!(false, "a rule broke: {}", e);
        }
    }
}
