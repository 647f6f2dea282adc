//! [`SoftwareSigner`]: an Ed25519 key in process memory, optionally kept in a key file.

use super::CheckpointSigner;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use gateway_core::audit::AuditError;
use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// An Ed25519 checkpoint key held in memory: generated, given, or read from a key file (64 hex
/// digits, readable by its owner only). Its `Debug` output shows only the public key; the
/// secret is zeroised on drop and never logged.
///
/// Keep the key file in a directory apart from the log's: whoever can rewrite the log must
/// not find the key beside it. Where that is not enough (the same host), use a
/// [`Pkcs11Signer`](super::Pkcs11Signer) so that the key never exists outside a token.
pub struct SoftwareSigner {
    key: SigningKey,
}

impl SoftwareSigner {
    /// A fresh random key (from the operating system's CSPRNG), in memory only.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// A signer from the 32-byte Ed25519 secret key.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(secret),
        }
    }

    /// A signer from the secret key as 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(secret: &str) -> Result<Self, AuditError> {
        let bytes: [u8; 32] = hex::decode(secret.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                AuditError::invalid_input("checkpoint signing key must be 64 hex digits")
            })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// The secret key as hex, for storing it in a secret manager. Handle with care.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// Reads the key file at `path`. Refuses a file that its group or others may read or
    /// write (`chmod 600` it): a key others can read signs for them too.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let io = |what: &str, e: std::io::Error| {
            AuditError::unavailable(format!("{what} checkpoint key {}", path.display()), e)
        };
        let mode = std::fs::metadata(path)
            .map_err(|e| io("reading", e))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(AuditError::invalid_input(format!(
                "checkpoint key {} has mode {:03o}: its group or others can use it; \
                 run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| io("reading", e))?;
        Self::from_hex(&text).map_err(|_| {
            AuditError::invalid_input(format!(
                "checkpoint key {} must hold 64 hex digits (an Ed25519 secret key)",
                path.display()
            ))
        })
    }

    /// Generates a key and writes it to a new file at `path` (mode 0600, refused if the file
    /// exists).
    pub fn create(path: &Path) -> Result<Self, AuditError> {
        let signer = Self::generate();
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                AuditError::unavailable(format!("creating checkpoint key {}", path.display()), e)
            })?;
        file.write_all(signer.secret_hex().as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| {
                AuditError::unavailable(format!("writing checkpoint key {}", path.display()), e)
            })?;
        Ok(signer)
    }

    /// [`load`](Self::load)s the key at `path`, or [`create`](Self::create)s it when there is
    /// no file there yet.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            _ => Self::load(path),
        }
    }
}

impl CheckpointSigner for SoftwareSigner {
    fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    fn sign_message(&self, message: &[u8]) -> Result<Signature, AuditError> {
        Ok(self.key.sign(message))
    }
}

impl fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoftwareSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_the_signer_conformance_checks() {
        super::super::conformance(&SoftwareSigner::generate()).unwrap();
    }

    #[test]
    fn key_file_round_trip_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.key");
        let created = SoftwareSigner::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = SoftwareSigner::load_or_create(&path).unwrap();
        assert_eq!(loaded.key_id(), created.key_id());
        // create never overwrites a key.
        assert!(SoftwareSigner::create(&path).is_err());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = SoftwareSigner::load(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let err = SoftwareSigner::load(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!(!err.contains("not a key"), "{err}");
    }
}
