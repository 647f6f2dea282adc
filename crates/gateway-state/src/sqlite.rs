//! [`SqliteStateStore`]: action state in a SQLite file, for one embedded gateway process (or
//! several processes on one host sharing the file).
//!
//! The file is in WAL mode. With [`Durability::PowerLoss`] (what [`SqliteStateStore::open`]
//! gives) it is `synchronous=FULL`, as the SQLite audit log is: a claim is on disk (the
//! write-ahead log fsynced) before it is answered, so an acknowledged claim survives a crash or
//! a power loss, and a request id is never run twice because its claim was lost. Each write is
//! its own transaction and fsync, and SQLite has one writer at a time: measured
//! (`benches/gateway.rs`) that caps a gateway at a few hundred actions per second.
//! [`Durability::ProcessCrash`] (`synchronous=NORMAL`) answers once the commit is in the
//! write-ahead log in the OS's hands: it survives the gateway's own crash, kill or restart,
//! but an OS crash or power loss may lose the last commits before a checkpoint.
//!
//! Atomicity: [`claim`](StateStore::claim) and [`update`](StateStore::update) each run in a
//! write transaction taken up front (`BEGIN IMMEDIATE`), which SQLite grants to one connection
//! of one process at a time. The read, the check (or the change) and the write happen under
//! that lock, so concurrent claims and read-modify-write updates serialise across every
//! connection and every process sharing the file. A connection waits for the lock for up to
//! the busy timeout (30 s); a `SQLITE_BUSY` that comes back anyway (lock contention SQLite does
//! not wait out, such as WAL recovery) reruns the whole operation, a bounded number of times.

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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row as _, Sqlite, Transaction};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a connection waits for a lock held by another (SQLite's `busy_timeout`), as the
/// SQLite audit log does.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection per process: every operation here writes (or reads under the write lock),
/// and SQLite has one writer at a time. Connections of one process contending for it wait in
/// SQLite's busy handler, which sleeps in steps of up to 100 ms; one connection makes them
/// queue in the pool instead (measured: `benches/gateway.rs`, 64 agents). Other processes
/// sharing the file still wait in the busy handler.
const MAX_CONNECTIONS: u32 = 1;

/// Rows one prune statement deletes: each batch is its own short write transaction, so claims
/// wait for a batch, never for the whole prune.
const PRUNE_BATCH: i64 = 1000;

/// The schema, created if missing (in one transaction, under the write lock).
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateway_action_state (
    agent TEXT NOT NULL,
    id TEXT NOT NULL,
    phase TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    record TEXT NOT NULL,
    PRIMARY KEY (agent, id)
);
CREATE INDEX IF NOT EXISTS gateway_action_state_phase
    ON gateway_action_state (phase, created_at, agent, id);
CREATE INDEX IF NOT EXISTS gateway_action_state_expires
    ON gateway_action_state (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS gateway_revoked_grants (
    grant_id TEXT PRIMARY KEY,
    not_after INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_revoked_grants_not_after
    ON gateway_revoked_grants (not_after);
CREATE TABLE IF NOT EXISTS gateway_agent_slots (
    agent TEXT NOT NULL,
    slot INTEGER NOT NULL,
    holder TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    PRIMARY KEY (agent, slot)
);
CREATE TABLE IF NOT EXISTS gateway_agent_locks (
    target TEXT PRIMARY KEY,
    record TEXT NOT NULL
);
";

/// SQLite's primary result codes (the low byte of an extended code).
mod code {
    pub const PERM: i32 = 3;
    pub const BUSY: i32 = 5;
    pub const LOCKED: i32 = 6;
    pub const NOMEM: i32 = 7;
    pub const READONLY: i32 = 8;
    pub const IOERR: i32 = 10;
    pub const CORRUPT: i32 = 11;
    pub const FULL: i32 = 13;
    pub const CANTOPEN: i32 = 14;
    pub const PROTOCOL: i32 = 15;
    pub const AUTH: i32 = 23;
    pub const NOTADB: i32 = 26;
}

/// The primary result code of a SQLite error.
fn primary_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(db) => db.code()?.parse::<i32>().ok().map(|c| c & 0xff),
        _ => None,
    }
}

const BACKEND: Backend = Backend {
    attempts: 8,
    window: BUSY_TIMEOUT,
    retryable: |e| matches!(primary_code(e), Some(code::BUSY | code::LOCKED)),
    unavailable: |e| {
        connection_failure(e)
            || matches!(
                primary_code(e),
                Some(
                    code::PERM
                        | code::BUSY
                        | code::LOCKED
                        | code::NOMEM
                        | code::READONLY
                        | code::IOERR
                        | code::FULL
                        | code::CANTOPEN
                        | code::PROTOCOL
                        | code::AUTH
                )
            )
    },
    hint: |e| match primary_code(e) {
        Some(code::BUSY | code::LOCKED) => Some(
            "the state database stayed locked by another connection; look for a process \
             holding a long write transaction on the file",
        ),
        Some(code::READONLY | code::PERM | code::CANTOPEN | code::AUTH) => Some(
            "check that the file and its directory exist and that the gateway may write both \
             (SQLite creates the -wal and -shm files beside it)",
        ),
        Some(code::FULL) => Some("the disk holding the state database is full"),
        Some(code::IOERR) => Some("the disk holding the state database failed to read or write"),
        Some(code::CORRUPT | code::NOTADB) => Some(
            "the state database file is damaged or is not a SQLite database; restore it from a \
             backup",
        ),
        _ if matches!(e, sqlx::Error::Database(db) if db.message().contains("no such table")) => {
            Some(
                "the state table is missing: open the store with SqliteStateStore::open, or \
                 call migrate() once after from_pool",
            )
        }
        _ => None,
    },
};

/// Action state in a SQLite database file: the embedded default for one gateway process.
///
/// The file may be the SQLite audit log's own (the state is another table; pass the audit
/// store's pool to [`from_pool`](Self::from_pool)) or a file beside it. A file of its own
/// keeps state writes from queueing behind audit appends for SQLite's one write lock.
#[derive(Debug, Clone)]
pub struct SqliteStateStore {
    pool: SqlitePool,
}

/// What an acknowledged write of a [`SqliteStateStore`] survives (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous=FULL`: fsynced before it is answered; survives a power loss.
    #[default]
    PowerLoss,
    /// `synchronous=NORMAL`: in the OS's hands before it is answered; survives the gateway
    /// process crashing, being killed or restarted, not an OS crash or power loss.
    ProcessCrash,
}

