//! The hash chain: canonical hashing of records and a streaming verifier.
//!
//! `hash = SHA-256(prev_hash ‖ JCS(record without prev_hash and hash))`, where `prev_hash` is
//! the raw 32 bytes of the previous record's hash (32 zero bytes for the genesis record) and JCS
//! is RFC 8785 canonical JSON. Every sink uses these functions, so a chain written by one
//! backend verifies with any other.

use super::jcs::{write_key, write_object, write_str, write_u64};
use super::{AuditError, AuditEvent, AuditEventKind, AuditRecord};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt;

/// The `prev_hash` of a genesis record: 64 hex zeros.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Computes the hash a record must carry, from its stored fields.
pub fn record_hash(record: &AuditRecord) -> Result<String, AuditError> {
    let prev = decode_hash(&record.prev_hash).ok_or_else(|| bad_prev_hash(record.sequence))?;
    let canonical = canonical_body(record)?;
    Ok(hex::encode(digest(&prev, &canonical)))
}

/// `SHA-256(prev_hash ‖ body)` as hex: the hash of a record whose canonical body is `body`.
/// `None` when `prev_hash` is not 64 hex digits.
///
/// This is [`record_hash`] for a caller that already holds the canonical body (a stored one, or
/// the one [`seal_with_body`] returned), so it need not be encoded again.
pub fn body_hash(prev_hash: &str, body: &[u8]) -> Option<String> {
    decode_hash(prev_hash).map(|prev| hex::encode(digest(&prev, body)))
}

fn digest(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(body);
    hasher.finalize().into()
}

fn bad_prev_hash(sequence: u64) -> AuditError {
    AuditError::invalid_input(format!("record {sequence}: prev_hash is not 64 hex digits"))
}

/// The canonical body of `record`: `JCS(record without prev_hash and hash)`, the bytes hashed
/// after `prev_hash`.
///
/// Written directly from the typed record (no intermediate `serde_json::Value`, no per-key
/// buffers); byte-identical to canonicalising `serde_json::to_value(record)` with the two hash
/// fields removed (a property test checks this against that reference path). The record's own
/// keys are fixed ASCII names, so their RFC 8785 order (UTF-16 code units) is plain byte order
/// and is spelled out below; `details` values are arbitrary JSON, written by the
/// crate's RFC 8785 encoder (module `audit::jcs`).
pub fn canonical_body(record: &AuditRecord) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::with_capacity(512);
    write_body(
        &record.event,
        &record.stream_id,
        Some(record.sequence),
        &mut out,
    )?;
    Ok(out)
}

/// Writes the canonical body of `ev` on `stream_id` into `out`, with `sequence` if given, or
/// else without it (everything a record's body holds except what only the stream's writer can
/// assign, see [`EncodedEvent`]). Returns the offset in `out` where the sequence number goes.
fn write_body(
    ev: &AuditEvent,
    stream_id: &str,
    sequence: Option<u64>,
    out: &mut Vec<u8>,
) -> Result<usize, AuditError> {
    // Same formatting (and the same failure cases) as `time::serde::rfc3339`.
    let time = ev
        .time
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| AuditError::internal("serialising audit record", e))?;
    // Keys in RFC 8785 order: action, agent_id, correlation_id, decision, details, grant_id,
    // kind, origin, outcome, resource, runner_id, sequence, step, stream_id, time.
    out.push(b'{');
    write_key(out, "action", true);
    write_str(out, &ev.action);
    if let Some(agent) = &ev.agent_id {
        write_key(out, "agent_id", false);
        write_str(out, agent.as_str());
    }
    write_key(out, "correlation_id", false);
    let mut uuid = uuid::Uuid::encode_buffer();
    write_str(
        out,
        ev.correlation_id
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut uuid),
    );
    if let Some(d) = &ev.decision {
        write_key(out, "decision", false);
        // allow, decision_id, policy_id, reasons.
        out.push(b'{');
        write_key(out, "allow", true);
        out.extend_from_slice(if d.allow { b"true" } else { b"false" });
        if let Some(id) = &d.decision_id {
            write_key(out, "decision_id", false);
            write_str(out, id);
        }
        if let Some(id) = &d.policy_id {
            write_key(out, "policy_id", false);
            write_str(out, id);
        }
        write_key(out, "reasons", false);
        out.push(b'[');
        for (i, reason) in d.reasons.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, reason);
        }
        out.extend_from_slice(b"]}");
    }
    if !ev.details.is_empty() {
        write_key(out, "details", false);
        // JCS is structural, so canonicalising this sub-value in place is the same as
        // canonicalising the whole record.
        write_object(out, &ev.details)?;
    }
    if let Some(grant) = &ev.grant_id {
        write_key(out, "grant_id", false);
        write_str(out, grant);
    }
    write_key(out, "kind", false);
    write_str(out, ev.kind.as_str());
    if let Some(origin) = &ev.origin {
        write_key(out, "origin", false);
        write_str(out, origin);
    }
    if let Some(outcome) = ev.outcome {
        write_key(out, "outcome", false);
        write_str(out, outcome.as_str());
    }
    write_key(out, "resource", false);
    write_str(out, &ev.resource);
    if let Some(runner) = &ev.runner_id {
        write_key(out, "runner_id", false);
        write_str(out, runner);
    }
    write_key(out, "sequence", false);
    let at = out.len();
    if let Some(sequence) = sequence {
        write_u64(out, sequence)?;
    }
    write_key(out, "step", false);
    write_u64(out, u64::from(ev.step))?;
    write_key(out, "stream_id", false);
    write_str(out, stream_id);
    write_key(out, "time", false);
    write_str(out, &time);
    out.push(b'}');
    Ok(at)
}

