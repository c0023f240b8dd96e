//! A gate over what peers write.

use super::*;

/// A gate that refuses changes setting the root key `forbidden`, keeps a record per accepted
/// change's actor, and logs what it was told.
#[derive(Default)]
struct ToyGate {
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Gate for ToyGate {
    fn checks(&self, conn: ConnId) -> bool {
        conn == ConnId(2)
    }
    fn opened(&mut self, _doc: DocId, _document: &Document, records: &[(Vec<u8>, Vec<u8>)]) {
        self.log
            .lock()
            .unwrap()
            .push(format!("opened with {} records", records.len()));
    }
    fn check(
        &mut self,
        _doc: DocId,
        _conn: ConnId,
        change: &crate::check::CheckedChange,
        _document: &Document,
    ) -> Result<Accepted, String> {
        let change = &change.change;
        let sets_forbidden = change.decode().operations.iter().any(
            |op| matches!(&op.key, automerge::legacy::Key::Map(k) if k.as_str() == "forbidden"),
        );
        if sets_forbidden {
            return Err("the key forbidden may not be written".into());
        }
        self.log.lock().unwrap().push("accepted".into());
        Ok(Accepted {
            records: vec![(change.actor_id().to_bytes().to_vec(), b"writer".to_vec())],
        })
    }
    fn observe(&mut self, _doc: DocId, _change: &Change, _from: Option<ConnId>) {
        self.log.lock().unwrap().push("observed".into());
    }
    fn closed(&mut self, _doc: DocId) {
        self.log.lock().unwrap().push("closed".into());
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

#[test]
fn a_gate_refuses_a_change_with_those_that_depend_on_it_and_keeps_the_rest() {
    let (mut a, mut b) = pair(true);
    let gate = ToyGate::default();
    let log = gate.log.clone();
    b.set_gate(Box::new(gate));
    // b gets its gate after loading: it learns of the document when it next loads it.
    assert!(log.lock().unwrap().is_empty());
    let before = b.heads(DOC).unwrap();
    // a writes: one fine change, one forbidden, one on top of the forbidden one.
    let fine = write(&mut a, "fine");
    let forbidden = write(&mut a, "forbidden");
    let after = write(&mut a, "after");
    for id in [fine, forbidden, after] {
        a.persisted(id);
    }
    let raws: Vec<bytes::Bytes> = a
        .read(DOC, |d| {
            d.automerge()
                .get_changes(&before)
                .iter()
                .map(|c| bytes::Bytes::copy_from_slice(c.raw_bytes()))
                .collect()
        })
        .unwrap();
    assert_eq!(raws.len(), 3);
    b.handle(
        ConnId(2),
        Message::Changes {
            doc: DOC,
            changes: raws,
        },
    )
    .unwrap();
    let outs = outputs(&mut b);
    let mut order = Vec::new();
    for o in &outs {
        match o {
            Output::Persist {
                write: Write::GateRecord { .. },
                ..
            } => order.push("record"),
            Output::Persist {
                write: Write::Changes(c),
                ..
            } => {
                let stored = crate::check::split_chunks(c).unwrap();
                assert_eq!(stored.len(), 1, "only the fine change is stored");
                order.push("changes")
            }
            Output::Rejected {
                reason: Rejection::Rule(r),
                ..
            } => {
                assert!(r.contains("forbidden"), "{r}");
                order.push("rejected")
            }
            _ => {}
        }
    }
    assert_eq!(order.first(), Some(&"record"), "{order:?}");
    assert!(
        order.contains(&"changes") && order.contains(&"rejected"),
        "{order:?}"
    );
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "accepted")
            .count(),
        1
    );
    // Local changes are observed, not checked.
    write(&mut b, "local");
    assert!(log.lock().unwrap().iter().any(|l| l == "observed"));
    b.forget(DOC);
    assert!(log.lock().unwrap().iter().any(|l| l == "closed"));
}
