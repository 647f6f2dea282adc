//! The embedded defaults: everything on one machine, no external service.
//!
//! [`EmbeddedParts::open`] assembles the reference catalog ([`crate::reference`]), the
//! reference Rego policies run by regorus ([`gateway_opa::EmbeddedRego`]), the local sandbox
//! runner at the strongest isolation this machine offers ([`gateway_runners::LocalRunner`]),
//! HMAC capability-token grants ([`gateway_core::HmacBroker`]) and a hash-chained SQLite audit
//! log with signed checkpoints ([`gateway_audit::SqliteAuditSink`]). The caller supplies the
//! identities (e.g. [`gateway_core::StaticKeys`]) and builds the [`Gateway`], optionally wrapping
//! backends (metrics) or adding an approval gate.

use gateway_audit::{
    CheckpointSigner, CheckpointWitness, FileWitness, SinkConfig, SoftwareSigner, SqliteAuditSink,
    SqliteStore, VerifyOptions, check_witnessed,
};
use gateway_core::{
    ActionCatalog, AuditError, Gateway, GatewayBuilder, HmacBroker, Identity, PolicyError,
    RunnerError, VerifyReport,
};
use gateway_opa::EmbeddedRego;
use gateway_runners::LocalRunner;
use gateway_state::SqliteStateStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The reference policies shipped with this crate (`policies/`).
pub fn reference_policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// Why the embedded defaults could not be assembled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The policies did not load.
    #[error("policy: {0}")]
    Policy(String),
    /// No usable local runner.
    #[error(transparent)]
    Runner(#[from] RunnerError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The action state store could not be opened.
    #[error(transparent)]
    State(#[from] gateway_core::StateError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl From<PolicyError> for EmbeddedError {
    fn from(e: PolicyError) -> Self {
        Self::Policy(e.to_string())
    }
}

/// Where the embedded parts keep their state.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Directory of `.rego` and `data.json` files.
    pub policy_dir: PathBuf,
    /// The SQLite audit log.
    pub audit_path: PathBuf,
    /// The SQLite action state (request ids, phases, approval tickets): by default beside the
    /// log, `<log>.state.db` (a file of its own, so claims do not queue behind audit appends).
    pub state_path: PathBuf,
    /// What an acknowledged state write survives. Default
    /// [`Durability::ProcessCrash`](gateway_state::Durability): the gateway's crash, kill or
    /// restart, not an OS crash or power loss (the audit log itself stays fsynced on every
    /// commit). Measured (`benches/gateway.rs`, same run): with `PowerLoss` each of an
    /// action's three state writes is its own fsync behind SQLite's one writer, and the no-op
    /// gateway fell from 7,392 to 580 actions/s at 64 agents (0.08x) and its p50 at one agent
    /// from 0.75 to 1.92 ms.
    pub state_durability: gateway_state::Durability,
    /// The audit stream (one per gateway instance).
    pub stream_id: String,
    /// Signs audit checkpoints; keep it secret and publish its public key.
    pub checkpoint_signer: Arc<dyn CheckpointSigner>,
    /// Sign a checkpoint at least every this many records (and every 5 s when records were
    /// appended). With a witness this bounds the unwitnessed tail: an attacker on the log's
    /// host can remove or append at most this many records (or 5 s of them) unnoticed by the
    /// witness. Default 64: measured (`benches/audit.rs`, `audit_checkpoint_interval`, SQLite
    /// with a file witness) at no cost distinguishable from no checkpoints at 1 and 64 writers
    /// (0.97× the throughput at 64 writers, same run); a PostgreSQL witness at that interval
    /// costs about a quarter at 64 writers (0.77×), since each checkpoint waits for its commit.
    pub checkpoint_every_records: u64,
    /// A directory, apart from the log's, where a [`FileWitness`] keeps a copy of every
    /// checkpoint; appends stop while it cannot. `None`: no witness.
    pub witness_dir: Option<PathBuf>,
    /// The key file the signer was loaded from, if any (checked to lie outside the log's
    /// directory).
    signing_key_file: Option<PathBuf>,
}

