use std::io::Write as _;

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ReadDoc, ROOT};
use proptest::prelude::*;

use super::*;

fn limits() -> Limits {
    Limits {
        max_change_bytes: 64 * 1024,
        max_change_ops: 1_000,
        max_inflated_bytes: 1 << 20,
        whole_documents: false,
    }
}

/// A document with one change per text, and the changes' raw bytes.
fn doc_with(texts: &[&str]) -> (Automerge, Vec<Vec<u8>>) {
    let mut doc = Automerge::new();
    let mut raw = Vec::new();
    for t in texts {
        let before = doc.get_heads();
        let mut tx = doc.transaction();
        let text = tx.put_object(ROOT, *t, ObjType::Text).unwrap();
        tx.splice_text(&text, 0, 0, t).unwrap();
        tx.commit();
        for c in doc.get_changes(&before) {
            raw.push(c.raw_bytes().to_vec());
        }
    }
    (doc, raw)
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn uleb(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A chunk of `kind` around `data`, with a checksum of zeros (the bounds are checked before
/// any checksum).
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend([0, 0, 0, 0, kind]);
    uleb(data.len() as u64, &mut out);
    out.extend(data);
    out
}

#[test]
fn a_change_passes_with_its_canonical_bytes() {
    let (_, raw) = doc_with(&["hello"]);
    let checked = check_change(Bytes::from(raw[0].clone()), &limits()).unwrap();
    assert_eq!(&checked.raw[..], &raw[0][..]);
    assert_eq!(checked.ops(), checked.change.len());
}

#[test]
fn garbage_is_malformed() {
    let garbage: Vec<u8> = (0..37u8)
        .map(|i| i.wrapping_mul(97).wrapping_add(13))
        .collect();
    assert!(matches!(
        check_change(Bytes::from(garbage.clone()), &limits()),
        Err(CheckError::Malformed { .. })
    ));
    let mut out = Vec::new();
    assert!(matches!(
        check_chunks(&garbage, &limits(), &mut 0, &mut out),
        Err(CheckError::Malformed { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn a_valid_change_followed_by_garbage_is_refused_whole() {
    let (_, raw) = doc_with(&["hello"]);
    let mut bytes = raw[0].clone();
    bytes.extend(MAGIC);
    bytes.extend([1, 2, 3, 4, 1, 5, 9, 9]);
    let mut out = Vec::new();
    assert!(check_chunks(&bytes, &limits(), &mut 0, &mut out).is_err());
}

#[test]
fn a_change_with_a_flipped_byte_is_malformed() {
    let (_, raw) = doc_with(&["hello world"]);
    let mut bytes = raw[0].clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    assert!(matches!(
        check_change(Bytes::from(bytes), &limits()),
        Err(CheckError::Malformed { .. })
    ));
}

#[test]
fn a_change_over_the_byte_limit_is_refused_before_parsing() {
    let big = "x".repeat(2000);
    let (_, raw) = doc_with(&[&big]);
    let small = Limits {
        max_change_bytes: 100,
        ..limits()
    };
    assert!(matches!(
        check_change(Bytes::from(raw[0].clone()), &small),
        Err(CheckError::TooLarge {
            what: "a change",
            ..
        })
    ));
}

#[test]
fn a_change_over_the_ops_limit_is_refused() {
    let big = "x".repeat(2000);
    let (_, raw) = doc_with(&[&big]);
    let err = check_change(Bytes::from(raw[0].clone()), &limits()).unwrap_err();
    assert!(err.is_limit(), "{err}");
    assert!(err.to_string().contains("operations"), "{err}");
}

#[test]
fn a_compressed_change_is_inflated_within_the_cap_and_stored_uncompressed() {
    let text = "abc".repeat(100);
    let (doc, raw) = doc_with(&[&text]);
    let mut change = doc.get_changes(&[]).remove(0);
    let compressed = change.bytes().to_vec();
    assert_eq!(compressed[8], CHUNK_COMPRESSED, "the change compresses");
    let mut out = Vec::new();
    check_chunks(&compressed, &limits(), &mut 0, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0].raw[..], &raw[0][..]);
    assert_eq!(out[0].raw[8], CHUNK_CHANGE);
}

#[test]
fn a_compressed_bomb_is_refused_without_inflating_it_all() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = chunk(CHUNK_COMPRESSED, &deflate(&zeros));
    drop(zeros);
    assert!(bomb.len() < 200 << 10, "{}", bomb.len());
    let mut out = Vec::new();
    let err = check_chunks(&bomb, &limits(), &mut 0, &mut out).unwrap_err();
    assert!(err.is_limit(), "{err}");
}

#[test]
fn a_document_chunk_yields_its_changes() {
    let (doc, raw) = doc_with(&["one", "two", "three"]);
    let saved = doc.save();
    assert_eq!(saved[8], CHUNK_DOCUMENT);
    let mut out = Vec::new();
    let mut inflated = 0;
    check_chunks(&saved, &limits(), &mut inflated, &mut out).unwrap();
    let mut got: Vec<Vec<u8>> = out.iter().map(|c| c.raw.to_vec()).collect();
    let mut want = raw.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(inflated >= saved.len() - 20);
}

#[test]
fn a_document_chunk_with_a_bomb_column_is_refused_before_automerge_sees_it() {
    let zeros = vec![0u8; 64 << 20];
    let bomb = deflate(&zeros);
    drop(zeros);
    let mut data = Vec::new();
    uleb(0, &mut data); // actors
    uleb(0, &mut data); // heads
    uleb(1, &mut data); // one change column...
    uleb((1 << 4) | 0b1000, &mut data); // ...deflated
    uleb(bomb.len() as u64, &mut data);
    uleb(0, &mut data); // no op columns
    data.extend(&bomb);
    let doc = chunk(CHUNK_DOCUMENT, &data);
    let mut out = Vec::new();
    let err = check_chunks(&doc, &limits(), &mut 0, &mut out).unwrap_err();
    assert!(err.is_limit(), "{err}");
}

#[test]
fn the_inflation_budget_is_shared_by_a_message() {
    let text = "abc".repeat(2000);
    let (doc, _) = doc_with(&[&text]);
    let saved = doc.save();
    let tight = Limits {
        max_inflated_bytes: saved.len() + 10,
        ..limits()
    };
    let mut inflated = 0;
    let mut out = Vec::new();
    let twice = [saved.clone(), saved.clone()].concat();
    let err = check_chunks(&twice, &tight, &mut inflated, &mut out).unwrap_err();
    assert!(err.is_limit(), "{err}");
}

#[test]
fn bundles_are_refused() {
    let b = chunk(CHUNK_BUNDLE, &[0, 0, 0]);
    let mut out = Vec::new();
    assert_eq!(
        check_chunks(&b, &limits(), &mut 0, &mut out),
        Err(CheckError::Unsupported { what: "bundle" })
    );
}

#[test]
fn chunk_lengths_past_the_buffer_are_malformed() {
    let mut c = MAGIC.to_vec();
    c.extend([0, 0, 0, 0, 1]);
    uleb(u64::MAX, &mut c);
    assert!(split_chunks(&c).is_err());
    let mut c = MAGIC.to_vec();
    c.extend([
        0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ]);
    assert!(split_chunks(&c).is_err());
}

#[test]
fn an_empty_buffer_holds_no_chunks() {
    assert_eq!(split_chunks(&[]).unwrap(), vec![]);
    let mut out = Vec::new();
    check_chunks(&[], &limits(), &mut 0, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn changes_checked_from_a_document_load_into_the_same_document() {
    let (doc, _) = doc_with(&["a", "b"]);
    let mut out = Vec::new();
    check_chunks(&doc.save(), &limits(), &mut 0, &mut out).unwrap();
    let mut copy = Automerge::new();
    copy.apply_changes(out.into_iter().map(|c| c.change))
        .unwrap();
    assert_eq!(copy.get_heads(), doc.get_heads());
    assert!(copy.get(ROOT, "a").unwrap().is_some());
}

fn cases() -> u32 {
    std::env::var("WEFT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut out = Vec::new();
        let _ = check_chunks(&bytes, &limits(), &mut 0, &mut out);
        let _ = check_change(Bytes::from(bytes), &limits());
    }

    #[test]
    fn damaged_changes_never_panic(at in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let (doc, raw) = doc_with(&["hello there"]);
        let mut bytes = raw[0].clone();
        let i = at % bytes.len();
        bytes[i] = byte;
        bytes.truncate(bytes.len() - cut % bytes.len());
        let mut out = Vec::new();
        let _ = check_chunks(&bytes, &limits(), &mut 0, &mut out);
        let mut saved = doc.save();
        let j = at % saved.len();
        saved[j] ^= byte;
        let _ = check_chunks(&saved, &limits(), &mut 0, &mut out);
    }
}
