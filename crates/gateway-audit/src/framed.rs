//! SQLite windows of records as a few long values.
//!
//! `sqlx` hands SQLite rows over one at a time from the connection's thread, copying every
//! column value twice on the way: several times what SQLite itself spends per row, and the
//! bottleneck of verification. So the SQLite store reads a window of records as one row of
//! aggregates, each column concatenated over the window's rows (SQLite feeds every aggregate
//! the rows in the same order):
//!
//! * `count(*)`;
//! * the sequence numbers, comma-separated;
//! * for `prev_hash`, `hash` and `event`: the byte length of each row's value, comma-separated,
//!   and the values themselves, concatenated.
//!
//! The lengths are computed by SQLite from the stored values, so no value's content can shift
//! another row's fields, whatever a tampered row holds; a value that is not valid UTF-8 is read
//! with replacement characters (and then fails verification). A `NULL` would be skipped by the
//! aggregates, so every list must have exactly `count` entries and every value must be used up,
//! or the read fails instead of silently misreading the window.
//!
//! The three concatenated values become the buffers of a [`RecordPage`] as they are, and rows
//! are offsets into them: no string per value (see the `page` module).
//!
//! When verification asks for them, the seven query columns follow, each as its values joined
//! by NUL bytes (module `copies`, which also says what happens when a tampered value holds a
//! NUL: this module then reports that the copies did not split, and the store reads them again).
//!
//! `stream_id` is not read: the query selects one stream by exact equality.

use crate::page::{RecordPage, Span, malformed};
use gateway_core::audit::AuditError;

/// The columns of `SELECT count(*), group_concat(sequence, ','), …` (see the module docs), in
/// query order.
pub(crate) type Window = (
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

/// The query reading records `?2..=?3` of stream `?1` as a [`Window`], with the rows' query
/// columns (module `copies`) or without (seven NULL columns).
pub(crate) fn window_query(copies: bool) -> &'static str {
    if copies {
        WITH_COPIES.as_str()
    } else {
        WITHOUT_COPIES.as_str()
    }
}

static WITH_COPIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    query(
        &(0..crate::copies::COLUMNS.len())
            .map(crate::copies::joined_column)
            .collect::<Vec<_>>()
            .join(",\n            "),
    )
});
static WITHOUT_COPIES: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| query(&["NULL"; 7].join(", ")));

fn query(copies: &str) -> String {
    format!(
        "SELECT count(*), group_concat(sequence, ','),
            group_concat(length(CAST(prev_hash AS BLOB)), ','),
            group_concat(length(CAST(hash AS BLOB)), ','),
            group_concat(length(CAST(event AS BLOB)), ','),
            CAST(group_concat(prev_hash, '') AS BLOB),
            CAST(group_concat(hash, '') AS BLOB),
            CAST(group_concat(event, '') AS BLOB),
            {copies}
        FROM audit_records WHERE stream_id = ?1 AND sequence BETWEEN ?2 AND ?3"
    )
}

/// The query reading the packed query columns (module `copies`) of records `?2..=?3` of stream
/// `?1`, a row at a time: for a window whose joined copies did not split into its rows.
pub(crate) static PACKED_COPIES_QUERY: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        format!(
            "SELECT sequence, CAST({} AS BLOB) FROM audit_records
             WHERE stream_id = ?1 AND sequence BETWEEN ?2 AND ?3",
            crate::copies::SQLITE_PACKED
        )
    });

/// Gives the rows of `page` their query columns from the rows of [`PACKED_COPIES_QUERY`]
/// (`(sequence, packed)`). A row without readable copies gets all NULL, which fails the check.
pub(crate) fn set_packed_copies(page: &mut RecordPage, rows: Vec<(i64, Vec<u8>)>) {
    let packed: std::collections::HashMap<i64, String> = rows
        .into_iter()
        .map(|(sequence, bytes)| (sequence, String::from_utf8_lossy(&bytes).into_owned()))
        .collect();
    let sequences: Vec<i64> = page.iter().map(|r| r.sequence).collect();
    for sequence in sequences {
        let values = packed
            .get(&sequence)
            .and_then(|p| crate::copies::unpack(p))
            .unwrap_or([None; 7]);
        page.set_copies(sequence, values);
    }
}

