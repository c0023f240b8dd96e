use super::*;
use crate::{DeviceId, DocId, Role};
use automerge::ChangeHash;
use proptest::prelude::*;

fn doc() -> DocId {
    DocId::from_bytes([3; 16])
}

fn samples() -> Vec<Message> {
    vec![
        Message::Hello {
            protocol: PROTOCOL_VERSION,
            device: DeviceId::from_bytes([1; 32]),
            token: "t.o.k".into(),
            agent: "weft/0.1".into(),
        },
        Message::Error {
            code: ErrorCode::FORBIDDEN,
            doc: Some(doc()),
            message: "no".into(),
        },
        Message::Docs {
            full: true,
            added: vec![DocEntry {
                doc: doc(),
                role: Role::ReadOnly,
            }],
            removed: vec![],
        },
        Message::Sync {
            doc: doc(),
            reset: true,
            data: vec![0x42, 1, 2].into(),
        },
        Message::Changes {
            doc: doc(),
            changes: vec![bytes::Bytes::from(vec![9; 100])],
        },
        Message::Ack {
            doc: doc(),
            heads: vec![ChangeHash([5; 32]), ChangeHash([6; 32])],
        },
        Message::DocsEnd {
            total: 12_000,
            truncated: false,
        },
        Message::Share {
            id: 7,
            doc: doc(),
            user: "bob".into(),
            role: Role::ReadWrite,
        },
        Message::Unshare {
            id: u64::MAX,
            doc: doc(),
            user: "bob".into(),
        },
        Message::Delete { id: 0, doc: doc() },
        Message::Reply {
            id: 7,
            doc: doc(),
            code: None,
            message: String::new(),
        },
        Message::Reply {
            id: 8,
            doc: doc(),
            code: Some(ErrorCode::FORBIDDEN),
            message: "not permitted".into(),
        },
    ]
}

#[test]
fn frames_round_trip() {
    for msg in samples() {
        let f = frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(f[0], PROTOCOL_V1);
        let (back, used) = decode_frame(&f, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(back, msg);
        assert_eq!(used, f.len());
    }
}

#[test]
fn control_messages_and_replies_name_their_document() {
    for msg in samples() {
        match msg {
            Message::Share { .. }
            | Message::Unshare { .. }
            | Message::Delete { .. }
            | Message::Reply { .. } => assert_eq!(msg.doc(), Some(doc()), "{msg:?}"),
            Message::DocsEnd { .. } | Message::Docs { .. } => assert_eq!(msg.doc(), None),
            _ => {}
        }
    }
}

#[test]
fn short_input_needs_more_bytes() {
    let f = frame(&samples()[0], DEFAULT_MAX_FRAME).unwrap();
    for cut in 0..f.len() {
        assert!(
            decode_frame(&f[..cut], DEFAULT_MAX_FRAME)
                .unwrap()
                .is_none(),
            "cut at {cut}"
        );
    }
}

#[test]
fn oversized_length_prefix_is_refused_before_allocating() {
    let buf = [PROTOCOL_V1, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        decode_frame(&buf, DEFAULT_MAX_FRAME),
        Err(FrameError::TooLarge {
            len: 0xffff_ffff,
            ..
        })
    ));
    let big = Message::Sync {
        doc: doc(),
        reset: false,
        data: vec![0; 2000].into(),
    };
    assert!(matches!(
        frame(&big, 1000),
        Err(FrameError::TooLarge { .. })
    ));
}

#[test]
fn wrong_version_byte_is_refused() {
    let mut f = frame(&samples()[0], DEFAULT_MAX_FRAME).unwrap();
    f[0] = 0x02;
    assert!(matches!(
        decode_frame(&f, DEFAULT_MAX_FRAME),
        Err(FrameError::UnsupportedVersion { got: 2 })
    ));
}

