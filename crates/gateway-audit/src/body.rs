//! What a row's `event` column holds, and checking one stored row on its own (before linking).
//!
//! Two formats share the column:
//!
//! * **Body** (what the writer stores now): the record's canonical body, i.e. the exact
//!   RFC 8785 bytes its hash covers after `prev_hash` ([`canonical_body`]: the event's fields
//!   plus `stream_id` and `sequence`). Verification hashes these bytes as stored; it only has to
//!   establish that they *are* the canonical body of a record of the row's stream and sequence.
//!   [`recognize`] does that in one pass over the bytes, without building the record; when it
//!   cannot decide (rare forms such as escaped or non-BMP object keys) the text is parsed and
//!   re-encoded, which is the definition.
//! * **Event** (rows written before stored bodies): the event as `serde_json` text. It is parsed,
//!   the record is re-encoded from it and the row's `stream_id` and `sequence`, and hashed, as it
//!   always was.
//!
//! A text with a top-level `stream_id` or `sequence` key claims to be a body (an event has
//! neither) and must then be canonical byte for byte; in both formats a duplicate object key is
//! a fault, because readers disagree on which of the two values counts.

use crate::copies::clean;
use crate::copies::{self, Expected};
use crate::page::RecordRef;
use gateway_core::audit::chain::{ChainLink, canonical_body};
use gateway_core::audit::{AuditEvent, AuditEventKind, AuditRecord};
use gateway_core::ids::AgentId;
use gateway_core::strict_json::parse_strict;
use serde_json::Value;
use std::borrow::Cow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A row that cannot be checked at all: its stored sequence number and why (a modification).
pub(crate) type RowError = (i64, String);

/// Checks one stored row's content against its hash, in either format; linking it to its
/// neighbours is left to [`gateway_core::audit::chain::ChainVerifier::push_link`], which must
/// be the verifier of `stream_id`.
///
/// The row is borrowed (from the page it was read into): a row of `stream_id` stored as a body,
/// the usual case, becomes a link without a heap allocation.
///
/// Unless `legacy` is set, only canonical bodies are accepted: a text in the older event format
/// is a fault (an attacker may replace a body by an older-format text with the same values, which
/// hashes the same, see the crate docs), and so is an `event_time` copy in RFC 3339 form.
pub(crate) fn check_row(
    stream_id: &str,
    row: RecordRef<'_>,
    legacy: bool,
) -> Result<ChainLink, RowError> {
    let RecordRef {
        stream_id: row_stream,
        sequence: stored_sequence,
        prev_hash,
        hash,
        event: text,
        copies,
    } = row;
    let sequence = u64::try_from(stored_sequence).map_err(|_| {
        (
            stored_sequence,
            format!("negative sequence number {stored_sequence}"),
        )
    })?;
    // Only a row of the verified stream may leave its stream id out of the link; any other is
    // reported as inserted by the verifier.
    let link = |kind: AuditEventKind, body: Result<&[u8], String>| {
        if row_stream == stream_id {
            ChainLink::of_stream_body(sequence, prev_hash, hash, kind, body)
        } else {
            ChainLink::of_body(
                row_stream.to_owned(),
                sequence,
                prev_hash.to_owned(),
                hash.to_owned(),
                kind,
                body,
            )
        }
    };
    if let Some(facts) = recognize(text) {
        let body = agree(row_stream, sequence, facts.stream_id, facts.sequence)
            .and_then(|()| copies::check(copies, &facts.expected()?, legacy))
            .map(|()| text.as_bytes());
        return Ok(link(facts.kind, body));
    }
    match parse(text).map_err(|detail| (stored_sequence, detail))? {
        Stored::Body {
            stream_id: body_stream,
            sequence: body_sequence,
            event,
        } => {
            let kind = event.kind;
            let record = AuditRecord {
                stream_id: body_stream,
                sequence: body_sequence,
                event,
                prev_hash: String::new(),
                hash: String::new(),
            };
            let body = match canonical_body(&record) {
                Ok(canonical) if canonical == text.as_bytes() => {
                    agree(row_stream, sequence, &record.stream_id, record.sequence)
                        .and_then(|()| {
                            copies::check(copies, &Expected::of_event(&record.event), legacy)
                        })
                        .map(|()| text.as_bytes())
                }
                Ok(_) => Err("the stored body is not in canonical (RFC 8785) form".to_owned()),
                Err(e) => Err(e.to_string()),
            };
            Ok(link(kind, body))
        }
        Stored::Event(_) if !legacy => Err((
            stored_sequence,
            "the stored text is an event in the older format, not the record's canonical body \
             (accepted only when legacy bodies are allowed)"
                .to_owned(),
        )),
        Stored::Event(event) => {
            copies::check(copies, &Expected::of_event(&event), legacy)
                .map_err(|detail| (stored_sequence, detail))?;
            Ok(ChainLink::of_record(AuditRecord {
                stream_id: row_stream.to_owned(),
                sequence,
                event,
                prev_hash: prev_hash.to_owned(),
                hash: hash.to_owned(),
            }))
        }
    }
}

