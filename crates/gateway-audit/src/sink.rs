//! [`ChainedSink`]: the [`AuditSink`] shared by every backend (redaction, group commit,
//! checkpoints, verification) over an [`AuditStore`].

use crate::checkpoint::Checkpoint;
use crate::redact::Redactor;
pub use crate::signer::CheckpointPolicy;
use crate::signer::CheckpointSigner;
use crate::store::{AuditStore, SealedRecord};
use crate::verify::{VerifyOptions, verify_stream};
use crate::witness::{CheckpointWitness, WitnessPolicy};
use crate::writer::{Command, Job, Writer};
use async_trait::async_trait;
use gateway_core::audit::chain::{EncodedEvent, genesis};
use gateway_core::audit::{
    AuditError, AuditEvent, AuditEventKind, AuditReceipt, AuditRecord, AuditSink, VerifyReport,
    only_receipt,
};
use gateway_core::ids::RequestId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// The longest stream id accepted, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 128;

/// How a [`ChainedSink`] writes its stream: the sink's builder, whatever the store.
///
/// On SQLite (the embedded default):
///
/// ```
/// use gateway_audit::{SinkConfig, SoftwareSigner, SqliteAuditSink, SqliteStore};
/// use gateway_core::audit::{AuditEvent, AuditEventKind, AuditSink as _};
/// use gateway_core::ids::RequestId;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("audit.db");
/// let signer = Arc::new(SoftwareSigner::generate());
/// let config = SinkConfig::new("gateway-1")
///     .with_max_batch(256)
///     .with_checkpoints(signer, 1000, Duration::from_secs(60));
/// let sink = SqliteAuditSink::open(SqliteStore::open(&path).await?, config).await?;
/// sink.append(AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested)).await?;
/// assert!(sink.verify().await?.is_ok());
/// sink.close().await?;
/// # Ok(())
/// # }
/// ```
///
/// On PostgreSQL, only the store differs:
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn demo() -> Result<(), gateway_core::audit::AuditError> {
/// use gateway_audit::{PostgresAuditSink, PostgresStore, SinkConfig};
///
/// let store = PostgresStore::connect("postgres://gateway_audit@db.internal/audit").await?;
/// let sink = PostgresAuditSink::open(store, SinkConfig::new("gateway-1")).await?;
/// # let _ = sink;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SinkConfig {
    stream_id: String,
    queue_capacity: usize,
    max_batch: usize,
    redactor: Redactor,
    checkpoints: Option<CheckpointPolicy>,
    witnesses: Option<WitnessPolicy>,
}

impl SinkConfig {
    /// Defaults for `stream_id` (one stream per gateway instance): a queue of 4096 pending
    /// appends, batches of up to 1024 records, the built-in redaction patterns, no checkpoints.
    pub fn new(stream_id: impl Into<String>) -> Self {
        Self {
            stream_id: stream_id.into(),
            queue_capacity: 4096,
            max_batch: 1024,
            redactor: Redactor::new(),
            checkpoints: None,
            witnesses: None,
        }
    }

    /// Sends every checkpoint to `witnesses` too (outside the log's trust domain, see
    /// [`crate::witness`]); appends stop (fail closed) while fewer than `required` of them have
    /// acknowledged the newest checkpoint, and resume once enough have. Needs checkpoints
    /// ([`with_checkpoints`](Self::with_checkpoints)); `open` refuses it otherwise, and refuses
    /// `required` of 0 or more than there are witnesses. Each witness has 5 s to answer.
    pub fn with_witnesses(
        mut self,
        witnesses: Vec<Arc<dyn CheckpointWitness>>,
        required: usize,
    ) -> Self {
        self.witnesses = Some(WitnessPolicy {
            witnesses,
            required,
            timeout: Duration::from_secs(5),
        });
        self
    }

    /// How many appends may wait for the writer before `append` itself waits (back-pressure).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// The most records committed in one transaction (a group from `append_all` is never split,
    /// so a batch may exceed this by one group).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// The redactor applied to every event before sealing.
    pub fn with_redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = redactor;
        self
    }

    /// Signs a checkpoint every `every_records` records or every `every` (whichever comes first).
    pub fn with_checkpoints(
        mut self,
        signer: Arc<dyn CheckpointSigner>,
        every_records: u64,
        every: Duration,
    ) -> Self {
        self.checkpoints = Some(CheckpointPolicy {
            signer,
            every_records: every_records.max(1),
            every: every.max(Duration::from_millis(10)),
        });
        self
    }

    /// The stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }
}

fn validate_stream_id(id: &str) -> Result<(), AuditError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_STREAM_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AuditError::invalid_input(format!(
            "stream id must be 1-{MAX_STREAM_ID_LEN} ASCII letters, digits or . _ - : / @"
        )))
    }
}

/// A hash-chained, group-committing [`AuditSink`] over any [`AuditStore`]; see the crate docs.
///
/// Dropping it stops the writer after the queued appends are committed; [`close`](Self::close)
/// also waits for that and signs a final checkpoint.
#[derive(Debug)]
pub struct ChainedSink<S: AuditStore> {
    store: Arc<S>,
    stream_id: String,
    redactor: Redactor,
    public_key: Option<ed25519_dalek::VerifyingKey>,
    tx: mpsc::Sender<Command>,
    writer: Option<JoinHandle<()>>,
}