/// A decoded window: its page, and whether its query columns still have to be read row by row
/// (a tampered value held a NUL, see the module docs); the page's rows then have none.
pub(crate) struct Decoded {
    pub page: RecordPage,
    pub copies_unsplit: bool,
}

/// Splits a window of `stream_id` into its records, in sequence order. The concatenated values
/// become the page's buffers as they are (no copy, no string per value).
/// With `copies`, the window must hold the rows' packed query columns (see [`window_query`]).
pub(crate) fn decode(
    stream_id: &str,
    window: Window,
    copies_read: bool,
) -> Result<Decoded, AuditError> {
    let (
        count,
        sequences,
        prev_lengths,
        hash_lengths,
        event_lengths,
        prevs,
        hashes,
        events,
        c0,
        c1,
        c2,
        c3,
        c4,
        c5,
        c6,
    ) = window;
    let count = usize::try_from(count).map_err(|_| malformed("a negative row count"))?;
    let mut page = RecordPage::new(stream_id);
    let mut column = |lengths: Option<String>, values: Option<Vec<u8>>| {
        let mut lengths = Numbers::new(lengths.as_deref());
        let spans = page.adopt(values.unwrap_or_default(), count, || {
            usize::try_from(lengths.next()?).map_err(|_| malformed("a negative length"))
        })?;
        if lengths.done() {
            Ok(spans)
        } else {
            Err(malformed("more values than rows"))
        }
    };
    let prevs = column(prev_lengths, prevs)?;
    let hashes = column(hash_lengths, hashes)?;
    let events = column(event_lengths, events)?;
    let mut copies: Vec<Option<[Option<Span>; 7]>> = vec![None; count];
    let mut copies_unsplit = false;
    if copies_read {
        let mut columns = Vec::with_capacity(7);
        for column in [c0, c1, c2, c3, c4, c5, c6] {
            match page.adopt_joined(column.unwrap_or_default(), count) {
                Some(spans) => columns.push(spans),
                None => {
                    copies_unsplit = true;
                    break;
                }
            }
        }
        if !copies_unsplit {
            for (row, copy) in copies.iter_mut().enumerate() {
                let mut spans = [None; 7];
                for (i, column) in columns.iter().enumerate() {
                    spans[i] = column.get(row).copied().and_then(|span| {
                        crate::copies::joined_value(i, page.text(span))
                            .map(|marker| span.skip(marker))
                    });
                }
                *copy = Some(spans);
            }
        }
    }
    let mut sequences = Numbers::new(sequences.as_deref());
    page.reserve(count);
    for (((prev, hash), event), copies) in prevs.into_iter().zip(hashes).zip(events).zip(copies) {
        page.push_spans(sequences.next()?, [prev, hash, event], copies);
    }
    if !sequences.done() {
        return Err(malformed("more values than rows"));
    }
    // Aggregation order is up to the database; sequence numbers are unique per stream (the
    // primary key), so sorting restores the window's order exactly.
    page.sort_by_sequence();
    Ok(Decoded {
        page,
        copies_unsplit,
    })
}

/// A comma-separated list of integers.
struct Numbers<'a>(Option<std::str::Split<'a, char>>);

impl<'a> Numbers<'a> {
    fn new(list: Option<&'a str>) -> Self {
        Self(list.map(|l| l.split(',')))
    }

    fn next(&mut self) -> Result<i64, AuditError> {
        let item = self
            .0
            .as_mut()
            .and_then(Iterator::next)
            .ok_or_else(|| malformed("fewer values than rows (a NULL column?)"))?;
        item.parse()
            .map_err(|_| malformed("a value that is not an integer"))
    }

