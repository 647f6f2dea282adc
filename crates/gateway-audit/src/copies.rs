//! The query columns checked against the hashed body they were copied from.
//!
//! Besides the hashed `event` text, every row keeps copies of a few of its fields for queries
//! (`event_time`, `correlation_id`, `kind`, `agent_id`, `action`, `resource`, `outcome`, see
//! [`IndexedColumns`]). They are not hashed: a row whose `agent_id` was changed while its
//! `event` was left alone would make "what did agent X do between T1 and T2" answer falsely over
//! an intact chain. So verification compares each copy with the body and reports a difference as
//! a modification of that record.
//!
//! A store hands a row's copies over as [`Copies`], read with the row (module `sqlite_rows`, and
//! the Postgres store's own query).

use crate::page::Copies;
use gateway_core::audit::AuditEvent;
use std::borrow::Cow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// The copied columns, in [`Copies`] order.
pub(crate) const COLUMNS: [&str; 7] = [
    "event_time",
    "correlation_id",
    "kind",
    "agent_id",
    "action",
    "resource",
    "outcome",
];

/// What a record's copies must say, from its hashed body.
pub(crate) struct Expected<'a> {
    /// The body's `time`, as RFC 3339 formats it.
    pub time: Cow<'a, str>,
    pub correlation_id: Cow<'a, str>,
    pub kind: &'a str,
    pub agent_id: Option<Cow<'a, str>>,
    pub action: Cow<'a, str>,
    pub resource: Cow<'a, str>,
    pub outcome: Option<&'a str>,
}

impl Expected<'static> {
    /// The copies of a parsed event (rows the one-pass recogniser leaves to the parser): what
    /// the writers store ([`IndexedColumns::of`]), with the time as its RFC 3339 text.
    pub(crate) fn of_event(event: &AuditEvent) -> Self {
        let columns = IndexedColumns::of(event);
        Self {
            time: Cow::Owned(event.time.format(&Rfc3339).unwrap_or_default()),
            correlation_id: Cow::Owned(columns.correlation_id),
            kind: event.kind.as_str(),
            agent_id: columns.agent_id.map(Cow::Owned),
            action: Cow::Owned(columns.action),
            resource: Cow::Owned(columns.resource),
            outcome: event.outcome.map(|o| o.as_str()),
        }
    }
}

/// Checks a row's copies against its body. `None` (a store that does not read them) passes.
/// Each copy must be the one canonical form of its value (`event_time` the fixed-width form of
/// [`query_time`]); with `legacy`, the RFC 3339 text of a SQLite database not yet migrated to
/// the fixed form is accepted too.
pub(crate) fn check(
    copies: Option<Copies<'_>>,
    expected: &Expected<'_>,
    legacy: bool,
) -> Result<(), String> {
    let Some(
        [
            time,
            correlation_id,
            kind,
            agent_id,
            action,
            resource,
            outcome,
        ],
    ) = copies
    else {
        return Ok(());
    };
    let differs = |column: &str, stored: Option<&str>, body: Option<&str>| {
        Err(format!(
            "the row's {column} column ({stored:?}) disagrees with its hashed body ({body:?})"
        ))
    };
    if !time.is_some_and(|t| same_time(t, &expected.time, legacy)) {
        return differs(COLUMNS[0], time, Some(&expected.time));
    }
    let pairs = [
        (1, correlation_id, Some(&*expected.correlation_id)),
        (2, kind, Some(expected.kind)),
        (3, agent_id, expected.agent_id.as_deref()),
        (4, action, Some(&*expected.action)),
        (5, resource, Some(&*expected.resource)),
        (6, outcome, expected.outcome),
    ];
    for (column, stored, body) in pairs {
        if stored != body {
            return differs(COLUMNS[column], stored, body);
        }
    }
    Ok(())
}