/// The row's own `stream_id` and `sequence` columns must say what its hashed body says: they
/// are what queries and paging go by.
fn agree(
    stream_id: &str,
    sequence: u64,
    body_stream: &str,
    body_sequence: u64,
) -> Result<(), String> {
    if stream_id != body_stream {
        return Err(format!(
            "the row's stream_id {stream_id:?} disagrees with its hashed body ({body_stream:?})"
        ));
    }
    if sequence != body_sequence {
        return Err(format!(
            "the row's sequence {sequence} disagrees with its hashed body ({body_sequence})"
        ));
    }
    Ok(())
}

/// A stored text, parsed.
pub(crate) enum Stored {
    /// A record body, not yet known to be canonical.
    Body {
        stream_id: String,
        sequence: u64,
        event: AuditEvent,
    },
    /// An event (a row written before stored bodies).
    Event(AuditEvent),
}

/// Parses a stored text of either format, refusing duplicate keys.
pub(crate) fn parse(text: &str) -> Result<Stored, String> {
    let value =
        parse_strict(text.as_bytes()).map_err(|e| format!("event JSON does not parse: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("event JSON is not an object".to_owned());
    };
    let event = |map| {
        serde_json::from_value::<AuditEvent>(Value::Object(map))
            .map_err(|e| format!("event JSON does not parse: {e}"))
    };
    if !map.contains_key("stream_id") && !map.contains_key("sequence") {
        return event(map).map(Stored::Event);
    }
    let stream_id = match map.remove("stream_id") {
        Some(Value::String(s)) => s,
        _ => return Err("the stored body has no string stream_id".to_owned()),
    };
    let sequence = map
        .remove("sequence")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| "the stored body has no integer sequence".to_owned())?;
    Ok(Stored::Body {
        stream_id,
        sequence,
        event: event(map)?,
    })
}

/// What a canonical body says about its record's place in the chain, and the fields its row
/// keeps copies of (module `copies`), as written in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts<'a> {
    pub stream_id: &'a str,
    pub sequence: u64,
    pub kind: AuditEventKind,
    pub time: &'a str,
    pub correlation_id: &'a str,
    pub agent_id: Option<&'a str>,
    pub action: Token<'a>,
    pub resource: Token<'a>,
    pub outcome: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// What the row's copies must say. A string written with escapes is decoded (rare).
    pub(crate) fn expected(&self) -> Result<Expected<'a>, String> {
        Ok(Expected {
            time: Cow::Borrowed(self.time),
            correlation_id: Cow::Borrowed(self.correlation_id),
            kind: self.kind.as_str(),
            agent_id: self.agent_id.map(Cow::Borrowed),
            action: self.action.text()?,
            resource: self.resource.text()?,
            outcome: self.outcome,
        })
    }
}

