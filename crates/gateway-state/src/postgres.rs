//! [`PostgresStateStore`]: action state in a PostgreSQL database, shared by every gateway
//! replica that connects to it.
//!
//! Atomicity:
//!
//! - [`claim`](StateStore::claim) is one statement, `INSERT … ON CONFLICT (agent, id) DO UPDATE
//!   … WHERE <the stored record expired by the new claim time> RETURNING 1`. PostgreSQL
//!   guarantees such an upsert an atomic outcome: of concurrent claims of one key exactly one
//!   inserts (or replaces an expired record), the others wait for it and then find a row that
//!   does not satisfy the `WHERE`, so no row comes back to them. They then read the stored
//!   record for [`Claim::Existing`]; should it have been pruned in between, the claim runs
//!   again.
//! - [`update`](StateStore::update) is a transaction at `READ COMMITTED` (whatever the
//!   database's default) that reads the row `FOR UPDATE`, applies the change and writes it back:
//!   the row lock serialises concurrent updates of one record on every replica, and each sees
//!   the previous one's result.
//! - Serialisation failures and deadlocks (possible when the database's default isolation is
//!   stricter) rerun the operation, a bounded number of times.
//!
//! The schema is created if missing, under a transaction-scoped advisory lock, so replicas
//! starting at once create it once; a role without `CREATE` starts once it exists.

use crate::row::{
    Backend, Failure, Row, TABLE, connection_failure, db_limit, decode, decode_listed,
    saturating_unix_nanos, undecodable,
};
use async_trait::async_trait;
use gateway_core::AgentId;
use gateway_core::state::{
    ActionKey, ActionRecord, AgentLock, Change, Claim, ConcurrencySlots, LockList, LockTarget,
    Phase, RevocationList, StateError, StateStore, apply_change,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row as _, Transaction};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

/// Serialises concurrent schema creation (a transaction-scoped advisory lock with this key).
const MIGRATION_LOCK: i64 = 0x6761_7465_7374_6174; // "gatestat"

/// How long an operation waits for a pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Rows one prune statement deletes (each batch its own short transaction).
const PRUNE_BATCH: i64 = 1000;

/// How many times a claim that lost the race reads the winner's record, should the record be
/// pruned between the claim and the read.
const CLAIM_ROUNDS: u32 = 4;

/// The schema. `agent` sorts bytewise (`COLLATE "C"`), as agent ids compare in Rust; `id` is a
/// UUID, which sorts as its bytes, as request ids compare in Rust.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS gateway_action_state (
    agent TEXT COLLATE "C" NOT NULL,
    id UUID NOT NULL,
    phase TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    record TEXT NOT NULL,
    PRIMARY KEY (agent, id)
);
CREATE INDEX IF NOT EXISTS gateway_action_state_phase
    ON gateway_action_state (phase, created_at, agent, id);
