//! The storage half of a sink: where chains and checkpoints live. One implementation per
//! database; the chain logic (sealing, group commit, verification) is shared.

use crate::checkpoint::Checkpoint;
pub use crate::page::{RecordPage, RecordRef};
use async_trait::async_trait;
use gateway_core::audit::chain::canonical_body;
use gateway_core::audit::{AuditError, AuditEvent, AuditRecord};
use std::future::Future;

/// A sealed record and its canonical body, as the writer hands them to a store.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedRecord {
    /// The record (its `hash` covers `prev_hash` and `body`).
    pub record: AuditRecord,
    /// The record's canonical body: the exact bytes its hash covers after `prev_hash`. Stores
    /// keep these bytes as the row's `event` text, so verification hashes them as they are.
    pub body: String,
}

impl SealedRecord {
    /// Pairs an already sealed record with its canonical body (re-encoded here).
    pub fn new(record: AuditRecord) -> Result<Self, AuditError> {
        let body = String::from_utf8(canonical_body(&record)?)
            .map_err(|e| AuditError::internal("canonical body is not UTF-8", e))?;
        Ok(Self { record, body })
    }
}

/// A record as stored, before its text is parsed (verification must be able to report a row it
/// cannot parse instead of failing).
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
    /// The `event` column: the record's canonical body, the exact bytes the hash covers after
    /// `prev_hash` (rows written by this version), or the event's `serde_json` text, which
    /// parses back to the values that were hashed (rows written before). Either parses as the
    /// event; see the crate docs.
    pub event: String,
}