/// Nesting deeper than this is left to the parser (whose own limit is 128), so everything
/// recognised here also parses.
const MAX_DEPTH: usize = 64;

/// A decimal of at most 15 significant digits survives a round trip through a double (and an
/// integer of at most 15 digits is below 2^53).
const MAX_EXACT_DIGITS: usize = 15;

/// The largest sequence number `canonical_body` writes as its plain digits (2^53).
const MAX_EXACT_SEQUENCE: u64 = 1 << 53;

/// `Some` only if `text` is certainly the canonical body of a record: exactly what
/// [`canonical_body`] writes for the record `text` parses to. `None` when it is not, or when
/// this one-pass check cannot tell; the caller then parses it.
///
/// It follows the canonical encoder field by field (keys in RFC 8785 order, optional fields
/// absent rather than `null`, `details` non-empty) and checks each value is in its one canonical
/// form: strings escape exactly `"`, `\` and control characters, in their shortest form;
/// numbers are what ECMAScript prints for their value; object keys strictly increase (so none
/// repeats); the time is what RFC 3339 formatting of its parsed value gives back; ids are valid.
pub(crate) fn recognize(text: &str) -> Option<Facts<'_>> {
    let mut c = Cursor {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    c.literal(b"{\"action\":")?;
    let action = c.string()?;
    let mut agent_id = None;
    if c.optional_key(b"agent_id") {
        let agent = c.plain_string()?;
        AgentId::new(agent).ok()?;
        agent_id = Some(agent);
    }
    c.key(b"correlation_id")?;
    let correlation_id = c.uuid()?;
    if c.optional_key(b"decision") {
        c.decision()?;
    }
    if c.optional_key(b"details") {
        // An empty map is left out of the body, so `{}` here is not canonical.
        if c.bytes.get(c.at..c.at + 2) == Some(&b"{}"[..]) {
            return None;
        }
        c.object(2)?;
    }
    if c.optional_key(b"grant_id") {
        c.string()?;
    }
    c.key(b"kind")?;
    let kind = AuditEventKind::from_name(c.plain_string()?)?;
    if c.optional_key(b"origin") {
        c.string()?;
    }
    let mut outcome = None;
    if c.optional_key(b"outcome") {
        let value = c.plain_string()?;
        if !matches!(value, "success" | "failure") {
            return None;
        }
        outcome = Some(value);
    }
    c.key(b"resource")?;
    let resource = c.string()?;
    if c.optional_key(b"runner_id") {
        c.string()?;
    }
    c.key(b"sequence")?;
    let sequence = c.unsigned(16).filter(|&s| s <= MAX_EXACT_SEQUENCE)?;
    c.key(b"step")?;
    u32::try_from(c.unsigned(10)?).ok()?;
    c.key(b"stream_id")?;
    let stream_id = c.plain_string()?;
    c.key(b"time")?;
    let time = c.plain_string()?;
    canonical_time(time)?;
    c.literal(b"}")?;
    (c.at == c.bytes.len()).then_some(Facts {
        stream_id,
        sequence,
        kind,
        time,
        correlation_id,
        agent_id,
        action,
        resource,
        outcome,
    })
}

/// Whether `s` is what formatting its parsed value as RFC 3339 gives (what the parser of a
/// record and then the canonical encoder would do).
fn canonical_time(s: &str) -> Option<()> {
    if is_plain_utc_time(s) {
        return Some(());
    }
    let time = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let mut buf = [0u8; 64];
    let mut out = &mut buf[..];
    time.format_into(&mut out, &Rfc3339).ok()?;
    // What is left of the buffer says how much was written (the count `format_into` returns
    // leaves out some of the fraction's digits).
    let written = 64 - out.len();
    (buf.get(..written)? == s.as_bytes()).then_some(())
}

