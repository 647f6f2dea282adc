//! Who signs checkpoints: the [`CheckpointSigner`] trait and where its key lives.
//!
//! A checkpoint signature is only worth something if whoever can rewrite the log cannot also
//! sign: the key must live outside the log's trust domain. Two signers ship:
//!
//! - [`SoftwareSigner`]: an Ed25519 key in process memory, loaded from a key file that must be
//!   kept in a directory apart from the log (the embedded default and the quickstart do this,
//!   in `.gateway/quickstart-keys/`); the file must be readable by its owner only.
//! - [`Pkcs11Signer`] (feature `pkcs11`): an Ed25519 key generated inside a PKCS#11 token (an
//!   HSM, a cloud KMS's PKCS#11 library, SoftHSM2 for tests). The private key is created
//!   sensitive and non-extractable and never leaves the token; the gateway only asks the
//!   token to sign.
//!
//! Both produce the same checkpoints (see `docs/audit-format.md`): a verifier neither knows
//! nor cares where the key was kept, it only needs the public key from the operator.
//!
//! **Rotation.** A sink opened with a key other than the one that signed the stream's newest
//! checkpoint first appends a `key_rotated` record naming the previous and the new key id and
//! checkpoints it with the new key; verification faults on a change of checkpoint key that no
//! such record announces, and reports the keys in order
//! ([`VerifyReport::checkpoint_keys`](gateway_core::audit::VerifyReport::checkpoint_keys)).
//! The operator trusts both keys while the old checkpoints must still verify.

#[cfg(feature = "pkcs11")]
mod pkcs11;
mod software;

#[cfg(feature = "pkcs11")]
pub use pkcs11::{Pkcs11Config, Pkcs11Signer};
pub use software::SoftwareSigner;

use crate::checkpoint::Checkpoint;
use ed25519_dalek::{Signature, VerifyingKey};
use gateway_core::audit::AuditError;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// When the writer signs checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    /// Signs the checkpoints (a key file, a PKCS#11 token, …).
    pub signer: Arc<dyn CheckpointSigner>,
    /// Sign after this many records (≥ 1).
    pub every_records: u64,
    /// Sign after this long if records were appended since the last checkpoint.
    pub every: Duration,
}

/// Signs checkpoint messages with an Ed25519 key. Implementations keep the secret to
/// themselves: `Debug` shows the public key only.
///
/// The writer calls [`sign_message`](Self::sign_message) on its own task once per checkpoint
/// (every 64 records or 5 s by default), so a signer may block briefly (a local token signs in
/// well under a millisecond; see `benches/audit.rs`).
pub trait CheckpointSigner: Send + Sync + std::fmt::Debug {
    /// The public key verifiers need (the checkpoints' `key_id`, in hex).
    fn verifying_key(&self) -> VerifyingKey;

    /// Signs `message` (a whole [`Checkpoint::message`]: domain prefix and canonical JSON) with
    /// pure Ed25519 (RFC 8032, no pre-hash).
    fn sign_message(&self, message: &[u8]) -> Result<Signature, AuditError>;

    /// The public key as hex: the checkpoints' `key_id`.
    fn key_id(&self) -> String {
        hex::encode(self.verifying_key().as_bytes())
    }

    /// Signs a checkpoint of `stream_id` at `sequence` / `head_hash`, stamped now (UTC, whole
    /// microseconds).
    fn sign(
        &self,
        stream_id: &str,
        sequence: u64,
        head_hash: &str,
    ) -> Result<Checkpoint, AuditError> {
        let now = OffsetDateTime::now_utc();
        let time = now
            .replace_microsecond(now.microsecond())
            .map_err(|e| AuditError::internal("normalising checkpoint time", e))?;
        let message = Checkpoint::message(stream_id, sequence, head_hash, time)?;
        let signature = self.sign_message(&message)?;
        Ok(Checkpoint {
            stream_id: stream_id.to_owned(),
            sequence,
            head_hash: head_hash.to_owned(),
            time,
            key_id: self.key_id(),
            signature: hex::encode(signature.to_bytes()),
        })
    }
}

/// The checks every [`CheckpointSigner`] must pass, for a backend's own tests (the PKCS#11
/// signer's test runs them against SoftHSM2; a signer of your own, e.g. for a cloud KMS, should
/// too): its checkpoints verify under its public key and under no other, a changed field breaks
/// the signature, the same message signs to the same bytes (Ed25519 is deterministic), and
/// `Debug` names the public key. The error says which check failed.
pub fn conformance(signer: &dyn CheckpointSigner) -> Result<(), String> {
    let head = "ab".repeat(32);
    let cp = signer
        .sign("conformance", 7, &head)
        .map_err(|e| e.to_string())?;
    if cp.key_id != signer.key_id() {
        return Err(format!(
            "key_id {} is not the signer's {}",
            cp.key_id,
            signer.key_id()
        ));
    }
    cp.verify_signature(&signer.verifying_key())?;
    let mut moved = cp.clone();
    moved.sequence = 8;
    if moved.verify_signature(&signer.verifying_key()).is_ok() {
        return Err("a checkpoint with a changed sequence still verifies".into());
    }
    let other = SoftwareSigner::generate();
    if cp.verify_signature(&other.verifying_key()).is_ok() {
        return Err("a checkpoint verifies under an unrelated key".into());
    }
    // Ed25519 is deterministic: the same message signs to the same bytes.
    let message = Checkpoint::message(&cp.stream_id, cp.sequence, &cp.head_hash, cp.time)
        .map_err(|e| e.to_string())?;
    let again = signer.sign_message(&message).map_err(|e| e.to_string())?;
    if hex::encode(again.to_bytes()) != cp.signature {
        return Err("signing the same message twice gave different signatures".into());
    }
    let debug = format!("{signer:?}");
    if !debug.contains(&signer.key_id()) {
        return Err(format!(
            "Debug output {debug:?} does not name the public key"
        ));
    }
    Ok(())
}
