//! The large change, made (in a child process, for its memory) before anything is timed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use weft_core::automerge::sync::{self, SyncDoc};
use weft_core::automerge::transaction::Transactable;
use weft_core::automerge::{ActorId, Automerge, ChangeHash, ObjType, ReadDoc, ROOT};

use super::{raised_limits, settle, SIZES};

/// The large change and what it takes to send it both ways, made before anything is timed.
pub struct Big {
    /// Characters it inserts.
    pub chars: usize,
    /// The change's bytes.
    pub raw: Bytes,
    pub hash: ChangeHash,
    pub ops: usize,
    /// The document the large change goes into: a title and a short text, in three small
    /// changes, which every large-change document holds before its large change.
    pub seed: Automerge,
    /// `Automerge::generate_sync_message` of the document with the large change, for a peer
    /// holding the seed (what a device in sync mode sends right after making it).
    pub sync_data: Vec<u8>,
    /// What the sync message carries the change as ("change chunk", "document chunk").
    pub sync_chunk: String,
    /// Local commit of the large change.
    pub commit: Duration,
    /// `check_change` of it under the raised limits: what a relay's connection task does
    /// (on a blocking thread) before the hub sees it.
    pub check: Duration,
    /// Automerge's `Change::decode` of it: what the relay's write rules run on every change
    /// they check (the hub's thread).
    pub decode: Duration,
}

impl Big {
    /// Makes the seed and the large change, and the sync message that carries it.
    pub fn generate(chars: usize) -> anyhow::Result<Big> {
        let mut am = Automerge::new().with_actor(ActorId::random());
        let mut tx = am.transaction();
        tx.put(ROOT, "title", "notes")?;
        let text = tx.put_object(ROOT, "text", ObjType::Text)?;
        tx.commit();
        for line in ["first line\n", "second line\n"] {
            let mut tx = am.transaction();
            let at = tx.length(&text);
            tx.splice_text(&text, at, 0, line)?;
            tx.commit();
        }
        let seed = am.clone();
        let words = "on my way, see you at the station in ten minutes. ";
        let body: String = words.chars().cycle().take(chars).collect();
        let t = Instant::now();
        let mut tx = am.transaction();
        let at = tx.length(&text);
        tx.splice_text(&text, at, 0, &body)?;
        tx.commit();
        let commit = t.elapsed();
        let change = am
            .get_last_local_change()
            .context("the large change was just committed")?;
        let raw = Bytes::copy_from_slice(change.raw_bytes());
        let hash = change.hash();
        let ops = change.len();

        // The sync state a device holds once it and the relay both hold the seed (the
        // protocol is Automerge's on both sides, so settling against an empty document in
        // memory reaches the state the live exchange does).
        let mut device_state = sync::State::new();
        let mut relay_side = Automerge::new();
        let mut relay_state = sync::State::new();
        let mut seed_copy = seed.clone();
        settle(
            &mut seed_copy,
            &mut relay_side,
            &mut device_state,
            &mut relay_state,
        )?;
        let msg = am
            .generate_sync_message(&mut device_state)
            .context("a sync message after a local change")?;
        let sync_chunk = match msg.changes.iter().next().and_then(|c| c.get(8)) {
            Some(0) => "document chunk",
            Some(1) => "change chunk",
            Some(2) => "compressed change chunk",
            _ => "no changes",
        }
        .to_string();
        let sync_data = msg.encode();
        drop(am);

        let limits = raised_limits();
        let t = Instant::now();
        weft_core::check::check_change(raw.clone(), &limits)
            .map_err(|e| anyhow::anyhow!("the large change fails its check: {e}"))?;
        let check = t.elapsed();
        let t = Instant::now();
        let decoded = change.decode();
        let decode = t.elapsed();
        anyhow::ensure!(decoded.operations.len() == ops, "decode lost operations");
        drop(decoded);
        Ok(Big {
            chars,
            raw,
            hash,
            ops,
            seed,
            sync_data,
            sync_chunk,
            commit,
            check,
            decode,
        })
    }
}

/// The environment variable that makes this binary a child that writes the large change into
/// the directory it names, then exits.
pub const MAKE_ENV: &str = "WEFT_BENCH_MAKE_LARGE_CHANGE";

impl Big {
    /// Makes the large changes ([`super::CHARS`], [`super::AT_CAP_CHARS`]) in a child process (this binary
    /// again, with [`MAKE_ENV`] set) and reads them back. Making the large one takes Automerge
    /// 0.12 about a gigabyte, which this process's allocator would keep for a while and the
    /// relay's RSS would then seem to include.
    pub fn generate_in_child() -> anyhow::Result<Vec<Big>> {
        let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let mut child = std::process::Command::new(exe)
            .env(MAKE_ENV, dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start the child that makes the large change")?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("making the large change took over 300 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        anyhow::ensure!(
            status.success(),
            "the child making the large change failed: {status}"
        );
        SIZES
            .iter()
            .map(|chars| Big::read(&dir.path().join(chars.to_string())))
            .collect()
    }

    /// A change [`Big::write`] wrote into `dir`.
    fn read(dir: &std::path::Path) -> anyhow::Result<Big> {
        let read = |name: &str| {
            std::fs::read(dir.join(name)).with_context(|| format!("reading the child's {name}"))
        };
        let meta: serde_json::Value = serde_json::from_slice(&read("meta.json")?)?;
        let field = |k: &str| {
            meta[k]
                .as_u64()
                .with_context(|| format!("no {k} in meta.json"))
        };
        let hash = meta["hash"]
            .as_str()
            .context("no hash in meta.json")?
            .parse()
            .map_err(|e| anyhow::anyhow!("a bad hash in meta.json: {e:?}"))?;
        Ok(Big {
            chars: usize::try_from(field("chars")?)?,
            raw: Bytes::from(read("raw")?),
            hash,
            ops: usize::try_from(field("ops")?)?,
            seed: Automerge::load(&read("seed")?)?,
            sync_data: read("sync")?,
            sync_chunk: meta["sync_chunk"].as_str().unwrap_or("?").to_string(),
            commit: Duration::from_micros(field("commit_us")?),
            check: Duration::from_micros(field("check_us")?),
            decode: Duration::from_micros(field("decode_us")?),
        })
    }

    /// The child's side of [`Big::generate_in_child`]: makes each change and writes it into a
    /// directory of `dir` named by its number of characters.
    pub fn write_for_parent(dir: &std::path::Path) -> anyhow::Result<()> {
        for chars in SIZES {
            let sub = dir.join(chars.to_string());
            std::fs::create_dir(&sub)?;
            Big::generate(chars)?.write(&sub)?;
        }
        Ok(())
    }

    fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("raw"), &self.raw)?;
        std::fs::write(dir.join("seed"), self.seed.save())?;
        std::fs::write(dir.join("sync"), &self.sync_data)?;
        let us = |d: Duration| d.as_micros() as u64;
        let meta = serde_json::json!({
            "chars": self.chars,
            "hash": self.hash.to_string(),
            "ops": self.ops,
            "sync_chunk": self.sync_chunk,
            "commit_us": us(self.commit),
            "check_us": us(self.check),
            "decode_us": us(self.decode),
        });
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
        Ok(())
    }

    /// A short name: "2M", "99k".
    pub fn label(&self) -> String {
        if self.chars >= 1_000_000 && self.chars.is_multiple_of(1_000_000) {
            format!("{}M", self.chars / 1_000_000)
        } else if self.chars >= 1_000 {
            format!("{}k", self.chars / 1_000)
        } else {
            self.chars.to_string()
        }
    }
}