/// `YYYY-MM-DDTHH:MM:SS[.f]Z` with a real calendar date, hours to 23, seconds to 59 and a
/// fraction of 1-9 digits not ending in 0: exactly the form RFC 3339 formatting gives a UTC time
/// (4-digit year, 2-digit fields, `Z` for UTC, trailing zeros of the fraction dropped), so it
/// parses and formats back unchanged. The times the gateway writes all look like this; anything
/// else takes the parse-and-format path.
fn is_plain_utc_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digit = |i: usize| {
        b.get(i)
            .filter(|d| d.is_ascii_digit())
            .map(|d| u32::from(d - b'0'))
    };
    let number = |from: usize, len: usize| {
        (from..from + len).try_fold(0u32, |n, i| digit(i).map(|d| n * 10 + d))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4),
        number(5, 2),
        number(8, 2),
        number(11, 2),
        number(14, 2),
        number(17, 2),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    let fields = at(4, b'-')
        && at(7, b'-')
        && at(10, b'T')
        && at(13, b':')
        && at(16, b':')
        && (1..=days).contains(&day)
        && hour <= 23
        && minute <= 59
        && second <= 59;
    let fraction = match b.get(19..b.len().saturating_sub(1)) {
        Some([]) => true,
        Some([b'.', digits @ ..]) => {
            (1..=9).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
                && digits.last() != Some(&b'0')
        }
        _ => false,
    };
    fields && fraction && b.last() == Some(&b'Z')
}

/// A string token as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    /// The text between the quotes, escapes undecoded.
    raw: &'a str,
    /// Whether it holds an escape (its value then differs from `raw`).
    escaped: bool,
    /// Whether it holds a character outside the Basic Multilingual Plane (where UTF-8 byte
    /// order and RFC 8785's UTF-16 key order differ).
    astral: bool,
}

impl<'a> Token<'a> {
    /// The string's value, as the query copy of it holds it (NUL replaced, see
    /// `copies::clean`; unescaped canonical text holds none).
    fn text(&self) -> Result<Cow<'a, str>, String> {
        if !self.escaped {
            return Ok(Cow::Borrowed(self.raw));
        }
        serde_json::from_str::<String>(&format!("\"{}\"", self.raw))
            .map(|value| Cow::Owned(clean(&value)))
            .map_err(|e| format!("a string of the body does not decode: {e}"))
    }
}

