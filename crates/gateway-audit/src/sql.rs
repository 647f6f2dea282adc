//! What the SQLite and PostgreSQL stores share: reading by windows, the record queries in
//! both parameter styles, sequence and limit conversions, and the mapping of database errors.

use crate::page::RecordPage;
use crate::record::StoredCheckpoint;
use gateway_core::audit::AuditError;
use std::future::Future;

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
    use crate::record::StoredRecord;

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
