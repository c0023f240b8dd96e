//! `weft p2p listen` and `weft sync --peer`: two devices of one user, no relay.

mod common;

use std::time::Duration;

use common::{wait_for, Dev};

/// Two devices edit one conversation offline, 50 messages each, then sync directly: the same
/// 100 messages, byte for byte, and equal heads.
#[test]
fn two_devices_converge_peer_to_peer_after_editing_offline() {
    let (a, b) = (Dev::user("me"), Dev::user("me"));
    let (ida, idb) = (a.init(), b.init());
    let doc = a.new_conversation("Weekend");

    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut listen = b.spawn(&["p2p", "listen", "--listen", &addr, "--allow", &ida]);
    assert_eq!(
        listen.first_line(),
        idb,
        "p2p listen prints its device id first"
    );
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    assert_eq!(
        b.heads(&doc),
        a.heads(&doc),
        "the listener got the document"
    );
    listen.kill();

    // Offline on both sides.
    for i in 0..50 {
        a.ok(&["msg", "send", &doc, &format!("a{i}")]);
        b.ok(&["msg", "send", &doc, &format!("b{i}")]);
    }
    let mut listen = b.spawn(&["p2p", "listen", "--listen", &addr, "--allow", &ida]);
    assert_eq!(listen.first_line(), idb);
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    // While the listener runs, commands on its directory are handed to it.
    assert_eq!(a.msgs_json(&doc), b.msgs_json(&doc));
    assert_eq!(a.msg_count(&doc), 100);
    assert_eq!(a.heads(&doc), b.heads(&doc));

    // A write on the listener's device while a watching dialer is connected reaches it.
    let _watch = a.spawn(&["sync", "--peer", &addr, "--peer-key", &idb, "--watch"]);
    b.ok(&["msg", "send", &doc, "live from b"]);
    wait_for(Duration::from_secs(15), "the live message", || {
        a.msg_count(&doc) == 101
    });
    a.ok(&["msg", "send", &doc, "live from a"]);
    wait_for(Duration::from_secs(15), "the reply", || {
        b.msg_count(&doc) == 102
    });
    assert_eq!(listen.terminate().code(), Some(0));
}

/// A device not on `--allow`, and a dialer pinning the wrong key, are refused with 3.
#[test]
fn unknown_devices_and_wrong_keys_are_refused() {
    let (a, b, stranger) = (Dev::user("me"), Dev::user("me"), Dev::user("stranger"));
    let (ida, idb) = (a.init(), b.init());
    let ids = stranger.init();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut listen = b.spawn(&["p2p", "listen", "--listen", &addr, "--allow", &ida]);
    assert_eq!(listen.first_line(), idb);
    let err = stranger.fails(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"], 3);
    assert!(err.contains("refused"), "{err}");
    // A pins the wrong key (the stranger's) for B.
    a.fails(&["sync", "--peer", &addr, "--peer-key", &ids, "--once"], 3);
    // The right key works.
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    // A malformed key is a usage error.
    a.fails(&["sync", "--peer", &addr, "--peer-key", "xyz", "--once"], 2);
}

/// `weft watch` prints one JSON line per change, local or remote, while other commands on the
/// same directory (a send, a sync) are handed to it; edits and deletions travel like messages.
#[test]
fn watch_streams_local_and_remote_changes_and_edits_travel() {
    use std::io::BufRead;
    let (a, b) = (Dev::user("me"), Dev::user("me"));
    let (ida, idb) = (a.init(), b.init());
    let doc = a.new_conversation("Watched");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut listen = b.spawn(&["p2p", "listen", "--listen", &addr, "--allow", &ida]);
    assert_eq!(listen.first_line(), idb);
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);

    let mut watch = a.spawn(&["watch", &doc]);
    let mut lines = std::io::BufReader::new(watch.child.stdout.take().unwrap()).lines();
    // Wait until the watch holds the directory: a command is handed to it from then on.
    wait_for(
        Duration::from_secs(10),
        "the watch to hold the directory",
        || a.dir.path().join("weft.sock").exists(),
    );
    let id = a.ok(&["msg", "send", &doc, "first"]).trim().to_owned();
    let local: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(local["origin"], "local");
    assert_eq!(local["doc"], doc);
    assert!(local["heads"].as_array().is_some_and(|h| h.len() == 1));
    assert!(!local["patches"].as_array().unwrap().is_empty());

    // B edits and deletes; a sync handed to the watch brings them in as remote changes.
    b.ok(&["msg", "send", &doc, "second"]);
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    b.ok(&["msg", "edit", &doc, &id, "first, edited"]);
    let remote: serde_json::Value = loop {
        let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if v["origin"] == "remote" {
            break v;
        }
    };
    assert_eq!(remote["doc"], doc);
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    b.ok(&["msg", "delete", &doc, &id]);
    a.ok(&["sync", "--peer", &addr, "--peer-key", &idb, "--once"]);
    let msgs: Vec<serde_json::Value> = serde_json::from_str(&a.msgs_json(&doc)).unwrap();
    assert_eq!(msgs.len(), 2);
    let first = msgs.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(first["deleted"], true);
    assert_eq!(first["body"], "");
    assert!(!first["edited_at"].is_null());
    assert_eq!(a.msgs_json(&doc), b.msgs_json(&doc));
    // Malformed and unknown message ids.
    a.fails(&["msg", "edit", &doc, "not-an-id!", "x"], 2);
    a.fails(
        &["msg", "delete", &doc, "00000000000000000000000000000000"],
        1,
    );
    watch.kill();
    // With the watch gone, commands open the directory themselves again.
    assert_eq!(a.msg_count(&doc), 2);
}
