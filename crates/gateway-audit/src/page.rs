//! Pages of stored records: a window's text in a few buffers, and each row's place in them.
//!
//! Verification reads a few thousand rows at a time and checks them on every core. As
//! [`StoredRecord`]s that cost four heap strings per row, allocated on the reading thread and
//! freed on the hashing threads: the allocator's locks, not the hashing, bounded the speed. A
//! [`RecordPage`] holds the same rows as a handful of large buffers (a native store adopts the
//! database's own concatenated values as they are, see the `framed` module) plus offsets, and
//! the checking threads borrow each row from it.

use crate::store::StoredRecord;
use gateway_core::audit::AuditError;
use std::ops::Range;

/// Stored records of one stream, in one owned block of text: what verification reads
/// ([`AuditStore::read_page`](crate::AuditStore::read_page)). The rows are [`RecordRef`]s
/// borrowing from the page.
#[derive(Debug, Clone, Default)]
pub struct RecordPage {
    /// The stream the page was read for.
    stream_id: String,
    /// The text the rows point into.
    texts: Vec<String>,
    /// Whether the last of `texts` is the page's own (grown by [`RecordPage::push`]) rather
    /// than one adopted from a store.
    owns_last: bool,
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
pub(crate) struct Span {
    text: usize,
    start: usize,
    end: usize,
}

impl Span {
    /// The span without its first `bytes` bytes (a marker in front of a value; ASCII, so the
    /// rest starts on a character boundary).
    pub(crate) fn skip(self, bytes: usize) -> Self {
        Self {
            start: self.start.saturating_add(bytes).min(self.end),
            ..self
        }
    }
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
        page.owns_last = true;
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
        if !self.owns_last {
            self.texts.push(String::new());
            self.owns_last = true;
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
    pub(crate) fn text(&self, span: Span) -> &str {
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
        self.owns_last = other.owns_last;
    }

    /// Takes `bytes`, the values of `count` rows concatenated, whose byte lengths `lengths`
    /// yields in order, and returns where each value is. Fails unless there are exactly `count`
    /// lengths and they use up exactly `bytes`: a tampered table must not make values run into
    /// each other. A value that is not UTF-8 is kept with replacement characters (and then fails
    /// verification).
    pub(crate) fn adopt(
        &mut self,
        bytes: Vec<u8>,
        count: usize,
        mut lengths: impl FnMut() -> Result<usize, AuditError>,
    ) -> Result<Vec<Span>, AuditError> {
        let text = self.texts.len();
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(count);
        let mut at = 0usize;
        for _ in 0..count {
            let end = at
                .checked_add(lengths()?)
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| malformed("a value runs past the window"))?;
            ranges.push(at..end);
            at = end;
        }
        if at != bytes.len() {
            return Err(malformed("more bytes than the values' lengths"));
        }
        // The usual case: valid UTF-8 cut at character boundaries, adopted without a copy
        // (`from_utf8` validates far faster than `from_utf8_lossy`, which is for tampered rows).
        let bytes = match String::from_utf8(bytes) {
            Ok(whole)
                if ranges
                    .iter()
                    .all(|r| whole.is_char_boundary(r.start) && whole.is_char_boundary(r.end)) =>
            {
                self.texts.push(whole);
                self.owns_last = false;
                return Ok(ranges
                    .into_iter()
                    .map(|r| Span {
                        text,
                        start: r.start,
                        end: r.end,
                    })
                    .collect());
            }
            Ok(whole) => whole.into_bytes(),
            Err(e) => e.into_bytes(),
        };
        // A value that is not UTF-8 on its own: each value converted separately, so that no
        // replacement crosses into a neighbour.
        let mut own = String::with_capacity(bytes.len());
        let spans = ranges
            .into_iter()
            .map(|r| {
                let start = own.len();
                own.push_str(&String::from_utf8_lossy(&bytes[r]));
                Span {
                    text,
                    start,
                    end: own.len(),
                }
            })
            .collect();
        self.texts.push(own);
        self.owns_last = false;
        Ok(spans)
    }

    /// Takes `bytes`, `count` values joined by NUL bytes, and returns where each value is; `None`
    /// unless there are exactly `count` of them (a value holding a NUL splits in two) and each
    /// is UTF-8 on its own. (Nothing is taken then.)
    pub(crate) fn adopt_joined(&mut self, bytes: Vec<u8>, count: usize) -> Option<Vec<Span>> {
        let mut ranges = Vec::with_capacity(count);
        let mut start = 0;
        if count > 0 {
            for (i, _) in bytes.iter().enumerate().filter(|(_, b)| **b == 0) {
                ranges.push(start..i);
                start = i + 1;
            }
            ranges.push(start..bytes.len());
        } else if !bytes.is_empty() {
            return None;
        }
        if ranges.len() != count {
            return None;
        }
        let whole = String::from_utf8(bytes).ok()?;
        if !ranges
            .iter()
            .all(|r| whole.is_char_boundary(r.start) && whole.is_char_boundary(r.end))
        {
            return None;
        }
        let text = self.texts.len();
        self.texts.push(whole);
        self.owns_last = false;
        Some(
            ranges
                .into_iter()
                .map(|r| Span {
                    text,
                    start: r.start,
                    end: r.end,
                })
                .collect(),
        )
    }

