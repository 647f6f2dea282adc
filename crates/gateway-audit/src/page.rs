//! Pages of stored records: a window's text in a few buffers, and each row's place in them.
//!
//! Verification reads a few thousand rows at a time and checks them on every core. As
//! [`StoredRecord`]s that cost four heap strings per row, allocated on the reading thread and
//! freed on the hashing threads: the allocator's locks, not the hashing, bounded the speed. A
//! [`RecordPage`] holds the same rows as a handful of large buffers (the SQLite store copies
//! each value from SQLite's page straight into one, see the `sqlite_rows` module) plus offsets,
//! and the checking threads borrow each row from it.

use crate::record::StoredRecord;

/// Stored records of one stream, in one owned block of text: what verification reads
/// ([`AuditStore::read_page`](crate::AuditStore::read_page)). The rows are [`RecordRef`]s
/// borrowing from the page.
#[derive(Debug, Clone, Default)]
pub struct RecordPage {
    /// The stream the page was read for.
    stream_id: String,
    /// The text the rows point into; [`RecordPage::push`] grows the last one.
    texts: Vec<String>,
    rows: Vec<Row>,
}

/// A row: its sequence number and where its values are.
#[derive(Debug, Clone, Copy)]
struct Row {
    sequence: i64,
    /// `None`: the page's stream (the stream id is kept only for a row of another stream).
    stream_id: Option<Span>,
    prev_hash: Span,
    hash: Span,
    event: Span,
    /// The row's query columns (module `copies`); `None` when the store did not read them.
    copies: Option<[Option<Span>; 7]>,
}

/// A value: `texts[text][start..end]`, on character boundaries.
#[derive(Debug, Clone, Copy)]
struct Span {
    text: usize,
    start: usize,
    end: usize,
}

/// One stored record, borrowed from a [`RecordPage`]: the fields of a [`StoredRecord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The chain.
    pub stream_id: &'a str,
    /// The sequence number as stored (a tampered row may hold a negative one).
    pub sequence: i64,
    /// Hex hash of the previous record.
    pub prev_hash: &'a str,
    /// Hex hash of this record.
    pub hash: &'a str,
    /// The `event` column (see [`StoredRecord::event`]).
    pub event: &'a str,
    /// The row's query columns, in this order: `event_time`, `correlation_id`, `kind`,
    /// `agent_id`, `action`, `resource`, `outcome` (`None` for NULL); `event_time` in the
    /// fixed-width UTC text SQLite stores (see the crate docs). Verification checks them against
    /// `event` when a store reads them (both stores of this crate do); `None` skips that check.
    pub copies: Option<Copies<'a>>,
}

/// A row's query columns (see [`RecordRef::copies`]).
pub type Copies<'a> = [Option<&'a str>; 7];

impl RecordRef<'_> {
    /// The record as an owned [`StoredRecord`].
    pub fn to_stored(&self) -> StoredRecord {
        StoredRecord {
            stream_id: self.stream_id.to_owned(),
            sequence: self.sequence,
            prev_hash: self.prev_hash.to_owned(),
            hash: self.hash.to_owned(),
            event: self.event.to_owned(),
        }
    }
}

impl RecordPage {
    /// An empty page of `stream_id`.
    pub fn new(stream_id: impl Into<String>) -> Self {
        Self {
            stream_id: stream_id.into(),
            ..Self::default()
        }
    }

    /// An empty page of `stream_id` with room for `rows` rows holding `bytes` bytes of text
    /// between them, pushed with [`push`](Self::push) (growing a page copies it).
    pub fn with_capacity(stream_id: impl Into<String>, rows: usize, bytes: usize) -> Self {
        let mut page = Self::new(stream_id);
        page.texts.push(String::with_capacity(bytes));
        page.rows.reserve(rows);
        page
    }

    /// The rows of `records`, in their order, as a page of `stream_id` (a record of another
    /// stream keeps its own stream id).
    pub fn from_records(stream_id: impl Into<String>, records: &[StoredRecord]) -> Self {
        let bytes = records
            .iter()
            .map(|r| r.prev_hash.len() + r.hash.len() + r.event.len())
            .sum();
        let mut page = Self::with_capacity(stream_id, records.len(), bytes);
        for r in records {
            page.push(r.as_record_ref());
        }
        page
    }

