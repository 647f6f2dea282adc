//! The scale-out backend: PostgreSQL.
//!
//! Durability follows the server's `synchronous_commit` (the default, `on`, flushes the WAL
//! before a commit returns). A batch is one statement, so one round trip and one implicit
//! transaction: `INSERT … SELECT FROM UNNEST(…)` (one array per column, any number of rows),
//! and with a checkpoint `WITH records AS (INSERT …) INSERT INTO audit_checkpoints …` (a
//! data-modifying `WITH` runs exactly once, in the same statement). Appends go through one
//! dedicated connection (module `connection`), not the pool, whose health-check pings would
//! add two round trips per batch.
//!
//! ## Least privilege
//!
//! The migrations create the tables and triggers that reject `UPDATE`, `DELETE` and `TRUNCATE`
//! (even for the owner). Run the migrations once as the schema owner, then run the gateway as a
//! role that holds only `SELECT` and `INSERT` ([`writer_role_grants`]):
//!
//! ```sql
//! CREATE ROLE gateway_audit LOGIN PASSWORD '…';
//! GRANT USAGE ON SCHEMA public TO gateway_audit;
//! GRANT SELECT, INSERT ON audit_records, audit_checkpoints TO gateway_audit;
//! GRANT SELECT ON gateway_audit_migrations TO gateway_audit;
//! ```
//!
//! A superuser can still disable triggers (`session_replication_role = replica`); that is what
//! the hash chain and the signed checkpoints are for.

use crate::checkpoint::Checkpoint;
use crate::connection::WriteConnection;
use crate::copies::{IndexedColumns, write_query_time};
use crate::page::Copies;
use crate::sink::ChainedSink;
use crate::sql::{
    RecordQueries, db_error, db_limit, db_sequence, decode_checkpoints, read_windows,
    start_sequence,
};
use crate::store::{
    AuditStore, RecordPage, RecordRef, SealedRecord, StoredCheckpoint, StoredRecord,
};
use async_trait::async_trait;
use gateway_core::audit::AuditError;
use sqlx::Row;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::query::Query;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The PostgreSQL migrations shipped with the crate, in order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "audit",
    include_str!("../migrations/postgres/0001_audit.sql"),
)];

/// Serialises concurrent migrations (a transaction-scoped advisory lock with this key).
const MIGRATION_LOCK: i64 = 0x6761_7465_6175_6469; // "gateaudi"

/// The Postgres store's record queries.
static QUERIES: std::sync::LazyLock<RecordQueries> =
    std::sync::LazyLock::new(|| RecordQueries::new(|n| format!("${n}")));

/// A [`ChainedSink`] over PostgreSQL.
pub type PostgresAuditSink = ChainedSink<PostgresStore>;

/// The statements that give `role` exactly what the gateway needs in `schema`: `SELECT` and
/// `INSERT` on the audit tables, `SELECT` on the migrations table, nothing else. Run them as the
/// owner with `schema` on the search path.
pub fn writer_role_grants(schema: &str, role: &str) -> Vec<String> {
    let role = quote_ident(role);
    vec![
        format!("GRANT USAGE ON SCHEMA {} TO {role}", quote_ident(schema)),
        format!(
            "REVOKE ALL ON audit_records, audit_checkpoints, gateway_audit_migrations FROM {role}"
        ),
        format!("GRANT SELECT, INSERT ON audit_records, audit_checkpoints TO {role}"),
        format!("GRANT SELECT ON gateway_audit_migrations TO {role}"),
    ]
}