/// Whether `stored` is the `event_time` copy of the body time `rfc3339`: its fixed-width form
/// ([`query_time`]), or, with `legacy`, the RFC 3339 text itself (a SQLite database not yet
/// migrated to the fixed form, opened read-only). Any other text of the same instant is not:
/// text comparisons in queries would order it differently (`…:28Z` sorts after `…:28.5Z`).
fn same_time(stored: &str, rfc3339: &str, legacy: bool) -> bool {
    if legacy && stored == rfc3339 {
        return true;
    }
    // The gateway's own times, `YYYY-MM-DDTHH:MM:SS[.f]Z` with at most six fraction digits:
    // compared in place (the common case, without formatting).
    let (s, r) = (stored.as_bytes(), rfc3339.as_bytes());
    if s.len() == 27 && r.len() >= 20 && r.last() == Some(&b'Z') && s[..19] == r[..19] {
        let fraction = match &r[19..r.len() - 1] {
            [] => Some(&[][..]),
            [b'.', digits @ ..] if digits.len() <= 6 => Some(digits),
            _ => None,
        };
        if let Some(digits) = fraction {
            let padded = digits.iter().chain(std::iter::repeat(&b'0')).take(6);
            return s[19] == b'.' && s[20..26].iter().eq(padded) && s[26] == b'Z';
        }
    }
    OffsetDateTime::parse(rfc3339, &Rfc3339).is_ok_and(|t| query_time(t) == stored)
}

#[cfg(test)]
mod tests {
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

    use super::*;

    fn expected() -> Expected<'static> {
        Expected {
            time: "2026-11-26T03:00:00.5Z".into(),
            correlation_id: "0190c1c2-0000-7000-8000-000000000001".into(),
            kind: "completed",
            agent_id: Some("agent:a".into()),
            action: "db.query".into(),
            resource: "db:orders".into(),
            outcome: None,
        }
    }

    const GOOD: Copies<'static> = [
        Some("2026-11-26T03:00:00.500000Z"),
        Some("0190c1c2-0000-7000-8000-000000000001"),
        Some("completed"),
        Some("agent:a"),
        Some("db.query"),
        Some("db:orders"),
        None,
    ];

    #[test]
    fn copies_that_say_what_the_body_says_pass() {
        assert_eq!(check(Some(GOOD), &expected(), false), Ok(()));
        assert_eq!(
            check(None, &expected(), false),
            Ok(()),
            "a store without copies"
        );
        // A database not yet migrated keeps the RFC 3339 text: accepted only as legacy, since
        // the same text written by an attacker changes what sub-second range queries return.
        let mut old = GOOD;
        old[0] = Some("2026-11-26T03:00:00.5Z");
        assert_eq!(check(Some(old), &expected(), true), Ok(()));
        let err = check(Some(old), &expected(), false).unwrap_err();
        assert!(err.contains("event_time column"), "{err}");
    }

    #[test]
    fn every_column_that_differs_is_named() {
        for (i, column) in COLUMNS.iter().enumerate() {
            let mut tampered = GOOD;
            tampered[i] = match GOOD[i] {
                Some(_) => Some("x"),
                None => Some("success"),
            };
            let err = check(Some(tampered), &expected(), false).unwrap_err();
            assert!(err.contains(&format!("{column} column")), "{err}");
        }
        // NULL where the body has a value.
        let mut nulled = GOOD;
        nulled[3] = None;
        assert!(check(Some(nulled), &expected(), false).is_err());
        // Another time, or the same instant written another way.
        let mut time = GOOD;
        time[0] = Some("2026-11-26T03:00:00.500001Z");
        assert!(check(Some(time), &expected(), true).is_err());
        time[0] = Some("2026-11-26T03:00:00.50Z");
        assert!(check(Some(time), &expected(), true).is_err());
    }

    #[test]
    fn times_match_by_their_fixed_form() {
        let cases = [
            ("2026-11-26T03:00:00.000000Z", "2026-11-26T03:00:00Z", true),
            (
                "2026-11-26T03:00:00.100000Z",
                "2026-11-26T03:00:00.1Z",
                true,
            ),
            (
                "2026-11-26T03:00:00.123456Z",
                "2026-11-26T03:00:00.123456Z",
                true,
            ),
            (
                "2026-11-26T03:00:00.123456Z",
                "2026-11-26T03:00:00.123457Z",
                false,
            ),
            ("2026-11-26T03:00:01.000000Z", "2026-11-26T03:00:00Z", false),
            // Another offset goes through parsing.
            (
                "2026-11-26T03:00:00.250000Z",
                "2026-11-26T05:00:00.25+02:00",
                true,
            ),
            (
                "2026-11-26T05:00:00.250000Z",
                "2026-11-26T05:00:00.25+02:00",
                false,
            ),
            ("garbage", "2026-11-26T03:00:00Z", false),
        ];
        for (stored, body, same) in cases {
            assert_eq!(same_time(stored, body, false), same, "{stored} vs {body}");
            assert_eq!(
                same_time(stored, body, true),
                same,
                "{stored} vs {body} (legacy)"
            );
        }
    }
}
