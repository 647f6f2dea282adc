//! Ed25519-signed checkpoints: a signature over `(stream_id, sequence, head_hash, time)` that
//! lets anyone holding the public key detect a truncated tail or a rewritten chain.

use crate::record::StoredCheckpoint;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use gateway_core::audit::AuditError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Domain separation: these bytes (34 of them, ending in a line feed) prefix every signed
/// message, so a checkpoint signature can never be replayed as a signature over anything else.
pub const CHECKPOINT_DOMAIN: &[u8] = b"agent-gateway audit checkpoint v1\n";
const DOMAIN: &[u8] = CHECKPOINT_DOMAIN;

/// A signed statement that a stream's record `sequence` had hash `head_hash` at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The chain.
    pub stream_id: String,
    /// The checkpointed record.
    pub sequence: u64,
    /// Hex hash of the record at `sequence`.
    pub head_hash: String,
    /// When the checkpoint was signed (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Hex Ed25519 public key of the signer.
    pub key_id: String,
    /// Hex Ed25519 signature over [`Checkpoint::message`].
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed: a domain prefix and the RFC 8785 canonical JSON of
    /// `{"head_hash", "sequence", "stream_id", "time"}`.
    pub fn message(
        stream_id: &str,
        sequence: u64,
        head_hash: &str,
        time: OffsetDateTime,
    ) -> Result<Vec<u8>, AuditError> {
        let time = time
            .format(&Rfc3339)
            .map_err(|e| AuditError::internal("formatting checkpoint time", e))?;
        let body = serde_json::json!({
            "stream_id": stream_id,
            "sequence": sequence,
            "head_hash": head_hash,
            "time": time,
        });
        let canonical = serde_json_canonicalizer::to_vec(&body)
            .map_err(|e| AuditError::internal("canonicalising checkpoint", e))?;
        let mut out = DOMAIN.to_vec();
        out.extend_from_slice(&canonical);
        Ok(out)
    }

    /// Checks the signature against `key`; the error says what is wrong.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), String> {
        if !self
            .key_id
            .eq_ignore_ascii_case(&hex::encode(key.as_bytes()))
        {
            return Err(format!(
                "checkpoint at sequence {} was signed by key {}, not by the trusted key",
                self.sequence, self.key_id
            ));
        }
        let bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "checkpoint at sequence {}: malformed signature",
                    self.sequence
                )
            })?;
        let message = Self::message(&self.stream_id, self.sequence, &self.head_hash, self.time)
            .map_err(|e| e.to_string())?;
        key.verify(&message, &Signature::from_bytes(&bytes))
            .map_err(|_| {
                format!(
                    "checkpoint at sequence {}: signature does not verify",
                    self.sequence
                )
            })
    }

    /// Parses a stored checkpoint.
    pub fn from_stored(stored: &StoredCheckpoint) -> Result<Self, String> {
        let sequence = u64::try_from(stored.sequence)
            .map_err(|_| format!("checkpoint with negative sequence {}", stored.sequence))?;
        let time = OffsetDateTime::parse(&stored.time, &Rfc3339)
            .map_err(|e| format!("checkpoint at sequence {sequence}: bad time: {e}"))?;
        // The signed message holds the time in the one form the signer writes (RFC 3339, UTC,
        // `Z`, the fraction without trailing zeros): a stored text in any other form is not
        // what was signed, even when it names the same instant.
        let canonical = time
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| format!("checkpoint at sequence {sequence}: bad time: {e}"))?;
        if canonical != stored.time {
            return Err(format!(
                "checkpoint at sequence {sequence}: time {:?} is not in canonical form ({canonical:?})",
                stored.time
            ));
        }
        Ok(Self {
            stream_id: stored.stream_id.clone(),
            sequence,
            head_hash: stored.head_hash.clone(),
            time,
            key_id: stored.key_id.clone(),
            signature: stored.signature.clone(),
        })
    }

    /// The time as stored (RFC 3339).
    pub(crate) fn time_text(&self) -> Result<String, AuditError> {
        self.time
            .format(&Rfc3339)
            .map_err(|e| AuditError::internal("formatting checkpoint time", e))
    }
}

/// Parses an Ed25519 public key given as 64 hex digits (surrounding whitespace ignored).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, AuditError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| AuditError::invalid_input("public key must be 64 hex digits"))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| AuditError::invalid_input("not a valid Ed25519 public key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::{CheckpointSigner as _, SoftwareSigner};

    #[test]
    fn sign_verify_and_tamper() {
        let signer = SoftwareSigner::generate();
        let cp = signer.sign("s", 7, &"ab".repeat(32)).unwrap();
        cp.verify_signature(&signer.verifying_key()).unwrap();

        let mut bad = cp.clone();
        bad.sequence = 8;
        assert!(bad.verify_signature(&signer.verifying_key()).is_err());
        let mut bad = cp.clone();
        bad.head_hash = "cd".repeat(32);
        assert!(bad.verify_signature(&signer.verifying_key()).is_err());

        let other = SoftwareSigner::generate();
        assert!(cp.verify_signature(&other.verifying_key()).is_err());
        // A checkpoint re-signed by another key but claiming the trusted key id fails too.
        let mut forged = other.sign("s", 7, &cp.head_hash).unwrap();
        forged.key_id = cp.key_id.clone();
        assert!(forged.verify_signature(&signer.verifying_key()).is_err());
    }

    #[test]
    fn stored_round_trip_and_debug_hides_secret() {
        let signer = SoftwareSigner::generate();
        let cp = signer.sign("s", 1, &"ab".repeat(32)).unwrap();
        let stored = StoredCheckpoint {
            stream_id: cp.stream_id.clone(),
            sequence: 1,
            head_hash: cp.head_hash.clone(),
            time: cp.time_text().unwrap(),
            key_id: cp.key_id.clone(),
            signature: cp.signature.clone(),
        };
        let back = Checkpoint::from_stored(&stored).unwrap();
        assert_eq!(back, cp);
        back.verify_signature(&signer.verifying_key()).unwrap();

        let debug = format!("{signer:?}");
        assert!(!debug.contains(&signer.secret_hex()));
        assert!(debug.contains(&signer.key_id()));
        let again = SoftwareSigner::from_hex(&signer.secret_hex()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        assert_eq!(
            parse_public_key(&signer.key_id()).unwrap(),
            signer.verifying_key()
        );
    }
}
