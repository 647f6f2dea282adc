//! The rows a store keeps: sealed records on their way in, stored records and checkpoints on
//! their way out (as text, before parsing, so verification can report a row it cannot parse).

use gateway_core::audit::chain::canonical_body;
use gateway_core::audit::{AuditError, AuditEvent, AuditRecord};

/// A sealed record and its canonical body, as the writer hands them to a store.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedRecord {
    /// The record (its `hash` covers `prev_hash` and `body`).
    pub record: AuditRecord,
    /// The record's canonical body: the exact bytes its hash covers after `prev_hash`. Stores
    /// keep these bytes as the row's `event` text, so verification hashes them as they are.
    pub body: String,
}

impl SealedRecord {
    /// Pairs an already sealed record with its canonical body (re-encoded here).
    pub fn new(record: AuditRecord) -> Result<Self, AuditError> {
        let body = String::from_utf8(canonical_body(&record)?)
            .map_err(|e| AuditError::internal("canonical body is not UTF-8", e))?;
        Ok(Self { record, body })
    }
}

/// A record as stored, before its text is parsed (verification must be able to report a row it
/// cannot parse instead of failing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The chain.
    pub stream_id: String,
    /// The sequence number as stored (a tampered row may hold a negative one).
    pub sequence: i64,
    /// Hex hash of the previous record.
    pub prev_hash: String,
    /// Hex hash of this record.
    pub hash: String,
    /// The `event` column: the record's canonical body, the exact bytes the hash covers after
    /// `prev_hash` (rows written by this version), or the event's `serde_json` text, which
    /// parses back to the values that were hashed (rows written before). Either parses as the
    /// event; see the crate docs.
    pub event: String,
}

impl StoredRecord {
    /// Parses the stored row back into the record that was sealed (lenient: verification is
    /// what checks it).
    pub fn to_record(&self) -> Result<AuditRecord, String> {
        let sequence = u64::try_from(self.sequence)
            .map_err(|_| format!("negative sequence number {}", self.sequence))?;
        let event: AuditEvent = serde_json::from_str(&self.event)
            .map_err(|e| format!("event JSON does not parse: {e}"))?;
        Ok(AuditRecord {
            stream_id: self.stream_id.clone(),
            sequence,
            event,
            prev_hash: self.prev_hash.clone(),
            hash: self.hash.clone(),
        })
    }
}

/// A checkpoint as stored, before it is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The chain.
    pub stream_id: String,
    /// The checkpointed sequence number.
    pub sequence: i64,
    /// Hex hash of the record at `sequence`.
    pub head_hash: String,
    /// RFC 3339 time of the checkpoint.
    pub time: String,
    /// Hex Ed25519 public key that signed it.
    pub key_id: String,
    /// Hex Ed25519 signature.
    pub signature: String,
}
