//! The embedded default backend: SQLite in WAL mode with `synchronous=FULL`.
//!
//! Durability: every commit fsyncs the write-ahead log before `append` is answered, so an
//! acknowledged record survives a process crash and a power loss. Readers never block the
//! writer (WAL). The file holds any number of streams.
//!
//! Appends go through one dedicated connection (module `connection`): a batch is a single
//! multi-row `INSERT` (one round trip to SQLite's thread, committed on its own), or, when it
//! needs more than one statement (a checkpoint with it, or more rows than one statement may
//! bind), `BEGIN IMMEDIATE; INSERT …; …; COMMIT` sent as one query: still one round trip and one
//! fsync.
//!
//! Records are read (for verification and export) on connections of their own, through SQLite's
//! C API (`rusqlite`, on the same SQLite library as `sqlx`) rather than `sqlx`, whose per-row
//! copying cost several times SQLite's own work; everything else goes through `sqlx`. Those
//! reads open the database by its name: a file, or the in-memory database of `sqlite::memory:`
//! (other in-memory forms, such as `mode=memory` URLs, cannot be read back).
//!
//! WAL checkpoints are SQLite's own: the committing connection copies the WAL back into the
//! database file once it passes 1000 pages (`wal_autocheckpoint`, the default). Moving them to a
//! background connection (`wal_autocheckpoint=0` plus periodic `PASSIVE` checkpoints) was
//! measured and rejected: on ext4 the background checkpoint's fsync of the database file
//! contends with the commits' WAL fsyncs, and appends got slower at every percentile (one
//! writer: mean 190-236 µs → 296-383 µs, p99.9 0.8-1.0 ms → 1.1-2.0 ms; 64 writers:
//! 63-69k → 49-60k records/s). Checkpointing less often (`wal_autocheckpoint=10000`) was
//! measured too and rejected: the whole gateway at 64 agents did 5-10 % more actions/s, but its
//! p99 went from 10 ms to 30 ms, the commit that runs a checkpoint copying ten times as much
//! (`benches/gateway.rs`, same run, alternating settings). Nor did larger pages pay (8 and
//! 16 KiB: no more actions/s, and every commit writes its partly filled pages whole).

use crate::checkpoint::Checkpoint;
use crate::connection::WriteConnection;
use crate::copies::IndexedColumns;
use crate::sink::ChainedSink;
use crate::sql::{
    db_error, db_limit, db_sequence, decode_checkpoints, read_windows, start_sequence,
};
use crate::sqlite_rows::{self, RowReader};
use crate::store::{AuditStore, RecordPage, SealedRecord, StoredCheckpoint, StoredRecord};
use async_trait::async_trait;
use gateway_core::audit::AuditError;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Arguments, Row};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The SQLite migrations shipped with the crate, in order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "audit",
        include_str!("../migrations/sqlite/0001_audit.sql"),
    ),
    (
        2,
        "time_agent_index",
        include_str!("../migrations/sqlite/0002_time_agent_index.sql"),
    ),
    (
        3,
        "fixed_width_event_time",
        include_str!("../migrations/sqlite/0003_fixed_width_event_time.sql"),
    ),
];

/// A [`ChainedSink`] over SQLite: the embedded default audit sink.
pub type SqliteAuditSink = ChainedSink<SqliteStore>;

/// The columns of `audit_records` an append binds, per row.
const RECORD_COLUMNS: usize = 12;

/// The most rows one `INSERT` binds: SQLite (as bundled by `sqlx`) takes at most 32766 bound
/// parameters per statement.
const ROWS_PER_INSERT: usize = 32_766 / RECORD_COLUMNS;

