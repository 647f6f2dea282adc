//! The single writer of one stream: batches queued appends into one transaction (group commit)
//! and answers each caller only after the commit.

use crate::checkpoint::Checkpoint;
use crate::signer::CheckpointPolicy;
use crate::store::{AuditStore, SealedRecord};
use crate::witness::WitnessPolicy;
use gateway_core::audit::chain::EncodedEvent;
use gateway_core::audit::{AuditError, AuditReceipt};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

/// How often a batch is re-sealed after losing a race to another writer on the same stream.
const CONFLICT_RETRIES: usize = 3;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, AuditError>>;

/// One caller's events, stored as a unit: contiguous in the chain, in one commit, all or none.
/// A single append is a unit of one.
pub(crate) struct Job {
    /// Encoded by the caller (see [`EncodedEvent`]): the writer only numbers and hashes them.
    pub events: Vec<EncodedEvent>,
    /// The receipts, in event order.
    pub reply: Reply<Vec<AuditReceipt>>,
}

/// What the writer is asked to do.
pub(crate) enum Command {
    Append(Job),
    Checkpoint(Reply<Option<Checkpoint>>),
}

/// A sealed batch: the records in chain order, and whose they are (each job's answer and how
/// many consecutive records are its, in job order).
struct Sealed {
    records: Vec<SealedRecord>,
    owners: Vec<(Reply<Vec<AuditReceipt>>, usize)>,
    /// The batch's last sequence number and hash.
    head: (u64, String),
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
    witnesses: Option<WitnessPolicy>,
    /// The newest checkpoint, while fewer witnesses than required have acknowledged it, and
    /// which have: appends stop (fail closed) until enough do.
    pending: Option<(Checkpoint, Vec<bool>)>,
}