/// A position in the text being recognised. Every method consumes what it checked and returns
/// `None` when the text is not (or might not be) canonical there.
struct Cursor<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        let end = self.at.checked_add(expected.len())?;
        (self.bytes.get(self.at..end)? == expected).then(|| self.at = end)
    }

    /// Consumes `,"name":` if it comes next.
    fn optional_key(&mut self, name: &[u8]) -> bool {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        let n = name.len();
        let matches = rest.get(..2) == Some(b",\"")
            && rest.get(2..2 + n) == Some(name)
            && rest.get(2 + n..4 + n) == Some(b"\":");
        if matches {
            self.at += n + 4;
        }
        matches
    }

    fn key(&mut self, name: &[u8]) -> Option<()> {
        self.optional_key(name).then_some(())
    }

    /// A string in canonical form: only `"`, `\` and control characters escaped, each in the one
    /// form RFC 8785 writes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, else `\u00xx`).
    fn string(&mut self) -> Option<Token<'a>> {
        self.literal(b"\"")?;
        let start = self.at;
        let mut escaped = false;
        let mut astral = false;
        loop {
            // Most of a body is string content: skip it eight bytes at a time.
            if self
                .bytes
                .get(self.at..self.at + 8)
                .is_some_and(plain_block)
            {
                self.at += 8;
                continue;
            }
            let b = self.peek()?;
            match b {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                    continue;
                }
                0x00..=0x1f => return None,
                0xf0..=0xff => astral = true,
                _ => {}
            }
            self.at += 1;
        }
        let raw = self.text.get(start..self.at)?;
        self.at += 1;
        Some(Token {
            raw,
            escaped,
            astral,
        })
    }

    /// One escape sequence, at the backslash.
    fn escape(&mut self) -> Option<()> {
        let next = *self.bytes.get(self.at + 1)?;
        if matches!(next, b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') {
            self.at += 2;
            return Some(());
        }
        // `\u00xx` for the control characters that have no short form.
        let seq = self.bytes.get(self.at..self.at + 6)?;
        let hex = |d: u8| match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        };
        let code = hex(seq[4])? * 16 + hex(seq[5])?;
        let ok = &seq[..4] == b"\\u00"
            && seq[4] <= b'1'
            && !matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d);
        ok.then(|| self.at += 6)
    }

    /// A string without escapes, as text.
    fn plain_string(&mut self) -> Option<&'a str> {
        let token = self.string()?;
        (!token.escaped).then_some(token.raw)
    }

    /// A UUID as the encoder writes it: lowercase, hyphenated.
    fn uuid(&mut self) -> Option<&'a str> {
        let text = self.plain_string()?;
        let s = text.as_bytes();
        let ok = s.len() == 36
            && s.iter().enumerate().all(|(i, &b)| match i {
                8 | 13 | 18 | 23 => b == b'-',
                _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
            });
        ok.then_some(text)
    }

    /// `{"allow":…[,"decision_id":…][,"policy_id":…],"reasons":[…]}`.
    fn decision(&mut self) -> Option<()> {
        self.literal(b"{\"allow\":")?;
        if self.literal(b"true").is_none() {
            self.literal(b"false")?;
        }
        if self.optional_key(b"decision_id") {
            self.string()?;
        }
        if self.optional_key(b"policy_id") {
            self.string()?;
        }
        self.key(b"reasons")?;
        self.literal(b"[")?;
        if self.literal(b"]").is_none() {
            loop {
                self.string()?;
                if self.literal(b",").is_none() {
                    self.literal(b"]")?;
                    break;
                }
            }
        }
        self.literal(b"}")
    }

    /// An unsigned integer of at most `max_digits` digits, without a leading zero.
    fn unsigned(&mut self, max_digits: usize) -> Option<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        let digits = self.text.get(start..self.at)?;
        let ok = !digits.is_empty()
            && digits.len() <= max_digits
            && (digits == "0" || !digits.starts_with('0'));
        if ok { digits.parse().ok() } else { None }
    }

    /// Any JSON value in canonical form, at nesting `depth`.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object whose keys strictly increase in RFC 8785 order (UTF-16 code units; the same
    /// as byte order for the keys accepted here: unescaped, within the BMP).
    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.literal(b"{")?;
        if self.literal(b"}").is_some() {
            return Some(());
        }
        let mut previous: Option<&str> = None;
        loop {
            let key = self.string()?;
            if key.escaped || key.astral || previous.is_some_and(|p| p >= key.raw) {
                return None;
            }
            previous = Some(key.raw);
            self.literal(b":")?;
            self.value(depth)?;
            if self.literal(b",").is_none() {
                return self.literal(b"}");
            }
        }
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.literal(b"[")?;
        if self.literal(b"]").is_some() {
            return Some(());
        }
        loop {
            self.value(depth)?;
            if self.literal(b",").is_none() {
                return self.literal(b"]");
            }
        }
    }

    /// A number exactly as ECMAScript prints the double it denotes (what RFC 8785 requires).
    fn number(&mut self) -> Option<()> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        let literal = self.text.get(start..self.at)?;
        if is_short_integer(literal) || is_short_decimal(literal) {
            return Some(());
        }
        // Everything else: the literal must be what its (correctly rounded) value prints as.
        // `serde_json` parses as exactly (feature `float_roundtrip`), and prints integers through
        // the same double, so this is the form a parse and re-encode gives back.
        let value: f64 = literal.parse().ok()?;
        if !value.is_finite() {
            return None;
        }
        let canonical = serde_json_canonicalizer::to_string(&value).ok()?;
        (canonical == literal).then_some(())
    }
}

