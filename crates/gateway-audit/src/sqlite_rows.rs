//! SQLite record reads: rows stepped through SQLite's C API (`rusqlite`) on blocking threads,
//! each value copied from SQLite's page straight onto a [`RecordPage`].
//!
//! Everything else in the SQLite store goes through `sqlx`, but `sqlx` hands rows over one at a
//! time from its connection's thread and copies every value twice on the way: for verification,
//! which reads every row, several times SQLite's own work per row. The design before this one
//! read a window as one row of `group_concat` aggregates instead (each column concatenated,
//! with lengths computed by SQLite). Its aggregate steps cost SQLite as much as the rest of
//! verification together (`perf`: about half of all CPU time in `sqlite3_step`), and the seven
//! query columns, which verification also checks, doubled that (a timing of both queries on one
//! database: 0.68 µs per row without them, 1.3 µs with them). Stepping the rows borrows each
//! value from SQLite's page while its row is current: 0.70 µs per row with the query columns,
//! 0.47 µs without. `benches/audit.rs`, verifying 50,000 records, went from 0.69× to 1.00× of
//! the in-memory baseline of the same run with the query columns checked (0.87M → 1.29M
//! records/s), and from 0.93× to 1.20× for the chain alone.
//!
//! Whatever a tampered row holds, it is read as a row that verification can judge and report
//! at its sequence number; only a sequence number that is not an integer makes the read fail
//! (it cannot be put in order). A `NULL` chain column is read as empty. A value that is not
//! valid text (a blob, a number, text that is not UTF-8) is read as its text marked with a
//! leading NUL, so that it fails every check: even a blob holding exactly the right bytes must,
//! since SQL compares it unequal to that text, and queries on the column would miss the row.
//!
//! The connections are SQLite's own, read-only, opened on the store's database (its file, or
//! the in-memory database of `sqlite::memory:`) and kept for the next read. In WAL mode a
//! reader sees every commit made before its query started and never blocks the writer.

use crate::page::{RecordPage, RecordRef};
use crate::sql::{ROWS_PER_WINDOW, RecordQueries};
use gateway_core::audit::AuditError;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, ffi};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How the names `sqlx` gives `sqlite::memory:` databases begin.
const SQLX_IN_MEMORY: &str = "file:sqlx-in-memory-";

/// The most idle connections kept: the record reader reads two windows at once at most.
const IDLE_CONNECTIONS: usize = 2;

/// The bytes of text a row is expected to hold, to size a page before reading it (growing a
/// page copies it; overestimating only reserves address space).
const BYTES_PER_ROW: usize = 1024;

/// Reads records of a SQLite database on blocking threads, with connections of its own.
#[derive(Debug)]
pub(crate) struct RowReader {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl RowReader {
    /// A reader of the database `path` names (nothing is opened yet). A read that finds the
    /// database locked (while it is being recovered) waits up to `busy_timeout`.
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The records of `stream_id` whose sequence is in `first..=last`, in sequence order, with
    /// their query columns if `copies` (see the `copies` module).
    pub(crate) async fn window(
        self: &Arc<Self>,
        stream_id: &str,
        first: i64,
        last: i64,
        copies: bool,
    ) -> Result<RecordPage, AuditError> {
        let reader = Arc::clone(self);
        let stream_id = stream_id.to_owned();
        tokio::task::spawn_blocking(move || reader.read(&stream_id, first, last, copies))
            .await
            .map_err(|e| AuditError::internal("the audit record read task failed", e))?
    }

    fn read(
        &self,
        stream_id: &str,
        first: i64,
        last: i64,
        copies: bool,
    ) -> Result<RecordPage, AuditError> {
        let connection = match self.idle().pop() {
            Some(connection) => connection,
            None => self.open()?,
        };
        // A connection whose read failed is dropped (by `?`) rather than kept in doubt.
        let page = read_rows(&connection, stream_id, first, last, copies)?;
        let mut idle = self.idle();
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
        Ok(page)
    }