impl<S: AuditStore> ChainedSink<S> {
    /// Opens (or creates, with a genesis record) the configured stream in `store` and starts its
    /// writer task. Must be called inside a Tokio runtime.
    pub async fn open(store: S, config: SinkConfig) -> Result<Self, AuditError> {
        validate_stream_id(&config.stream_id)?;
        if let Some(w) = &config.witnesses {
            if config.checkpoints.is_none() {
                return Err(AuditError::invalid_input(
                    "audit witnesses need checkpoints: configure a signer too",
                ));
            }
            if w.required == 0 || w.required > w.witnesses.len() {
                return Err(AuditError::invalid_input(format!(
                    "audit witnesses: {} required of {} configured",
                    w.required,
                    w.witnesses.len()
                )));
            }
        }
        let store = Arc::new(store);
        let head = match store.head(&config.stream_id).await? {
            Some(head) => head,
            None => {
                let g = SealedRecord::new(genesis(&config.stream_id)?)?;
                match store.append_batch(std::slice::from_ref(&g), None).await {
                    Ok(()) => (g.record.sequence, g.record.hash),
                    // Another writer created the stream first: use its genesis.
                    Err(AuditError::Conflict { .. }) => {
                        store.head(&config.stream_id).await?.ok_or_else(|| {
                            AuditError::internal_msg("stream vanished after a genesis conflict")
                        })?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        // A key other than the newest checkpoint's is a rotation: announced in the chain below.
        let rotation = match &config.checkpoints {
            Some(policy) => {
                let key_id = policy.signer.key_id();
                store
                    .latest_checkpoint(&config.stream_id)
                    .await?
                    .map(|cp| cp.key_id)
                    .filter(|previous| !previous.eq_ignore_ascii_case(&key_id))
                    .map(|previous| (previous, key_id))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let public_key = config
            .checkpoints
            .as_ref()
            .map(|c| c.signer.verifying_key());
        let writer = Writer::new(
            Arc::clone(&store),
            config.stream_id.clone(),
            head,
            config.max_batch,
            config.checkpoints,
            config.witnesses,
        );
        let handle = tokio::spawn(writer.run(rx));
        let sink = Self {
            store,
            stream_id: config.stream_id,
            redactor: config.redactor,
            public_key,
            tx,
            writer: Some(handle),
        };
        if let Some((previous, key_id)) = rotation {
            sink.record_key_rotation(&previous, &key_id).await?;
        }
        Ok(sink)
    }

    /// Appends the `key_rotated` record (previous and new key id) and checkpoints it with the
    /// new key at once, so that the first checkpoint the new key signs covers the record
    /// announcing it. Verification requires this record wherever the checkpoint key changes.
    async fn record_key_rotation(&self, previous: &str, key_id: &str) -> Result<(), AuditError> {
        let mut event = AuditEvent::new(RequestId::new(), 0, AuditEventKind::KeyRotated);
        event.action = "audit.key_rotated".to_owned();
        event.resource = format!("audit-stream:{}", self.stream_id);
        event
            .details
            .insert("previous_key_id".into(), previous.into());
        event.details.insert("key_id".into(), key_id.into());
        // Not redacted: written by the sink itself, and a key id is public.
        self.submit(vec![EncodedEvent::new(&self.stream_id, event)?])
            .await?;
        self.checkpoint().await?;
        tracing::info!(stream = %self.stream_id, previous, key_id, "audit checkpoint key rotated");
        Ok(())
    }

    /// Hands encoded events to the writer as one group and waits for their receipts.
    async fn submit(&self, events: Vec<EncodedEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append(Job { events, reply }))
            .await
            .map_err(|_| AuditError::unavailable_msg("audit writer stopped; nothing stored"))?;
        rx.await.map_err(|_| {
            AuditError::unavailable_msg("audit writer stopped before acknowledging the events")
        })?
    }

    /// The stream this sink writes.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Signs a checkpoint at the current head now (after everything queued before this call is
    /// committed). Returns `None` when no signer is configured or the head is already
    /// checkpointed by this sink.
    pub async fn checkpoint(&self) -> Result<Option<Checkpoint>, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Checkpoint(reply))
            .await
            .map_err(|_| AuditError::unavailable_msg("audit writer stopped"))?;
        rx.await
            .map_err(|_| AuditError::unavailable_msg("audit writer stopped"))?
    }

    /// Commits everything queued, signs a final checkpoint (if configured) and stops the writer.
    pub async fn close(mut self) -> Result<(), AuditError> {
        let result = self.checkpoint().await.map(|_| ());
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(handle) = self.writer.take() {
            handle
                .await
                .map_err(|e| AuditError::internal("audit writer task failed", e))?;
        }
        result
    }

    /// Verifies this sink's stream with explicit options (e.g. another trusted key).
    pub async fn verify_with(&self, options: &VerifyOptions) -> Result<VerifyReport, AuditError> {
        verify_stream(self.store.as_ref(), &self.stream_id, options).await
    }
}

#[async_trait]
impl<S: AuditStore> AuditSink for ChainedSink<S> {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        only_receipt(self.append_all(vec![event]).await?)
    }

    /// Atomic: the group goes to the writer as one job, so its records are contiguous, in one
    /// commit, all or none.
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        // Redact and encode in the caller's task: it parallelises and keeps the single writer
        // lean. An event that cannot be encoded fails its group here, before anything is queued.
        let events = events
            .into_iter()
            .map(|mut event| {
                self.redactor.redact(&mut event);
                EncodedEvent::new(&self.stream_id, event)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.submit(events).await
    }

    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let rows = self.store.read_raw(&self.stream_id, after, limit).await?;
        rows.iter()
            .map(|row| {
                row.to_record().map_err(|detail| {
                    AuditError::internal_msg(format!(
                        "stored audit record {} is corrupt: {detail}",
                        row.sequence
                    ))
                })
            })
            .collect()
    }

    async fn verify(&self) -> Result<VerifyReport, AuditError> {
        let options = VerifyOptions {
            trusted_keys: self.public_key.into_iter().collect(),
            ..VerifyOptions::default()
        };
        verify_stream(self.store.as_ref(), &self.stream_id, &options).await
    }
}