    fn done(&mut self) -> bool {
        self.0.as_mut().is_none_or(|items| items.next().is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::page::Copies;

    /// Sequence, `prev_hash`, `hash`, `event`; every row has the query columns [`COPIES`].
    type Row<'a> = (i64, &'a [u8], &'a [u8], &'a [u8]);

    const COPIES: Copies<'static> = [
        Some("t"),
        Some("c,1"),
        Some("k"),
        Some("agent:a"),
        Some(""),
        Some("é"),
        None,
    ];

    /// Decodes a window read with the query columns, which must have split into the rows.
    fn decode(stream_id: &str, window: Window) -> Result<RecordPage, AuditError> {
        let decoded = super::decode(stream_id, window, true)?;
        assert!(!decoded.copies_unsplit);
        Ok(decoded.page)
    }

    /// Query column `i` of `rows` rows as SQLite joins it (see `copies::joined_column`).
    fn joined(rows: usize, i: usize) -> Option<Vec<u8>> {
        let value = match (i, COPIES[i]) {
            (3 | 6, Some(v)) => format!("={v}"),
            (_, v) => v.unwrap_or_default().to_owned(),
        };
        (rows > 0).then(|| vec![value; rows].join("\0").into_bytes())
    }

    /// The window SQLite would return for `rows` (its aggregates are NULL over no rows).
    fn window(rows: &[Row<'_>]) -> Window {
        let list = |items: Vec<String>| (!rows.is_empty()).then(|| items.join(","));
        let lengths = |field: for<'r> fn(&'r Row<'r>) -> &'r [u8]| {
            list(rows.iter().map(|r| field(r).len().to_string()).collect())
        };
        let concat = |field: for<'r> fn(&'r Row<'r>) -> &'r [u8]| {
            (!rows.is_empty()).then(|| rows.iter().flat_map(|r| field(r).to_vec()).collect())
        };
        (
            rows.len() as i64,
            list(rows.iter().map(|r| r.0.to_string()).collect()),
            lengths(|r| r.1),
            lengths(|r| r.2),
            lengths(|r| r.3),
            concat(|r| r.1),
            concat(|r| r.2),
            concat(|r| r.3),
            joined(rows.len(), 0),
            joined(rows.len(), 1),
            joined(rows.len(), 2),
            joined(rows.len(), 3),
            joined(rows.len(), 4),
            joined(rows.len(), 5),
            joined(rows.len(), 6),
        )
    }

    #[test]
    fn values_hold_anything_and_windows_come_back_in_order() {
        // Separators, digits and multi-byte text inside values do not shift other fields.
        let rows = decode(
            "s",
            window(&[
                (7, b"12,ab", "é,1,".as_bytes(), b"{\"a\":\"3,x\"}"),
                (-2, b"", b"", b""),
                (5, &[0xff, b'x'], b"h", "😀".as_bytes()),
            ]),
        )
        .unwrap()
        .to_records();
        let seqs: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [-2, 5, 7]);
        assert_eq!(rows[2].prev_hash, "12,ab");
        assert_eq!(rows[2].hash, "é,1,");
        assert_eq!(rows[2].event, "{\"a\":\"3,x\"}");
        assert_eq!(rows[1].prev_hash, "\u{fffd}x", "invalid UTF-8 is replaced");
        assert_eq!(rows[1].event, "😀");
        assert!(rows.iter().all(|r| r.stream_id == "s"));
        let page = decode("s", window(&[(1, b"p", b"h", b"e"), (2, b"", b"", b"")])).unwrap();
        assert_eq!(page.get(0).unwrap().copies, Some(COPIES));
        assert_eq!(page.get(1).unwrap().copies, Some(COPIES));
        assert!(decode("s", window(&[])).unwrap().is_empty());
        // Read without them (seven NULL columns), rows carry none.
        let mut chain_only = window(&[(1, b"p", b"h", b"e")]);
        (chain_only.8, chain_only.9, chain_only.14) = (None, None, None);
        (chain_only.10, chain_only.11, chain_only.12, chain_only.13) = (None, None, None, None);
        let page = super::decode("s", chain_only, false).unwrap().page;
        assert_eq!(page.get(0).unwrap().copies, None);
    }

