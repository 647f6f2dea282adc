//! The query columns checked against the hashed body they were copied from.
//!
//! Besides the hashed `event` text, every row keeps copies of a few of its fields for queries
//! (`event_time`, `correlation_id`, `kind`, `agent_id`, `action`, `resource`, `outcome`, see
//! `store::IndexedColumns`). They are not hashed: a row whose `agent_id` was changed while its
//! `event` was left alone would make "what did agent X do between T1 and T2" answer falsely over
//! an intact chain. So verification compares each copy with the body and reports a difference as
//! a modification of that record.
//!
//! A store hands a row's copies over as [`Copies`], read with the row (module `sqlite_rows`, and
//! the Postgres store's own query).

use crate::page::Copies;
use crate::store::{IndexedColumns, query_time};
use gateway_core::audit::AuditEvent;
use std::borrow::Cow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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
pub(crate) fn check(copies: Option<Copies<'_>>, expected: &Expected<'_>) -> Result<(), String> {
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
    if !time.is_some_and(|t| same_time(t, &expected.time)) {
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
/// ([`query_time`]), or the RFC 3339 text itself (a SQLite database not yet migrated to the
/// fixed form, opened read-only).
fn same_time(stored: &str, rfc3339: &str) -> bool {
    if stored == rfc3339 {
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
        assert_eq!(check(Some(GOOD), &expected()), Ok(()));
        assert_eq!(check(None, &expected()), Ok(()), "a store without copies");
        // A database not yet migrated keeps the RFC 3339 text.
        let mut old = GOOD;
        old[0] = Some("2026-11-26T03:00:00.5Z");
        assert_eq!(check(Some(old), &expected()), Ok(()));
    }

    #[test]
    fn every_column_that_differs_is_named() {
        for (i, column) in COLUMNS.iter().enumerate() {
            let mut tampered = GOOD;
            tampered[i] = match GOOD[i] {
                Some(_) => Some("x"),
                None => Some("success"),
            };
            let err = check(Some(tampered), &expected()).unwrap_err();
            assert!(err.contains(&format!("{column} column")), "{err}");
        }
        // NULL where the body has a value.
        let mut nulled = GOOD;
        nulled[3] = None;
        assert!(check(Some(nulled), &expected()).is_err());
        // Another time, or the same instant written another way.
        let mut time = GOOD;
        time[0] = Some("2026-11-26T03:00:00.500001Z");
        assert!(check(Some(time), &expected()).is_err());
        time[0] = Some("2026-11-26T03:00:00.50Z");
        assert!(check(Some(time), &expected()).is_err());
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
            assert_eq!(same_time(stored, body), same, "{stored} vs {body}");
        }
    }
}