    /// The idle connections. A panic while the lock was held cannot leave the list
    /// inconsistent (it is only pushed to and popped from), so a poisoned lock is taken as is.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> Result<Connection, AuditError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        // `sqlx` opens `sqlite::memory:` as a shared-cache in-memory database by this name;
        // opened the same way, the name reaches the same database.
        if self
            .path
            .to_str()
            .is_some_and(|p| p.starts_with(SQLX_IN_MEMORY))
        {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let connection = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| read_error("opening the SQLite audit database for reading", e))?;
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(|e| read_error("opening the SQLite audit database for reading", e))?;
        Ok(connection)
    }
}

/// The SQLite store's record queries.
pub(crate) static QUERIES: std::sync::LazyLock<RecordQueries> =
    std::sync::LazyLock::new(|| RecordQueries::new(|n| format!("?{n}")));

fn read_rows(
    connection: &Connection,
    stream_id: &str,
    first: i64,
    last: i64,
    copies: bool,
) -> Result<RecordPage, AuditError> {
    let failed = |e| read_error("reading audit records", e);
    let mut statement = connection
        .prepare_cached(QUERIES.window(copies))
        .map_err(failed)?;
    let width = usize::try_from(last.saturating_sub(first).saturating_add(1))
        .unwrap_or(0)
        .min(ROWS_PER_WINDOW);
    let mut page = RecordPage::with_capacity(stream_id, width, width * BYTES_PER_ROW);
    let mut rows = statement.query((stream_id, first, last)).map_err(failed)?;
    while let Some(row) = rows.next().map_err(failed)? {
        let value = |i: usize| row.get_ref(i).map(text).map_err(failed);
        let sequence = match row.get_ref(0).map_err(failed)? {
            ValueRef::Integer(sequence) => sequence,
            other => {
                return Err(AuditError::internal_msg(format!(
                    "reading audit records: a sequence number that is not an integer ({:?})",
                    other.data_type()
                )));
            }
        };
        let [prev_hash, hash, event] =
            [value(1)?, value(2)?, value(3)?].map(Option::unwrap_or_default);
        let copies = if copies {
            let mut values: [Option<Cow<'_, str>>; 7] = Default::default();
            for (i, copy) in values.iter_mut().enumerate() {
                *copy = value(4 + i)?;
            }
            Some(values)
        } else {
            None
        };
        page.push(RecordRef {
            stream_id,
            sequence,
            prev_hash: &prev_hash,
            hash: &hash,
            event: &event,
            copies: copies
                .as_ref()
                .map(|values| values.each_ref().map(|v| v.as_deref())),
        });
    }
    Ok(page)
}

/// A value as text; `None` for `NULL`. Text is borrowed from SQLite; any other value (see
/// the module docs) is marked.
fn text(value: ValueRef<'_>) -> Option<Cow<'_, str>> {
    let (kind, shown) = match value {
        ValueRef::Null => return None,
        // `from_utf8` first: its check is several times faster than the lossy conversion's.
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => return Some(Cow::Borrowed(text)),
            Err(_) => ("text that is not UTF-8", String::from_utf8_lossy(bytes)),
        },
        ValueRef::Blob(bytes) => ("blob", String::from_utf8_lossy(bytes)),
        ValueRef::Integer(i) => ("integer", Cow::Owned(i.to_string())),
        ValueRef::Real(r) => ("real", Cow::Owned(r.to_string())),
    };
    Some(Cow::Owned(format!("{NOT_TEXT}({kind}) {shown}")))
}

/// What a value that is not valid text starts with when read: a NUL, which no value the
/// writers store holds (`copies::clean`), so that no check accepts it.
const NOT_TEXT: char = '\0';

/// A SQLite failure as an [`AuditError`]: the database busy, locked or unreachable is
/// `Unavailable` (worth retrying), anything else `Internal`.
fn read_error(context: &str, e: rusqlite::Error) -> AuditError {
    let unavailable = matches!(
        e.sqlite_error_code(),
        Some(
            ffi::ErrorCode::DatabaseBusy
                | ffi::ErrorCode::DatabaseLocked
                | ffi::ErrorCode::CannotOpen
                | ffi::ErrorCode::SystemIoFailure
        )
    );
    if unavailable {
        AuditError::unavailable(context.to_owned(), e)
    } else {
        AuditError::internal(context.to_owned(), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database holding the records table as the migrations make it, without its triggers,
    /// with `rows` inserted as SQL value lists.
    fn database(rows: &[&str]) -> Connection {
        let connection = Connection::open_in_memory().unwrap();
        let schema = include_str!("../migrations/sqlite/0001_audit.sql");
        let table = schema.split(";").next().unwrap();
        connection.execute_batch(table).unwrap();
        for row in rows {
            connection
                .execute_batch(&format!("INSERT INTO audit_records VALUES ({row});"))
                .unwrap();
        }
        connection
    }

    const COPIES: &str = "'t', 'c', 'requested', 'agent:a', 'act', 'res', NULL";

    #[test]
    fn rows_come_back_in_order_with_their_copies_or_without() {
        let connection = database(&[
            &format!("'s', 2, 'p2', 'h2', '{{}}', {COPIES}"),
            &format!("'s', 0, 'p0', 'h0', 'é', {COPIES}"),
            &format!("'t', 1, 'x', 'x', 'x', {COPIES}"),
            &format!("'s', 9, 'p9', 'h9', 'late', {COPIES}"),
        ]);
        let page = read_rows(&connection, "s", 0, 5, true).unwrap();
        let rows: Vec<_> = page.iter().collect();
        assert_eq!(rows.len(), 2, "another stream and a later row are not read");
        assert_eq!(
            (
                rows[0].sequence,
                rows[0].prev_hash,
                rows[0].hash,
                rows[0].event
            ),
            (0, "p0", "h0", "é")
        );
        assert_eq!(rows[1].sequence, 2);
        assert_eq!(
            rows[1].copies,
            Some([
                Some("t"),
                Some("c"),
                Some("requested"),
                Some("agent:a"),
                Some("act"),
                Some("res"),
                None
            ])
        );
        let page = read_rows(&connection, "s", 0, 5, false).unwrap();
        assert_eq!(page.len(), 2);
        assert!(page.iter().all(|r| r.copies.is_none()));
    }

    #[test]
    fn values_that_are_not_text_are_marked_and_null_chain_columns_read_as_empty() {
        let connection = database(&["'s', 0, CAST('p' AS BLOB), 'h', CAST(x'ff' AS TEXT), \
             't', 'c', 'requested', x'00ff', 'act', 'res', 'success'"]);
        // A rebuilt table, without types or constraints, may hold NULL and numbers anywhere.
        connection
            .execute_batch(
                "CREATE TABLE rebuilt (stream_id, sequence, prev_hash, hash, event, event_time,
                     correlation_id, kind, agent_id, action, resource, outcome);
                 INSERT INTO rebuilt SELECT * FROM audit_records;
                 DROP TABLE audit_records; ALTER TABLE rebuilt RENAME TO audit_records;
                 INSERT INTO audit_records VALUES
                     ('s', 1, NULL, 'h', 7, 't', 'c', 'requested', NULL, 'act', 'res', 1.5);",
            )
            .unwrap();
        let page = read_rows(&connection, "s", 0, 1, true).unwrap();
        let rows: Vec<_> = page.iter().collect();
        assert_eq!(rows[0].prev_hash, "\0(blob) p");
        assert_eq!(rows[0].event, "\0(text that is not UTF-8) \u{fffd}");
        let copies = rows[0].copies.unwrap();
        assert_eq!(copies[3], Some("\0(blob) \0\u{fffd}"));
        assert_eq!(copies[6], Some("success"));
        assert_eq!(rows[1].prev_hash, "");
        assert_eq!(rows[1].event, "\0(integer) 7");
        let copies = rows[1].copies.unwrap();
        assert_eq!((copies[3], copies[6]), (None, Some("\0(real) 1.5")));
    }

    #[test]
    fn a_sequence_number_that_is_not_an_integer_fails_the_read() {
        let connection = database(&[&format!("'s', 1.5, 'p', 'h', '{{}}', {COPIES}")]);
        let err = read_rows(&connection, "s", 0, 5, true).unwrap_err();
        assert!(err.to_string().contains("not an integer"), "{err}");
    }
}