    #[test]
    fn query_columns_that_do_not_split_into_the_rows_are_left_to_be_read_again() {
        let rows = [(1, &b"p"[..], &b"h"[..], &b"e"[..]), (2, b"q", b"i", b"f")];
        // A value holding a NUL, a NULL left out, a value that is not UTF-8 on its own.
        let bad: [(usize, &[u8]); 3] = [(4, b"\0x\0"), (0, b"t"), (5, &[0xff, 0, b'a'])];
        for (column, value) in bad {
            let mut w = window(&rows);
            let slot = match column {
                0 => &mut w.8,
                4 => &mut w.12,
                _ => &mut w.13,
            };
            *slot = Some(value.to_vec());
            let decoded = super::decode("s", w, true).unwrap();
            assert!(decoded.copies_unsplit, "column {column}");
            assert!(decoded.page.iter().all(|r| r.copies.is_none()));
            assert_eq!(decoded.page.len(), 2);
        }
        // Read again packed, each row gets its own; a row the second read lacks gets NULLs.
        let mut w = window(&rows);
        w.12 = Some(b"\0x\0".to_vec());
        let mut page = super::decode("s", w, true).unwrap().page;
        set_packed_copies(&mut page, vec![(2, b"1:t3:c,11:k-2:\0x0:-".to_vec())]);
        assert_eq!(page.get(0).unwrap().copies, Some([None; 7]));
        let second = [
            Some("t"),
            Some("c,1"),
            Some("k"),
            None,
            Some("\0x"),
            Some(""),
            None,
        ];
        assert_eq!(page.get(1).unwrap().copies, Some(second));
    }

    #[test]
    fn a_short_or_inconsistent_window_is_an_error() {
        let good = window(&[(1, b"p", b"h", b"e"), (2, b"q", b"i", b"f")]);
        assert!(decode("s", good.clone()).is_ok());
        // A row whose column was NULL is missing from that column's aggregates.
        let mut missing = good.clone();
        missing.4 = Some("1".into());
        missing.7 = Some(b"e".to_vec());
        assert!(decode("s", missing).is_err());
        let mut extra = good.clone();
        extra.0 = 1;
        assert!(decode("s", extra).is_err());
        let mut short = good.clone();
        short.7 = Some(b"e".to_vec());
        assert!(decode("s", short).is_err());
        let mut long = good.clone();
        long.7 = Some(b"efg".to_vec());
        assert!(decode("s", long).is_err());
        let mut null_column = good.clone();
        null_column.3 = None;
        null_column.6 = None;
        assert!(decode("s", null_column).is_err());
        let mut extra_sequence = good.clone();
        extra_sequence.1 = Some("1,2,3".into());
        assert!(decode("s", extra_sequence).is_err());
        let mut missing_sequence = good.clone();
        missing_sequence.1 = Some("1".into());
        assert!(decode("s", missing_sequence).is_err());
        let mut negative = good.clone();
        negative.2 = Some("-1,3".into());
        assert!(decode("s", negative).is_err());
        // Lengths that still add up cannot move a byte between rows unnoticed: the values
        // differ, so the rows fail verification, but nothing is read out of place.
        let mut shifted = good.clone();
        shifted.6 = Some(b"hi".to_vec());
        shifted.3 = Some("2,0".into());
        let rows = decode("s", shifted).unwrap().to_records();
        assert_eq!((&*rows[0].hash, &*rows[1].hash), ("hi", ""));
        let mut not_a_number = good;
        not_a_number.1 = Some("1,x".into());
        assert!(decode("s", not_a_number).is_err());
    }
}
