//! The query columns checked against the hashed body they were copied from.
//!
//! Besides the hashed `event` text, every row keeps copies of a few of its fields for queries
//! (`event_time`, `correlation_id`, `kind`, `agent_id`, `action`, `resource`, `outcome`, see
//! `store::IndexedColumns`). They are not hashed: a row whose `agent_id` was changed while its
//! `event` was left alone would make "what did agent X do between T1 and T2" answer falsely over
//! an intact chain. So verification compares each copy with the body and reports a difference as
//! a modification of that record.
//!
//! A store hands a row's copies over packed into one value ([`pack_value`] after
//! [`pack_value`]): the seven columns in the order above, each as its byte length, `:` and the
//! value, or `-` for NULL. The lengths come from the stored values, so no value can shift
//! another, whatever it holds, and the packing delimits itself.

use crate::store::{clean, query_time};
use gateway_core::audit::AuditEvent;
use std::borrow::Cow;
use std::fmt::Write as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The copied columns, in packing order.
pub(crate) const COLUMNS: [&str; 7] = [
    "event_time",
    "correlation_id",
    "kind",
    "agent_id",
    "action",
    "resource",
    "outcome",
];

/// The SQLite expression packing a row's copies (see the module docs), built in one call.
/// `octet_length` reads a text's byte length without scanning it. A NULL in a column that may
/// not hold one (a rebuilt table) packs as an empty value, which then fails the check.
pub(crate) const SQLITE_PACKED: &str = "format('%d:%s%d:%s%d:%s%s%d:%s%d:%s%s',
        octet_length(event_time), event_time,
        octet_length(correlation_id), correlation_id,
        octet_length(kind), kind,
        iif(agent_id IS NULL, '-', octet_length(agent_id) || ':' || agent_id),
        octet_length(action), action,
        octet_length(resource), resource,
        iif(outcome IS NULL, '-', octet_length(outcome) || ':' || outcome))";

/// Appends one value, packed as the module docs say (a row is its seven values in
/// [`COLUMNS`] order).
pub(crate) fn pack_value(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "{}:", v.len());
            out.push_str(v);
        }
        None => out.push('-'),
    }
}

/// The byte length of each of `count` packed rows laid end to end (the packing delimits
/// itself), or `None` unless `bytes` is exactly that.
pub(crate) fn packed_lengths(bytes: &[u8], count: usize) -> Option<Vec<usize>> {
    let mut lengths = Vec::with_capacity(count);
    let mut at = 0usize;
    for _ in 0..count {
        let start = at;
        for _ in 0..COLUMNS.len() {
            if bytes.get(at) == Some(&b'-') {
                at += 1;
                continue;
            }
            let digits = bytes
                .get(at..)?
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let length: usize = std::str::from_utf8(bytes.get(at..at + digits)?)
                .ok()?
                .parse()
                .ok()?;
            at = at.checked_add(digits + 1)?;
            if bytes.get(at - 1) != Some(&b':') {
                return None;
            }
            at = at.checked_add(length).filter(|&end| end <= bytes.len())?;
        }
        lengths.push(at - start);
    }
    (at == bytes.len()).then_some(lengths)
}

/// The seven values of a packed row, or `None` if it is not seven well-formed fields.
fn unpack(mut packed: &str) -> Option<[Option<&str>; 7]> {
    let mut values = [None; 7];
    for value in &mut values {
        if let Some(rest) = packed.strip_prefix('-') {
            packed = rest;
            continue;
        }
        let (length, rest) = packed.split_once(':')?;
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (v, rest) = rest.split_at_checked(length.parse().ok()?)?;
        *value = Some(v);
        packed = rest;
    }
    packed.is_empty().then_some(values)
}

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
    /// The copies of a parsed event (rows the one-pass recogniser leaves to the parser).
    pub(crate) fn of_event(event: &AuditEvent) -> Self {
        Self {
            time: Cow::Owned(event.time.format(&Rfc3339).unwrap_or_default()),
            correlation_id: Cow::Owned(event.correlation_id.to_string()),
            kind: event.kind.as_str(),
            agent_id: event
                .agent_id
                .as_ref()
                .map(|a| Cow::Owned(clean(a.as_str()))),
            action: Cow::Owned(clean(&event.action)),
            resource: Cow::Owned(clean(&event.resource)),
            outcome: event.outcome.map(|o| o.as_str()),
        }
    }
}