CREATE INDEX IF NOT EXISTS gateway_action_state_expires
    ON gateway_action_state (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS gateway_revoked_grants (
    grant_id TEXT COLLATE "C" PRIMARY KEY,
    not_after BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_revoked_grants_not_after
    ON gateway_revoked_grants (not_after);
CREATE TABLE IF NOT EXISTS gateway_agent_slots (
    agent TEXT COLLATE "C" NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (agent, slot)
);
CREATE TABLE IF NOT EXISTS gateway_agent_locks (
    target TEXT COLLATE "C" PRIMARY KEY,
    record TEXT NOT NULL
);
"#;

/// The SQLSTATE of a PostgreSQL error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

const BACKEND: Backend = Backend {
    attempts: 8,
    window: Duration::from_secs(10),
    // serialization_failure, deadlock_detected
    retryable: |e| matches!(sqlstate(e).as_deref(), Some("40001" | "40P01")),
    unavailable: |e| {
        connection_failure(e)
            || sqlstate(e).is_some_and(|code| {
                // connection exception, insufficient resources, operator intervention, system
                // error; contention that outlasted the retries; a read-only server
                ["08", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || ["40001", "40P01", "25006", "55P03"].contains(&code.as_str())
            })
    },
    hint: |e| match sqlstate(e).as_deref() {
        Some("42P01") => Some(
            "the state table is missing: connect with PostgresStateStore::connect, or call \
             migrate() once after from_pool",
        ),
        Some("42501") => Some(
            "the gateway's role needs SELECT, INSERT, UPDATE and DELETE on gateway_action_state \
             (and CREATE on the schema until the table exists)",
        ),
        Some("25006") => Some("the server is read-only (a standby?): connect to the primary"),
        Some(code) if code.starts_with("53") => {
            Some("the PostgreSQL server is out of a resource (disk, memory, connections)")
        }
        _ if matches!(e, sqlx::Error::PoolTimedOut) => Some(
            "no database connection came free in time: check that PostgreSQL is reachable, or \
             raise the pool size",
        ),
        _ if connection_failure(e) => Some("check that PostgreSQL is reachable"),
        _ => None,
    },
};

/// Action state in PostgreSQL: for replicas sharing one database.
#[derive(Debug, Clone)]
pub struct PostgresStateStore {
    pool: PgPool,
}

impl PostgresStateStore {
    /// Connects to `url` (`postgres://user@host/db`; a schema via
    /// `?options=-c%20search_path%3Dname`) with a pool of 8 connections and creates the schema
    /// if missing.
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        // The error would quote the URL, password included: say only what is wrong with it.
        let options = PgConnectOptions::from_str(url).map_err(|_| {
            StateError::invalid_input(
                "the PostgreSQL state store URL is not valid (expected postgres://user@host/db)",
            )
        })?;
        Self::connect_with(options, 8).await
    }

    /// Connects with explicit options and pool size and creates the schema if missing.
    pub async fn connect_with(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, StateError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                BACKEND.error(
                    "cannot connect to the PostgreSQL state database".to_owned(),
                    e,
                )
            })?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on an open pool. No I/O: call [`migrate`](Self::migrate) unless the table is
    /// known to exist.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Creates the table and its indexes in the current schema if missing. Idempotent; safe
    /// when several replicas start at once (a transaction-scoped advisory lock serialises
    /// them); needs `CREATE` on the schema only while the table does not exist.
    pub async fn migrate(&self) -> Result<(), StateError> {
        BACKEND
            .run(
                || format!("cannot create the {TABLE} table"),
                || async {
                    let mut tx = self.pool.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(MIGRATION_LOCK)
                        .execute(&mut *tx)
                        .await?;
                    // Checking first lets a role without CREATE start once the tables are
                    // there.
                    let exists: bool = sqlx::query_scalar(
                        "SELECT to_regclass('gateway_action_state') IS NOT NULL
                            AND to_regclass('gateway_revoked_grants') IS NOT NULL
                            AND to_regclass('gateway_agent_locks') IS NOT NULL
                            AND to_regclass('gateway_agent_slots') IS NOT NULL",
                    )
                    .fetch_one(&mut *tx)
                    .await?;
                    if !exists {
                        sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                },
            )
            .await
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The stored record of `key` (`id` its text), decoded.
    async fn read<'e, E>(
        executor: E,
        key: &ActionKey,
        id: &str,
        lock: bool,
    ) -> Result<Option<ActionRecord>, Failure>
    where
        E: sqlx::Executor<'e, Database = Postgres>,
    {
        let sql = if lock {
            "SELECT record FROM gateway_action_state WHERE agent = $1 AND id = $2::uuid FOR UPDATE"
        } else {
            "SELECT record FROM gateway_action_state WHERE agent = $1 AND id = $2::uuid"
        };
        let row = sqlx::query(sql)
            .bind(key.agent.as_str())
            .bind(id)
            .fetch_optional(executor)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let json: String = row.try_get(0).map_err(|e| undecodable(key, e))?;
        Ok(Some(decode(key.agent.as_str(), id, &json)?))
    }
}

/// Ends a transaction that wrote nothing (a failed rollback is sent again before the
/// connection's next use).
async fn end_read_only(tx: Transaction<'static, Postgres>) {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "state store: rolling back a read-only transaction failed");
    }
}

#[async_trait]
impl StateStore for PostgresStateStore {
    async fn claim(&self, record: &ActionRecord) -> Result<Claim, StateError> {
        let row = Row::of(record)?;
        let key = &record.key;
        BACKEND
            .run(
                || format!("cannot claim action {key}"),
                || async {
                    for _ in 0..CLAIM_ROUNDS {
                        let stored = sqlx::query(
                            "INSERT INTO gateway_action_state AS s
                                 (agent, id, phase, created_at, expires_at, record)
                             VALUES ($1, $2::uuid, $3, $4, $5, $6)
                             ON CONFLICT (agent, id) DO UPDATE SET
                                 phase = EXCLUDED.phase, created_at = EXCLUDED.created_at,
                                 expires_at = EXCLUDED.expires_at, record = EXCLUDED.record
                             WHERE s.expires_at IS NOT NULL AND s.expires_at <= EXCLUDED.created_at
                             RETURNING 1",
                        )
                        .bind(&row.agent)
                        .bind(&row.id)
                        .bind(row.phase)
                        .bind(row.created_at)
                        .bind(row.expires_at)
                        .bind(&row.record)
                        .fetch_optional(&self.pool)
                        .await?;
                        if stored.is_some() {
                            return Ok(Claim::Claimed);
                        }
                        // A live record holds the key. It can only have gone since if it
                        // finished and was pruned: then the key is free, and the claim runs
                        // again.
                        if let Some(existing) = Self::read(&self.pool, key, &row.id, false).await? {
                            return Ok(Claim::Existing(Box::new(existing)));
                        }
                    }
                    Err(StateError::unavailable_msg(format!(
                        "claiming action {key}: the record holding the key kept being pruned \
                         between the claim and its read ({CLAIM_ROUNDS} rounds); retry"
                    ))
                    .into())
                },
            )
            .await
    }

    async fn get(&self, key: &ActionKey) -> Result<Option<ActionRecord>, StateError> {
        let id = key.id.to_string();
        BACKEND
            .run(
                || format!("cannot read action {key}"),
                || Self::read(&self.pool, key, &id, false),
            )
            .await
    }

    async fn update(&self, key: &ActionKey, change: &Change) -> Result<ActionRecord, StateError> {
        let id = key.id.to_string();
        BACKEND
            .run(
                || format!("cannot update action {key}"),
                || async {
                    // The row lock does the serialising; READ COMMITTED lets the waiter read
                    // the committed result instead of failing to serialise.
                    let mut tx = self
                        .pool
                        .begin_with("BEGIN ISOLATION LEVEL READ COMMITTED")
                        .await?;
                    // Read, change and encode under the lock; anything refused writes nothing.
                    let prepared = async {
                        let current =
                            Self::read(&mut *tx, key, &id, true).await?.ok_or_else(|| {
                                StateError::NotFound {
                                    message: format!("no action {key}"),
                                }
                            })?;
                        let changed = apply_change(&current, change)?;
                        let row = Row::of(&changed)?;
                        Ok::<_, Failure>((changed, row))
                    }
                    .await;
                    let (changed, row) = match prepared {
                        Ok(prepared) => prepared,
                        Err(e) => {
                            end_read_only(tx).await;
                            return Err(e);
                        }
                    };
                    sqlx::query(
                        "UPDATE gateway_action_state SET phase = $3, expires_at = $4, record = $5
                         WHERE agent = $1 AND id = $2::uuid",
                    )
                    .bind(key.agent.as_str())
                    .bind(&id)
                    .bind(row.phase)
                    .bind(row.expires_at)
                    .bind(&row.record)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(changed)
                },
            )
            .await
    }

    async fn in_phase(&self, phase: Phase, limit: usize) -> Result<Vec<ActionRecord>, StateError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        BACKEND
            .run(
                || format!("cannot list the actions in phase {phase}"),
                || async {
                    let rows = sqlx::query(
                        "SELECT agent, id::text, record FROM gateway_action_state WHERE phase = $1
                         ORDER BY created_at, agent, id LIMIT $2",
                    )
                    .bind(phase.as_str())
                    .bind(db_limit(limit))
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| decode_listed(row, phase))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(Failure::State)
                },
            )
            .await
    }

    async fn prune(&self, now: OffsetDateTime) -> Result<u64, StateError> {
        let cutoff = saturating_unix_nanos(now);
        let mut pruned = 0u64;
        loop {
            let deleted = BACKEND
                .run(
                    || "cannot prune finished actions".to_owned(),
                    || async {
                        // The outer `expires_at` test is re-checked on a row a concurrent claim
                        // replaced after the subquery found it: a fresh claim is never deleted.
                        let done = sqlx::query(
                            "DELETE FROM gateway_action_state
                             WHERE (agent, id) IN (SELECT agent, id FROM gateway_action_state
                                                   WHERE expires_at <= $1 LIMIT $2)
                               AND expires_at <= $1",
                        )
                        .bind(cutoff)
                        .bind(PRUNE_BATCH)
                        .execute(&self.pool)
                        .await?;
                        Ok(done.rows_affected())
                    },
                )
                .await?;
            pruned = pruned.saturating_add(deleted);
            if deleted < PRUNE_BATCH.unsigned_abs() {
                return Ok(pruned);
            }
        }
    }
}

