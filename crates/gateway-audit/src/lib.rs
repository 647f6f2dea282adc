//! # gateway-audit
//!
//! Tamper-evident [`AuditSink`](gateway_core::AuditSink) backends for agent-gateway: a
//! hash-chained, append-only audit log on SQLite (embedded default, [`SqliteAuditSink`]) and
//! PostgreSQL ([`PostgresAuditSink`]), Ed25519-signed checkpoints, secret redaction, and a
//! streaming verifier ([`verify_stream`], and the `gateway-audit` command-line tool).
//!
//! ## Record format
//!
//! A stored record is a [`gateway_core::AuditRecord`]: the gateway's
//! [`AuditEvent`](gateway_core::AuditEvent) plus its place in a chain. There is one chain per
//! *stream* (one stream per gateway instance), so instances append without a global lock.
//!
//! | field | meaning |
//! |---|---|
//! | `stream_id` | the chain (one per gateway instance) |
//! | `sequence` | position in the chain, from 0 (the genesis record), gapless |
//! | `time` | RFC 3339 timestamp, UTC, truncated to microseconds when sealed |
//! | `correlation_id` | the action request's id, shared by every event of one action |
//! | `step` | the event's position within its action's trail |
//! | `kind` | event type: `genesis`, `key_rotated`, `requested`, `rejected`, `decided`, `approval_requested`, `approval_resolved`, `granted`, `started`, `revoked`, `completed` |
//! | `agent_id` | the distinct non-human identity that asked (absent only if authentication failed) |
//! | `action`, `resource` | what was asked for, and on what |
//! | `outcome` | `success` / `failure` |
//! | `decision` | `allow`, `reasons`, `policy_id`, `decision_id` |
//! | `grant_id`, `runner_id` | the just-in-time grant and the runner environment |
//! | `origin` | where the request came from |
//! | `details` | step-specific data (redacted, see below) |
//! | `prev_hash` | hex SHA-256 of the previous record (64 zeros for genesis) |
//! | `hash` | hex `SHA-256(prev_hash_bytes ‖ JCS(record without prev_hash and hash))` |
//!
//! JCS is RFC 8785 canonical JSON (sorted keys, no insignificant whitespace, ECMAScript number
//! formatting). Sealing and hashing use only `gateway_core::audit::chain` (`seal_with_body`,
//! `genesis`, `body_hash`, `ChainVerifier`), so every backend's chain verifies with any
//! verifier. Each stream starts with a genesis record written by the sink when it first opens
//! the stream.
//!
//! ### PCI-DSS v4 requirement 10.2.2
//!
//! | 10.2.2 element | record field |
//! |---|---|
//! | user identification | `agent_id` (one per agent, never shared) |
//! | type of event | `kind` + `action` |
//! | date and time | `time` (UTC) |
//! | success or failure indication | `outcome` (and `decision.allow`) |
//! | origination of event | `origin`, `stream_id` (the gateway instance) |
//! | identity or name of affected data, system component, resource, or service | `resource`, `runner_id`, `grant_id` |
//!
//! Requirement 10.3.2 / 10.3.4 (protect logs from modification, detect changes) is met by the
//! append-only tables, the hash chain, the signed checkpoints and [`verify_stream`].
//!
//! ## Storage
//!
//! Both backends store per record `stream_id`, `sequence`, `prev_hash`, `hash`, the record as
//! JSON **text** in `event`, and indexed copies for querying (`event_time`, `correlation_id`,
//! `kind`, `agent_id`, `action`, `resource`, `outcome`). Checkpoints live in
//! `audit_checkpoints`. Migrations ship in `migrations/` and run on open.
//!
//! `event_time` is `timestamptz` on PostgreSQL. On SQLite it is text of one fixed width, UTC
//! with six fraction digits (`2026-11-26T03:00:00.500000Z`), so comparing the text compares
//! the times: bound a range with the same form or any prefix of it
//! (`event_time >= '2026-11-26T03:00' AND event_time < '2026-11-26T04:00'`).
//!
//! Indexes, besides the primary key: `correlation_id` (an action's whole trail) and time. On
//! SQLite the time index is `(event_time, agent_id)`, which also answers "what did agent X do
//! between T1 and T2" from the index alone; it has no index keyed by agent first, because each
//! commit would write one of its pages per distinct agent in the batch (measured: 2.8× fewer
//! actions/s at 64 agents, see `migrations/sqlite/0002_time_agent_index.sql`). PostgreSQL keeps
//! `(agent_id, event_time)` too: there the cost is not on the commit's path in the same way,
//! and the 64-writer target is met with it.
//!
//! The `event` column holds the record's **canonical body**: the exact RFC 8785 bytes its hash
//! covers after `prev_hash` (the event's fields plus `stream_id` and `sequence`), so
//! verification hashes the stored bytes as they are. Rows written by earlier versions (before
//! stored bodies) hold the event's `serde_json` text instead, which parses back to the values
//! that were hashed; they verify as before (parse, re-encode, hash) only when asked
//! ([`VerifyOptions::legacy_bodies`], `gateway-audit verify --legacy-bodies`): a body replaced
//! by an older-format text with the same values hashes the same, so by default only canonical
//! bodies are accepted. No schema change
//! was needed: both texts are JSON objects with the event's fields at the top (queries like
//! `json_extract(event, '$.details.exit_code')` work on both), both parse as the event, and a
//! verifier that re-encodes (an older `gateway-audit verify`) gets a body's own bytes back, so
//! it verifies new rows too. A record read back from a body holds the canonical values, which
//! are exactly what the hash covers: JCS writes `12.0` as `12` and an integer beyond 2^53 as the
//! nearest double, so such a value reads back that way.
//!
//! `event` is authoritative. The indexed copies are not hashed, but verification checks each
//! one against the hashed event of its row (module `copies`): a copy changed under an intact
//! chain (say `agent_id`, which "what did agent X do" queries go by) is reported as a
//! modification of that record, naming the column. Stores implementing
//! [`AuditStore::read_page`] themselves hand the copies over in [`RecordRef::copies`]; the
//! default `read_page` (from `read_raw`) has none, and then only the chain is checked.
//!
//! * SQLite: WAL journal, `synchronous=FULL` (every commit fsyncs the WAL before any caller of
//!   the batch is answered, so a crash or power loss cannot lose an acknowledged record),
//!   `BEFORE UPDATE` / `BEFORE DELETE` triggers that abort. WAL checkpoints are SQLite's own
//!   (the committing connection, past 1000 pages): a background checkpointer was measured to
//!   slow appends down (see [`sqlite`]).
//! * PostgreSQL: `synchronous_commit` as configured on the server (the default, `on`, is
//!   durable); triggers reject `UPDATE`, `DELETE` and `TRUNCATE` even for the table owner; run the
//!   gateway as a role holding only `SELECT, INSERT` ([`postgres::writer_role_grants`]).
//!
//! ## Writing: group commit
//!
//! A sink owns one writer task per stream. [`append`](gateway_core::AuditSink::append) redacts
//! the event and encodes its canonical body (all but the sequence number, see
//! [`EncodedEvent`](gateway_core::audit::chain::EncodedEvent)) in the caller's task, then queues
//! it on a bounded channel (back-pressure: callers wait when it is full). The writer takes
//! everything queued (up to a batch limit), seals it onto the chain (numbers and hashes it), and
//! commits the batch as one unit; each caller is answered only after the commit
//! returned, with its receipt or an error. If a commit fails every caller of the batch gets an
//! error and the writer reloads the head from the database before the next batch. Two writers
//! on the same stream cannot fork it: `(stream_id, sequence)` is the primary key, so the loser's
//! commit fails; its writer reloads the head and re-seals the batch on top of the winner's records.
//!
//! A batch costs one database round trip and one durable commit, through a connection kept for
//! appends (the pool's health-check pings would add two round trips): on SQLite one multi-row
//! `INSERT` committed on its own, or `BEGIN IMMEDIATE; …; COMMIT` sent as one query when a
//! checkpoint goes with it or it has more rows than one statement can bind; on PostgreSQL one
//! `INSERT … SELECT FROM UNNEST(…)` statement, with a checkpoint inside the same statement
//! (`WITH records AS (INSERT …) INSERT INTO audit_checkpoints …`).
//!
//! [`append_all`](gateway_core::AuditSink::append_all) queues its events as one job: they are
//! sealed contiguously, committed in the same transaction, and stored all or none, and the
//! receipts come back in order. An event of the group that cannot be sealed fails the whole
//! group (and only it); an empty group returns at once without reaching the writer. A group is
//! never split, so a batch may exceed the batch limit by one group.
//!
//! ## Verification
//!
//! [`verify_stream`] reads a stream in windows of sequence numbers (bounded work per query,
//! whatever the database's planner estimates; a wide window is read as two halves on two
//! connections at once; SQLite's rows are stepped through its C API, since fetching them
//! through `sqlx` costs several times SQLite's own work, see [`sqlite`]). A page of rows
//! is read into a [`RecordPage`] ([`AuditStore::read_page`]): a few large buffers and each
//! row's offsets, not a heap string per value, since allocating per row on the reading thread
//! and freeing on the hashing threads cost more than the hashing. While one page is read, the
//! one before is checked row by row on all cores, borrowing from the page, and the one before
//! that is linked in order with its checkpoints. Memory does not grow with the log. Per row:
//!
//! * a canonical body (recognised in one pass over the bytes; rare forms, such as escaped or
//!   non-BMP object keys, are parsed and re-encoded instead): its bytes are hashed as stored,
//!   and the row's `stream_id` and `sequence` columns must be the body's;
//! * any other text must parse as an event (an earlier version's row) and is re-encoded with the
//!   row's columns and hashed; a text with a top-level `stream_id` or `sequence` claims to be a
//!   body and must then be canonical byte for byte;
//! * in both, a duplicate object key is a fault (JSON readers disagree on which value counts);
//! * unless [`VerifyOptions::check_copies`] is off, the row's query columns must say what its
//!   event says (module `copies`; the recogniser hands over the fields as written in the body),
//!   each in the one canonical form of its value: `event_time` only as the fixed-width text
//!   (the RFC 3339 text of the same instant sorts differently, so it would change what
//!   sub-second range queries return; it is accepted only with `legacy_bodies`, for SQLite logs
//!   not yet migrated).
//!
//! Signatures are checked against [`VerifyOptions::trusted_keys`], which come from the operator,
//! never from the log: every checkpoint must be signed by the trusted key its `key_id` names, and
//! its stored time must be the exact text that was signed. The `gateway-audit` tool refuses to
//! verify without a trusted key unless told `--no-signatures` (and then says so), and checks the
//! log's streams against the operator's `--expect-stream` list.
//!
//! A row rewritten in the older event format is checked the older way, so it can differ from
//! what was sealed only by values JCS does not tell apart (e.g. integers beyond 2^53 that round
//! to the same double): the hash has never pinned more than that.
//!
//! ## Checkpoints
//!
//! With a [`CheckpointSigner`] configured (a key file's [`SoftwareSigner`] or a PKCS#11 token's
//! `Pkcs11Signer`, see [`signer`]), the writer signs `(stream_id, sequence, head_hash,
//! time)` with Ed25519 every N records (in the same transaction as the batch that reaches N) or
//! every T seconds when records were appended since the last one, and on
//! [`ChainedSink::checkpoint`] / [`ChainedSink::close`]. Anyone holding the public key can then
//! detect a truncated tail (a checkpoint beyond the last record) and a rewritten chain (the
//! checkpoint's hash differs from the record's, or a forged checkpoint's signature fails).
//! Records after the last checkpoint are protected by the chain only: keep N and T small.
//!
//! ## Redaction
//!
//! Before an event is sealed, [`Redactor`] replaces values under configured JSON paths and any
//! credential-looking value (bearer tokens, PEM private keys, JWTs, Luhn-valid card numbers,
//! keeping the last 4 digits, and values of `password`/`secret`/`token`-like keys) so secrets
//! never reach the stored or hashed record. The redactor is gateway-core's: the
//! [`Gateway`](gateway_core::Gateway) already applies it before any sink sees an event, and
//! these sinks apply it again, as defence in depth for events that reach them some other way.

