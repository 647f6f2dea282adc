//! The storage half of a sink: where chains and checkpoints live. One implementation per
//! database; the chain logic (sealing, group commit, verification) is shared.

use crate::checkpoint::Checkpoint;
use async_trait::async_trait;
use gateway_core::audit::{AuditError, AuditEvent, AuditRecord};

/// A record as stored, before its event JSON is parsed (verification must be able to report a
/// row it cannot parse instead of failing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The chain.
    pub stream_id: String,
    /// The sequence number as stored (a tampered row may hold a negative one).
    pub sequence: i64,
    /// Hex hash of the previous record.
    pub prev_hash: String,
    /// Hex hash of this record.
    pub hash: String,
    /// The event as JSON text. It parses back to exactly the values that were hashed; the hash
    /// covers the canonical (RFC 8785) form of the whole record, not these bytes.
    pub event: String,
}

impl StoredRecord {
    /// Parses the stored row back into the record that was sealed.
    pub fn to_record(&self) -> Result<AuditRecord, String> {
        let sequence = u64::try_from(self.sequence)
            .map_err(|_| format!("negative sequence number {}", self.sequence))?;
        let event: AuditEvent = serde_json::from_str(&self.event)
            .map_err(|e| format!("event JSON does not parse: {e}"))?;
        Ok(AuditRecord {
            stream_id: self.stream_id.clone(),
            sequence,
            event,
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        })
    }
}

/// A checkpoint as stored, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The chain.
    pub stream_id: String,
    /// The checkpointed sequence number.
    pub sequence: i64,
    /// Hex hash of the record at `sequence`.
    pub head_hash: String,
    /// RFC 3339 time of the checkpoint.
    pub time: String,
    /// Hex Ed25519 public key that signed it.
    pub key_id: String,
    /// Hex Ed25519 signature.
    pub signature: String,
}

/// Durable storage for hash chains and their checkpoints.
///
/// Implementations must make [`append_batch`](Self::append_batch) atomic and durable (all or
/// nothing, on disk before it returns) and must reject a record whose `(stream_id, sequence)`
/// already exists with [`AuditError::Conflict`]: that is what keeps two writers from forking a
/// chain.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// The last record of `stream_id` as `(sequence, hash)`, or `None` for an empty stream.
    async fn head(&self, stream_id: &str) -> Result<Option<(u64, String)>, AuditError>;

    /// Appends `records` (sealed, consecutive) and optionally a checkpoint in one durable
    /// transaction.
    async fn append_batch(
        &self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), AuditError>;

    /// Up to `limit` rows of `stream_id` with sequence > `after` (all when `None`), in
    /// sequence order.
    async fn read_raw(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>, AuditError>;

    /// Up to `limit` checkpoints of `stream_id` with sequence > `after`, in sequence order.
    async fn read_checkpoints(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredCheckpoint>, AuditError>;

    /// Every stream id with records or checkpoints, sorted.
    async fn streams(&self) -> Result<Vec<String>, AuditError>;
}

/// The first sequence number a read after `after` starts at, or `None` when nothing can follow.
pub(crate) fn start_sequence(after: Option<u64>) -> Option<i64> {
    match after {
        None => Some(0),
        Some(a) => a.checked_add(1).and_then(|s| i64::try_from(s).ok()),
    }
}

/// Converts a sequence number for storage (databases hold signed 64-bit integers).
pub(crate) fn db_sequence(sequence: u64) -> Result<i64, AuditError> {
    i64::try_from(sequence).map_err(|_| AuditError::invalid_input("sequence number exceeds 2^63-1"))
}

/// A limit as a SQL `LIMIT` value.
pub(crate) fn db_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The columns every backend stores beside the hashed event, for querying.
pub(crate) struct IndexedColumns {
    pub event: String,
    pub event_time: String,
    pub correlation_id: String,
    pub kind: String,
    pub agent_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub outcome: Option<String>,
}

impl IndexedColumns {
    pub(crate) fn of(record: &AuditRecord) -> Result<Self, AuditError> {
        let ev = &record.event;
        let event = serde_json::to_string(ev)
            .map_err(|e| AuditError::internal("serialising audit event", e))?;
        let event_time = ev
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| AuditError::internal("formatting event time", e))?;
        Ok(Self {
            event,
            event_time,
            correlation_id: ev.correlation_id.to_string(),
            kind: enum_name(&ev.kind),
            agent_id: ev.agent_id.as_ref().map(|a| clean(a.as_str())),
            action: clean(&ev.action),
            resource: clean(&ev.resource),
            outcome: ev.outcome.as_ref().map(enum_name),
        })
    }
}

/// The serde name of a unit enum variant.
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// PostgreSQL text cannot hold NUL; the indexed copies are not hashed, so replacing it is safe.
fn clean(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

/// Maps a database error onto the audit error kinds; a duplicate key is a [`AuditError::Conflict`].
pub(crate) fn db_error(context: &str, e: sqlx::Error) -> AuditError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => AuditError::Conflict {
            message: format!(
                "{context}: the sequence number is already taken (another writer on this stream?)"
            ),
        },
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => AuditError::unavailable(context.to_owned(), e),
        _ => AuditError::internal(context.to_owned(), e),
    }
}

/// Decodes rows of `SELECT stream_id, sequence, prev_hash, hash, event` (the column order both
/// backends select), so the stores share one decoder and differ only in their SQL dialect.
pub(crate) fn decode_records<R: sqlx::Row>(rows: &[R]) -> Result<Vec<StoredRecord>, AuditError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            Ok(StoredRecord {
                stream_id: r.try_get(0)?,
                sequence: r.try_get(1)?,
                prev_hash: r.try_get(2)?,
                hash: r.try_get(3)?,
                event: r.try_get(4)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| db_error("decoding audit records", e))
}

/// Decodes rows of `SELECT stream_id, sequence, head_hash, time, key_id, signature`.
pub(crate) fn decode_checkpoints<R: sqlx::Row>(
    rows: &[R],
) -> Result<Vec<StoredCheckpoint>, AuditError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    rows.iter()
        .map(|r| {
            Ok(StoredCheckpoint {
                stream_id: r.try_get(0)?,
                sequence: r.try_get(1)?,
                head_hash: r.try_get(2)?,
                time: r.try_get(3)?,
                key_id: r.try_get(4)?,
                signature: r.try_get(5)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| db_error("decoding audit checkpoints", e))
}