    /// Sets the query columns of the row with sequence `sequence` (copied onto the page), if
    /// there is one.
    pub(crate) fn set_copies(&mut self, sequence: i64, values: Copies<'_>) {
        let Ok(index) = self.rows.binary_search_by_key(&sequence, |r| r.sequence) else {
            return;
        };
        if !self.owns_last {
            self.texts.push(String::new());
            self.owns_last = true;
        }
        let text = self.texts.len() - 1;
        let own = &mut self.texts[text];
        let spans = values.map(|value| {
            value.map(|v| {
                let start = own.len();
                own.push_str(v);
                Span {
                    text,
                    start,
                    end: own.len(),
                }
            })
        });
        self.rows[index].copies = Some(spans);
    }

    /// Appends a row whose values [`adopt`](Self::adopt) placed.
    pub(crate) fn push_spans(
        &mut self,
        sequence: i64,
        [prev_hash, hash, event]: [Span; 3],
        copies: Option<[Option<Span>; 7]>,
    ) {
        self.rows.push(Row {
            sequence,
            stream_id: None,
            prev_hash,
            hash,
            event,
            copies,
        });
    }

    /// Reserves room for `additional` more rows.
    pub(crate) fn reserve(&mut self, additional: usize) {
        self.rows.reserve(additional);
    }

    /// Puts the rows in sequence order (stable: rows of one sequence keep their order).
    pub(crate) fn sort_by_sequence(&mut self) {
        if !self.rows.is_sorted_by_key(|r| r.sequence) {
            self.rows.sort_by_key(|r| r.sequence);
        }
    }
}

pub(crate) fn malformed(detail: &str) -> AuditError {
    AuditError::internal_msg(format!("reading audit records: malformed window: {detail}"))
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

        // Appending moves buffers (adopted or not) and keeps every row's values.
        let mut joined = RecordPage::new("s");
        let mut adopted = RecordPage::new("s");
        let spans = adopted
            .adopt(b"abcdef".to_vec(), 3, {
                let mut l = [1usize, 2, 3].into_iter();
                move || Ok(l.next().unwrap())
            })
            .unwrap();
        adopted.push_spans(9, [spans[0], spans[1], spans[2]], None);
        joined.append(page.clone());
        joined.append(adopted);
        joined.append(RecordPage::from_records("t", &records[..2]));
        joined.push(records[0].as_record_ref());
        let got = joined.to_records();
        assert_eq!(got[..3], records[..]);
        assert_eq!(
            (
                got[3].sequence,
                &*got[3].prev_hash,
                &*got[3].hash,
                &*got[3].event
            ),
            (9, "a", "bc", "def")
        );
        assert_eq!(got[4..6], records[..2]);
        assert_eq!(got[6], records[0]);
    }

    fn adopt(bytes: &[u8], lengths: &[usize]) -> Result<Vec<String>, AuditError> {
        let mut page = RecordPage::new("s");
        let mut l = lengths.iter().copied();
        let spans = page.adopt(bytes.to_vec(), lengths.len(), || {
            l.next().ok_or_else(|| malformed("fewer lengths"))
        })?;
        Ok(spans.into_iter().map(|s| page.text(s).to_owned()).collect())
    }

    #[test]
    fn adopted_values_stay_apart_whatever_their_bytes() {
        assert_eq!(adopt(b"ab,c", &[1, 0, 3]).unwrap(), ["a", "", "b,c"]);
        // Valid as a whole but cut inside a character: each value is converted on its own.
        let e = "é".as_bytes();
        assert_eq!(
            adopt(&[e[0], e[1], b'x'], &[1, 2]).unwrap(),
            ["\u{fffd}", "\u{fffd}x"]
        );
        // Invalid UTF-8: replaced in its own value only.
        assert_eq!(
            adopt(&[0xff, b'a', b'b'], &[2, 1]).unwrap(),
            ["\u{fffd}a", "b"]
        );
        assert!(adopt(b"abc", &[1, 1]).is_err(), "bytes left over");
        assert!(adopt(b"abc", &[2, 2]).is_err(), "a value runs past the end");
        assert!(
            adopt(b"abc", &[usize::MAX, 1]).is_err(),
            "a length overflows"
        );
        assert!(adopt(b"", &[]).unwrap().is_empty());
    }
}
