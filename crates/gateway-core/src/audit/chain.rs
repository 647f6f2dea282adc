//! The hash chain: canonical hashing of records and a streaming verifier.
//!
//! `hash = SHA-256(prev_hash ‖ JCS(record without prev_hash and hash))`, where `prev_hash` is
//! the raw 32 bytes of the previous record's hash (32 zero bytes for the genesis record) and JCS
//! is RFC 8785 canonical JSON. Every sink uses these functions, so a chain written by one
//! backend verifies with any other.

use super::{AuditError, AuditEvent, AuditEventKind, AuditRecord};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The `prev_hash` of a genesis record: 64 hex zeros.
pub const GENESIS_PREV_HASH: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// Computes the hash a record must carry, from its stored fields.
pub fn record_hash(record: &AuditRecord) -> Result<String, AuditError> {
    let prev = decode_hash(&record.prev_hash).ok_or_else(|| {
        AuditError::invalid_input(format!(
            "record {}: prev_hash is not 64 hex digits",
            record.sequence
        ))
    })?;
    let mut body = serde_json::to_value(record)
        .map_err(|e| AuditError::internal("serialising audit record", e))?;
    if let Some(map) = body.as_object_mut() {
        map.remove("prev_hash");
        map.remove("hash");
    }
    let canonical = serde_json_canonicalizer::to_vec(&body)
        .map_err(|e| AuditError::internal("canonicalising audit record", e))?;
    let mut hasher = Sha256::new();
    hasher.update(prev);
    hasher.update(&canonical);
    Ok(hex::encode(hasher.finalize()))
}

/// Builds the next record of a chain: assigns `sequence` and `prev_hash` and computes `hash`.
///
/// The event's time is truncated to microseconds so that every storage backend (PostgreSQL keeps
/// microseconds) round-trips it exactly and the hash still verifies after a read.
pub fn seal(
    stream_id: &str,
    sequence: u64,
    prev_hash: &str,
    mut event: AuditEvent,
) -> Result<AuditRecord, AuditError> {
    let micros = event.time.microsecond();
    event.time = event
        .time
        .replace_microsecond(micros)
        .map_err(|e| AuditError::internal("normalising event time", e))?;
    let mut record = AuditRecord {
        stream_id: stream_id.to_owned(),
        sequence,
        event,
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
    };
    record.hash = record_hash(&record)?;
    Ok(record)
}

/// The genesis record (sequence 0) of a new stream.
pub fn genesis(stream_id: &str) -> Result<AuditRecord, AuditError> {
    let mut event = AuditEvent::new(crate::ids::RequestId::new(), 0, AuditEventKind::Genesis);
    event.action = "audit.genesis".to_owned();
    event.resource = format!("audit-stream:{stream_id}");
    seal(stream_id, 0, GENESIS_PREV_HASH, event)
}

fn decode_hash(hex_str: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_str).ok()?;
    bytes.try_into().ok()
}

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
    /// The first fault, if any.
    pub fault: Option<ChainFault>,
}

impl VerifyReport {
    /// Whether the chain verified without a fault.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
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
        let result = self.check(record);
        match &result {
            Ok(()) => {
                self.checked += 1;
                self.next_sequence = record.sequence + 1;
                self.prev_hash = record.hash.clone();
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

    fn check(&self, record: &AuditRecord) -> Result<(), ChainFault> {
        let seq = record.sequence;
        if record.stream_id != self.stream_id {
            return self.fault(
                seq,
                FaultKind::Inserted,
                format!("record belongs to stream {:?}", record.stream_id),
            );
        }
        match record_hash(record) {
            Ok(h) if h == record.hash => {}
            Ok(_) => {
                return self.fault(
                    seq,
                    FaultKind::Modified,
                    "content does not match hash".into(),
                );
            }
            Err(e) => return self.fault(seq, FaultKind::Modified, e.to_string()),
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
        if seq == 0 && record.event.kind != AuditEventKind::Genesis {
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
            fault,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RequestId;

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

    #[test]
    fn sealed_time_round_trips_through_json() {
        let c = chain(1);
        let json = serde_json::to_string(&c[1]).unwrap();
        let back: AuditRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record_hash(&back).unwrap(), c[1].hash);
    }
}
