//! A backend job: reads a conversation from the relay's Postgres checkpoint, then posts a
//! staff message into it by connecting to the relay as a device with an `admin` token, so the
//! customer's devices receive it live.
//!
//! ```text
//! weft-relay token --secret-file DATA/jwt.secret --sub staff --admin > staff.jwt
//! cargo run -p weft-relay --example backend_job -- \
//!     --postgres postgres://postgres@127.0.0.1:5432/postgres \
//!     --relay 127.0.0.1:4433 --relay-cert DATA/tls/cert.pem --token-file staff.jwt \
//!     --doc DOC --text "Your booking is confirmed"
//! ```
//!
//! Reading goes to Postgres (no relay round trip, possibly one checkpoint interval behind);
//! writing goes through the relay like any device, so access rules, ordering and fan-out are
//! the relay's usual ones and the next checkpoint carries the message to Postgres too.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use weft_peer::{DataDir, Device, RelayConfig, SyncState, TokenSource};
use weft_schema::{Id, NewMessage, TypedDoc};

struct Args {
    postgres: String,
    relay: String,
    relay_cert: PathBuf,
    token_file: PathBuf,
    doc: weft_core::DocId,
    text: String,
    author: String,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut get = std::collections::HashMap::new();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        get.insert(flag, value);
    }
    let mut take = |f: &str| get.remove(f).with_context(|| format!("missing {f}"));
    Ok(Args {
        postgres: take("--postgres")?,
        relay: take("--relay")?,
        relay_cert: take("--relay-cert")?.into(),
        token_file: take("--token-file")?.into(),
        doc: take("--doc")?
            .parse()
            .context("--doc is not a document id")?,
        text: take("--text")?,
        author: take("--author").unwrap_or_else(|_| "staff".into()),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;

    // 1. Read: the last checkpoint, decoded into the typed document.
    let (db, conn) = tokio_postgres::connect(&args.postgres, tokio_postgres::NoTls)
        .await
        .context("cannot connect to Postgres")?;
    let io = tokio::spawn(conn);
    let row = db
        .query_opt(
            "select content, content_blake3 from weft_documents \
             where doc_id = $1 and deleted_at is null",
            &[&args.doc.to_string()],
        )
        .await?
        .context("no such document in the checkpoint")?;
    let (content, hash): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
    let read = weft_schema::decode_content(&content, Some(&hash))?;
    // Entries another writer malformed are left out of the typed view, and named here.
    for s in &read.skipped {
        eprintln!("  {s}");
    }
    match read.value {
        TypedDoc::Conversation(c) => eprintln!("conversation {:?}", c.title),
        TypedDoc::Trip(t) => eprintln!("trip {:?}", t.title),
        _ => bail!("not a chat document"),
    }
    let am = weft_schema::load_content(&content, Some(&hash))?;
    for m in weft_schema::last_messages(&am, 5)?.value {
        eprintln!("  {}: {}", m.author, m.body);
    }
    io.abort();

    // 2. Write: a device of the staff user, connected to the relay with an admin token.
    let dir = tempfile::tempdir()?;
    let device = Device::open(DataDir::new(dir.path())).await?;
    let cert = read_certs(&args.relay_cert)?;
    let _link = device
        .connect_relay(RelayConfig {
            addr: args.relay.clone(),
            alternates: Vec::new(),
            token: TokenSource::File(args.token_file.clone()),
            pinned_cert: Some(cert),
            docs: vec![args.doc],
            reconnect: true,
            max_backoff: Duration::from_secs(10),
        })
        .await?;
    wait_synced(&device, args.doc).await?;
    let id = Id::from_bytes(rand::random());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (author, text) = (args.author.clone(), args.text.clone());
    device
        .change(args.doc, move |am| {
            weft_schema::send_message(am, &NewMessage::text(author, text), id, now_ms)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .await?
        .map_err(anyhow::Error::msg)?;
    // Durable locally; wait until the relay holds it too, then leave.
    wait_synced(&device, args.doc).await?;
    println!("sent");
    device.close().await;
    Ok(())
}

/// Waits until the relay link reports `doc` synced (or refused).
async fn wait_synced(device: &Device, doc: weft_core::DocId) -> anyhow::Result<()> {
    let mut status = device.status();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = status
            .borrow_and_update()
            .links
            .values()
            .find_map(|l| l.docs.get(&doc).map(|d| d.state));
        match state {
            Some(SyncState::Synced) => return Ok(()),
            Some(SyncState::Refused) => bail!("the relay refused the document"),
            _ => {}
        }
        tokio::time::timeout_at(deadline, status.changed())
            .await
            .context("timed out waiting for the relay")??;
    }
}

fn read_certs(
    path: &std::path::Path,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the relay certificate is not PEM")
}
