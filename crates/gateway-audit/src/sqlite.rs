//! The embedded default backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Durability: every commit fsyncs the write-ahead log before `append` is answered, so an
//! acknowledged record survives a process crash and a power loss. Readers never block the
//! writer (WAL). The file holds any number of streams.

use crate::checkpoint::Checkpoint;
use crate::sink::ChainedSink;
use crate::store::{
    AuditStore, IndexedColumns, StoredCheckpoint, StoredRecord, db_error, db_limit, db_sequence,
    decode_checkpoints, decode_records, start_sequence,
};
use async_trait::async_trait;
use gateway_core::audit::{AuditError, AuditRecord};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The SQLite migrations shipped with the crate, in order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "audit",
    include_str!("../migrations/sqlite/0001_audit.sql"),
)];

/// A [`ChainedSink`] over SQLite: the embedded default audit sink.
pub type SqliteAuditSink = ChainedSink<SqliteStore>;

/// Audit chains in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `path` and applies the migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        Self::open_with(
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true),
        )
        .await
    }

    /// Opens a `sqlite://` URL (e.g. `sqlite:///var/lib/gateway/audit.db`).
    pub async fn connect(url: &str) -> Result<Self, AuditError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| AuditError::internal("parsing the SQLite URL", e))?;
        Self::open_with(options).await
    }

    /// Opens an existing database read-only (for verification and export); no migrations run.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let options = SqliteConnectOptions::new().filename(path).read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(|e| db_error("opening the SQLite audit database", e))?;
        Ok(Self { pool })
    }

    /// Opens with explicit options; WAL, `synchronous=FULL` and a busy timeout are always set.
    pub async fn open_with(options: SqliteConnectOptions) -> Result<Self, AuditError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| db_error("opening the SQLite audit database", e))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool (for queries over the indexed columns).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), AuditError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| db_error("migrating the audit database", e))?;
        // IMMEDIATE takes the write lock up front, so concurrent openers migrate one at a time.
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .map_err(|e| db_error("migrating the audit database", e))?;
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS gateway_audit_migrations (
                    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            for (version, name, sql) in MIGRATIONS {
                let done: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM gateway_audit_migrations WHERE version = ?",
                )
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
                if done.is_none() {
                    sqlx::raw_sql(sql).execute(&mut *conn).await?;
                    sqlx::query(
                        "INSERT INTO gateway_audit_migrations (version, name, applied_at)
                         VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
                    )
                    .bind(version)
                    .bind(name)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(end).execute(&mut *conn).await;
        result.map_err(|e| db_error("migrating the audit database", e))?;
        ended.map_err(|e| db_error("migrating the audit database", e))?;
        Ok(())
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn head(&self, stream_id: &str) -> Result<Option<(u64, String)>, AuditError> {
        let row = sqlx::query(
            "SELECT sequence, hash FROM audit_records WHERE stream_id = ?
             ORDER BY sequence DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_error("reading the stream head", e))?;
        row.map(|r| {
            let seq: i64 = r
                .try_get(0)
                .map_err(|e| db_error("reading the stream head", e))?;
            let seq = u64::try_from(seq)
                .map_err(|_| AuditError::internal_msg("negative sequence at the stream head"))?;
            let hash = r
                .try_get(1)
                .map_err(|e| db_error("reading the stream head", e))?;
            Ok((seq, hash))
        })
        .transpose()
    }

    async fn append_batch(
        &self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), AuditError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("starting the audit transaction", e))?;
        for record in records {
            let cols = IndexedColumns::of(record)?;
            sqlx::query(
                "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event,
                    event_time, correlation_id, kind, agent_id, action, resource, outcome)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&record.stream_id)
            .bind(db_sequence(record.sequence)?)
            .bind(&record.prev_hash)
            .bind(&record.hash)
            .bind(cols.event)
            .bind(cols.event_time)
            .bind(cols.correlation_id)
            .bind(cols.kind)
            .bind(cols.agent_id)
            .bind(cols.action)
            .bind(cols.resource)
            .bind(cols.outcome)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("appending audit records", e))?;
        }
        if let Some(cp) = checkpoint {
            sqlx::query(
                "INSERT INTO audit_checkpoints (stream_id, sequence, head_hash, time, key_id, signature)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&cp.stream_id)
            .bind(db_sequence(cp.sequence)?)
            .bind(&cp.head_hash)
            .bind(cp.time_text()?)
            .bind(&cp.key_id)
            .bind(&cp.signature)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("storing an audit checkpoint", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("committing audit records", e))
    }

    async fn read_raw(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError> {
        let Some(start) = start_sequence(after) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT stream_id, sequence, prev_hash, hash, event FROM audit_records
             WHERE stream_id = ? AND sequence >= ? ORDER BY sequence LIMIT ?",
        )
        .bind(stream_id)
        .bind(start)
        .bind(db_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading audit records", e))?;
        decode_records(&rows)
    }

    async fn read_checkpoints(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, AuditError> {
        let Some(start) = start_sequence(after) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT stream_id, sequence, head_hash, time, key_id, signature FROM audit_checkpoints
             WHERE stream_id = ? AND sequence >= ? ORDER BY sequence LIMIT ?",
        )
        .bind(stream_id)
        .bind(start)
        .bind(db_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading audit checkpoints", e))?;
        decode_checkpoints(&rows)
    }

    async fn streams(&self) -> Result<Vec<String>, AuditError> {
        sqlx::query_scalar(
            "SELECT stream_id FROM audit_records UNION SELECT stream_id FROM audit_checkpoints
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("listing audit streams", e))
    }
}
