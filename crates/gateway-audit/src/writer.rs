//! The single writer of one stream: batches queued appends into one transaction (group commit)
//! and answers each caller only after the commit.

use crate::checkpoint::Checkpoint;
use crate::sink::CheckpointPolicy;
use crate::store::AuditStore;
use gateway_core::audit::chain::seal;
use gateway_core::audit::{AuditError, AuditEvent, AuditReceipt, AuditRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// How often a batch is re-sealed after losing a race to another writer on the same stream.
const CONFLICT_RETRIES: usize = 3;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

/// One queued append.
pub(crate) struct Job {
    pub event: AuditEvent,
    pub reply: Reply<AuditReceipt>,
}

/// What the writer is asked to do.
// Appends are the hot path and move by value into the queue; boxing them would cost an
// allocation per event to save queue slots.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Append(Job),
    Checkpoint(Reply<Option<Checkpoint>>),
}

pub(crate) struct Writer<S: AuditStore> {
    store: Arc<S>,
    stream_id: String,
    /// The last committed record; `None` after a failure until reloaded from the database.
    head: Option<(u64, String)>,
    max_batch: usize,
    checkpoints: Option<CheckpointPolicy>,
    /// Records committed since the last checkpoint this writer signed.
    since_checkpoint: u64,
    last_checkpoint: Instant,
    checkpointed_sequence: Option<u64>,
}

