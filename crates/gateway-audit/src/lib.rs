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
//! | `kind` | event type: `genesis`, `requested`, `rejected`, `decided`, `approval_requested`, `approval_resolved`, `granted`, `started`, `revoked`, `completed` |
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
//! formatting). Sealing and verification use only `gateway_core::audit::chain` (`seal`,
//! `genesis`, `record_hash`, `ChainVerifier`), so every backend's chain verifies with any
//! verifier; verification parses and re-hashes each page of records on every core and links
//! them in order while the next page is read. Each stream starts with a genesis record written
//! by the sink when it first opens the stream.
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
//! Both backends store the event as JSON **text** (column `event`: `serde_json` output that
//! parses back to exactly the values that were hashed, so a read recomputes the same hash;
//! JSONB would reformat numbers; the hash covers the RFC 8785 form of the record, not these
//! bytes) next to `stream_id`, `sequence`, `prev_hash`, `hash`, and indexed copies for querying
//! (`event_time`, `correlation_id`, `kind`, `agent_id`, `action`, `resource`, `outcome`). The
//! copies are convenience only: the hashed `event` column is authoritative and is what
//! verification checks. Checkpoints live in `audit_checkpoints`. Migrations ship in
//! `migrations/` and run on open.
//!
//! * SQLite: WAL journal, `synchronous=FULL` (every commit is fsynced before it is acknowledged,
//!   including the WAL, so a power loss cannot lose an acknowledged record), `BEFORE UPDATE` /
//!   `BEFORE DELETE` triggers that abort.
//! * PostgreSQL: `synchronous_commit` as configured on the server (the default, `on`, is
//!   durable); triggers reject `UPDATE`, `DELETE` and `TRUNCATE` even for the table owner; run the
//!   gateway as a role holding only `SELECT, INSERT` ([`postgres::writer_role_grants`]).
//!
//! ## Writing: group commit
//!
//! A sink owns one writer task per stream. [`append`](gateway_core::AuditSink::append) redacts
//! the event in the caller's task, then queues it on a bounded channel (back-pressure: callers
//! wait when it is full). The writer takes everything queued (up to a batch limit), seals it onto
//! the chain, and commits the batch in one transaction; each caller is answered only after the
//! commit returned, with its receipt or an error. If a commit fails every caller of the batch gets
//! an error and the writer reloads the head from the database before the next batch. Two writers
//! on the same stream cannot fork it: `(stream_id, sequence)` is the primary key, so the loser's
//! commit fails; its writer reloads the head and re-seals the batch on top of the winner's records.
//!
//! ## Checkpoints
//!
//! With a [`CheckpointSigner`] configured, the writer signs `(stream_id, sequence, head_hash,
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
//! never reach the stored or hashed record.

pub mod checkpoint;
pub mod postgres;
pub mod redact;
pub mod sink;
pub mod sqlite;
pub mod store;
pub mod verify;
mod writer;

pub use checkpoint::{Checkpoint, CheckpointSigner};
pub use postgres::{PostgresAuditSink, PostgresStore};
pub use redact::Redactor;
pub use sink::{ChainedSink, CheckpointPolicy, SinkConfig};
pub use sqlite::{SqliteAuditSink, SqliteStore};
pub use store::{AuditStore, StoredCheckpoint, StoredRecord};
pub use verify::{VerifyOptions, verify_all, verify_stream};

/// Re-exported so callers can pass public keys to [`VerifyOptions`].
pub use ed25519_dalek::VerifyingKey;
