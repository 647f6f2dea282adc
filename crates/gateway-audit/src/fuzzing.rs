//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`), reaching the stored-body
//! recogniser, which is private on purpose. Not a public API: hidden from the docs, and free to
//! change.

use crate::body::{self, Stored};
use crate::copies::Expected;
use gateway_core::audit::chain::canonical_body;
use gateway_core::audit::{AuditEvent, AuditRecord};

/// What checking a stored body establishes: the record's place in the chain and what the row's
/// query copies must say (in `copies::COLUMNS` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The body's `stream_id`.
    pub stream_id: String,
    /// The body's `sequence`.
    pub sequence: u64,
    /// The event kind's name.
    pub kind: &'static str,
    /// The expected copies, or why they could not be derived.
    pub copies: Result<[Option<String>; 7], String>,
}

fn copies(expected: &Expected<'_>) -> [Option<String>; 7] {
    [
        Some(expected.time.to_string()),
        Some(expected.correlation_id.to_string()),
        Some(expected.kind.to_owned()),
        expected.agent_id.as_ref().map(|a| a.to_string()),
        Some(expected.action.to_string()),
        Some(expected.resource.to_string()),
        expected.outcome.map(str::to_owned),
    ]
}

/// The one-pass recogniser's verdict: `None` where it does not decide.
pub fn fast(text: &str) -> Option<Verdict> {
    let facts = body::recognize(text)?;
    Some(Verdict {
        stream_id: facts.stream_id.to_owned(),
        sequence: facts.sequence,
        kind: facts.kind.as_str(),
        copies: facts.expected().map(|e| copies(&e)),
    })
}

/// The definition the recogniser must agree with (the slow path of `check_row`): the text
/// parses to a record body whose canonical encoding is the text itself. `None` where it is not
/// a canonical body.
pub fn slow(text: &str) -> Option<Verdict> {
    let Ok(Stored::Body {
        stream_id,
        sequence,
        event,
    }) = body::parse(text)
    else {
        return None;
    };
    let record = record(stream_id, sequence, event);
    let canonical = canonical_body(&record).ok()?;
    (canonical == text.as_bytes()).then(|| Verdict {
        kind: record.event.kind.as_str(),
        copies: Ok(copies(&Expected::of_event(&record.event))),
        stream_id: record.stream_id,
        sequence: record.sequence,
    })
}

/// The canonical body of the record `text` parses to, in either stored format (an event text
/// gets `stream_id` "s" and sequence 1): a way for the fuzzer to reach canonical bodies from
/// any input that parses.
pub fn canonical(text: &str) -> Option<String> {
    let record = match body::parse(text).ok()? {
        Stored::Body {
            stream_id,
            sequence,
            event,
        } => record(stream_id, sequence, event),
        Stored::Event(event) => record("s".to_owned(), 1, event),
    };
    String::from_utf8(canonical_body(&record).ok()?).ok()
}

fn record(stream_id: String, sequence: u64, event: AuditEvent) -> AuditRecord {
    AuditRecord {
        stream_id,
        sequence,
        event,
        prev_hash: String::new(),
        hash: String::new(),
    }
}