/// The body written by [`write_body`] without a sequence number, with `sequence` written at
/// `at`.
fn splice_sequence(parts: &[u8], at: usize, sequence: u64) -> Result<Vec<u8>, AuditError> {
    let (head, tail) = parts.split_at(at.min(parts.len()));
    let mut body = Vec::with_capacity(parts.len() + 20);
    body.extend_from_slice(head);
    write_u64(&mut body, sequence)?;
    body.extend_from_slice(tail);
    Ok(body)
}

/// The original canonicalisation path (`serde_json::Value`, then the general canonicaliser):
/// the definition [`canonical_body`] must match byte for byte.
#[cfg(test)]
fn canonical_body_reference(record: &AuditRecord) -> Result<Vec<u8>, AuditError> {
    let mut body = serde_json::to_value(record)
        .map_err(|e| AuditError::internal("serialising audit record", e))?;
    if let Some(map) = body.as_object_mut() {
        map.remove("prev_hash");
        map.remove("hash");
    }
    serde_json_canonicalizer::to_vec(&body)
        .map_err(|e| AuditError::internal("canonicalising audit record", e))
}

/// Builds the next record of a chain: assigns `sequence` and `prev_hash` and computes `hash`.
///
/// The event's time is truncated to microseconds so that every storage backend (PostgreSQL keeps
/// microseconds) round-trips it exactly and the hash still verifies after a read.
pub fn seal(
    stream_id: &str,
    sequence: u64,
    prev_hash: &str,
    event: AuditEvent,
) -> Result<AuditRecord, AuditError> {
    seal_with_body(stream_id, sequence, prev_hash, event).map(|(record, _)| record)
}

/// [`seal`], also returning the record's canonical body: the exact bytes its hash covers after
/// `prev_hash` (what a store keeps so that verification can hash them without re-encoding).
pub fn seal_with_body(
    stream_id: &str,
    sequence: u64,
    prev_hash: &str,
    event: AuditEvent,
) -> Result<(AuditRecord, String), AuditError> {
    EncodedEvent::new(stream_id, event)?.seal(sequence, prev_hash)
}

