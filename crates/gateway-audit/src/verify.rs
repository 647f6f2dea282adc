//! Streaming verification of stored chains and their checkpoints, in constant memory.

use crate::checkpoint::Checkpoint;
use crate::store::{AuditStore, StoredCheckpoint};
use ed25519_dalek::VerifyingKey;
use gateway_core::audit::AuditError;
use gateway_core::audit::chain::{ChainFault, ChainVerifier, FaultKind, VerifyReport};
use std::collections::VecDeque;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The trusted checkpoint key. Without it checkpoints are still checked for consistency
    /// with the chain (and a checkpoint beyond the head still reports truncation), but a
    /// checkpoint forged together with a rewritten chain cannot be told apart.
    pub public_key: Option<VerifyingKey>,
    /// Records (and checkpoints) read per query.
    pub page_size: usize,
    /// If set, more than this many records without a checkpoint (between two checkpoints or
    /// after the last one) is a fault: it catches deleted checkpoints.
    pub max_checkpoint_gap: Option<u64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            public_key: None,
            page_size: 5000,
            max_checkpoint_gap: None,
        }
    }
}

/// Pages through a stream's checkpoints in sequence order.
struct Checkpoints<'a, S: AuditStore + ?Sized> {
    store: &'a S,
    stream_id: &'a str,
    page_size: usize,
    buffer: VecDeque<StoredCheckpoint>,
    after: Option<u64>,
    done: bool,
}

impl<S: AuditStore + ?Sized> Checkpoints<'_, S> {
    async fn peek(&mut self) -> Result<Option<&StoredCheckpoint>, AuditError> {
        if self.buffer.is_empty() && !self.done {
            let page = self
                .store
                .read_checkpoints(self.stream_id, self.after, self.page_size)
                .await?;
            if page.len() < self.page_size {
                self.done = true;
            }
            match page.last().map(|c| u64::try_from(c.sequence)) {
                Some(Ok(last)) => self.after = Some(last),
                // A negative sequence cannot be paged past; it is reported as bad below.
                Some(Err(_)) => self.done = true,
                None => {}
            }
            self.buffer.extend(page);
        }
        Ok(self.buffer.front())
    }

    fn pop(&mut self) -> Option<StoredCheckpoint> {
        self.buffer.pop_front()
    }
}

fn fault(stream_id: &str, sequence: u64, kind: FaultKind, detail: String) -> ChainFault {
    ChainFault {
        stream_id: stream_id.to_owned(),
        sequence,
        kind,
        detail,
    }
}

/// Checks one checkpoint against the trusted key (if any).
fn check_signature(
    stream_id: &str,
    stored: &StoredCheckpoint,
    key: Option<&VerifyingKey>,
) -> Result<Checkpoint, ChainFault> {
    let at = u64::try_from(stored.sequence).unwrap_or(0);
    let cp = Checkpoint::from_stored(stored)
        .map_err(|d| fault(stream_id, at, FaultKind::BadCheckpoint, d))?;
    if let Some(key) = key {
        cp.verify_signature(key)
            .map_err(|d| fault(stream_id, cp.sequence, FaultKind::BadCheckpoint, d))?;
    }
    Ok(cp)
}