#[test]
fn garbage_bodies_are_malformed() {
    for body in [
        &b""[..],
        b"\xc1",
        b"\x81\xa4Sync\x80",
        b"\x92\x01\x02",
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut f = vec![PROTOCOL_V1];
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        assert!(
            matches!(
                decode_frame(&f, DEFAULT_MAX_FRAME),
                Err(FrameError::Malformed { .. })
            ),
            "{body:?}"
        );
    }
    // Heads whose length is not a multiple of 32.
    let mut f = frame(
        &Message::Ack {
            doc: doc(),
            heads: vec![ChangeHash([1; 32])],
        },
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let n = f.len();
    f[n - 33] = 31; // bin8 length byte of the heads
    f.truncate(n - 1);
    f[1..5].copy_from_slice(&((n - 1 - FRAME_HEADER_LEN) as u32).to_be_bytes());
    assert!(decode_frame(&f, DEFAULT_MAX_FRAME).is_err());
}

#[test]
fn compact_bodies_round_trip_and_are_smaller() {
    for msg in samples() {
        let named = frame(&msg, DEFAULT_MAX_FRAME).unwrap();
        let compact = frame_as(&msg, Encoding::Compact, DEFAULT_MAX_FRAME).unwrap();
        let (back, used) = decode_frame(&compact, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!((back, used), (msg.clone(), compact.len()));
        match msg {
            // No names or map markers: 18 bytes and more saved.
            Message::Changes { .. } | Message::Ack { .. } => {
                assert!(compact.len() + 18 <= named.len(), "{msg:?}")
            }
            _ => assert_eq!(compact, named, "{msg:?}"),
        }
    }
    assert_eq!(Encoding::for_protocol(1), Encoding::Named);
    assert_eq!(Encoding::for_protocol(PROTOCOL_VERSION), Encoding::Compact);
}

#[test]
fn malformed_compact_bodies_are_errors_and_allocate_nothing_large() {
    let changes = frame_as(&samples()[4], Encoding::Compact, DEFAULT_MAX_FRAME).unwrap();
    let body = &changes[FRAME_HEADER_LEN..];
    // Every truncation of a valid body, a count of changes or heads far beyond the body, a
    // length that never ends, an unknown document id length.
    let mut bodies: Vec<Vec<u8>> = (1..body.len()).map(|n| body[..n].to_vec()).collect();
    let mut huge = vec![0x01];
    huge.extend_from_slice(&[3; 16]);
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    bodies.push(huge.clone());
    huge[0] = 0x02;
    bodies.push(huge);
    let mut endless = vec![0x01];
    endless.extend_from_slice(&[3; 16]);
    endless.extend_from_slice(&[0xff; 8]);
    bodies.push(endless);
    for b in bodies {
        assert!(
            matches!(decode_body(&b), Err(FrameError::Compact(_))),
            "{b:?}"
        );
    }
}

fn arb_message() -> impl Strategy<Value = Message> {
    let doc = any::<[u8; 16]>().prop_map(DocId::from_bytes);
    prop_oneof![
        (
            doc.clone(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(doc, reset, data)| Message::Sync {
                doc,
                reset,
                data: data.into()
            }),
        (
            doc.clone(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..5)
        )
            .prop_map(|(doc, cs)| Message::Changes {
                doc,
                changes: cs.into_iter().map(bytes::Bytes::from).collect()
            }),
        (
            doc.clone(),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4)
        )
            .prop_map(|(doc, hs)| Message::Ack {
                doc,
                heads: hs.into_iter().map(ChangeHash).collect()
            }),
        (any::<u16>(), proptest::option::of(doc.clone()), ".{0,40}").prop_map(
            |(c, doc, message)| Message::Error {
                code: ErrorCode(c),
                doc,
                message
            }
        ),
        (any::<u64>(), doc.clone(), ".{0,20}", any::<bool>(), 0..3u8).prop_map(
            |(id, doc, user, rw, kind)| {
                let role = if rw { Role::ReadWrite } else { Role::ReadOnly };
                match kind {
                    0 => Message::Share {
                        id,
                        doc,
                        user,
                        role,
                    },
                    1 => Message::Unshare { id, doc, user },
                    _ => Message::Delete { id, doc },
                }
            }
        ),
        (
            any::<u64>(),
            doc.clone(),
            proptest::option::of(any::<u16>()),
            ".{0,40}"
        )
            .prop_map(|(id, doc, code, message)| Message::Reply {
                id,
                doc,
                code: code.map(ErrorCode),
                message
            }),
        (
            doc,
            proptest::option::of(".{0,10}"),
            proptest::collection::vec(any::<u8>(), 0..50)
        )
            .prop_map(|(doc, user, data)| Message::Ephemeral {
                doc,
                user,
                device: None,
                data
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_message_round_trips_through_a_stream(
        msgs in proptest::collection::vec(arb_message(), 1..6),
        compact in any::<bool>(),
    ) {
        let encoding = if compact { Encoding::Compact } else { Encoding::Named };
        let mut stream = Vec::new();
        for m in &msgs {
            encode_frame_as(m, encoding, DEFAULT_MAX_FRAME, &mut stream).unwrap();
        }
        let mut at = 0;
        let mut back = Vec::new();
        while let Some((m, used)) = decode_frame(&stream[at..], DEFAULT_MAX_FRAME).unwrap() {
            back.push(m);
            at += used;
        }
        prop_assert_eq!(at, stream.len());
        prop_assert_eq!(back, msgs);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_frame(&bytes, 4096);
        let _ = decode_body(&bytes);
    }
}

/// `Message::Sync` as it was declared with its data a `Vec<u8>` (`serde_bytes`), with its
/// variant at the same index: the wire format the shared `Bytes` data must keep.
#[derive(serde::Serialize)]
#[allow(dead_code)]
enum VecSync {
    V0,
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
    Sync {
        doc: DocId,
        reset: bool,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

#[test]
fn sync_data_as_shared_bytes_keeps_the_wire_bytes() {
    for len in [0usize, 3, 255, 256, 65_535, 65_536, 300_000] {
        let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        for reset in [false, true] {
            let old = rmp_serde::to_vec_named(&VecSync::Sync {
                doc: doc(),
                reset,
                data: data.clone(),
            })
            .unwrap();
            let msg = Message::Sync {
                doc: doc(),
                reset,
                data: data.clone().into(),
            };
            let new = frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            assert_eq!(
                &new[FRAME_HEADER_LEN..],
                &old[..],
                "{len} bytes, reset {reset}"
            );
            assert_eq!(
                decode_frame(&new, DEFAULT_MAX_FRAME).unwrap().unwrap().0,
                msg
            );
        }
    }
}

#[test]
fn a_split_sync_frame_is_the_whole_frame_and_shares_the_data() {
    for len in [0usize, 1, 255, 256, 65_535, 65_536, 300_000] {
        let data = bytes::Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        for (reset, encoding) in [(false, Encoding::Named), (true, Encoding::Compact)] {
            let msg = Message::Sync {
                doc: doc(),
                reset,
                data: data.clone(),
            };
            let whole = frame_as(&msg, encoding, DEFAULT_MAX_FRAME).unwrap();
            let (head, tail) = frame_split(&msg, encoding, DEFAULT_MAX_FRAME, 0)
                .unwrap()
                .expect("a Sync message splits");
            assert_eq!([&head[..], &tail[..]].concat(), whole, "{len} bytes");
            assert_eq!(
                tail.as_ptr(),
                data.as_ptr(),
                "the data is shared, not copied"
            );
        }
    }
    let msg = Message::Sync {
        doc: doc(),
        reset: false,
        data: vec![7; 100].into(),
    };
    assert!(frame_split(&msg, Encoding::Named, DEFAULT_MAX_FRAME, 101)
        .unwrap()
        .is_none());
    assert!(matches!(
        frame_split(&msg, Encoding::Named, 99, 0),
        Err(FrameError::TooLarge { .. })
    ));
    assert!(
        frame_split(&samples()[0], Encoding::Named, DEFAULT_MAX_FRAME, 0)
            .unwrap()
            .is_none()
    );
}
