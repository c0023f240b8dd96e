//! `weft doc new --kind K --set F=V` for declared kinds, `weft rec show` and `weft rec set`:
//! documents of the kinds the relay declared, as records. A write is checked against the
//! kind's rules on this device first (so a forbidden write changes nothing and exits 3), and
//! the relay checks it again.

use std::sync::Arc;

use weft_core::automerge::Automerge;
use weft_peer::Device;
use weft_schema::rules::record::{self, RecordError};

use super::args::RecCmd;
use super::context::device_user;
use super::output::{exit, Failure, Sink};

fn record_failure(e: RecordError) -> Failure {
    match e {
        RecordError::Forbidden(why) => Failure::new(exit::REFUSED, format!("refused: {why}")),
        RecordError::NotARecord => Failure::new(
            exit::FAILURE,
            "the document is not of a kind this device knows to be declared",
        ),
        other => Failure::new(exit::USAGE, other.to_string()),
    }
}

/// `weft doc new --kind K` for a kind the relay declared, with `--set FIELD=VALUE`s.
pub(super) async fn new_record(
    device: &Device,
    kind: &str,
    sets: &[String],
    sink: &Sink,
) -> Result<(), Failure> {
    let kinds = device.dir().kinds();
    let Some(spec) = kinds.get(kind).filter(|_| kinds.is_declared(kind)).cloned() else {
        return Err(Failure::new(
            exit::USAGE,
            format!("unknown kind {kind:?}: conversation, trip, or a kind the relay declared (sync once to learn them)"),
        ));
    };
    let mut values = Vec::with_capacity(sets.len());
    for s in sets {
        let Some((field, value)) = s.split_once('=') else {
            return Err(Failure::new(
                exit::USAGE,
                format!("--set takes FIELD=VALUE, not {s:?}"),
            ));
        };
        let v = record::parse_value(&spec, field, value).map_err(record_failure)?;
        values.push((field.to_string(), v));
    }
    let user = device_user(device)?;
    let kinds = Arc::new(kinds);
    let check_kinds = kinds.clone();
    let check_spec = spec.clone();
    let check_values = values.clone();
    // The creator owns the document: checked as such before anything is written.
    record::check_write(&check_kinds, &Automerge::new(), Some(&user), &user, |d| {
        record::create(d, &check_spec, &check_values)
    })
    .map_err(record_failure)?;
    let (doc, r) = device
        .create(Some(kind), move |am: &mut Automerge| {
            record::create(am, &spec, &values)
        })
        .await?;
    r.map_err(record_failure)?;
    sink.out(format!("{doc}\n")).await
}

pub(super) async fn rec_cmd(device: &Device, cmd: RecCmd, sink: &Sink) -> Result<(), Failure> {
    let kinds = Arc::new(device.dir().kinds());
    match cmd {
        RecCmd::Show { doc, json } => {
            device.info(doc).await?;
            let k = kinds.clone();
            let v = device
                .read(doc, move |am| record::to_json(&k, am))
                .await?
                .ok_or_else(|| record_failure(RecordError::NotARecord))?;
            if json {
                sink.out(format!("{v}\n")).await
            } else {
                let mut text = format!("kind: {}\n", v["kind"].as_str().unwrap_or_default());
                if let Some(fields) = v["fields"].as_object() {
                    for (name, value) in fields {
                        match value {
                            serde_json::Value::String(s) => {
                                text.push_str(&format!("{name}: {s}\n"))
                            }
                            other => text.push_str(&format!("{name}: {other}\n")),
                        }
                    }
                }
                sink.out(text).await
            }
        }
        RecCmd::Set { doc, field, value } => {
            let info = device.info(doc).await?;
            let user = device_user(device)?;
            let owner = info.owner.clone();
            let r = device
                .change(doc, move |am: &mut Automerge| -> Result<(), RecordError> {
                    let spec = record::kind_of(&kinds, am)
                        .cloned()
                        .ok_or(RecordError::NotARecord)?;
                    let v = record::parse_value(&spec, &field, &value)?;
                    let check = v.clone();
                    let f = field.clone();
                    record::check_write(&kinds, am, owner.as_deref(), &user, |d| {
                        record::set(d, &f, check)
                    })?;
                    record::set(am, &field, v)
                })
                .await?;
            r.map_err(record_failure)
        }
    }
}