/// How long a connection waits for a lock held by another (see SQLite's `busy_timeout`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Audit chains in a SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and migrations).
    pool: SqlitePool,
    /// Appends; `None` when opened read-only.
    writer: Option<Arc<WriteConnection<SqliteConnection>>>,
    /// Record reads (module `sqlite_rows`).
    rows: Arc<RowReader>,
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

    /// Opens an existing database read-only (for verification and export); no migrations run
    /// and appends fail.
    pub async fn open_read_only(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options.clone())
            .await
            .map_err(|e| db_error("opening the SQLite audit database", e))?;
        Ok(Self {
            pool,
            writer: None,
            rows: RowReader::new(options.get_filename(), BUSY_TIMEOUT),
        })
    }

    /// Opens with explicit options and applies the migrations; WAL, `synchronous=FULL` and a
    /// busy timeout are always set.
    pub async fn open_with(options: SqliteConnectOptions) -> Result<Self, AuditError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone())
            .await
            .map_err(|e| db_error("opening the SQLite audit database", e))?;
        let store = Self {
            pool,
            rows: RowReader::new(options.get_filename(), BUSY_TIMEOUT),
            writer: Some(Arc::new(WriteConnection::new(options))),
        };
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
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), AuditError> {
        let Some(writer) = &self.writer else {
            return Err(AuditError::invalid_input(
                "the SQLite audit store was opened read-only",
            ));
        };
        let Some(batch) = Batch::new(records, checkpoint)? else {
            return Ok(());
        };
        let mut lease = writer
            .lease()
            .await
            .map_err(|e| db_error("connecting for audit appends", e))?;
        let conn: &mut SqliteConnection = lease.conn();
        let result = sqlx::query_with(batch.sql.as_str(), batch.arguments)
            .execute(&mut *conn)
            .await;
        let Err(e) = result else {
            lease.keep();
            return Ok(());
        };
        // A failed statement inside `BEGIN … COMMIT` leaves the transaction open: roll it back
        // before the connection is used again (a lone statement rolls itself back). Anything
        // but a database error leaves the connection in doubt: drop it.
        let mut clean = matches!(e, sqlx::Error::Database(_));
        if clean && batch.transaction {
            clean = sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok();
        }
        if clean {
            lease.keep();
        }
        Err(db_error("appending audit records", e))
    }

    async fn read_raw(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError> {
        Ok(self
            .read_page(stream_id, after, limit, false)
            .await?
            .to_records())
    }

    async fn read_page(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
        copies: bool,
    ) -> Result<RecordPage, AuditError> {
        let pool = &self.pool;
        let window = |first: i64, last: i64| self.rows.window(stream_id, first, last, copies);
        let next = |from: i64| async move {
            sqlx::query_scalar(sqlite_rows::QUERIES.next.as_str())
                .bind(stream_id)
                .bind(from)
                .fetch_one(pool)
                .await
                .map_err(|e| db_error("reading audit records", e))
        };
        read_windows(stream_id, after, limit, window, next).await
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

    async fn latest_checkpoint(
        &self,
        stream_id: &str,
    ) -> Result<Option<StoredCheckpoint>, AuditError> {
        let rows = sqlx::query(
            "SELECT stream_id, sequence, head_hash, time, key_id, signature FROM audit_checkpoints
             WHERE stream_id = ? ORDER BY sequence DESC LIMIT 1",
        )
        .bind(stream_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_error("reading the newest audit checkpoint", e))?;
        Ok(decode_checkpoints(&rows)?.pop())
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

/// One batch as one query. The arguments own their values: `sqlx` copies borrowed ones anyway
/// before handing them to SQLite's thread.
struct Batch {
    sql: String,
    arguments: SqliteArguments<'static>,
    /// Whether `sql` is an explicit `BEGIN … COMMIT` (which a failure leaves open).
    transaction: bool,
}

impl Batch {
    /// One multi-row `INSERT` when that is all it takes, else the statements wrapped in
    /// `BEGIN IMMEDIATE; …; COMMIT`: one query either way (one round trip, one commit). `None`
    /// when there is nothing to store.
    fn new(
        records: &[SealedRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Option<Self>, AuditError> {
        let statements = records.chunks(ROWS_PER_INSERT).len() + usize::from(checkpoint.is_some());
        if statements == 0 {
            return Ok(None);
        }
        let transaction = statements > 1;
        let mut sql = String::new();
        let mut arguments = SqliteArguments::default();
        if transaction {
            sql.push_str("BEGIN IMMEDIATE;\n");
        }
        for chunk in records.chunks(ROWS_PER_INSERT) {
            sql.push_str(
                "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event, \
                 event_time, correlation_id, kind, agent_id, action, resource, outcome) VALUES ",
            );
            for (i, sealed) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?)");
                bind_record(&mut arguments, sealed)?;
            }
            sql.push_str(";\n");
        }
        if let Some(cp) = checkpoint {
            sql.push_str(
                "INSERT INTO audit_checkpoints \
                 (stream_id, sequence, head_hash, time, key_id, signature) \
                 VALUES (?,?,?,?,?,?);\n",
            );
            bind(&mut arguments, cp.stream_id.clone())?;
            bind(&mut arguments, db_sequence(cp.sequence)?)?;
            bind(&mut arguments, cp.head_hash.clone())?;
            bind(&mut arguments, cp.time_text()?)?;
            bind(&mut arguments, cp.key_id.clone())?;
            bind(&mut arguments, cp.signature.clone())?;
        }
        if transaction {
            sql.push_str("COMMIT;");
        }
        Ok(Some(Self {
            sql,
            arguments,
            transaction,
        }))
    }
}

/// Binds one `audit_records` row: the chain columns, the body as `event`, the query copies.
fn bind_record(
    arguments: &mut SqliteArguments<'static>,
    sealed: &SealedRecord,
) -> Result<(), AuditError> {
    let record = &sealed.record;
    let cols = IndexedColumns::of(&record.event);
    bind(arguments, record.stream_id.clone())?;
    bind(arguments, db_sequence(record.sequence)?)?;
    bind(arguments, record.prev_hash.clone())?;
    bind(arguments, record.hash.clone())?;
    bind(arguments, sealed.body.clone())?;
    bind(arguments, cols.event_time)?;
    bind(arguments, cols.correlation_id)?;
    bind(arguments, cols.kind)?;
    bind(arguments, cols.agent_id)?;
    bind(arguments, cols.action)?;
    bind(arguments, cols.resource)?;
    bind(arguments, cols.outcome)
}

fn bind<T>(arguments: &mut SqliteArguments<'static>, value: T) -> Result<(), AuditError>
where
    T: 'static + sqlx::Encode<'static, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    arguments
        .add(value)
        .map_err(|e| AuditError::internal("binding an audit record", e))
}