/// Rewrites every integer beyond ±2^53 in `value` as a string of its decimal digits. RFC 8785
/// numbers are IEEE-754 doubles: such an integer would be rounded in the canonical body (the
/// record would not hold what the gateway saw), and off-the-shelf JCS libraries refuse it
/// outright, so an independent verifier could not recompute the hash. As a string it is exact
/// and every verifier reads it.
fn exact_integers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            let beyond = n.as_u64().is_some_and(|u| u > MAX_EXACT_INTEGER)
                || n.as_i64()
                    .is_some_and(|i| i.unsigned_abs() > MAX_EXACT_INTEGER);
            if beyond {
                *value = Value::String(n.to_string());
            }
        }
        Value::Array(items) => items.iter_mut().for_each(exact_integers),
        Value::Object(members) => members.values_mut().for_each(exact_integers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// The largest integer every IEEE-754 double holds exactly.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// An event encoded for one stream, waiting for its place in the chain: its canonical body with
/// only the sequence number missing.
///
/// Sealing is the one step of an append that must be serial (each hash covers the previous
/// one). Encoding first, on the appending caller's task, leaves the stream's writer to splice in
/// the number and hash, so encoding runs in parallel across callers instead of on the writer.
#[derive(Debug)]
pub struct EncodedEvent {
    stream_id: String,
    /// The event, its time truncated to microseconds (see [`seal`]).
    event: AuditEvent,
    /// The canonical body without the sequence number, and where the number goes.
    parts: Vec<u8>,
    at: usize,
}

impl EncodedEvent {
    /// Encodes `event` for `stream_id`. Fails on what would make [`seal`] fail for any
    /// sequence number: a time that cannot be formatted.
    pub fn new(stream_id: &str, mut event: AuditEvent) -> Result<Self, AuditError> {
        for value in event.details.values_mut() {
            exact_integers(value);
        }
        let micros = event.time.microsecond();
        event.time = event
            .time
            .replace_microsecond(micros)
            .map_err(|e| AuditError::internal("normalising event time", e))?;
        let mut parts = Vec::with_capacity(512);
        let at = write_body(&event, stream_id, None, &mut parts)?;
        Ok(Self {
            stream_id: stream_id.to_owned(),
            event,
            parts,
            at,
        })
    }

    /// The event as it will be sealed.
    pub fn event(&self) -> &AuditEvent {
        &self.event
    }

    /// The record at `sequence` after `prev_hash`, and its canonical body.
    pub fn seal(self, sequence: u64, prev_hash: &str) -> Result<(AuditRecord, String), AuditError> {
        let body = splice_sequence(&self.parts, self.at, sequence)?;
        let hash = body_hash(prev_hash, &body).ok_or_else(|| bad_prev_hash(sequence))?;
        // The encoder writes only `str` data and ASCII syntax, so this cannot fail.
        let body = String::from_utf8(body)
            .map_err(|e| AuditError::internal("canonical body is not UTF-8", e))?;
        let record = AuditRecord {
            stream_id: self.stream_id,
            sequence,
            event: self.event,
            prev_hash: prev_hash.to_owned(),
            hash,
        };
        Ok((record, body))
    }
}

/// The genesis record (sequence 0) of a new stream.
pub fn genesis(stream_id: &str) -> Result<AuditRecord, AuditError> {
    let mut event = AuditEvent::new(crate::ids::RequestId::new(), 0, AuditEventKind::Genesis);
    event.action = "audit.genesis".to_owned();
    event.resource = format!("audit-stream:{stream_id}");
    seal(stream_id, 0, GENESIS_PREV_HASH, event)
}

/// 64 hex digits (either case) as bytes. Table-driven: verification decodes one per record,
/// and branching on each digit's range costs more than hashing the record's prefix.
fn decode_hash(hex_str: &str) -> Option<[u8; 32]> {
    let digits = hex_str.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0u8;
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let (hi, lo) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        bad |= (hi | lo) & 0xf0;
        *byte = (hi << 4) | (lo & 0x0f);
    }
    (bad == 0).then_some(out)
}

/// Each byte's value as a hex digit, or 0xff for a byte that is not one.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// What is wrong with a chain at the first bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FaultKind {
    /// The record's content does not match its hash.
    Modified,
    /// Sequence numbers jump: records are missing.
    Missing,
    /// A record that does not belong: a repeated sequence number or another stream's record.
    Inserted,
    /// Sequence numbers go backwards.
    Reordered,
    /// The record's hash is self-consistent but does not link to its predecessor (a record was
    /// replaced, or the chain was rewritten from here).
    BrokenLink,
    /// The first record is not a valid genesis record.
    BadGenesis,
    /// Records acknowledged by a signed checkpoint are gone.
    Truncated,
    /// A checkpoint's signature or content does not verify.
    BadCheckpoint,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{self:?}"));
        f.write_str(&s)
    }
}

/// The first fault found in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("audit chain {stream_id}: {kind} at sequence {sequence}: {detail}")]
pub struct ChainFault {
    /// The stream.
    pub stream_id: String,
    /// The first bad sequence number.
    pub sequence: u64,
    /// What is wrong.
    pub kind: FaultKind,
    /// A human-readable explanation.
    pub detail: String,
}