/// Quotes an SQL identifier.
fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Audit chains in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    /// Reads, migrations, grants.
    pool: PgPool,
    /// Appends.
    writer: Arc<WriteConnection<PgConnection>>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host/db`, Unix sockets via `?host=/dir`) with a pool
    /// of 8 connections and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, AuditError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| AuditError::internal("parsing the PostgreSQL URL", e))?;
        Self::connect_with(options, 8).await
    }

    /// Connects with explicit options and pool size (for reads; appends use one more
    /// connection of their own) and applies the migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, AuditError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| db_error("connecting to the PostgreSQL audit database", e))?;
        let store = Self {
            pool,
            writer: Arc::new(WriteConnection::new(options)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The connection pool (for queries over the indexed columns).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies [`writer_role_grants`] for `role` in the current schema (needs the owner).
    pub async fn grant_writer_role(&self, role: &str) -> Result<(), AuditError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_error("granting the audit writer role", e))?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("granting the audit writer role", e))?;
        for statement in writer_role_grants(&schema, role) {
            sqlx::raw_sql(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("granting the audit writer role", e))?;
        }
        tx.commit()
            .await
            .map_err(|e| db_error("granting the audit writer role", e))
    }

    async fn migrate(&self) -> Result<(), AuditError> {
        let run = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            // Checking first lets a role without CREATE start once the schema is in place.
            let exists: Option<String> =
                sqlx::query_scalar("SELECT to_regclass('gateway_audit_migrations')::text")
                    .fetch_one(&mut *tx)
                    .await?;
            if exists.is_none() {
                sqlx::raw_sql(
                    "CREATE TABLE gateway_audit_migrations (
                        version BIGINT PRIMARY KEY, name TEXT NOT NULL,
                        applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                )
                .execute(&mut *tx)
                .await?;
            }
            for (version, name, sql) in MIGRATIONS {
                let done: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM gateway_audit_migrations WHERE version = $1",
                )
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
                if done.is_none() {
                    sqlx::raw_sql(sql).execute(&mut *tx).await?;
                    sqlx::query(
                        "INSERT INTO gateway_audit_migrations (version, name) VALUES ($1, $2)",
                    )
                    .bind(version)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await
        };
        run.await
            .map_err(|e| db_error("migrating the PostgreSQL audit database", e))
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn head(&self, stream_id: &str) -> Result<Option<(u64, String)>, AuditError> {
        let row = sqlx::query(
            "SELECT sequence, hash FROM audit_records WHERE stream_id = $1
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
        let Some(query) = batch_query(records, checkpoint)? else {
            return Ok(());
        };
        let mut lease = self
            .writer
            .lease()
            .await
            .map_err(|e| db_error("connecting for audit appends", e))?;
        match query.execute(&mut *lease.conn()).await {
            Ok(_) => {
                lease.keep();
                Ok(())
            }
            Err(e) => {
                // A failed statement rolls its implicit transaction back and leaves the
                // connection usable; anything but a database error leaves it in doubt: drop it.
                if matches!(e, sqlx::Error::Database(_)) {
                    lease.keep();
                }
                Err(db_error("appending audit records", e))
            }
        }
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
        // A row per record, copied onto the page. Measured against it on a 2-core machine
        // running the server too (verify, 50k records, as a share of the in-memory baseline of
        // the same run): reading a window as one row of aggregates (each column concatenated
        // with `string_agg`) 0.42 for a whole window and 0.47 per group of 64 records, against 0.53
        // for rows (it saves the client's per-row work but costs the server more: an aggregate
        // per column, integer-to-text casts, and multi-megabyte buffers faulted in); a binary
        // `COPY` parsed by hand 0.57, against 0.58: no gain for a query built as text.
        let pool = &self.pool;
        let query = QUERIES.window(copies);
        let window = |first: i64, last: i64| async move {
            let rows = sqlx::query(query)
                .bind(stream_id)
                .bind(first)
                .bind(last)
                .fetch_all(pool)
                .await
                .map_err(|e| db_error("reading audit records", e))?;
            decode_records(stream_id, &rows, copies)
        };
        let next = |from: i64| async move {
            sqlx::query_scalar(QUERIES.next.as_str())
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
             WHERE stream_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT $3",
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
             WHERE stream_id = $1 ORDER BY sequence DESC LIMIT 1",
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

/// Inserts one row per element of the twelve column arrays `$1`‥`$12`.
macro_rules! insert_records {
    () => {
        "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event, event_time, \
         correlation_id, kind, agent_id, action, resource, outcome) \
         SELECT s, q, p, h, e, t::timestamptz, c, k, a, ac, r, o \
         FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[]) \
              AS u(s, q, p, h, e, t, c, k, a, ac, r, o)"
    };
}

type PgQuery<'q> = Query<'q, sqlx::Postgres, PgArguments>;

/// The one statement that stores a batch: the records, the checkpoint, or both through a
/// data-modifying `WITH`. `None` when there is nothing to store.
fn batch_query<'q>(
    records: &'q [SealedRecord],
    checkpoint: Option<&'q Checkpoint>,
) -> Result<Option<PgQuery<'q>>, AuditError> {
    let query = match (records.is_empty(), checkpoint) {
        (true, None) => return Ok(None),
        (true, Some(cp)) => {
            let insert = sqlx::query(
                "INSERT INTO audit_checkpoints \
                 (stream_id, sequence, head_hash, time, key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            );
            return bind_checkpoint(insert, cp).map(Some);
        }
        (false, None) => bind_records(sqlx::query(insert_records!()), records)?,
        (false, Some(cp)) => {
            let insert = sqlx::query(concat!(
                "WITH records AS (",
                insert_records!(),
                ") INSERT INTO audit_checkpoints \
                 (stream_id, sequence, head_hash, time, key_id, signature) \
                 VALUES ($13, $14, $15, $16, $17, $18)"
            ));
            bind_checkpoint(bind_records(insert, records)?, cp)?
        }
    };
    Ok(Some(query))
}

/// Binds the records as the twelve column arrays of [`insert_records!`]: the chain columns, the
/// body as `event`, the query copies.
fn bind_records<'q>(
    query: PgQuery<'q>,
    records: &'q [SealedRecord],
) -> Result<PgQuery<'q>, AuditError> {
    let n = records.len();
    let mut stream_ids = Vec::with_capacity(n);
    let mut sequences = Vec::with_capacity(n);
    let mut prev_hashes = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut bodies = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut correlations = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut agents = Vec::with_capacity(n);
    let mut actions = Vec::with_capacity(n);
    let mut resources = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    for sealed in records {
        let record = &sealed.record;
        let cols = IndexedColumns::of(&record.event);
        stream_ids.push(record.stream_id.as_str());
        sequences.push(db_sequence(record.sequence)?);
        prev_hashes.push(record.prev_hash.as_str());
        hashes.push(record.hash.as_str());
        bodies.push(sealed.body.as_str());
        times.push(cols.event_time);
        correlations.push(cols.correlation_id);
        kinds.push(cols.kind);
        agents.push(cols.agent_id);
        actions.push(cols.action);
        resources.push(cols.resource);
        outcomes.push(cols.outcome);
    }
    Ok(query
        .bind(stream_ids)
        .bind(sequences)
        .bind(prev_hashes)
        .bind(hashes)
        .bind(bodies)
        .bind(times)
        .bind(correlations)
        .bind(kinds)
        .bind(agents)
        .bind(actions)
        .bind(resources)
        .bind(outcomes))
}

/// Binds the checkpoint's six columns as the next parameters.
fn bind_checkpoint<'q>(query: PgQuery<'q>, cp: &'q Checkpoint) -> Result<PgQuery<'q>, AuditError> {
    Ok(query
        .bind(&cp.stream_id)
        .bind(db_sequence(cp.sequence)?)
        .bind(&cp.head_hash)
        .bind(cp.time_text()?)
        .bind(&cp.key_id)
        .bind(&cp.signature))
}

/// Decodes rows of `SELECT sequence, prev_hash, hash, event` of `stream_id` onto a page (the
/// values are borrowed from the rows and copied once, into the page).
/// Rows of `SELECT sequence, prev_hash, hash, event` and, with `copies_read`, the seven query
/// columns, as a page.
fn decode_records(
    stream_id: &str,
    rows: &[sqlx::postgres::PgRow],
    copies_read: bool,
) -> Result<RecordPage, AuditError> {
    let mut page = RecordPage::new(stream_id);
    let mut time_text = String::new();
    for (i, r) in rows.iter().enumerate() {
        // The query columns for verification (module `copies`); `event_time` as the
        // fixed-width UTC text the writers store on SQLite. (NULL only in a rebuilt table: it
        // then fails the check.)
        let copies = if copies_read {
            let time: Option<time::OffsetDateTime> = r.try_get(4).map_err(decoding)?;
            time_text.clear();
            if let Some(time) = time {
                write_query_time(&mut time_text, time);
            }
            let mut values: Copies<'_> = [None; 7];
            values[0] = time.map(|_| time_text.as_str());
            for (k, value) in values.iter_mut().enumerate().skip(1) {
                *value = r.try_get(4 + k).map_err(decoding)?;
            }
            Some(values)
        } else {
            None
        };
        let record = RecordRef {
            stream_id,
            sequence: r.try_get(0).map_err(decoding)?,
            prev_hash: r.try_get(1).map_err(decoding)?,
            hash: r.try_get(2).map_err(decoding)?,
            event: r.try_get(3).map_err(decoding)?,
            copies,
        };
        if i == 0 {
            // Records of a stream are of similar size: size the page from the first one (with
            // some slack) rather than regrow (and copy) it several times.
            let copied: usize = copies.iter().flatten().flatten().map(|v| v.len()).sum();
            let bytes = record.prev_hash.len() + record.hash.len() + record.event.len() + copied;
            let estimate = bytes.saturating_mul(rows.len()).saturating_mul(9) / 8;
            page = RecordPage::with_capacity(stream_id, rows.len(), estimate);
        }
        page.push(record);
    }
    Ok(page)
}

fn decoding(e: sqlx::Error) -> AuditError {
    db_error("decoding audit records", e)
}