impl<S: AuditStore> Writer<S> {
    pub(crate) fn new(
        store: Arc<S>,
        stream_id: String,
        head: (u64, String),
        max_batch: usize,
        checkpoints: Option<CheckpointPolicy>,
        witnesses: Option<WitnessPolicy>,
    ) -> Self {
        Self {
            witnesses,
            pending: None,
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
                    if self.pending.is_some() {
                        // Witnesses were down: try again, so appends resume once they are back.
                        if let Err(e) = self.witness_pending().await {
                            tracing::warn!(stream = %self.stream_id, error = %e, "audit checkpoint still not witnessed");
                        }
                    } else if self.since_checkpoint > 0
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
        let mut records = 0;
        let mut deferred = None;
        match first {
            Command::Append(job) => {
                records += job.events.len();
                batch.push(job);
            }
            Command::Checkpoint(reply) => deferred = Some(reply),
        }
        // Take everything already queued (group commit), stopping at a checkpoint request so it
        // covers exactly the appends queued before it. A group is never split, so one may take
        // the batch past `max_batch`.
        while deferred.is_none() && records < self.max_batch {
            match rx.try_recv() {
                Ok(Command::Append(job)) => {
                    records += job.events.len();
                    batch.push(job);
                }
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
        // Fail closed: while the newest checkpoint lacks enough witnesses, nothing is appended.
        if let Err(e) = self.witness_pending().await {
            return fail_all(jobs.into_iter().map(|j| j.reply), &e);
        }
        let mut attempt = 0;
        loop {
            let head = match self.current_head().await {
                Ok(head) => head,
                Err(e) => return fail_all(jobs.into_iter().map(|j| j.reply), &e),
            };
            let Some(sealed) = self.seal(head, jobs) else {
                return;
            };
            let added = sealed.records.len() as u64;
            let (sequence, hash) = sealed.head.clone();
            let checkpoint = match self.due_checkpoint(added, sequence, &hash) {
                Ok(cp) => cp,
                Err(e) => return fail_all(sealed.owners.into_iter().map(|(a, _)| a), &e),
            };
            match self
                .store
                .append_batch(&sealed.records, checkpoint.as_ref())
                .await
            {
                Ok(()) => {
                    self.head = Some(sealed.head);
                    // The batch is durable in the log: answer its callers first, so that they
                    // do not also wait for the witnesses.
                    let mut records = sealed.records.into_iter();
                    for (answer, n) in sealed.owners {
                        let receipts = records
                            .by_ref()
                            .take(n)
                            .map(|s| AuditReceipt {
                                stream_id: s.record.stream_id,
                                sequence: s.record.sequence,
                                hash: s.record.hash,
                            })
                            .collect();
                        let _ = answer.send(Ok(receipts));
                    }
                    if let Some(cp) = checkpoint {
                        self.mark_checkpointed(sequence);
                        // If its checkpoint cannot be witnessed, the appends after it stop
                        // (`witness_pending` at the next commit) until it is.
                        self.set_pending(cp);
                        if let Err(e) = self.witness_pending().await {
                            tracing::warn!(stream = %self.stream_id, error = %e, "audit checkpoint not witnessed; appends stop until it is");
                        }
                    } else {
                        self.since_checkpoint += added;
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
                        jobs = sealed.unseal(&self.stream_id);
                        continue;
                    }
                    return fail_all(sealed.owners.into_iter().map(|(a, _)| a), &e);
                }
            }
        }
    }

    /// Seals `jobs` onto the chain after `head`, each job's events contiguously. A job any of
    /// whose events cannot be sealed fails alone, leaving no gap. `None` when none is left.
    fn seal(&self, head: (u64, String), jobs: Vec<Job>) -> Option<Sealed> {
        let (mut sequence, mut prev_hash) = head;
        let total = jobs.iter().map(|j| j.events.len()).sum();
        let mut records: Vec<SealedRecord> = Vec::with_capacity(total);
        let mut owners = Vec::with_capacity(jobs.len());
        for job in jobs {
            let start = records.len();
            let (job_sequence, job_prev) = (sequence, prev_hash.clone());
            let mut failure = None;
            for event in job.events {
                let sealed = sequence
                    .checked_add(1)
                    .ok_or_else(|| {
                        AuditError::internal_msg("audit stream exhausted its sequence numbers")
                    })
                    .and_then(|next| event.seal(next, &prev_hash));
                match sealed {
                    Ok((record, body)) => {
                        sequence = record.sequence;
                        prev_hash.clone_from(&record.hash);
                        records.push(SealedRecord { record, body });
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match failure {
                None => owners.push((job.reply, records.len() - start)),
                Some(e) => {
                    records.truncate(start);
                    (sequence, prev_hash) = (job_sequence, job_prev);
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        (!records.is_empty()).then_some(Sealed {
            records,
            owners,
            head: (sequence, prev_hash),
        })
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
        self.witness_pending().await?;
        let (sequence, hash) = self.current_head().await?;
        if self.checkpointed_sequence == Some(sequence) {
            return Ok(None);
        }
        let checkpoint = signer.sign(&self.stream_id, sequence, &hash)?;
        match self.store.append_batch(&[], Some(&checkpoint)).await {
            Ok(()) => {
                self.mark_checkpointed(sequence);
                self.set_pending(checkpoint.clone());
                self.witness_pending().await?;
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

impl<S: AuditStore> Writer<S> {
    /// Makes `checkpoint` the one the witnesses must acknowledge (when there are witnesses).
    fn set_pending(&mut self, checkpoint: Checkpoint) {
        if let Some(policy) = &self.witnesses {
            self.pending = Some((checkpoint, vec![false; policy.witnesses.len()]));
        }
    }

    /// Sends the pending checkpoint to every witness that has not acknowledged it yet; `Ok`
    /// once at least the required number have (then nothing is pending).
    async fn witness_pending(&mut self) -> Result<(), AuditError> {
        let (Some(policy), Some((checkpoint, acked))) = (&self.witnesses, &mut self.pending) else {
            return Ok(());
        };
        let mut last_error = String::new();
        for (witness, done) in policy.witnesses.iter().zip(acked.iter_mut()) {
            if *done {
                continue;
            }
            match tokio::time::timeout(policy.timeout, witness.witness(checkpoint)).await {
                Ok(Ok(())) => *done = true,
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => {
                    last_error = format!(
                        "witness {} did not answer within {:?}",
                        witness.name(),
                        policy.timeout
                    )
                }
            }
        }
        let acknowledged = acked.iter().filter(|a| **a).count();
        if acknowledged >= policy.required {
            self.pending = None;
            return Ok(());
        }
        Err(AuditError::Unavailable {
            message: format!(
                "audit appends stopped: {acknowledged} of the {} required witnesses acknowledged                  the checkpoint of {} at sequence {} (last error: {last_error}); they resume once                  enough do",
                policy.required, checkpoint.stream_id, checkpoint.sequence
            ),
            source: None,
        })
    }
}

impl Sealed {
    /// The jobs again, with their events as sealed (times already truncated), for re-sealing
    /// on another head. Re-encoding repeats what succeeded when the jobs were queued, so it
    /// does not fail; should it, that job's caller gets the error.
    fn unseal(self, stream_id: &str) -> Vec<Job> {
        let mut records = self.records.into_iter();
        let mut jobs = Vec::with_capacity(self.owners.len());
        for (reply, n) in self.owners {
            // Take the job's records before encoding, so that a failure cannot leave some of
            // them to the next job.
            let own: Vec<SealedRecord> = records.by_ref().take(n).collect();
            let events: Result<Vec<EncodedEvent>, AuditError> = own
                .into_iter()
                .map(|s| EncodedEvent::new(stream_id, s.record.event))
                .collect();
            match events {
                Ok(events) => jobs.push(Job { events, reply }),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        jobs
    }
}

/// Answers every caller of a failed batch with an error of the same kind.
fn fail_all(answers: impl ExactSizeIterator<Item = Reply<Vec<AuditReceipt>>>, error: &AuditError) {
    tracing::warn!(error = %error, callers = answers.len(), "audit batch failed; callers get an error");
    for answer in answers {
        let _ = answer.send(Err(replicate(error)));
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