/// The result of verifying one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The stream.
    pub stream_id: String,
    /// How many records were checked.
    pub records_checked: u64,
    /// The last good record's sequence number and hash.
    pub head: Option<(u64, String)>,
    /// How many signed checkpoints were checked.
    pub checkpoints_checked: u64,
    /// The checkpoint signing keys (hex public keys), in the order the stream used them: more
    /// than one means the key was rotated, each change announced by a `key_rotated` record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_keys: Vec<String>,
    /// The first fault, if any.
    pub fault: Option<ChainFault>,
}

impl VerifyReport {
    /// Whether the chain verified without a fault.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

/// The link view of a record whose hash was recomputed as `computed`.
fn record_view<'a>(record: &'a AuditRecord, computed: &'a Result<String, String>) -> LinkView<'a> {
    LinkView {
        stream_id: Some(&record.stream_id),
        sequence: record.sequence,
        prev_hash: &record.prev_hash,
        hash: &record.hash,
        genesis: record.event.kind == AuditEventKind::Genesis,
        content: match computed {
            Ok(h) if *h == record.hash => Ok(()),
            Ok(_) => Err(CONTENT_MISMATCH),
            Err(e) => Err(e.as_str()),
        },
    }
}

/// One record reduced to what linking needs, its content already checked against its hash
/// (possibly on another thread, in any order): the input of [`ChainVerifier::push_link`].
///
/// Only this module compares hashes: a `ChainLink` says whether `SHA-256(prev_hash ‖ body)`
/// equals the stored hash, for the canonical body either re-encoded from a parsed record
/// ([`ChainLink::of_record`]) or as stored ([`ChainLink::of_body`],
/// [`ChainLink::of_stream_body`]).
///
/// Verification makes one per stored record, on the hashing threads, and drops it on the
/// linking thread; so it owns no heap memory in the common case (hashes inline, no copy of the
/// stream id when the reader vouches for it), which keeps the allocator out of the hot path.
#[derive(Debug, Clone)]
pub struct ChainLink {
    /// `None`: the stream the link is pushed to (see [`ChainLink::of_stream_body`]).
    stream_id: Option<String>,
    sequence: u64,
    prev_hash: StoredHash,
    hash: StoredHash,
    genesis: bool,
    /// Why the content does not match `hash`, if it does not.
    content: Result<(), String>,
}

impl ChainLink {
    /// Checks `record` by re-encoding its canonical body (the definition of its hash).
    pub fn of_record(record: AuditRecord) -> Self {
        let content = match record_hash(&record) {
            Ok(h) if h == record.hash => Ok(()),
            Ok(_) => Err(CONTENT_MISMATCH.to_owned()),
            Err(e) => Err(e.to_string()),
        };
        Self {
            genesis: record.event.kind == AuditEventKind::Genesis,
            stream_id: Some(record.stream_id),
            sequence: record.sequence,
            prev_hash: StoredHash::new(&record.prev_hash),
            hash: StoredHash::new(&record.hash),
            content,
        }
    }

    /// Checks a record stored as its canonical body: `body` must be the exact canonical body
    /// ([`canonical_body`]) of a record of `stream_id` at `sequence` whose kind is `kind`. The
    /// caller establishes that (by parsing `body`, or by recognising its canonical form) and
    /// passes `Err` with the reason when it is not so; the record is then reported as modified.
    pub fn of_body(
        stream_id: String,
        sequence: u64,
        prev_hash: String,
        hash: String,
        kind: AuditEventKind,
        body: Result<&[u8], String>,
    ) -> Self {
        let mut link = Self::of_stream_body(sequence, &prev_hash, &hash, kind, body);
        link.stream_id = Some(stream_id);
        link
    }

    /// [`of_body`](Self::of_body) for a record the caller already knows to belong to the stream
    /// whose verifier it will be pushed to (it was read from that stream by exact match, and its
    /// body names that stream): the link keeps no copy of the stream id, and
    /// [`ChainVerifier::push_link`] takes it as the verifier's own. Use
    /// [`of_body`](Self::of_body) for any other record, so that a record of another stream is
    /// reported as inserted.
    pub fn of_stream_body(
        sequence: u64,
        prev_hash: &str,
        hash: &str,
        kind: AuditEventKind,
        body: Result<&[u8], String>,
    ) -> Self {
        let content = body.and_then(|body| match decode_hash(prev_hash) {
            Some(prev) if hex_eq(&digest(&prev, body), hash) => Ok(()),
            Some(_) => Err(CONTENT_MISMATCH.to_owned()),
            None => Err(bad_prev_hash(sequence).to_string()),
        });
        Self {
            stream_id: None,
            sequence,
            prev_hash: StoredHash::new(prev_hash),
            hash: StoredHash::new(hash),
            genesis: kind == AuditEventKind::Genesis,
            content,
        }
    }

