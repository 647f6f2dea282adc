//! The scale-out backend: PostgreSQL.
//!
//! Durability follows the server's `synchronous_commit` (the default, `on`, flushes the WAL
//! before a commit returns). A batch is one `INSERT … SELECT FROM UNNEST(…)` in one transaction.
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
use crate::sink::ChainedSink;
use crate::store::{
    AuditStore, IndexedColumns, StoredCheckpoint, StoredRecord, db_error, db_limit, db_sequence,
    decode_checkpoints, decode_records, start_sequence,
};
use async_trait::async_trait;
use gateway_core::audit::{AuditError, AuditRecord};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The PostgreSQL migrations shipped with the crate, in order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "audit",
    include_str!("../migrations/postgres/0001_audit.sql"),
)];

/// Serialises concurrent migrations (a transaction-scoped advisory lock with this key).
const MIGRATION_LOCK: i64 = 0x6761_7465_6175_6469; // "gateaudi"

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
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host/db`, Unix sockets via `?host=/dir`) with a pool
    /// of 8 connections and applies the migrations.
    pub async fn connect(url: &str) -> Result<Self, AuditError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| AuditError::internal("parsing the PostgreSQL URL", e))?;
        Self::connect_with(options, 8).await
    }

    /// Connects with explicit options and pool size and applies the migrations.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, AuditError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(2))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|e| db_error("connecting to the PostgreSQL audit database", e))?;
        let store = Self { pool };
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
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), AuditError> {
        let n = records.len();
        let mut stream_ids = Vec::with_capacity(n);
        let mut sequences = Vec::with_capacity(n);
        let mut prev_hashes = Vec::with_capacity(n);
        let mut hashes = Vec::with_capacity(n);
        let mut events = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        let mut correlations = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut agents = Vec::with_capacity(n);
        let mut actions = Vec::with_capacity(n);
        let mut resources = Vec::with_capacity(n);
        let mut outcomes = Vec::with_capacity(n);
        for record in records {
            let cols = IndexedColumns::of(record)?;
            stream_ids.push(record.stream_id.clone());
            sequences.push(db_sequence(record.sequence)?);
            prev_hashes.push(record.prev_hash.clone());
            hashes.push(record.hash.clone());
            events.push(cols.event);
            times.push(cols.event_time);
            correlations.push(cols.correlation_id);
            kinds.push(cols.kind);
            agents.push(cols.agent_id);
            actions.push(cols.action);
            resources.push(cols.resource);
            outcomes.push(cols.outcome);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| db_error("starting the audit transaction", e))?;
        if n > 0 {
            sqlx::query(
                "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event,
                    event_time, correlation_id, kind, agent_id, action, resource, outcome)
                 SELECT s, q, p, h, e, t::timestamptz, c, k, a, ac, r, o
                 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[],
                             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                             $11::text[], $12::text[])
                      AS u(s, q, p, h, e, t, c, k, a, ac, r, o)",
            )
            .bind(stream_ids)
            .bind(sequences)
            .bind(prev_hashes)
            .bind(hashes)
            .bind(events)
            .bind(times)
            .bind(correlations)
            .bind(kinds)
            .bind(agents)
            .bind(actions)
            .bind(resources)
            .bind(outcomes)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("appending audit records", e))?;
        }
        if let Some(cp) = checkpoint {
            sqlx::query(
                "INSERT INTO audit_checkpoints (stream_id, sequence, head_hash, time, key_id, signature)
                 VALUES ($1, $2, $3, $4, $5, $6)",
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
             WHERE stream_id = $1 AND sequence >= $2 ORDER BY sequence LIMIT $3",
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