impl EmbeddedOptions {
    /// The reference policies, a log at `audit_path`, stream `gateway-1`, a fresh signing key
    /// and a checkpoint every 64 records.
    pub fn new(audit_path: impl Into<PathBuf>) -> Self {
        let audit_path = audit_path.into();
        let mut state_path = audit_path.clone().into_os_string();
        state_path.push(".state.db");
        Self {
            policy_dir: reference_policy_dir(),
            state_path: state_path.into(),
            state_durability: gateway_state::Durability::ProcessCrash,
            audit_path,
            stream_id: "gateway-1".into(),
            checkpoint_signer: Arc::new(SoftwareSigner::generate()),
            checkpoint_every_records: 64,
            witness_dir: None,
            signing_key_file: None,
        }
    }

    /// Witnesses every checkpoint in a [`FileWitness`] in `dir`, which must not be the log's
    /// own directory (put it on another mount or host for real separation).
    pub fn with_witness_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.witness_dir = Some(dir.into());
        self
    }

    /// Loads the checkpoint signing key from the key file at `path` (64 hex digits, mode 0600),
    /// creating it if absent ([`SoftwareSigner::load_or_create`]). Keep it in a directory apart
    /// from the log's: [`EmbeddedParts::open`] refuses a key file in the log's own directory.
    pub fn with_signing_key_file(mut self, path: &Path) -> Result<Self, EmbeddedError> {
        self.checkpoint_signer = Arc::new(SoftwareSigner::load_or_create(path)?);
        self.signing_key_file = Some(path.to_owned());
        Ok(self)
    }

    /// [`with_signing_key_file`](Self::with_signing_key_file) with the key file
    /// `checkpoint.key` in `dir` (created if missing), a directory apart from the log's. A key
    /// found beside the log instead (where earlier versions kept it) is moved there first, so
    /// an existing log keeps its key.
    pub fn with_signing_key_dir(self, dir: &Path) -> Result<Self, EmbeddedError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| EmbeddedError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = dir.join("checkpoint.key");
        if let Some(log_dir) = self.audit_path.parent() {
            let beside_log = log_dir.join("checkpoint.key");
            if beside_log.exists() && !key.exists() {
                std::fs::rename(&beside_log, &key).map_err(io(&beside_log))?;
            }
        }
        self.with_signing_key_file(&key)
    }

    /// Signs checkpoints with `signer` (e.g. a `Pkcs11Signer`, whose key never leaves its
    /// token).
    pub fn with_signer(mut self, signer: Arc<dyn CheckpointSigner>) -> Self {
        self.checkpoint_signer = signer;
        self.signing_key_file = None;
        self
    }
}

/// The embedded backends, ready to go into a [`GatewayBuilder`].
pub struct EmbeddedParts {
    /// The reference actions.
    pub catalog: ActionCatalog,
    /// Embedded Rego on the reference (or given) policies.
    pub policy: Arc<EmbeddedRego>,
    /// HMAC capability tokens.
    pub broker: Arc<HmacBroker>,
    /// The local sandbox runner.
    pub runner: Arc<LocalRunner>,
    /// The SQLite audit log.
    pub audit: Arc<SqliteAuditSink>,
    /// The SQLite action state store (give it to a server front too:
    /// `Frontend::with_state`).
    pub state: Arc<SqliteStateStore>,
    /// Verification options with the checkpoint public key.
    pub verify_options: VerifyOptions,
    /// The checkpoint witness, if configured.
    pub witness: Option<Arc<FileWitness>>,
}