/// Recomputes `stream_id`'s chain and checks its checkpoints, reading page by page (memory does
/// not grow with the log). Reports the first fault; an `Err` means the store could not be read.
pub async fn verify_stream<S: AuditStore + ?Sized>(
    store: &S,
    stream_id: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let page_size = options.page_size.max(1);
    let key = options.public_key.as_ref();
    let mut verifier = ChainVerifier::new(stream_id);
    let mut checkpoints = Checkpoints {
        store,
        stream_id,
        page_size,
        buffer: VecDeque::new(),
        after: None,
        done: false,
    };
    let mut checked_checkpoints = 0u64;
    let mut last_checkpointed = 0u64;
    let mut after: Option<u64> = None;
    let mut own_fault: Option<ChainFault> = None;

    'pages: loop {
        let page = store.read_raw(stream_id, after, page_size).await?;
        let full = page.len() == page_size;
        for row in &page {
            let record = match row.to_record() {
                Ok(r) => r,
                Err(detail) => {
                    let at = u64::try_from(row.sequence).unwrap_or(0);
                    own_fault = Some(fault(stream_id, at, FaultKind::Modified, detail));
                    break 'pages;
                }
            };
            if verifier.push(&record).is_err() {
                break 'pages;
            }
            after = Some(record.sequence);
            // Checkpoints at this sequence must name this record's hash. The chain is gapless
            // from 0 here, so every checkpoint at or below the head is met exactly once.
            while let Some(stored) = checkpoints.peek().await? {
                let at = stored.sequence;
                if at > row.sequence {
                    break;
                }
                let Some(stored) = checkpoints.pop() else {
                    break;
                };
                let cp = match check_signature(stream_id, &stored, key) {
                    Ok(cp) => cp,
                    Err(f) => {
                        own_fault = Some(f);
                        break 'pages;
                    }
                };
                if cp.sequence != record.sequence || cp.head_hash != record.hash {
                    own_fault = Some(fault(
                        stream_id,
                        record.sequence,
                        FaultKind::BadCheckpoint,
                        format!(
                            "signed checkpoint says record {} has hash {}, the chain has {} \
                             (the chain was rewritten)",
                            cp.sequence, cp.head_hash, record.hash
                        ),
                    ));
                    break 'pages;
                }
                if let Some(max) = options.max_checkpoint_gap
                    && cp.sequence.saturating_sub(last_checkpointed) > max
                {
                    own_fault = Some(fault(
                        stream_id,
                        last_checkpointed,
                        FaultKind::BadCheckpoint,
                        format!(
                            "no checkpoint between sequences {last_checkpointed} and {} \
                             (more than {max} records): checkpoints were deleted",
                            cp.sequence
                        ),
                    ));
                    break 'pages;
                }
                last_checkpointed = cp.sequence;
                checked_checkpoints += 1;
            }
        }
        if !full {
            break;
        }
    }

    let mut report = verifier.finish();
    report.checkpoints_checked = checked_checkpoints;
    if report.fault.is_none() {
        report.fault = own_fault;
    }
    if report.fault.is_some() {
        return Ok(report);
    }
    let head = report.head.as_ref().map(|h| h.0).unwrap_or(0);
    // A checkpoint beyond the last record: the tail was truncated (or the checkpoint forged).
    let beyond = match checkpoints.peek().await? {
        Some(_) => checkpoints.pop(),
        None => None,
    };
    if let Some(stored) = beyond {
        report.fault = Some(match check_signature(stream_id, &stored, key) {
            Err(f) => f,
            Ok(cp) => fault(
                stream_id,
                head + 1,
                FaultKind::Truncated,
                format!(
                    "a signed checkpoint covers records up to {}, but the chain ends at {head}",
                    cp.sequence
                ),
            ),
        });
        return Ok(report);
    }
    if let Some(max) = options.max_checkpoint_gap
        && head.saturating_sub(last_checkpointed) > max
    {
        report.fault = Some(fault(
            stream_id,
            last_checkpointed,
            FaultKind::BadCheckpoint,
            format!(
                "records {}..={head} are not covered by a checkpoint (more than {max})",
                last_checkpointed + 1
            ),
        ));
    }
    Ok(report)
}

/// Verifies every stream in `store`, one after another.
pub async fn verify_all<S: AuditStore + ?Sized>(
    store: &S,
    options: &VerifyOptions,
) -> Result<Vec<VerifyReport>, AuditError> {
    let mut reports = Vec::new();
    for stream in store.streams().await? {
        reports.push(verify_stream(store, &stream, options).await?);
    }
    Ok(reports)
}