impl<S: AuditStore> Writer<S> {
    pub(crate) fn new(
        store: Arc<S>,
        stream_id: String,
        head: (u64, String),
        max_batch: usize,
        checkpoints: Option<CheckpointPolicy>,
    ) -> Self {
        Self {
            store,
            stream_id,
            head: Some(head),
            max_batch,
            checkpoints,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            checkpointed_sequence: None,
        }
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let period = self
            .checkpoints
            .as_ref()
            .map(|c| c.every)
            .unwrap_or(std::time::Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let timed = self.checkpoints.is_some();
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let Some(command) = command else { break };
                    self.handle(command, &mut rx).await;
                }
                _ = ticker.tick(), if timed => {
                    if self.since_checkpoint > 0
                        && self.last_checkpoint.elapsed() >= period
                    {
                        // A failed timed checkpoint is retried on the next tick; appends go on.
                        if let Err(e) = self.checkpoint_now().await {
                            tracing::warn!(stream = %self.stream_id, error = %e, "audit checkpoint failed");
                        }
                    }
                }
            }
        }
    }

    async fn handle(&mut self, first: Command, rx: &mut mpsc::Receiver<Command>) {
        let mut batch = Vec::new();
        let mut deferred = None;
        match first {
            Command::Append(job) => batch.push(job),
            Command::Checkpoint(reply) => deferred = Some(reply),
        }
        // Take everything already queued (group commit), stopping at a checkpoint request so it
        // covers exactly the appends queued before it.
        while deferred.is_none() && batch.len() < self.max_batch {
            match rx.try_recv() {
                Ok(Command::Append(job)) => batch.push(job),
                Ok(Command::Checkpoint(reply)) => deferred = Some(reply),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            self.commit(batch).await;
        }
        if let Some(reply) = deferred {
            let _ = reply.send(self.checkpoint_now().await);
        }
    }

    async fn current_head(&mut self) -> Result<(u64, String), AuditError> {
        if let Some(head) = &self.head {
            return Ok(head.clone());
        }
        let head = self.store.head(&self.stream_id).await?.ok_or_else(|| {
            AuditError::internal_msg(format!(
                "audit stream {} has no records (genesis missing)",
                self.stream_id
            ))
        })?;
        self.head = Some(head.clone());
        Ok(head)
    }

    async fn commit(&mut self, mut jobs: Vec<Job>) {
        let mut attempt = 0;
        loop {
            let (mut sequence, mut prev_hash) = match self.current_head().await {
                Ok(head) => head,
                Err(e) => return fail_all(jobs, &e),
            };
            let mut records: Vec<AuditRecord> = Vec::with_capacity(jobs.len());
            let mut sealed: Vec<Job> = Vec::with_capacity(jobs.len());
            for job in jobs {
                let next = match sequence.checked_add(1) {
                    Some(n) => n,
                    None => {
                        let _ = job.reply.send(Err(AuditError::internal_msg(
                            "audit stream exhausted its sequence numbers",
                        )));
                        continue;
                    }
                };
                match seal(&self.stream_id, next, &prev_hash, job.event.clone()) {
                    Ok(record) => {
                        sequence = next;
                        prev_hash = record.hash.clone();
                        records.push(record);
                        sealed.push(job);
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                    }
                }
            }
            if records.is_empty() {
                return;
            }
            let checkpoint = match self.due_checkpoint(records.len() as u64, sequence, &prev_hash) {
                Ok(cp) => cp,
                Err(e) => return fail_all(sealed, &e),
            };
            match self.store.append_batch(&records, checkpoint.as_ref()).await {
                Ok(()) => {
                    self.head = Some((sequence, prev_hash));
                    if checkpoint.is_some() {
                        self.mark_checkpointed(sequence);
                    } else {
                        self.since_checkpoint += records.len() as u64;
                    }
                    for (job, record) in sealed.into_iter().zip(records) {
                        let _ = job.reply.send(Ok(AuditReceipt {
                            stream_id: record.stream_id,
                            sequence: record.sequence,
                            hash: record.hash,
                        }));
                    }
                    return;
                }
                Err(e) => {
                    // Whatever happened, the in-memory head may be stale: reload it.
                    self.head = None;
                    let conflict = matches!(e, AuditError::Conflict { .. });
                    if conflict && attempt < CONFLICT_RETRIES {
                        attempt += 1;
                        tracing::warn!(stream = %self.stream_id, "audit append lost a race with another writer; re-sealing the batch");
                        jobs = sealed;
                        continue;
                    }
                    return fail_all(sealed, &e);
                }
            }
        }
    }

    /// The checkpoint to commit with a batch ending at `sequence`, if one is due by count.
    fn due_checkpoint(
        &self,
        added: u64,
        sequence: u64,
        hash: &str,
    ) -> Result<Option<Checkpoint>, AuditError> {
        match &self.checkpoints {
            Some(policy) if self.since_checkpoint + added >= policy.every_records => policy
                .signer
                .sign(&self.stream_id, sequence, hash)
                .map(Some),
            _ => Ok(None),
        }
    }

    fn mark_checkpointed(&mut self, sequence: u64) {
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.checkpointed_sequence = Some(sequence);
    }

    /// Signs and stores a checkpoint at the current head, unless it is already checkpointed.
    async fn checkpoint_now(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        let Some(policy) = &self.checkpoints else {
            return Ok(None);
        };
        let signer = Arc::clone(&policy.signer);
        let (sequence, hash) = self.current_head().await?;
        if self.checkpointed_sequence == Some(sequence) {
            return Ok(None);
        }
        let checkpoint = signer.sign(&self.stream_id, sequence, &hash)?;
        match self.store.append_batch(&[], Some(&checkpoint)).await {
            Ok(()) => {
                self.mark_checkpointed(sequence);
                Ok(Some(checkpoint))
            }
            // Another writer already checkpointed this exact head.
            Err(AuditError::Conflict { .. }) => {
                self.mark_checkpointed(sequence);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Answers every caller of a failed batch with an error of the same kind.
fn fail_all(jobs: Vec<Job>, error: &AuditError) {
    tracing::warn!(error = %error, records = jobs.len(), "audit batch failed; callers get an error");
    for job in jobs {
        let _ = job.reply.send(Err(replicate(error)));
    }
}

/// A copy of `error` for one caller (the source error cannot be cloned; its text is kept).
fn replicate(error: &AuditError) -> AuditError {
    let message = format!("audit append failed, event not stored: {error}");
    match error {
        AuditError::InvalidInput { .. } => AuditError::InvalidInput { message },
        AuditError::Unavailable { .. } => AuditError::Unavailable {
            message,
            source: None,
        },
        AuditError::Timeout { after } => AuditError::Timeout { after: *after },
        AuditError::NotFound { .. } => AuditError::NotFound { message },
        AuditError::Conflict { .. } => AuditError::Conflict { message },
        _ => AuditError::Internal {
            message,
            source: None,
        },
    }
}
