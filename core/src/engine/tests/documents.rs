//! A document's slot: eviction, a failed write, a forgotten document.

use super::*;

#[test]
fn idle_documents_are_evicted_and_reloaded_on_demand() {
    let (mut a, mut b) = pair(true);
    b.remove_conn(ConnId(2));
    drain(&mut b);
    let wake = b
        .next_wakeup()
        .expect("an idle document waits for eviction");
    b.tick(wake);
    assert!(matches!(
        b.poll_output(),
        Some(Output::Evicted { doc: DOC })
    ));
    assert_eq!(b.loaded_docs(), 0);
    // Reopening asks the driver to load it again.
    b.open(ConnId(3), DOC, OpenOptions::default());
    assert!(matches!(b.poll_output(), Some(Output::Load { doc: DOC })));
    let _ = &mut a;
}

#[test]
fn a_failed_write_drops_the_document_and_closes_its_peers() {
    let (mut a, _b) = pair(true);
    let id = write(&mut a, "doomed");
    while a.poll_output().is_some() {}
    a.persist_failed(id);
    match a.poll_output() {
        Some(Output::Failed { doc, conns }) => {
            assert_eq!(doc, DOC);
            assert_eq!(conns, vec![ConnId(1)]);
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert!(!a.is_loaded(DOC));
}

#[test]
fn a_forgotten_document_is_reloaded_fresh_and_resyncs_from_scratch() {
    let (mut a, mut b) = pair(true);
    write(&mut a, "mine");
    pump(&mut a, &mut b);
    // A write still in flight when the document is forgotten completes without effect.
    let id = write(&mut a, "lost");
    a.forget(DOC);
    assert!(!a.is_loaded(DOC));
    a.persisted(id);
    assert!(a
        .handle(
            ConnId(1),
            Message::Ack {
                doc: DOC,
                heads: vec![]
            }
        )
        .is_err());
    // Reopened over an empty store, it syncs the other side's version again.
    a.open(ConnId(1), DOC, OpenOptions::default());
    let loads: Vec<_> = std::iter::from_fn(|| a.poll_output()).collect();
    assert!(
        loads
            .iter()
            .any(|o| matches!(o, Output::Load { doc } if *doc == DOC)),
        "{loads:?}"
    );
    a.loaded(DOC, None);
    b.resync(DOC, ConnId(2));
    pump(&mut a, &mut b);
    assert_eq!(a.heads(DOC), b.heads(DOC));
    assert!(a
        .read(DOC, |d| automerge::ReadDoc::get(
            d.automerge(),
            ROOT,
            "mine"
        )
        .unwrap()
        .is_some())
        .unwrap());
}