    /// The stream the page was read for.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Appends a copy of `record`.
    pub fn push(&mut self, record: RecordRef<'_>) {
        if self.texts.is_empty() {
            self.texts.push(String::new());
        }
        let text = self.texts.len() - 1;
        let mut copy = |value: &str| {
            let own = &mut self.texts[text];
            let start = own.len();
            own.push_str(value);
            Span {
                text,
                start,
                end: own.len(),
            }
        };
        let stream_id = (record.stream_id != self.stream_id).then(|| copy(record.stream_id));
        let row = Row {
            sequence: record.sequence,
            stream_id,
            prev_hash: copy(record.prev_hash),
            hash: copy(record.hash),
            event: copy(record.event),
            copies: record.copies.map(|values| values.map(|v| v.map(&mut copy))),
        };
        self.rows.push(row);
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the page has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<RecordRef<'_>> {
        self.rows.get(index).map(|row| self.record(row))
    }

    /// The last row's stored sequence number.
    pub fn last_sequence(&self) -> Option<i64> {
        self.rows.last().map(|row| row.sequence)
    }

    /// The rows, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.rows.iter().map(|row| self.record(row))
    }

    /// The rows as owned [`StoredRecord`]s.
    pub fn to_records(&self) -> Vec<StoredRecord> {
        self.iter().map(|r| r.to_stored()).collect()
    }

    fn record(&self, row: &Row) -> RecordRef<'_> {
        RecordRef {
            stream_id: row
                .stream_id
                .map_or(self.stream_id.as_str(), |s| self.text(s)),
            sequence: row.sequence,
            prev_hash: self.text(row.prev_hash),
            hash: self.text(row.hash),
            event: self.text(row.event),
            copies: row
                .copies
                .map(|spans| spans.map(|span| span.map(|s| self.text(s)))),
        }
    }

    /// A span's text. Spans are made only by this module, on character boundaries of a text
    /// that is never changed below them, so the lookup cannot fail; were that broken it would
    /// read as an empty value (which fails verification) rather than panic.
    fn text(&self, span: Span) -> &str {
        self.texts
            .get(span.text)
            .and_then(|t| t.get(span.start..span.end))
            .unwrap_or_default()
    }

    /// Moves `other`'s rows to the end of this page (its buffers are moved, not copied).
    pub(crate) fn append(&mut self, other: RecordPage) {
        if other.stream_id != self.stream_id {
            // Rows without a stream id of their own mean `other`'s stream: copy them instead.
            for r in other.iter() {
                self.push(r);
            }
            return;
        }
        let base = self.texts.len();
        let shift = |s: Span| Span {
            text: s.text + base,
            ..s
        };
        self.rows.extend(other.rows.iter().map(|row| Row {
            sequence: row.sequence,
            stream_id: row.stream_id.map(shift),
            prev_hash: shift(row.prev_hash),
            hash: shift(row.hash),
            event: shift(row.event),
            copies: row.copies.map(|spans| spans.map(|span| span.map(shift))),
        }));
        self.texts.extend(other.texts);
    }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: &str, sequence: i64, event: &str) -> StoredRecord {
        StoredRecord {
            stream_id: stream.into(),
            sequence,
            prev_hash: format!("p{sequence}"),
            hash: format!("h{sequence}"),
            event: event.into(),
        }
    }

    #[test]
    fn pages_hold_records_as_they_were() {
        let records = vec![
            record("s", 0, "{}"),
            record("t", 1, "é😀"),
            record("s", -3, ""),
        ];
        let page = RecordPage::from_records("s", &records);
        assert_eq!(page.len(), 3);
        assert_eq!(page.to_records(), records);
        assert_eq!(page.last_sequence(), Some(-3));
        assert_eq!(page.get(1).unwrap().stream_id, "t");
        assert!(page.get(3).is_none());

        // Appending moves buffers and keeps every row's values.
        let mut joined = RecordPage::new("s");
        joined.append(page.clone());
        joined.append(RecordPage::from_records("s", &records[1..]));
        joined.append(RecordPage::from_records("t", &records[..2]));
        joined.push(records[0].as_record_ref());
        let got = joined.to_records();
        assert_eq!(got[..3], records[..]);
        assert_eq!(got[3..5], records[1..]);
        assert_eq!(got[5..7], records[..2]);
        assert_eq!(got[7], records[0]);
    }
}
