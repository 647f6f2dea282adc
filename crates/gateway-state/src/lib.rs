//! agent-gateway state stores: durable, shared action state on SQLite and PostgreSQL.
//!
//! Both implement [`StateStore`] (the action state every gateway replica must agree on: whose
//! request id is taken, where each action is in its lifecycle, its approval ticket and its
//! outcome) and pass `gateway_core::conformance::state`. The lifecycle's rules are not here:
//! they live once in [`StateStoreExt`] on top of any store; a backend only makes
//! [`claim`](StateStore::claim) and [`update`](StateStore::update) atomic across every process
//! that shares it.
//!
//! # Which backend
//!
//! - [`SqliteStateStore`]: one embedded gateway process (or a few on one host sharing the
//!   file). The state may live in the SQLite audit log's file, as another table (build it with
//!   [`SqliteStateStore::from_pool`] on the audit store's pool, then
//!   [`migrate`](SqliteStateStore::migrate)), or in a file beside it
//!   ([`SqliteStateStore::open`]); a file of its own keeps claims from queueing behind audit
//!   appends for SQLite's one write lock.
//! - `PostgresStateStore` (feature `postgres`): replicas sharing one database. Every replica
//!   behind a load balancer must use the same database, or a repeated request id could run on
//!   two of them.
//!
//! `gateway_core::state::MemoryStateStore` remains the choice for a single process that may
//! lose its state with it (tests, demos).
//!
//! # Schema
//!
//! One table, `gateway_action_state` ([`TABLE`]), in the file or the connection's current
//! schema, created if missing:
//!
//! | column       | SQLite  | PostgreSQL       | holds                                           |
//! |--------------|---------|------------------|-------------------------------------------------|
//! | `agent`      | TEXT    | TEXT COLLATE "C" | the agent id (primary key with `id`)            |
//! | `id`         | TEXT    | UUID             | the request id                                  |
//! | `phase`      | TEXT    | TEXT             | the phase's name (`received`, …)                |
//! | `created_at` | INTEGER | BIGINT           | claim time, Unix nanoseconds                    |
//! | `expires_at` | INTEGER | BIGINT, NULL     | end of retention, Unix nanoseconds; NULL live   |
//! | `record`     | TEXT    | TEXT             | the whole [`ActionRecord`] as JSON              |
//!
//! with indexes on `(phase, created_at, agent, id)` (phase listings, oldest first) and on
//! `expires_at` (prune). The record is the JSON, so it reads back exactly (timestamps to the
//! nanosecond, integers beyond 2^53, any string); the other columns exist only for lookups and
//! are rewritten from the record on every write, so they always agree with it. Timestamps are
//! integers, not `timestamptz`: the claim's expiry check compares them to the nanosecond, as
//! [`ActionRecord::expired`] does. The gateway's database role needs `SELECT`, `INSERT`,
//! `UPDATE` and `DELETE` on the table (and, on PostgreSQL, `CREATE` on the schema only until
//! the table exists).
//!
//! # Errors
//!
//! Every failure is a [`StateError`], and the gateway fails closed on it (an action whose
//! state cannot be stored does not run): a database that cannot be reached or used (connection,
//! I/O, a full disk, a lock held too long, contention that outlasted the retries) is
//! [`StateError::Unavailable`]; a row that cannot be decoded (damaged JSON, a row altered
//! outside the gateway) is [`StateError::Internal`] naming the action's key. The database
//! error is kept as the source, and the message says what to do.

mod row;
mod sqlite;

#[cfg(feature = "postgres")]
mod postgres;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStateStore;
pub use row::TABLE;
pub use sqlite::{Durability, SqliteStateStore};

#[doc(no_inline)]
pub use gateway_core::state::{
    ActionKey, ActionRecord, Claim, Phase, StateError, StateStore, StateStoreExt,
};