mod body;
pub mod checkpoint;
mod connection;
mod copies;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod page;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "postgres")]
pub mod postgres_witness;
mod record;
pub mod redact;
pub mod signer;
pub mod sink;
mod sql;
pub mod sqlite;
mod sqlite_rows;
pub mod store;
#[cfg(feature = "tsa")]
pub mod tsa;
#[cfg(feature = "tsa")]
pub mod tsa_verify;
pub mod verify;
pub mod witness;
mod writer;

pub use checkpoint::Checkpoint;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresAuditSink, PostgresStore};
#[cfg(feature = "postgres")]
pub use postgres_witness::PostgresWitness;
pub use redact::Redactor;
pub use signer::{CheckpointSigner, SoftwareSigner};
#[cfg(feature = "pkcs11")]
pub use signer::{Pkcs11Config, Pkcs11Signer};
pub use sink::{ChainedSink, CheckpointPolicy, SinkConfig};
pub use sqlite::{SqliteAuditSink, SqliteStore};
pub use store::{AuditStore, RecordPage, RecordRef, SealedRecord, StoredCheckpoint, StoredRecord};
#[cfg(feature = "tsa")]
pub use tsa::TsaWitness;
pub use verify::{VerifyOptions, verify_all, verify_stream};
pub use witness::{
    CheckpointWitness, FileWitness, WitnessError, WitnessErrorKind, WitnessPolicy, WitnessReport,
    check_witnessed,
};

/// Re-exported so callers can pass public keys to [`VerifyOptions`].
pub use ed25519_dalek::VerifyingKey;
