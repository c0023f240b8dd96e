//! Checkpoints over TLS: a throwaway Postgres with `ssl=on`, a certificate made here by a CA of
//! the test's own, and TCP clients accepted over TLS only, so a relay that connects at all
//! connected encrypted. The checkpointer in process for what each `sslmode` accepts; the real
//! binary for what an operator sees when the CA is wrong.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::pg::{self, PgServer};
use weft_core::automerge::Automerge;
use weft_core::store::docs::{self as docstore, ChunkKind};
use weft_core::store::{GroupCommit, KvStore, RedbStore, WriteBatch};
use weft_core::DocId;
use weft_relay::RelayDocMeta as DocMeta;
use weft_relay::{CheckpointConfig, Checkpointer, DirtyDocs, Metrics};

/// A CA of the test's own and a server certificate it signed.
struct Pki {
    ca_pem: String,
    /// The server's chain, leaf first.
    server_pem: String,
    server_key_pem: String,
}

impl Pki {
    /// A fresh CA called `ca_name` and a certificate for `names` signed by it.
    fn new(ca_name: &str, names: &[&str]) -> Pki {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        Pki {
            ca_pem: ca.pem(),
            server_pem: format!("{}{}", leaf.pem(), ca.pem()),
            server_key_pem: leaf_key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}

/// A relay store holding one document, so the checkpointer starts without waiting for
/// Postgres and has something to write.
fn store_with_a_document(dir: &Path, doc: DocId) -> Arc<GroupCommit> {
    let kv: Arc<dyn KvStore> = Arc::new(
        RedbStore::open_with_tables(
            dir.join("relay.redb"),
            &weft_relay::TABLES,
            Default::default(),
        )
        .unwrap(),
    );
    let group = Arc::new(GroupCommit::new(kv).unwrap());
    let mut meta = DocMeta::default();
    meta.owner = Some("alice".into());
    let mut batch = WriteBatch::new();
    docstore::put_chunk(
        &mut batch,
        doc,
        ChunkKind::Snapshot,
        Automerge::new().save(),
    );
    docstore::put_meta(&mut batch, doc, &meta);
    group.submit(batch).wait().unwrap();
    group
}

/// The error and its sources, `: `-separated.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        text.push_str(&format!(": {e}"));
        next = e.source();
    }
    text
}

/// Checkpoints `doc` through a checkpointer connecting with `url` (and `ca`): the number of
/// documents written, or the error's whole chain.
async fn checkpoint_once(
    url: String,
    ca: Option<PathBuf>,
    group: &Arc<GroupCommit>,
    doc: DocId,
) -> Result<u64, String> {
    let dirty = DirtyDocs::new();
    let mut cfg = CheckpointConfig::new(url, Duration::from_secs(3600));
    cfg.postgres_ca = ca;
    cfg.connect_timeout = Duration::from_secs(10);
    let metrics = Arc::new(Metrics::default());
    let (mut cp, _) = Checkpointer::start(cfg, group.clone(), dirty.clone(), metrics)
        .await
        .map_err(|e| chain(&e))?;
    dirty.mark(doc);
    match cp.round(true).await {
        Ok(stats) => Ok(stats.documents),
        Err(e) => Err(chain(&e)),
    }
}

async fn checkpointed_docs(db: &tokio_postgres::Client) -> i64 {
    let exists: bool = db
        .query_one("select to_regclass('weft_documents') is not null", &[])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return 0;
    }
    db.query_one("select count(*) from weft_documents", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_checks_what_it_promises_and_checkpoints_go_over_tls() {
    // The server's certificate names `localhost` only; it listens on 127.0.0.1.
    let pki = Pki::new("weft test CA", &["localhost"]);
    let Some(server) = PgServer::start_tls(&pki.server_pem, &pki.server_key_pem) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(tmp.path(), "ca.pem");
    let port = server.port;
    let by_name = |mode: &str| {
        format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10 sslmode={mode}")
    };
    let by_address = |mode: &str| {
        format!("postgres://postgres@127.0.0.1:{port}/postgres?connect_timeout=10&sslmode={mode}")
    };
    let doc = DocId::from_bytes([71; 16]);
    let group = store_with_a_document(tmp.path(), doc);
    let db = pg::socket_client(&server).await;

    // verify-full, the name in the URL on the certificate, signed by the operator's CA.
    assert_eq!(
        checkpoint_once(by_name("verify-full"), Some(ca.clone()), &group, doc).await,
        Ok(1)
    );
    assert_eq!(checkpointed_docs(&db).await, 1);

    // verify-full by address: the chain is good but the name is not on the certificate.
    let err = checkpoint_once(by_address("verify-full"), Some(ca.clone()), &group, doc)
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    // verify-ca checks the chain only, so the same connection passes.
    assert_eq!(
        checkpoint_once(by_address("verify-ca"), Some(ca.clone()), &group, doc).await,
        Ok(1)
    );

    // require encrypts without checking the certificate, as libpq does: no CA needed.
    assert_eq!(
        checkpoint_once(by_address("require"), None, &group, doc).await,
        Ok(1)
    );
    // The server only takes TLS over TCP, so plaintext fails, with the server's reason.
    let err = checkpoint_once(by_address("disable"), None, &group, doc)
        .await
        .unwrap_err();
    assert!(err.contains("pg_hba.conf"), "{err}");

    // Another CA's certificates don't vouch for this server.
    let stranger = Pki::new("another CA", &["localhost"]).write_ca(tmp.path(), "stranger.pem");
    let err = checkpoint_once(by_name("verify-full"), Some(stranger), &group, doc)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_relay_given_the_wrong_ca_logs_why_and_writes_nothing() {
    let pki = Pki::new("weft test CA", &["localhost", "127.0.0.1"]);
    let Some(server) = PgServer::start_tls(&pki.server_pem, &pki.server_key_pem) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let wrong_ca = Pki::new("another CA", &["localhost"]).write_ca(tmp.path(), "wrong-ca.pem");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?connect_timeout=10&sslmode=verify-full",
        server.port
    );
    // An empty relay waits for Postgres before it is ready, logging each failed attempt.
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-relay"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--http", "off"])
        .arg("--data-dir")
        .arg(tmp.path().join("relay"))
        .arg("--postgres")
        .arg(&url)
        .arg("--postgres-ca")
        .arg(&wrong_ca)
        .env("RUST_LOG", "info")
        .env_remove("WEFT_POSTGRES_URL")
        .env_remove("WEFT_POSTGRES_CA")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut failures = Vec::new();
    while failures.len() < 2 {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr ended");
        if line.contains("Postgres is unreachable") {
            failures.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    for line in &failures {
        // The whole cause, once: what failed and why the certificate was refused.
        assert!(
            line.contains("Postgres failed: error performing TLS handshake: invalid peer certificate: UnknownIssuer"),
            "{line}"
        );
        assert_eq!(line.matches("UnknownIssuer").count(), 1, "{line}");
    }
    // Each attempt waits longer than the one before.
    assert!(failures[0].contains("retry_in=500ms"), "{}", failures[0]);
    assert!(failures[1].contains("retry_in=1s"), "{}", failures[1]);

    // Nothing reached the database: not even the migrations.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = pg::socket_client(&server).await;
        let migrated: bool = db
            .query_one(
                "select to_regclass('weft_schema_migrations') is not null",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(!migrated);
        assert_eq!(checkpointed_docs(&db).await, 0);
    });
}
