//! The migrations runner: brings a database's tables to `weft_schema::MIGRATIONS`.

use super::pg::{pg, PgConn};
use super::CheckpointError;

/// Lock key serializing migrations across relays sharing one database.
const MIGRATION_LOCK: i64 = 0x7765_6674_6d69_6772; // "weftmigr"

impl PgConn {
    /// Applies every migration this database lacks, in one transaction, under an advisory lock
    /// so relays starting together don't race.
    pub(crate) async fn migrate(&mut self) -> Result<Vec<u32>, CheckpointError> {
        let tx = self.client.transaction().await.map_err(pg)?;
        tx.execute("select pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let exists: bool = tx
            .query_one(
                "select to_regclass('weft_schema_migrations') is not null",
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        if !exists {
            tx.batch_execute(
                "create table weft_schema_migrations (
                 version integer primary key,
                 name text not null,
                 applied_at timestamptz not null default now())",
            )
            .await
            .map_err(pg)?;
        }
        let done: Vec<i32> = tx
            .query("select version from weft_schema_migrations", &[])
            .await
            .map_err(pg)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let newest_known = weft_schema::MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(newer) = done.iter().find(|v| **v as i64 > newest_known as i64) {
            return Err(CheckpointError::NewerSchema {
                found: *newer as i64,
                known: newest_known,
            });
        }
        let mut applied = Vec::new();
        for m in weft_schema::MIGRATIONS {
            if done.contains(&(m.version as i32)) {
                continue;
            }
            tx.batch_execute(m.sql).await.map_err(pg)?;
            tx.execute(
                "insert into weft_schema_migrations (version, name) values ($1, $2)",
                &[&(m.version as i32), &m.name],
            )
            .await
            .map_err(pg)?;
            applied.push(m.version);
        }
        tx.commit().await.map_err(pg)?;
        Ok(applied)
    }
}