impl StoredRecord {
    /// The record borrowed as a [`RecordRef`] (to [`push`](RecordPage::push) it on a page).
    pub fn as_record_ref(&self) -> RecordRef<'_> {
        RecordRef {
            stream_id: &self.stream_id,
            sequence: self.sequence,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
            event: &self.event,
            copies: None,
        }
    }

    /// Parses the stored row back into the record that was sealed (lenient: verification is
    /// what checks it).
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

    /// Appends `records` (sealed, consecutive; each row's `event` text is its `body`) and
    /// optionally a checkpoint in one durable transaction.
    async fn append_batch(
        &self,
        records: &[SealedRecord],
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

    /// What [`read_raw`](Self::read_raw) returns, as one [`RecordPage`]: what verification
    /// reads. With `copies`, each row also carries its query columns
    /// ([`RecordRef::copies`]), which verification then checks against the hashed event.
    ///
    /// The default builds the page from `read_raw`, without copies; a store that can fill a
    /// page without a heap string per value (the SQLite and PostgreSQL stores) overrides it,
    /// and then `read_raw` is usually this page's [`to_records`](RecordPage::to_records).
    async fn read_page(
        &self,
        stream_id: &str,
        after: Option<u64>,
        limit: usize,
        copies: bool,
    ) -> Result<RecordPage, AuditError> {
        let _ = copies;
        let rows = self.read_raw(stream_id, after, limit).await?;
        Ok(RecordPage::from_records(stream_id, &rows))
    }

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

/// The most rows one read query returns (bounds a query's work and memory: about 1 KiB per row).
pub(crate) const ROWS_PER_WINDOW: usize = 8192;

/// Below this many rows a window is not split in two (a second query would cost more).
const SPLIT_MIN_ROWS: usize = 1024;

/// Reads up to `limit` records of `stream_id` with sequence > `after`, in sequence order.
///
/// Rows are read by windows of sequence numbers, at most [`ROWS_PER_WINDOW`] wide:
/// `window(first, last)` returns the rows whose sequence is in `first..=last`, in order. A
/// chain has no gaps, so a window is normally full and the next one follows it; after a short
/// window `next(from)` finds the lowest sequence >= `from` (gaps, or the end), so a tampered
/// chain is read to its last row all the same. Windows rather than `ORDER BY … LIMIT` keep each
/// query's work bounded by the window, whatever the database's planner estimates (PostgreSQL,
/// before a table's first `ANALYZE`, would sort the whole stream for every page). A wide window
/// is read as two halves at once, on two connections, so the database reads on two cores. The
/// windows' pages are joined by moving their buffers, not copying them.
pub(crate) async fn read_windows<W, WF, N, NF>(
    stream_id: &str,
    after: Option<u64>,
    limit: usize,
    window: W,
    mut next: N,
) -> Result<RecordPage, AuditError>
where
    W: Fn(i64, i64) -> WF,
    WF: Future<Output = Result<RecordPage, AuditError>>,
    N: FnMut(i64) -> NF,
    NF: Future<Output = Result<Option<i64>, AuditError>>,
{
    let mut out = RecordPage::new(stream_id);
    let Some(mut first) = start_sequence(after) else {
        return Ok(out);
    };
    while out.len() < limit {
        let width = (limit - out.len()).min(ROWS_PER_WINDOW);
        let last = first.saturating_add(db_limit(width) - 1);
        // The halves are adjacent ranges, so together they hold exactly the window's rows.
        let middle = first.saturating_add(db_limit(width / 2));
        let page = if width >= SPLIT_MIN_ROWS && middle <= last {
            let (low, high) = tokio::join!(window(first, middle - 1), window(middle, last));
            let mut low = low?;
            low.append(high?);
            low
        } else {
            window(first, last).await?
        };
        let full = page.len() == width;
        out.append(page);
        let Some(after_window) = last.checked_add(1) else {
            break;
        };
        first = if full {
            after_window
        } else {
            match next(after_window).await? {
                Some(sequence) => sequence,
                None => break,
            }
        };
    }
    Ok(out)
}

/// The SQL the stores read records with ([`read_windows`]), written once for both dialects.
pub(crate) struct RecordQueries {
    window: String,
    window_with_copies: String,
    /// The lowest sequence number of stream `1` at or above `2`, or NULL.
    pub next: String,
}

impl RecordQueries {
    /// The queries with parameter `n` written as `param(n)` (`?n` or `$n`).
    pub(crate) fn new(param: fn(u8) -> String) -> Self {
        let (stream, first, last) = (param(1), param(2), param(3));
        let window = |copies: &str| {
            format!(
                "SELECT sequence, prev_hash, hash, event{copies} FROM audit_records
                 WHERE stream_id = {stream} AND sequence BETWEEN {first} AND {last}
                 ORDER BY sequence"
            )
        };
        Self {
            window: window(""),
            window_with_copies: window(&format!(", {}", crate::copies::COLUMNS.join(", "))),
            next: format!(
                "SELECT min(sequence) FROM audit_records
                 WHERE stream_id = {stream} AND sequence >= {first}"
            ),
        }
    }

    /// The records of stream `1` whose sequence is in `2..=3`, in order: `sequence`,
    /// `prev_hash`, `hash`, `event`, then with `copies` the query columns in
    /// [`Copies`](crate::page::Copies) order.
    pub(crate) fn window(&self, copies: bool) -> &str {
        if copies {
            &self.window_with_copies
        } else {
            &self.window
        }
    }
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

/// The copies of event fields every backend stores beside the record, for querying. Not
/// hashed: the `event` text is authoritative, and verification checks these against it
/// (module `copies`).
pub(crate) struct IndexedColumns {
    pub event_time: String,
    pub correlation_id: String,
    pub kind: String,
    pub agent_id: Option<String>,
    pub action: String,
    pub resource: String,
    pub outcome: Option<String>,
}

impl IndexedColumns {
    /// The copies of `ev`'s fields, as the stores write them (and verification expects them).
    pub(crate) fn of(ev: &AuditEvent) -> Self {
        Self {
            event_time: query_time(ev.time),
            correlation_id: ev.correlation_id.to_string(),
            kind: ev.kind.as_str().to_owned(),
            agent_id: ev.agent_id.as_ref().map(|a| clean(a.as_str())),
            action: clean(&ev.action),
            resource: clean(&ev.resource),
            outcome: ev.outcome.map(|o| o.as_str().to_owned()),
        }
    }
}

/// The `event_time` column's text: the time in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always
/// six fraction digits (event times are truncated to microseconds before sealing).
///
/// Fixed width, so that comparing the text compares the times: SQLite keeps the column as text,
/// and RFC 3339 formatting drops trailing zeros of the fraction, which sorts `…:28Z` after
/// `…:28.5Z` and leaves a record at `03:00:00.5` out of `event_time >= '…T03:00:00Z'`. A bound
/// may be any prefix of this form (`'2026-11-26'`, `'2026-11-26T03:00'`). PostgreSQL parses
/// it into its `timestamptz` column.
pub(crate) fn query_time(time: time::OffsetDateTime) -> String {
    let mut out = String::with_capacity(27);
    write_query_time(&mut out, time);
    out
}

/// Appends [`query_time`]`(time)` to `out`.
pub(crate) fn write_query_time(out: &mut String, time: time::OffsetDateTime) {
    use std::fmt::Write as _;
    let utc = time.to_offset(time::UtcOffset::UTC);
    let (year, month, day) = (utc.year(), u8::from(utc.month()), utc.day());
    let (hour, minute, second, micros) = utc.to_hms_micro();
    // Writing to a `String` cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{micros:06}Z"
    );
}

/// PostgreSQL text cannot hold NUL; the indexed copies are not hashed, so replacing it is safe.
pub(crate) fn clean(s: &str) -> String {
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

/// Decodes rows of `SELECT stream_id, sequence, head_hash, time, key_id, signature` (the column
/// order both backends select), so the stores share one decoder and differ only in their SQL
/// dialect. (Records are read by windows: see `read_windows`.)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows over a table of sequence numbers, as the stores query it.
    async fn read_table(table: &[i64], after: Option<u64>, limit: usize) -> Vec<i64> {
        let window = |first: i64, last: i64| async move {
            let rows: Vec<_> = table
                .iter()
                .filter(|s| (first..=last).contains(*s))
                .map(|&sequence| StoredRecord {
                    stream_id: "s".into(),
                    sequence,
                    prev_hash: format!("p{sequence}"),
                    hash: String::new(),
                    event: String::new(),
                })
                .collect();
            Ok(RecordPage::from_records("s", &rows))
        };
        let next =
            |from: i64| async move { Ok(table.iter().copied().filter(|&s| s >= from).min()) };
        let page = read_windows("s", after, limit, window, next).await.unwrap();
        // Each row's values came along with it.
        assert!(
            page.iter()
                .all(|r| r.prev_hash == format!("p{}", r.sequence))
        );
        page.iter().map(|r| r.sequence).collect()
    }

    #[test]
    fn query_times_are_fixed_width_utc_and_sort_as_text_like_the_times() {
        use time::macros::datetime;
        assert_eq!(
            query_time(datetime!(2026-11-26 03:00:00 UTC)),
            "2026-11-26T03:00:00.000000Z"
        );
        assert_eq!(
            query_time(datetime!(2026-11-26 05:00:00.5 +02:00)),
            "2026-11-26T03:00:00.500000Z"
        );
        assert_eq!(
            query_time(datetime!(0001-01-01 00:00:00.000001 UTC)),
            "0001-01-01T00:00:00.000001Z"
        );
        let mut times = [
            datetime!(2026-11-26 03:00:28.5 UTC),
            datetime!(2026-11-26 03:00:28 UTC),
            datetime!(2026-11-26 03:00:28.500001 UTC),
            datetime!(2026-11-26 03:00:27.999999 UTC),
            datetime!(2026-11-26 04:00:28.1 +01:00),
            datetime!(2026-11-25 23:59:59.9 -05:00),
            datetime!(2025-12-31 23:59:59 UTC),
        ];
        let mut texts: Vec<String> = times.iter().map(|t| query_time(*t)).collect();
        times.sort();
        texts.sort();
        let sorted: Vec<String> = times.iter().map(|t| query_time(*t)).collect();
        assert_eq!(texts, sorted);
        // A whole-second bound (a prefix) takes in the fractions of that second.
        assert!(query_time(datetime!(2026-11-26 03:00:00.5 UTC)).as_str() >= "2026-11-26T03:00:00");
    }

    #[tokio::test]
    async fn windows_read_past_gaps_to_the_last_row_and_stop_at_the_limit() {
        let n = ROWS_PER_WINDOW as i64;
        let dense: Vec<i64> = (0..3 * n + 7).collect();
        assert_eq!(read_table(&dense, None, usize::MAX).await, dense);
        assert_eq!(read_table(&dense, Some(9), 5).await, [10, 11, 12, 13, 14]);
        assert!(read_table(&dense, Some(u64::MAX), 5).await.is_empty());
        // Gaps, a row far beyond the others, and the largest sequence a row can hold.
        let sparse = vec![0, 1, 3, n + 2, 5 * n, 5 * n + 1, 1 << 40, i64::MAX];
        assert_eq!(read_table(&sparse, None, usize::MAX).await, sparse);
        assert_eq!(read_table(&sparse, Some(2), 3).await, [3, n + 2, 5 * n]);
        assert!(read_table(&[], None, 10).await.is_empty());
    }
}