impl EmbeddedParts {
    /// Loads the policies, probes the runner and opens (or creates) the audit log.
    pub async fn open(options: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let policy = EmbeddedRego::from_dir(&options.policy_dir)
            .map_err(|e| EmbeddedError::Policy(e.to_string()))?;
        let runner = LocalRunner::detect()?;
        if let Some(parent) = options.audit_path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| EmbeddedError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let log_dir = options
            .audit_path
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok());
        let in_log_dir = |path: &Path| {
            let dir = path.parent().and_then(|p| std::fs::canonicalize(p).ok());
            log_dir.is_some() && dir == log_dir
        };
        // Whoever can rewrite the log's directory would find a key kept there and re-sign.
        if let Some(key) = &options.signing_key_file
            && in_log_dir(key)
        {
            return Err(AuditError::invalid_input(format!(
                "the checkpoint key {} is in the audit log's directory: keep it in a directory \
                 apart from the log (or in a PKCS#11 token)",
                key.display()
            ))
            .into());
        }
        let store = SqliteStore::open(&options.audit_path).await?;
        let mut config = SinkConfig::new(options.stream_id.clone()).with_checkpoints(
            Arc::clone(&options.checkpoint_signer),
            options.checkpoint_every_records,
            Duration::from_secs(5),
        );
        let mut witness = None;
        if let Some(dir) = &options.witness_dir {
            let file = Arc::new(FileWitness::open(dir).map_err(AuditError::from)?);
            if log_dir.is_some() && std::fs::canonicalize(dir).ok() == log_dir {
                return Err(AuditError::invalid_input(
                    "the audit witness directory must not be the log's own directory",
                )
                .into());
            }
            config = config.with_witnesses(vec![file.clone() as Arc<dyn CheckpointWitness>], 1);
            witness = Some(file);
        }
        let audit = SqliteAuditSink::open(store, config).await?;
        let state =
            SqliteStateStore::open_with(&options.state_path, options.state_durability).await?;
        let verify_options = VerifyOptions {
            trusted_keys: vec![options.checkpoint_signer.verifying_key()],
            ..VerifyOptions::default()
        };
        Ok(Self {
            catalog: crate::reference::catalog(),
            policy: Arc::new(policy),
            broker: Arc::new(HmacBroker::generate()),
            runner: Arc::new(runner),
            audit: Arc::new(audit),
            state: Arc::new(state),
            verify_options,
            witness,
        })
    }

    /// A builder with every embedded part and the given identity backend set.
    pub fn builder(&self, identity: Arc<dyn Identity>) -> GatewayBuilder {
        Gateway::builder()
            .identity(identity)
            .policy(self.policy.clone())
            .broker(self.broker.clone())
            .runner(self.runner.clone())
            .audit(self.audit.clone())
            .state(self.state.clone())
            .catalog(self.catalog.clone())
    }

    /// Verifies the whole audit stream, checkpoints included, and compares it with the
    /// witness (if configured): a log shorter than its newest witnessed checkpoint, or one
    /// lacking or contradicting a witnessed checkpoint, is a fault.
    pub async fn verify_audit(&self) -> Result<VerifyReport, AuditError> {
        let mut report = self.audit.verify_with(&self.verify_options).await?;
        if let (Some(witness), None) = (&self.witness, &report.fault) {
            let stream = self.audit.stream_id();
            let witnessed = witness.checkpoints(stream).await?;
            let head = report.head.as_ref().map(|h| h.0);
            let checked = check_witnessed(
                self.audit.store(),
                stream,
                head,
                &witnessed,
                &self.verify_options.trusted_keys,
            )
            .await?;
            if let Some(detail) = checked.fault {
                report.fault = Some(gateway_core::audit::chain::ChainFault {
                    stream_id: stream.to_owned(),
                    sequence: checked.newest_witnessed.unwrap_or(0),
                    kind: gateway_core::audit::chain::FaultKind::BadCheckpoint,
                    detail,
                });
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_beside_the_log_moves_to_the_key_dir_and_stays_the_same_key() {
        let root = tempfile::tempdir().unwrap();
        let log_dir = root.path().join("log");
        std::fs::create_dir_all(&log_dir).unwrap();
        let audit = log_dir.join("audit.db");
        // Where earlier versions kept it.
        let old = SoftwareSigner::create(&log_dir.join("checkpoint.key")).unwrap();
        let keys = root.path().join("keys");
        let options = EmbeddedOptions::new(&audit)
            .with_signing_key_dir(&keys)
            .unwrap();
        assert_eq!(options.checkpoint_signer.key_id(), old.key_id());
        assert!(!log_dir.join("checkpoint.key").exists());
        assert!(keys.join("checkpoint.key").exists());
        // Next time the key is simply loaded from the key dir.
        let again = EmbeddedOptions::new(&audit)
            .with_signing_key_dir(&keys)
            .unwrap();
        assert_eq!(again.checkpoint_signer.key_id(), old.key_id());
    }
}