impl SqliteStateStore {
    /// Opens the database at `path`, creating the file and the schema if missing; WAL,
    /// `synchronous=FULL` ([`Durability::PowerLoss`]) and a 30 s busy timeout are set on every
    /// connection.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StateError> {
        Self::open_with(path, Durability::PowerLoss).await
    }

    /// [`SqliteStateStore::open`] with the given durability.
    pub async fn open_with(
        path: impl AsRef<Path>,
        durability: Durability,
    ) -> Result<Self, StateError> {
        let path = path.as_ref();
        let synchronous = match durability {
            Durability::PowerLoss => SqliteSynchronous::Full,
            Durability::ProcessCrash => SqliteSynchronous::Normal,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(BUSY_TIMEOUT);
        // Two processes creating the file at once may find it locked while the other
        // switches it to WAL (a lock SQLite does not wait for): that is retried.
        let pool = BACKEND
            .run(
                || format!("cannot open the state store at {}", path.display()),
                || async {
                    Ok(SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .connect_with(options.clone())
                        .await?)
                },
            )
            .await?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on an open pool (for example the SQLite audit store's, to keep state in the
    /// audit log's file). No I/O: call [`migrate`](Self::migrate) unless the table is known
    /// to exist. The pool's connections should be in WAL mode with a busy timeout (SQLx's
    /// default is 5 s), as [`open`](Self::open) sets them.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Creates the table and its indexes if missing. Idempotent, and safe when several
    /// processes open the file at once (it runs under the write lock).
    pub async fn migrate(&self) -> Result<(), StateError> {
        BACKEND
            .run(
                || format!("cannot create the {TABLE} table"),
                || async {
                    let mut tx = self.begin_write().await?;
                    sqlx::raw_sql(SCHEMA).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(())
                },
            )
            .await
    }

    /// The connection pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A write transaction holding SQLite's write lock from its first statement.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// The stored JSON of `key` read inside `tx`, decoded.
async fn read_in(
    tx: &mut Transaction<'static, Sqlite>,
    key: &ActionKey,
    agent: &str,
    id: &str,
) -> Result<Option<ActionRecord>, Failure> {
    let row = sqlx::query("SELECT record FROM gateway_action_state WHERE agent = ?1 AND id = ?2")
        .bind(agent)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let json: String = row.try_get(0).map_err(|e| undecodable(key, e))?;
    Ok(Some(decode(agent, id, &json)?))
}

/// Ends a transaction that wrote nothing. A failed rollback is harmless: the connection's
/// rollback is retried before its next use.
async fn end_read_only(tx: Transaction<'static, Sqlite>) {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "state store: rolling back a read-only transaction failed");
    }
}

#[async_trait]
impl StateStore for SqliteStateStore {
    async fn claim(&self, record: &ActionRecord) -> Result<Claim, StateError> {
        let row = Row::of(record)?;
        let key = &record.key;
        BACKEND
            .run(
                || format!("cannot claim action {key}"),
                || async {
                    let mut tx = self.begin_write().await?;
                    // Stores the record unless a live one holds the key: a replaced expired
                    // record counts as a change, a kept live one does not.
                    let stored = sqlx::query(
                        "INSERT INTO gateway_action_state
                             (agent, id, phase, created_at, expires_at, record)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (agent, id) DO UPDATE SET
                             phase = excluded.phase, created_at = excluded.created_at,
                             expires_at = excluded.expires_at, record = excluded.record
                         WHERE gateway_action_state.expires_at IS NOT NULL
                           AND gateway_action_state.expires_at <= excluded.created_at",
                    )
                    .bind(&row.agent)
                    .bind(&row.id)
                    .bind(row.phase)
                    .bind(row.created_at)
                    .bind(row.expires_at)
                    .bind(&row.record)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if stored == 1 {
                        tx.commit().await?;
                        return Ok(Claim::Claimed);
                    }
                    let existing = read_in(&mut tx, key, &row.agent, &row.id).await;
                    end_read_only(tx).await;
                    match existing? {
                        Some(existing) => Ok(Claim::Existing(Box::new(existing))),
                        // Impossible under the write lock: the insert conflicted with a row.
                        None => Err(StateError::internal_msg(format!(
                            "claiming action {key}: the record that held the key vanished \
                             inside a write transaction"
                        ))
                        .into()),
                    }
                },
            )
            .await
    }

    async fn get(&self, key: &ActionKey) -> Result<Option<ActionRecord>, StateError> {
        let (agent, id) = (key.agent.as_str(), key.id.to_string());
        BACKEND
            .run(
                || format!("cannot read action {key}"),
                || async {
                    let row = sqlx::query(
                        "SELECT record FROM gateway_action_state WHERE agent = ?1 AND id = ?2",
                    )
                    .bind(agent)
                    .bind(&id)
                    .fetch_optional(&self.pool)
                    .await?;
                    let Some(row) = row else {
                        return Ok(None);
                    };
                    let json: String = row.try_get(0).map_err(|e| undecodable(key, e))?;
                    Ok(Some(decode(agent, &id, &json)?))
                },
            )
            .await
    }

    async fn update(&self, key: &ActionKey, change: &Change) -> Result<ActionRecord, StateError> {
        let (agent, id) = (key.agent.as_str(), key.id.to_string());
        BACKEND
            .run(
                || format!("cannot update action {key}"),
                || async {
                    let mut tx = self.begin_write().await?;
                    // Read, change and encode under the lock; anything refused writes nothing.
                    let prepared = async {
                        let current =
                            read_in(&mut tx, key, agent, &id).await?.ok_or_else(|| {
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
                        "UPDATE gateway_action_state
                         SET phase = ?3, expires_at = ?4, record = ?5
                         WHERE agent = ?1 AND id = ?2",
                    )
                    .bind(agent)
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
                        "SELECT agent, id, record FROM gateway_action_state WHERE phase = ?1
                         ORDER BY created_at, agent, id LIMIT ?2",
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
                        let done = sqlx::query(
                            "DELETE FROM gateway_action_state
                             WHERE rowid IN (SELECT rowid FROM gateway_action_state
                                             WHERE expires_at <= ?1 LIMIT ?2)
                               AND expires_at <= ?1",
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
impl RevocationList for SqliteStateStore {
    async fn revoke(&self, grant_id: &str, not_after: OffsetDateTime) -> Result<(), StateError> {
        let until = saturating_unix_nanos(not_after);
        BACKEND
            .run(
                || format!("cannot record grant {grant_id} as revoked"),
                || async {
                    sqlx::query(
                        "INSERT INTO gateway_revoked_grants (grant_id, not_after) VALUES (?1, ?2)
                         ON CONFLICT (grant_id) DO UPDATE
                         SET not_after = max(not_after, excluded.not_after)",
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
                        "SELECT 1 FROM gateway_revoked_grants WHERE grant_id = ?1 AND not_after > ?2",
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
                        sqlx::query("DELETE FROM gateway_revoked_grants WHERE not_after <= ?1")
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
impl LockList for SqliteStateStore {
    async fn lock(&self, lock: &AgentLock) -> Result<(), StateError> {
        let target = lock.target.key();
        let record =
            serde_json::to_string(lock).map_err(|e| StateError::internal("encoding a lock", e))?;
        BACKEND
            .run(
                || format!("cannot store the lock of {}", lock.target),
                || async {
                    sqlx::query(
                        "INSERT INTO gateway_agent_locks (target, record) VALUES (?1, ?2)
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
                    let done = sqlx::query("DELETE FROM gateway_agent_locks WHERE target = ?1")
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
impl ConcurrencySlots for SqliteStateStore {
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
                    let mut tx = self.begin_write().await?;
                    let held: Vec<i64> = sqlx::query_scalar(
                        "SELECT slot FROM gateway_agent_slots
                         WHERE agent = ?1 AND slot < ?2 AND lease_until > ?3",
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
                         VALUES (?1, ?2, ?3, ?4)
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
                        "UPDATE gateway_agent_slots SET lease_until = ?4
                         WHERE agent = ?1 AND slot = ?2 AND holder = ?3
                           AND lease_until > ?5",
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
                         WHERE agent = ?1 AND slot = ?2 AND holder = ?3",
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