    /// The record's sequence number.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The record's stored hash (hex).
    pub fn hash(&self) -> &str {
        self.hash.as_str()
    }

    /// Whether the record's stored hash matches its content (linking is not checked).
    pub fn content_matches(&self) -> bool {
        self.content.is_ok()
    }

    fn view(&self) -> LinkView<'_> {
        LinkView {
            stream_id: self.stream_id.as_deref(),
            sequence: self.sequence,
            prev_hash: self.prev_hash.as_str(),
            hash: self.hash.as_str(),
            genesis: self.genesis,
            content: self.content.as_ref().map(|_| ()).map_err(String::as_str),
        }
    }
}

/// A hash as stored, text for text: 64 ASCII characters (every hash a sound row holds) inline,
/// anything else (only in a tampered row, which is reported and never linked) on the heap.
/// The text is kept, not its decoded bytes, because linking compares the texts (a `prev_hash`
/// in upper case is a broken link, though it hashes the same).
#[derive(Clone)]
enum StoredHash {
    Inline([u8; 64]),
    Other(Box<str>),
}

impl StoredHash {
    fn new(text: &str) -> Self {
        match <[u8; 64]>::try_from(text.as_bytes()) {
            Ok(bytes) if bytes.is_ascii() => Self::Inline(bytes),
            _ => Self::Other(text.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Only ASCII is kept inline, so this is always `Ok`.
            Self::Inline(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Self::Other(text) => text,
        }
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

const CONTENT_MISMATCH: &str = "content does not match hash";

/// Whether `digest` is `hex` (lowercase, as [`record_hash`] writes it), without allocating.
fn hex_eq(digest: &[u8; 32], hex: &str) -> bool {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(digest, &mut buf).is_ok() && buf.as_slice() == hex.as_bytes()
}

/// What [`ChainVerifier`] checks of one record, however its content was checked.
struct LinkView<'a> {
    /// `None`: the verifier's own stream.
    stream_id: Option<&'a str>,
    sequence: u64,
    prev_hash: &'a str,
    hash: &'a str,
    genesis: bool,
    content: Result<(), &'a str>,
}

/// Verifies a chain one record at a time, in sequence order, in constant memory.
#[derive(Debug)]
pub struct ChainVerifier {
    stream_id: String,
    next_sequence: u64,
    prev_hash: String,
    checked: u64,
    fault: Option<ChainFault>,
}

impl ChainVerifier {
    /// A verifier for `stream_id`, expecting the genesis record first.
    pub fn new(stream_id: impl Into<String>) -> Self {
        Self {
            stream_id: stream_id.into(),
            next_sequence: 0,
            prev_hash: GENESIS_PREV_HASH.to_owned(),
            checked: 0,
            fault: None,
        }
    }

    /// Checks the next record. After the first fault every further call returns that fault.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainFault> {
        if let Some(fault) = &self.fault {
            return Err(fault.clone());
        }
        let computed = record_hash(record).map_err(|e| e.to_string());
        self.link(record_view(record, &computed))
    }

    /// Like [`push`](Self::push) for a record whose content was already checked by
    /// [`ChainLink::of_record`] or [`ChainLink::of_body`]: only the linking is done here.
    pub fn push_link(&mut self, link: &ChainLink) -> Result<(), ChainFault> {
        if let Some(fault) = &self.fault {
            return Err(fault.clone());
        }
        self.link(link.view())
    }

    fn link(&mut self, record: LinkView<'_>) -> Result<(), ChainFault> {
        let result = self.check(&record);
        match &result {
            Ok(()) => {
                self.checked += 1;
                self.next_sequence = record.sequence.saturating_add(1);
                record.hash.clone_into(&mut self.prev_hash);
            }
            Err(fault) => self.fault = Some(fault.clone()),
        }
        result
    }

    fn fault(&self, sequence: u64, kind: FaultKind, detail: String) -> Result<(), ChainFault> {
        Err(ChainFault {
            stream_id: self.stream_id.clone(),
            sequence,
            kind,
            detail,
        })
    }

    fn check(&self, record: &LinkView<'_>) -> Result<(), ChainFault> {
        let seq = record.sequence;
        if let Some(stream_id) = record.stream_id
            && stream_id != self.stream_id
        {
            return self.fault(
                seq,
                FaultKind::Inserted,
                format!("record belongs to stream {stream_id:?}"),
            );
        }
        if let Err(detail) = record.content {
            return self.fault(seq, FaultKind::Modified, detail.to_owned());
        }
        if seq > self.next_sequence {
            return self.fault(
                self.next_sequence,
                FaultKind::Missing,
                format!("expected sequence {}, found {seq}", self.next_sequence),
            );
        }
        if seq < self.next_sequence {
            let kind = if seq + 1 == self.next_sequence {
                FaultKind::Inserted
            } else {
                FaultKind::Reordered
            };
            return self.fault(
                seq,
                kind,
                format!("expected sequence {}", self.next_sequence),
            );
        }
        if seq == 0 && !record.genesis {
            return self.fault(
                0,
                FaultKind::BadGenesis,
                "first record is not genesis".into(),
            );
        }
        if record.prev_hash != self.prev_hash {
            let kind = if seq == 0 {
                FaultKind::BadGenesis
            } else {
                FaultKind::BrokenLink
            };
            return self.fault(
                seq,
                kind,
                "prev_hash does not match the previous record".into(),
            );
        }
        Ok(())
    }

    /// The last verified record's sequence number and hash.
    pub fn head(&self) -> Option<(u64, String)> {
        (self.checked > 0).then(|| (self.next_sequence - 1, self.prev_hash.clone()))
    }

    /// Ends verification. An empty chain (no genesis) is reported as `Missing` at 0.
    pub fn finish(self) -> VerifyReport {
        let head = self.head();
        let fault = match (self.fault, self.checked) {
            (Some(f), _) => Some(f),
            (None, 0) => Some(ChainFault {
                stream_id: self.stream_id.clone(),
                sequence: 0,
                kind: FaultKind::Missing,
                detail: "the chain has no genesis record".into(),
            }),
            (None, _) => None,
        };
        VerifyReport {
            stream_id: self.stream_id,
            records_checked: self.checked,
            head,
            checkpoints_checked: 0,
            checkpoint_keys: Vec::new(),
            fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;

    #[test]
    fn integers_a_double_cannot_hold_are_recorded_as_strings() {
        let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
        let details = serde_json::json!({
            "big": 9_007_199_254_740_993_u64,
            "neg": -9_007_199_254_740_993_i64,
            "edge": 9_007_199_254_740_992_u64,
            "nested": [{"max": u64::MAX}],
            "float": 1e300,
        });
        let serde_json::Value::Object(details) = details else {
            unreachable!("a literal object")
        };
        ev.details = details;
        let (record, body) = seal_with_body("s", 1, GENESIS_PREV_HASH, ev).unwrap();
        for part in [
            r#""big":"9007199254740993""#,
            r#""neg":"-9007199254740993""#,
            r#""edge":9007199254740992"#,
            r#""nested":[{"max":"18446744073709551615"}]"#,
            r#""float":1e+300"#,
        ] {
            assert!(body.contains(part), "{part} not in {body}");
        }
        assert_eq!(record.event.details["big"], "9007199254740993");
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out = vec![genesis("s").unwrap()];
        for i in 1..=n {
            let prev = out.last().unwrap().hash.clone();
            let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
            ev.action = format!("a{i}");
            out.push(seal("s", i, &prev, ev).unwrap());
        }
        out
    }

    fn verify(records: &[AuditRecord]) -> VerifyReport {
        let mut v = ChainVerifier::new("s");
        for r in records {
            if v.push(r).is_err() {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn untouched_chain_verifies() {
        let r = verify(&chain(5));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(r.records_checked, 6);
        assert_eq!(r.head.unwrap().0, 5);
    }

    #[test]
    fn detects_tampering() {
        let mut c = chain(5);
        c[3].event.action = "evil".into();
        let f = verify(&c).fault.unwrap();
        assert_eq!((f.sequence, f.kind), (3, FaultKind::Modified));

        let mut c = chain(5);
        c.remove(2);
        let f = verify(&c).fault.unwrap();
        assert_eq!((f.sequence, f.kind), (2, FaultKind::Missing));

        let mut c = chain(5);
        c.swap(2, 3);
        assert!(verify(&c).fault.is_some());

        // Re-hash a changed record: the next link breaks.
        let mut c = chain(5);
        c[2].event.action = "evil".into();
        c[2].hash = record_hash(&c[2]).unwrap();
        let f = verify(&c).fault.unwrap();
        assert_eq!((f.sequence, f.kind), (3, FaultKind::BrokenLink));

        assert_eq!(verify(&[]).fault.unwrap().kind, FaultKind::Missing);
    }

    mod fast_encoder {
        use super::super::*;
        use crate::audit::EventOutcome;
        use crate::testing::strategies::{audit_event, text};
        use proptest::prelude::*;
        use serde_json::Value;

        prop_compose! {
            fn record()(
                stream_id in text(),
                sequence in prop_oneof![0u64..1000, any::<u64>(), Just(1u64 << 53), Just((1u64 << 53) + 1)],
                event in audit_event(),
            ) -> AuditRecord {
                AuditRecord {
                    stream_id,
                    sequence,
                    event,
                    prev_hash: GENESIS_PREV_HASH.to_owned(),
                    hash: String::new(),
                }
            }
        }

        fn same(record: &AuditRecord) -> Result<(), TestCaseError> {
            match (canonical_body(record), canonical_body_reference(record)) {
                (Ok(fast), Ok(reference)) => prop_assert_eq!(
                    String::from_utf8_lossy(&fast),
                    String::from_utf8_lossy(&reference)
                ),
                (Err(_), Err(_)) => {}
                (fast, reference) => {
                    prop_assert!(false, "fast {fast:?} vs reference {reference:?}")
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn fast_encoder_matches_the_reference(record in record()) {
                same(&record)?;
            }

            /// An event encoded ahead of its sequence number seals to the canonical body of
            /// the record it becomes, and that body's hash is the record's.
            #[test]
            fn encoded_events_seal_to_the_canonical_body(record in record()) {
                let encoded = EncodedEvent::new(&record.stream_id, record.event.clone());
                if let Ok(encoded) = encoded {
                    let (sealed, body) = encoded.seal(record.sequence, GENESIS_PREV_HASH).unwrap();
                    prop_assert_eq!(canonical_body(&sealed).unwrap(), body.as_bytes());
                    prop_assert_eq!(record_hash(&sealed).unwrap(), sealed.hash);
                }
            }
        }

        #[test]
        fn every_kind_and_outcome_name_matches_serde() {
            for kind in AuditEventKind::ALL {
                assert_eq!(
                    Value::from(kind.as_str()),
                    serde_json::to_value(kind).unwrap()
                );
                assert_eq!(AuditEventKind::from_name(kind.as_str()), Some(kind));
            }
            assert_eq!(AuditEventKind::from_name("Genesis"), None);
            for outcome in [EventOutcome::Success, EventOutcome::Failure] {
                assert_eq!(
                    Value::from(outcome.as_str()),
                    serde_json::to_value(outcome).unwrap()
                );
            }
        }

        #[test]
        fn sealed_chains_keep_their_hashes() {
            // A fixed record whose hash was computed with the reference path: existing chains
            // must keep verifying.
            let mut r = genesis("s").unwrap();
            r.event
                .details
                .insert("\u{e9}".into(), Value::from(1.5e300));
            r.event
                .details
                .insert("a\u{1f600}".into(), Value::from(u64::MAX));
            r.sequence = u64::MAX;
            same(&r).unwrap();
            let mut hasher = Sha256::new();
            hasher.update([0u8; 32]);
            hasher.update(canonical_body_reference(&r).unwrap());
            assert_eq!(record_hash(&r).unwrap(), hex::encode(hasher.finalize()));
        }
    }

    #[test]
    fn links_verify_like_records_whether_hashed_as_stored_or_re_encoded() {
        let mut c = chain(5);
        c[3].event.action = "evil".into();
        let mut plain = ChainVerifier::new("s");
        let mut linked = ChainVerifier::new("s");
        let mut re_linked = ChainVerifier::new("s");
        let mut stream_linked = ChainVerifier::new("s");
        for r in &c {
            let body = canonical_body(r).unwrap();
            let as_stored = ChainLink::of_body(
                r.stream_id.clone(),
                r.sequence,
                r.prev_hash.clone(),
                r.hash.clone(),
                r.event.kind,
                Ok(&body),
            );
            let re_encoded = ChainLink::of_record(r.clone());
            let in_stream = ChainLink::of_stream_body(
                r.sequence,
                &r.prev_hash,
                &r.hash,
                r.event.kind,
                Ok(&body),
            );
            assert_eq!(as_stored.content_matches(), r.sequence != 3);
            assert_eq!(in_stream.content_matches(), r.sequence != 3);
            assert_eq!(re_encoded.content_matches(), r.sequence != 3);
            assert_eq!(
                (as_stored.sequence(), as_stored.hash()),
                (r.sequence, &*r.hash)
            );
            let pushed = plain.push(r);
            assert_eq!(pushed, linked.push_link(&as_stored));
            assert_eq!(pushed, re_linked.push_link(&re_encoded));
            assert_eq!(pushed, stream_linked.push_link(&in_stream));
        }
        let plain = plain.finish();
        assert_eq!(plain, linked.finish());
        assert_eq!(plain, re_linked.finish());
        assert_eq!(plain, stream_linked.finish());

        // The caller's reason why a body is not a record's is reported as a modification.
        let c = chain(2);
        let mut v = ChainVerifier::new("s");
        v.push(&c[0]).unwrap();
        let refused = ChainLink::of_body(
            "s".into(),
            1,
            c[1].prev_hash.clone(),
            c[1].hash.clone(),
            AuditEventKind::Requested,
            Err("not canonical".into()),
        );
        let fault = v.push_link(&refused).unwrap_err();
        assert_eq!((fault.sequence, fault.kind), (1, FaultKind::Modified));
        assert_eq!(fault.detail, "not canonical");
        // A genesis body must say it is one.
        let g = &chain(0)[0];
        let not_genesis = ChainLink::of_body(
            "s".into(),
            0,
            g.prev_hash.clone(),
            g.hash.clone(),
            AuditEventKind::Requested,
            Ok(&canonical_body(g).unwrap()),
        );
        let fault = ChainVerifier::new("s").push_link(&not_genesis).unwrap_err();
        assert_eq!(fault.kind, FaultKind::BadGenesis);
    }

    /// Links keep stored hashes text for text, whatever a tampered row holds, and a link of
    /// another stream is an insertion; each fault is the one `push` reports for the record.
    #[test]
    fn links_of_tampered_rows_fault_like_records() {
        let c = chain(3);
        type Edit = fn(&mut AuditRecord);
        let edits: Vec<(&str, Edit)> = vec![
            ("upper-case prev_hash", |r| {
                r.prev_hash.make_ascii_uppercase()
            }),
            ("short prev_hash", |r| {
                r.prev_hash.pop();
            }),
            ("non-hex prev_hash", |r| r.prev_hash.replace_range(..1, "g")),
            ("multi-byte prev_hash", |r| {
                r.prev_hash.replace_range(..2, "é")
            }),
            ("long hash", |r| r.hash.push('0')),
            ("multi-byte hash", |r| r.hash.replace_range(..2, "é")),
            ("empty hash", |r| r.hash.clear()),
            ("other stream", |r| r.stream_id = "t".into()),
        ];
        for (name, edit) in edits {
            let mut tampered = c.clone();
            edit(&mut tampered[2]);
            let mut plain = ChainVerifier::new("s");
            let mut linked = ChainVerifier::new("s");
            for r in &tampered {
                let body = canonical_body(r).unwrap();
                let link = if r.stream_id == "s" {
                    ChainLink::of_stream_body(
                        r.sequence,
                        &r.prev_hash,
                        &r.hash,
                        r.event.kind,
                        Ok(&body),
                    )
                } else {
                    ChainLink::of_body(
                        r.stream_id.clone(),
                        r.sequence,
                        r.prev_hash.clone(),
                        r.hash.clone(),
                        r.event.kind,
                        Ok(&body),
                    )
                };
                assert_eq!(link.hash(), r.hash, "{name}");
                assert_eq!(plain.push(r), linked.push_link(&link), "{name}");
            }
            let report = plain.finish();
            assert!(report.fault.is_some(), "{name}");
            assert_eq!(report, linked.finish(), "{name}");
        }
    }

    proptest::proptest! {
        /// The table-driven decoder agrees with the `hex` crate on any text.
        #[test]
        fn hash_decoding_matches_hex(
            text in proptest::prop_oneof!["[0-9a-fA-F]{64}", "[0-9a-fA-Fg-z: ]{60,68}", ".{0,70}"],
        ) {
            let expected = hex::decode(&text).ok().and_then(|b| <[u8; 32]>::try_from(b).ok());
            proptest::prop_assert_eq!(decode_hash(&text), expected);
        }
    }

    #[test]
    fn sealed_time_round_trips_through_json() {
        let c = chain(1);
        let json = serde_json::to_string(&c[1]).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record_hash(&back).unwrap(), c[1].hash);
    }
}