/// Whether none of 8 bytes of string content needs a closer look: no `"`, `\`, control
/// character, or first byte of a character outside the BMP (>= 0xf0). A false `false` only
/// costs the byte-by-byte path.
fn plain_block(block: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let Ok(bytes) = <[u8; 8]>::try_from(block) else {
        return false;
    };
    let x = u64::from_le_bytes(bytes);
    // A byte is zero in `v` => its high bit is set in `zero(v)` (the classic SWAR test).
    let zero = |v: u64| v.wrapping_sub(ONES) & !v;
    let quote = zero(x ^ (ONES * u64::from(b'"')));
    let backslash = zero(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x;
    let astral = x & (x << 1) & (x << 2) & (x << 3);
    (quote | backslash | control | astral) & HIGH_BITS == 0
}

/// `-?(0|[1-9][0-9]{0,14})` but not `-0` (which prints as `0`): below 2^53 an integer is a
/// double and ECMAScript prints its plain digits.
fn is_short_integer(literal: &str) -> bool {
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    let negative = digits.len() != literal.len();
    !digits.is_empty()
        && digits.len() <= MAX_EXACT_DIGITS
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (!digits.starts_with('0') || (digits == "0" && !negative))
}

/// `-?(0|[1-9][0-9]*)\.[0-9]*[1-9]`, at most 15 digits in all, and below 1 at most five zeros
/// after the point: a decimal that ECMAScript prints back exactly as written. With at most 15
/// significant digits, two different decimals never round to the same double, so the literal's
/// digits are the shortest that identify its double; ECMAScript writes those digits in this
/// plain form for magnitudes from 1e-6 to below 1e21.
fn is_short_decimal(literal: &str) -> bool {
    let unsigned = literal.strip_prefix('-').unwrap_or(literal);
    let Some((int, frac)) = unsigned.split_once('.') else {
        return false;
    };
    let all_digits = int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    let below_one = int == "0";
    let int_ok = below_one || (!int.is_empty() && !int.starts_with('0'));
    let digits = if below_one { 0 } else { int.len() } + frac.len();
    let leading_zeros = frac.len() - frac.trim_start_matches('0').len();
    all_digits
        && int_ok
        && !frac.is_empty()
        && !frac.ends_with('0')
        && digits <= MAX_EXACT_DIGITS
        && (!below_one || leading_zeros <= 5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::audit::chain::{GENESIS_PREV_HASH, seal_with_body};
    use gateway_core::audit::{DecisionRecord, EventOutcome};
    use gateway_core::ids::RequestId;
    use gateway_core::testing::strategies::{audit_event, text};
    use proptest::prelude::*;

    /// The exact definition [`recognize`] must agree with: the text parses to a record body
    /// whose canonical encoding is the text itself.
    fn exact(text: &str) -> Option<(String, u64, AuditEventKind)> {
        let Ok(Stored::Body {
            stream_id,
            sequence,
            event,
        }) = parse(text)
        else {
            return None;
        };
        let kind = event.kind;
        let record = AuditRecord {
            stream_id,
            sequence,
            event,
            prev_hash: String::new(),
            hash: String::new(),
        };
        let canonical = canonical_body(&record).ok()?;
        (canonical == text.as_bytes()).then_some((record.stream_id, record.sequence, kind))
    }

    fn owned(facts: Facts<'_>) -> (String, u64, AuditEventKind) {
        (facts.stream_id.to_owned(), facts.sequence, facts.kind)
    }

    prop_compose! {
        /// A sealed record's canonical body (as the writer stores it), if it can be sealed
        /// (times whose offset has seconds cannot be formatted as RFC 3339).
        fn body()(
            stream_id in prop_oneof!["[a-z0-9.:/@_-]{1,20}", text()],
            // Up to 2^53: beyond, JCS writes the nearest double, not the sequence itself.
            sequence in prop_oneof![0u64..1_000_000, 0u64..=(1 << 53)],
            event in audit_event(),
        ) -> Option<(String, u64, AuditEventKind, String)> {
            let kind = event.kind;
            seal_with_body(&stream_id, sequence, GENESIS_PREV_HASH, event)
                .ok()
                .map(|(record, body)| (record.stream_id, record.sequence, kind, body))
        }
    }

    /// One edit of a body: a character inserted, deleted or replaced, at a position.
    fn mutation() -> impl Strategy<Value = (usize, u8, char)> {
        let chars = prop_oneof![
            proptest::sample::select(vec![
                '"',
                '\\',
                ',',
                ':',
                '{',
                '}',
                '[',
                ']',
                ' ',
                '0',
                '1',
                '9',
                'e',
                'E',
                '-',
                '+',
                '.',
                'u',
                'a',
                'n',
                't',
                'f',
                '/',
                '\u{e9}',
                '\u{1f600}',
                '\u{1}',
            ]),
            any::<char>(),
        ];
        (any::<usize>(), 0u8..3, chars)
    }

    fn mutate(body: &str, (at, op, c): (usize, u8, char)) -> String {
        let chars: Vec<char> = body.chars().collect();
        let at = at % (chars.len() + 1);
        let mut out: Vec<char> = chars.clone();
        match op {
            0 => out.insert(at, c),
            1 if at < chars.len() => {
                out.remove(at);
            }
            _ if at < chars.len() => out[at] = c,
            _ => out.push(c),
        }
        out.into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Every body the writer stores is canonical by the definition, and whenever the
        /// one-pass recogniser decides, it says what the body says.
        #[test]
        fn stored_bodies_are_canonical_and_recognised_truthfully(body in body()) {
            let Some((stream_id, sequence, kind, body)) = body else { return Ok(()) };
            let truth = (stream_id, sequence, kind);
            prop_assert_eq!(exact(&body), Some(truth.clone()));
            if let Some(facts) = recognize(&body) {
                prop_assert_eq!(owned(facts), truth);
            }
        }

        /// Sound under edits: whatever the recogniser accepts, the definition accepts too, with
        /// the same facts (it may leave a decision to the definition, never overrule it).
        #[test]
        fn the_recogniser_never_accepts_what_the_definition_rejects(
            body in body(),
            edits in proptest::collection::vec(mutation(), 1..4),
        ) {
            let Some((_, _, _, body)) = body else { return Ok(()) };
            let mut text = body;
            for edit in edits {
                text = mutate(&text, edit);
                if let Some(facts) = recognize(&text) {
                    prop_assert_eq!(Some(owned(facts)), exact(&text), "{}", text);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The word-at-a-time test calls a block plain exactly when it holds no byte the
        /// string scanner must look at.
        #[test]
        fn plain_blocks_hold_nothing_special(block in proptest::array::uniform8(prop_oneof![
            Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..0x80, 0x80u8..0xf0, 0xf0u8..=0xff,
        ])) {
            let special = block
                .iter()
                .any(|&b| b == b'"' || b == b'\\' || !(0x20..0xf0).contains(&b));
            prop_assert_eq!(plain_block(&block), !special, "{:?}", block);
        }

        /// A short decimal is exactly what RFC 8785 prints for its value.
        #[test]
        fn short_decimals_print_as_written(
            negative in any::<bool>(),
            int in prop_oneof![Just(0u64), 1u64..1_000_000_000],
            zeros in 0usize..8,
            frac in 1u64..100_000_000,
        ) {
            let literal = format!(
                "{}{int}.{}{frac}",
                if negative { "-" } else { "" },
                "0".repeat(zeros)
            );
            let value: f64 = literal.parse().unwrap();
            let canonical = serde_json_canonicalizer::to_string(&value).unwrap();
            if is_short_decimal(&literal) {
                prop_assert_eq!(canonical, literal);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the plain-UTC shortcut accepts, parsing and formatting gives back unchanged.
        #[test]
        fn plain_utc_times_format_back_unchanged(
            year in prop_oneof![0u32..10_000, 1999u32..2101],
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..25,
            minute in 0u32..61,
            second in 0u32..62,
            fraction in proptest::option::of("[0-9]{1,10}"),
            z in prop_oneof![Just("Z"), Just("z"), Just("+00:00")],
        ) {
            let s = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{}{z}",
                fraction.map(|f| format!(".{f}")).unwrap_or_default()
            );
            if is_plain_utc_time(&s) {
                let parsed = OffsetDateTime::parse(&s, &Rfc3339);
                prop_assert!(parsed.is_ok(), "{}", s);
                prop_assert_eq!(parsed.unwrap().format(&Rfc3339).unwrap(), s);
            }
        }
    }

    #[test]
    fn plain_utc_time_examples() {
        for yes in [
            "2026-11-26T00:36:42.660061Z",
            "2024-02-29T23:59:59Z",
            "0000-01-01T00:00:00.1Z",
        ] {
            assert!(is_plain_utc_time(yes), "{yes}");
        }
        for no in [
            "2023-02-29T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01T00:00:00.10Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.1234567891Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01t00:00:00Z",
            "2024-1-01T00:00:00Z",
        ] {
            assert!(!is_plain_utc_time(no), "{no}");
        }
    }

    #[test]
    fn short_decimal_examples() {
        for yes in ["12.5", "-0.5", "0.000001", "123456789.123456", "0.1"] {
            assert!(is_short_decimal(yes), "{yes}");
        }
        for no in [
            "12.50",
            "0.0000001",
            "1.",
            ".5",
            "01.5",
            "1e5",
            "1.2345678901234567",
            "-0.0",
            "1.5e1",
        ] {
            assert!(!is_short_decimal(no), "{no}");
        }
    }

    /// The recogniser decides the bodies the gateway writes (otherwise verification would take
    /// the slow path and miss its throughput target).
    #[test]
    fn typical_bodies_are_recognised() {
        let mut ev = AuditEvent::new(RequestId::new(), 3, AuditEventKind::Decided);
        ev.agent_id = Some(AgentId::new("agent:bench").unwrap());
        ev.action = "db.query".into();
        ev.resource = "db:orders/7 \"quoted\"\n".into();
        ev.outcome = Some(EventOutcome::Success);
        ev.origin = Some("10.0.0.1".into());
        ev.grant_id = Some("g-1".into());
        ev.runner_id = Some("local:1".into());
        ev.decision = Some(DecisionRecord {
            allow: true,
            reasons: vec!["ok".into(), "\u{e9}\u{1f600}".into()],
            policy_id: Some("p".into()),
            decision_id: None,
        });
        ev.details.insert("n".into(), serde_json::json!(7));
        ev.details
            .insert("duration_ms".into(), serde_json::json!(12.5));
        ev.details.insert(
            "nested".into(),
            serde_json::json!({"a": [1, -2, 0.1, 1e300, null, true, "x\u{1}"], "b": {}}),
        );
        let (record, body) = seal_with_body("gw-1", 42, GENESIS_PREV_HASH, ev).unwrap();
        let facts = recognize(&body).expect("recognised");
        assert_eq!(owned(facts), ("gw-1".into(), 42, AuditEventKind::Decided));
        let (genesis, body) = seal_with_body(
            "gw-1",
            0,
            GENESIS_PREV_HASH,
            AuditEvent::new(RequestId::new(), 0, AuditEventKind::Genesis),
        )
        .unwrap();
        assert_eq!(
            recognize(&body).map(|f| f.kind),
            Some(AuditEventKind::Genesis)
        );
        assert_ne!(record.hash, genesis.hash);
    }
}