/// Checks a row's packed copies against its body. `None` (a store that does not read them)
/// passes.
pub(crate) fn check(packed: Option<&str>, expected: &Expected<'_>) -> Result<(), String> {
    let Some(packed) = packed else {
        return Ok(());
    };
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
    ) = unpack(packed)
    else {
        return Err("the row's query columns cannot be read back (a tampered value?)".to_owned());
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

    fn pack(out: &mut String, values: [Option<&str>; 7]) {
        for value in values {
            pack_value(out, value);
        }
    }

    fn packed(values: [Option<&str>; 7]) -> String {
        let mut out = String::new();
        pack(&mut out, values);
        out
    }

    const GOOD: [Option<&str>; 7] = [
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
        assert_eq!(check(Some(&packed(GOOD)), &expected()), Ok(()));
        assert_eq!(check(None, &expected()), Ok(()), "a store without copies");
        // A database not yet migrated keeps the RFC 3339 text.
        let mut old = GOOD;
        old[0] = Some("2026-11-26T03:00:00.5Z");
        assert_eq!(check(Some(&packed(old)), &expected()), Ok(()));
        // Values holding the packing's own characters stay apart.
        let mut odd = GOOD;
        odd[5] = Some("db:1:x-");
        let mut body = expected();
        body.resource = "db:1:x-".into();
        assert_eq!(check(Some(&packed(odd)), &body), Ok(()));
    }

    #[test]
    fn every_column_that_differs_is_named() {
        for (i, column) in COLUMNS.iter().enumerate() {
            let mut tampered = GOOD;
            tampered[i] = match GOOD[i] {
                Some(_) => Some("x"),
                None => Some("success"),
            };
            let err = check(Some(&packed(tampered)), &expected()).unwrap_err();
            assert!(err.contains(&format!("{column} column")), "{err}");
        }
        // NULL where the body has a value.
        let mut nulled = GOOD;
        nulled[3] = None;
        assert!(check(Some(&packed(nulled)), &expected()).is_err());
        // Another time, or the same instant written another way.
        let mut time = GOOD;
        time[0] = Some("2026-11-26T03:00:00.500001Z");
        assert!(check(Some(&packed(time)), &expected()).is_err());
        time[0] = Some("2026-11-26T03:00:00.50Z");
        assert!(check(Some(&packed(time)), &expected()).is_err());
    }

    #[test]
    fn malformed_packing_is_a_fault_not_a_panic() {
        let good = packed(GOOD);
        for bad in [
            "",
            "-",
            "x:abc",
            "99:abc",
            "3:abc",
            ":",
            "18446744073709551616:a",
            &good[..good.len() - 1],
            &format!("{good}-"),
        ] {
            assert!(check(Some(bad), &expected()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn packed_rows_split_whatever_their_values_hold() {
        let mut rows = String::new();
        pack(&mut rows, GOOD);
        let first = rows.len();
        pack(
            &mut rows,
            [
                Some("1:-"),
                None,
                Some(""),
                None,
                Some("9:"),
                Some("é"),
                None,
            ],
        );
        let lengths = packed_lengths(rows.as_bytes(), 2).unwrap();
        assert_eq!(lengths, [first, rows.len() - first]);
        assert_eq!(packed_lengths(b"", 0).unwrap(), Vec::<usize>::new());
        for (bad, count) in [
            (&rows.as_bytes()[..rows.len() - 1], 2),
            (rows.as_bytes(), 1),
            (rows.as_bytes(), 3),
            (b"-------x".as_slice(), 1),
            (b"99999999999999999999999:a------".as_slice(), 1),
            (b"3a------".as_slice(), 1),
            (b":------".as_slice(), 1),
        ] {
            assert!(packed_lengths(bad, count).is_none(), "{bad:?}");
        }
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