#[async_trait]
impl RevocationList for PostgresStateStore {
    async fn revoke(&self, grant_id: &str, not_after: OffsetDateTime) -> Result<(), StateError> {
        let until = saturating_unix_nanos(not_after);
        BACKEND
            .run(
                || format!("cannot record grant {grant_id} as revoked"),
                || async {
                    sqlx::query(
                        "INSERT INTO gateway_revoked_grants (grant_id, not_after) VALUES ($1, $2)
                         ON CONFLICT (grant_id) DO UPDATE
                         SET not_after = GREATEST(gateway_revoked_grants.not_after,
                                                  excluded.not_after)",
                    )
                    .bind(grant_id)
                    .bind(until)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                },
            )
            .await
    }

    async fn is_revoked(&self, grant_id: &str, now: OffsetDateTime) -> Result<bool, StateError> {
        let now = saturating_unix_nanos(now);
        BACKEND
            .run(
                || format!("cannot look grant {grant_id} up in the revocation list"),
                || async {
                    let row = sqlx::query(
                        "SELECT 1 FROM gateway_revoked_grants WHERE grant_id = $1 AND not_after > $2",
                    )
                    .bind(grant_id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(row.is_some())
                },
            )
            .await
    }

    async fn prune_revocations(&self, now: OffsetDateTime) -> Result<u64, StateError> {
        let now = saturating_unix_nanos(now);
        BACKEND
            .run(
                || "cannot prune the revocation list".to_owned(),
                || async {
                    let done =
                        sqlx::query("DELETE FROM gateway_revoked_grants WHERE not_after <= $1")
                            .bind(now)
                            .execute(&self.pool)
                            .await?;
                    Ok(done.rows_affected())
                },
            )
            .await
    }
}

#[async_trait]
impl LockList for PostgresStateStore {
    async fn lock(&self, lock: &AgentLock) -> Result<(), StateError> {
        let target = lock.target.key();
        let record =
            serde_json::to_string(lock).map_err(|e| StateError::internal("encoding a lock", e))?;
        BACKEND
            .run(
                || format!("cannot store the lock of {}", lock.target),
                || async {
                    sqlx::query(
                        "INSERT INTO gateway_agent_locks (target, record) VALUES ($1, $2)
                         ON CONFLICT (target) DO UPDATE SET record = excluded.record",
                    )
                    .bind(&target)
                    .bind(&record)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                },
            )
            .await
    }

