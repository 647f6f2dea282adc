//! Streaming verification of stored chains and their checkpoints, in constant memory.

use crate::checkpoint::Checkpoint;
use crate::store::{AuditStore, StoredCheckpoint, StoredRecord};
use ed25519_dalek::VerifyingKey;
use gateway_core::audit::AuditError;
use gateway_core::audit::chain::{
    ChainFault, ChainVerifier, FaultKind, HashedRecord, VerifyReport,
};
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

/// Below this many rows a page is hashed on one thread (spawning threads would cost more).
const PARALLEL_MIN_ROWS: usize = 256;

/// One parsed and re-hashed row, or the row's sequence number and why it does not parse.
type HashedRow = Result<HashedRecord, (i64, String)>;

fn hash_row(row: StoredRecord) -> HashedRow {
    row.to_record()
        .map(HashedRecord::new)
        .map_err(|detail| (row.sequence, detail))
}

/// Parses and re-hashes a page on every available core. A record's hash does not depend on its
/// place in the chain, so this is embarrassingly parallel; linking (which does) stays
/// sequential in [`ChainVerifier::push_hashed`]. The output is in the page's order.
fn hash_page(rows: Vec<StoredRecord>) -> Vec<HashedRow> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(rows.len() / PARALLEL_MIN_ROWS)
        .max(1);
    if threads == 1 {
        return rows.into_iter().map(hash_row).collect();
    }
    let chunk = rows.len().div_ceil(threads);
    let mut chunks: Vec<Vec<StoredRecord>> = Vec::with_capacity(threads);
    let mut rows = rows.into_iter();
    loop {
        let part: Vec<StoredRecord> = rows.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        chunks.push(part);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|part| scope.spawn(move || part.into_iter().map(hash_row).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(hashed) => hashed,
                // hash_row does not panic; should it ever, fail closed: the page cannot be
                // vouched for, so report its rows as unverifiable rather than skipping them.
                Err(_) => vec![Err((-1, "verification thread panicked".to_owned()))],
            })
            .collect()
    })
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
    let mut own_fault: Option<ChainFault> = None;
    let mut next_page = Some(store.read_raw(stream_id, None, page_size).await);

    'pages: while let Some(page) = next_page.take() {
        let page = page?;
        let full = page.len() == page_size;
        // Pages are keyed by the last row's sequence; a row whose sequence is negative does not
        // parse, so verification faults on it before another page would be needed.
        let after = page.last().and_then(|r| u64::try_from(r.sequence).ok());
        // Hash this page on the blocking pool (all cores) while the next page is read.
        let hashing = tokio::task::spawn_blocking(move || hash_page(page));
        let reading = async {
            match after {
                Some(after) if full => {
                    Some(store.read_raw(stream_id, Some(after), page_size).await)
                }
                _ => None,
            }
        };
        let (hashed, read) = tokio::join!(hashing, reading);
        next_page = read;
        let hashed =
            hashed.map_err(|e| AuditError::internal("audit verification task failed", e))?;
        for row in &hashed {
            let hashed_record = match row {
                Ok(h) => h,
                Err((sequence, detail)) => {
                    let at = u64::try_from(*sequence).unwrap_or(0);
                    own_fault = Some(fault(stream_id, at, FaultKind::Modified, detail.clone()));
                    break 'pages;
                }
            };
            if verifier.push_hashed(hashed_record).is_err() {
                break 'pages;
            }
            let record = hashed_record.record();
            // Checkpoints at this sequence must name this record's hash. The chain is gapless
            // from 0 here, so every checkpoint at or below the head is met exactly once.
            while let Some(stored) = checkpoints.peek().await? {
                let at = stored.sequence;
                if u64::try_from(at).is_ok_and(|at| at > record.sequence) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::IndexedColumns;
    use async_trait::async_trait;
    use gateway_core::audit::chain::{genesis, seal};
    use gateway_core::audit::{AuditEvent, AuditEventKind, AuditRecord};
    use gateway_core::ids::RequestId;

    type Edit = Box<dyn Fn(&mut Vec<StoredRecord>)>;

    /// Rows in memory, so the test controls (and tampers with) exactly what is read.
    struct Rows(Vec<StoredRecord>);

    #[async_trait]
    impl AuditStore for Rows {
        async fn head(&self, _: &str) -> Result<Option<(u64, String)>, AuditError> {
            Ok(None)
        }
        async fn append_batch(
            &self,
            _: &[AuditRecord],
            _: Option<&Checkpoint>,
        ) -> Result<(), AuditError> {
            Err(AuditError::internal_msg("read-only"))
        }
        async fn read_raw(
            &self,
            _: &str,
            after: Option<u64>,
            limit: usize,
        ) -> Result<Vec<StoredRecord>, AuditError> {
            let start = crate::store::start_sequence(after).unwrap_or(i64::MAX);
            let mut rows: Vec<_> = self
                .0
                .iter()
                .filter(|r| r.sequence >= start)
                .cloned()
                .collect();
            rows.sort_by_key(|r| r.sequence);
            rows.truncate(limit);
            Ok(rows)
        }
        async fn read_checkpoints(
            &self,
            _: &str,
            _: Option<u64>,
            _: usize,
        ) -> Result<Vec<StoredCheckpoint>, AuditError> {
            Ok(Vec::new())
        }
        async fn streams(&self) -> Result<Vec<String>, AuditError> {
            Ok(vec!["s".into()])
        }
    }

    fn rows(n: u64) -> Vec<StoredRecord> {
        let mut records = vec![genesis("s").unwrap()];
        for i in 1..n {
            let prev = records.last().unwrap().hash.clone();
            let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
            ev.action = format!("a{i}");
            ev.details
                .insert("x".into(), serde_json::json!(i as f64 / 3.0));
            records.push(seal("s", i, &prev, ev).unwrap());
        }
        records
            .iter()
            .map(|r| StoredRecord {
                stream_id: r.stream_id.clone(),
                sequence: r.sequence as i64,
                prev_hash: r.prev_hash.clone(),
                hash: r.hash.clone(),
                event: IndexedColumns::of(r).unwrap().event,
            })
            .collect()
    }

    /// The reference: one record at a time, parsed and hashed in order.
    fn sequential(rows: &[StoredRecord]) -> Option<(u64, FaultKind)> {
        // What a store returns: rows with sequence >= 0, in order.
        let mut sorted: Vec<_> = rows.iter().filter(|r| r.sequence >= 0).cloned().collect();
        sorted.sort_by_key(|r| r.sequence);
        let mut v = ChainVerifier::new("s");
        for row in &sorted {
            match row.to_record() {
                Ok(r) => {
                    if v.push(&r).is_err() {
                        break;
                    }
                }
                Err(_) => {
                    return Some((
                        u64::try_from(row.sequence).unwrap_or(0),
                        FaultKind::Modified,
                    ));
                }
            }
        }
        v.finish().fault.map(|f| (f.sequence, f.kind))
    }

    async fn parallel(rows: Vec<StoredRecord>) -> Option<(u64, FaultKind)> {
        let options = VerifyOptions {
            page_size: 700,
            ..VerifyOptions::default()
        };
        let report = verify_stream(&Rows(rows), "s", &options).await.unwrap();
        report.fault.map(|f| (f.sequence, f.kind))
    }

    /// Parallel hashing across pages reports exactly the fault the sequential verifier does.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_verification_finds_the_same_first_fault() {
        let clean = rows(2500);
        assert_eq!(parallel(clean.clone()).await, None);
        let edits: Vec<Edit> = vec![
            Box::new(|r| r[1777].event = r[1777].event.replace("a1777", "evil")),
            Box::new(|r| r[699].event = r[699].event.replace("a699", "a69")),
            Box::new(|r| r[1400].event.push('x')),
            Box::new(|r| r[2499].hash = "0".repeat(64)),
            Box::new(|r| {
                r.remove(1234);
            }),
            // Swap two rows' content, keeping the sequence numbers in place.
            Box::new(|r| {
                r.swap(10, 1900);
                r[10].sequence = 10;
                r[1900].sequence = 1900;
            }),
            Box::new(|r| r[900].sequence = -5),
            Box::new(|r| r[0].prev_hash = "1".repeat(64)),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut tampered = clean.clone();
            edit(&mut tampered);
            let expected = sequential(&tampered);
            assert!(expected.is_some(), "edit {i} is not a fault");
            assert_eq!(parallel(tampered).await, expected, "edit {i}");
        }
    }
}