    async fn unlock(&self, target: &LockTarget) -> Result<bool, StateError> {
        let key = target.key();
        BACKEND
            .run(
                || format!("cannot lift the lock of {target}"),
                || async {
                    let done = sqlx::query("DELETE FROM gateway_agent_locks WHERE target = $1")
                        .bind(&key)
                        .execute(&self.pool)
                        .await?;
                    Ok(done.rows_affected() > 0)
                },
            )
            .await
    }

    async fn locks(&self) -> Result<Vec<AgentLock>, StateError> {
        BACKEND
            .run(
                || "cannot read the kill switch's locks".to_owned(),
                || async {
                    let rows = sqlx::query(
                        "SELECT target, record FROM gateway_agent_locks ORDER BY target",
                    )
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|row| {
                            let target: String = row.try_get(0)?;
                            let json: String = row.try_get(1)?;
                            serde_json::from_str(&json).map_err(|e| {
                                Failure::State(StateError::internal(
                                    format!("the stored lock of {target} does not decode"),
                                    e,
                                ))
                            })
                        })
                        .collect()
                },
            )
            .await
    }
}

#[async_trait]
impl ConcurrencySlots for PostgresStateStore {
    async fn acquire_slot(
        &self,
        agent: &AgentId,
        limit: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<u32>, StateError> {
        BACKEND
            .run(
                || format!("cannot take a concurrency slot of {agent}"),
                || async {
                    let now = OffsetDateTime::now_utc();
                    let until = saturating_unix_nanos(now + lease);
                    let mut tx = self.pool.begin().await?;
                    // One acquisition per agent at a time, on every replica.
                    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))")
                        .bind(agent.as_str())
                        .execute(&mut *tx)
                        .await?;
                    let held: Vec<i64> = sqlx::query_scalar(
                        "SELECT slot FROM gateway_agent_slots
                         WHERE agent = $1 AND slot < $2 AND lease_until > $3",
                    )
                    .bind(agent.as_str())
                    .bind(i64::from(limit))
                    .bind(saturating_unix_nanos(now))
                    .fetch_all(&mut *tx)
                    .await?;
                    let Some(free) = (0..limit).find(|s| !held.contains(&i64::from(*s))) else {
                        end_read_only(tx).await;
                        return Ok(None);
                    };
                    sqlx::query(
                        "INSERT INTO gateway_agent_slots (agent, slot, holder, lease_until)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (agent, slot) DO UPDATE
                         SET holder = excluded.holder, lease_until = excluded.lease_until",
                    )
                    .bind(agent.as_str())
                    .bind(i64::from(free))
                    .bind(holder)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(Some(free))
                },
            )
            .await
    }

    async fn renew_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, StateError> {
        BACKEND
            .run(
                || format!("cannot renew concurrency slot {slot} of {agent}"),
                || async {
                    let now = OffsetDateTime::now_utc();
                    let done = sqlx::query(
                        "UPDATE gateway_agent_slots SET lease_until = $4
                         WHERE agent = $1 AND slot = $2 AND holder = $3
                           AND lease_until > $5",
                    )
                    .bind(agent.as_str())
                    .bind(i64::from(slot))
                    .bind(holder)
                    .bind(saturating_unix_nanos(now + lease))
                    .bind(saturating_unix_nanos(now))
                    .execute(&self.pool)
                    .await?;
                    Ok(done.rows_affected() == 1)
                },
            )
            .await
    }

    async fn release_slot(
        &self,
        agent: &AgentId,
        slot: u32,
        holder: &str,
    ) -> Result<(), StateError> {
        BACKEND
            .run(
                || format!("cannot release concurrency slot {slot} of {agent}"),
                || async {
                    sqlx::query(
                        "DELETE FROM gateway_agent_slots
                         WHERE agent = $1 AND slot = $2 AND holder = $3",
                    )
                    .bind(agent.as_str())
                    .bind(i64::from(slot))
                    .bind(holder)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                },
            )
            .await
    }
}
