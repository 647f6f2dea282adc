//! Streaming verification of stored chains and their checkpoints, in constant memory.

use crate::body::{RowError, check_row};
use crate::checkpoint::Checkpoint;
use crate::store::{AuditStore, RecordPage, StoredCheckpoint};
use ed25519_dalek::VerifyingKey;
use gateway_core::audit::chain::{ChainFault, ChainLink, ChainVerifier, FaultKind, VerifyReport};
use gateway_core::audit::{AuditError, AuditEventKind};
use std::collections::VecDeque;
use tokio::sync::mpsc;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The trusted checkpoint keys, from the operator (never from the log or its directory):
    /// every checkpoint must be signed by one of them. More than one is how a key rotation is
    /// verified (the old key for the checkpoints before it, the new one after). Empty: checkpoints
    /// are still checked for consistency with the chain (and a checkpoint beyond the head still
    /// reports truncation), but signatures are not checked, so a checkpoint forged together with
    /// a rewritten chain cannot be told apart; the `gateway-audit` tool refuses to verify that
    /// way unless told `--no-signatures`.
    pub trusted_keys: Vec<VerifyingKey>,
    /// Records (and checkpoints) read per query.
    pub page_size: usize,
    /// If set, more than this many records without a checkpoint (between two checkpoints or
    /// after the last one) is a fault: it catches deleted checkpoints.
    pub max_checkpoint_gap: Option<u64>,
    /// Whether each row's query columns (`agent_id`, `event_time`, …) are checked against its
    /// hashed event (the default). They are what queries filter on but are not hashed, so
    /// without this check a copy changed under an intact chain goes unnoticed; turning it off
    /// checks the chain and checkpoints only, faster (see `benches/audit.rs`).
    pub check_copies: bool,
    /// Whether rows in the formats of earlier versions are accepted: an `event` text holding the
    /// event's `serde_json` form instead of the canonical body, and (SQLite, not yet migrated)
    /// an `event_time` copy in RFC 3339 form. Off by default: the hash cannot tell an
    /// older-format text from the body it replaced when both hold the same values, and the
    /// RFC 3339 time text sorts differently in range queries.
    pub legacy_bodies: bool,
}

impl VerifyOptions {
    /// The defaults, trusting `key` (the usual case).
    pub fn trusting(key: VerifyingKey) -> Self {
        Self {
            trusted_keys: vec![key],
            ..Self::default()
        }
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            trusted_keys: Vec::new(),
            page_size: 5000,
            max_checkpoint_gap: None,
            check_copies: true,
            legacy_bodies: false,
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

/// Checks one checkpoint against the trusted keys (none: the signature is not checked). The
/// checkpoint must be signed by the trusted key its `key_id` names.
fn check_signature(
    stream_id: &str,
    stored: &StoredCheckpoint,
    keys: &[VerifyingKey],
) -> Result<Checkpoint, ChainFault> {
    let at = u64::try_from(stored.sequence).unwrap_or(0);
    let cp = Checkpoint::from_stored(stored)
        .map_err(|d| fault(stream_id, at, FaultKind::BadCheckpoint, d))?;
    if keys.is_empty() {
        return Ok(cp);
    }
    let key = keys
        .iter()
        .find(|k| cp.key_id.eq_ignore_ascii_case(&hex::encode(k.as_bytes())))
        .ok_or_else(|| {
            fault(
                stream_id,
                cp.sequence,
                FaultKind::BadCheckpoint,
                format!(
                    "checkpoint at sequence {} was signed by key {}, which is not a trusted key",
                    cp.sequence, cp.key_id
                ),
            )
        })?;
    cp.verify_signature(key)
        .map_err(|d| fault(stream_id, cp.sequence, FaultKind::BadCheckpoint, d))?;
    Ok(cp)
}

/// The size of the first page read, at most.
const FIRST_PAGE: usize = 1024;

/// Below this many rows a page is hashed on one thread (spawning threads would cost more).
const PARALLEL_MIN_ROWS: usize = 256;

/// One row checked against its hash, or the row's sequence number and why it cannot be.
type CheckedRow = Result<ChainLink, RowError>;

/// Checks a page's rows against their hashes on every available core ([`check_row`]). A
/// record's hash does not depend on its place in the chain, so this is embarrassingly parallel;
/// linking (which does) stays sequential in [`ChainVerifier::push_link`]. The output is in the
/// page's order. The threads borrow the rows from the page: nothing is allocated per row.
fn hash_page(stream_id: &str, page: &RecordPage, legacy: bool) -> Vec<CheckedRow> {
    let rows = page.len();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(rows / PARALLEL_MIN_ROWS)
        .max(1);
    let check = |range: std::ops::Range<usize>| -> Vec<CheckedRow> {
        range
            .filter_map(|i| page.get(i))
            .map(|row| check_row(stream_id, row, legacy))
            .collect()
    };
    if threads == 1 {
        return check(0..rows);
    }
    let chunk = rows.div_ceil(threads);
    let mut ranges = (0..rows)
        .step_by(chunk)
        .map(|start| start..(start + chunk).min(rows));
    // The calling thread takes the first chunk itself: one thread fewer to start per page.
    let first = ranges.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .map(|range| scope.spawn(move || check(range)))
            .collect();
        let mut checked = check(first);
        for handle in handles {
            match handle.join() {
                Ok(part) => checked.extend(part),
                // check_row does not panic; should it ever, fail closed: the page cannot be
                // vouched for, so report its rows as unverifiable rather than skipping them.
                Err(_) => checked.push(Err((-1, "verification thread panicked".to_owned()))),
            }
        }
        checked
    })
}

/// Recomputes `stream_id`'s chain and checks its checkpoints, reading page by page (memory does
/// not grow with the log). Reports the first fault; an `Err` means the store could not be read.
///
/// Three stages run at once, handing pages on through small queues so that none waits for the
/// slowest at every page: reading, checking every row against its hash on all cores
/// (see the crate docs), and linking the checked rows in order with their checkpoints.
/// At most a few pages are in flight.
pub async fn verify_stream<S: AuditStore + ?Sized>(
    store: &S,
    stream_id: &str,
    options: &VerifyOptions,
) -> Result<VerifyReport, AuditError> {
    let page_size = options.page_size.max(1);
    let mut linker = Linker {
        stream_id,
        keys: &options.trusted_keys,
        max_checkpoint_gap: options.max_checkpoint_gap,
        verifier: ChainVerifier::new(stream_id),
        checkpoints: Checkpoints {
            store,
            stream_id,
            page_size,
            buffer: VecDeque::new(),
            after: None,
            done: false,
        },
        checked_checkpoints: 0,
        last_checkpointed: 0,
        checkpoint_keys: Vec::new(),
        own_fault: None,
    };
    let (read_tx, mut read_rx) = mpsc::channel::<Result<RecordPage, AuditError>>(2);
    let (checked_tx, checked_rx) = mpsc::channel::<Result<Vec<CheckedRow>, AuditError>>(2);
    let reading = async move {
        // The first page is smaller, so that checking starts sooner.
        let mut requested = page_size.min(FIRST_PAGE);
        let mut after = None;
        loop {
            let page = store
                .read_page(stream_id, after, requested, options.check_copies)
                .await;
            // Pages are keyed by the last row's sequence; a row whose sequence is negative
            // does not parse, so verification faults on it before another page is needed. A
            // short page is the last.
            let next = page.as_ref().ok().and_then(|rows| {
                let last = rows.last_sequence().and_then(|s| u64::try_from(s).ok());
                last.filter(|_| rows.len() == requested)
            });
            // A send fails once linking has stopped at a fault: nothing more is needed.
            if read_tx.send(page).await.is_err() {
                return;
            }
            match next {
                Some(last) => (after, requested) = (Some(last), page_size),
                None => return,
            }
        }
    };
    let legacy = options.legacy_bodies;
    let checking = async move {
        while let Some(page) = read_rx.recv().await {
            let checked = match page {
                Ok(page) => {
                    let stream_id = stream_id.to_owned();
                    tokio::task::spawn_blocking(move || hash_page(&stream_id, &page, legacy))
                        .await
                        .map_err(|e| AuditError::internal("audit verification task failed", e))
                }
                Err(e) => Err(e),
            };
            let failed = checked.is_err();
            if checked_tx.send(checked).await.is_err() || failed {
                return;
            }
        }
    };
    let linking = async {
        let mut checked_rx = checked_rx;
        // Pages arrive in order, so a fault is reported before a later read failure.
        while let Some(rows) = checked_rx.recv().await {
            if !linker.link(rows?).await? {
                break;
            }
        }
        Ok::<(), AuditError>(())
    };
    let ((), (), linked) = tokio::join!(reading, checking, linking);
    linked?;
    linker.finish().await
}

/// The sequential half of verification: links checked rows in order and checks the signed
/// checkpoints each record reaches.
struct Linker<'a, S: AuditStore + ?Sized> {
    stream_id: &'a str,
    keys: &'a [VerifyingKey],
    max_checkpoint_gap: Option<u64>,
    verifier: ChainVerifier,
    checkpoints: Checkpoints<'a, S>,
    checked_checkpoints: u64,
    last_checkpointed: u64,
    /// The checkpoint keys met so far, in order (the last is the current one).
    checkpoint_keys: Vec<String>,
    /// A fault found outside the chain verifier (unreadable row, checkpoint).
    own_fault: Option<ChainFault>,
}

impl<S: AuditStore + ?Sized> Linker<'_, S> {
    /// Links one page; `Ok(false)` once a fault is found (nothing further needs reading).
    async fn link(&mut self, rows: Vec<CheckedRow>) -> Result<bool, AuditError> {
        let stream_id = self.stream_id;
        for row in &rows {
            let record = match row {
                Ok(link) => link,
                Err((sequence, detail)) => {
                    let at = u64::try_from(*sequence).unwrap_or(0);
                    self.own_fault =
                        Some(fault(stream_id, at, FaultKind::Modified, detail.clone()));
                    return Ok(false);
                }
            };
            if self.verifier.push_link(record).is_err() {
                return Ok(false);
            }
            // Checkpoints at this sequence must name this record's hash. The chain is gapless
            // from 0 here, so every checkpoint at or below the head is met exactly once.
            while let Some(stored) = self.checkpoints.peek().await? {
                let at = stored.sequence;
                if u64::try_from(at).is_ok_and(|at| at > record.sequence()) {
                    break;
                }
                let Some(stored) = self.checkpoints.pop() else {
                    break;
                };
                let checked = match self.check_checkpoint(&stored, record) {
                    Ok(cp) => self.check_key(cp).await?,
                    Err(f) => Err(f),
                };
                if let Err(f) = checked {
                    self.own_fault = Some(f);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Checks a checkpoint at or below `record` (the next record of the chain).
    fn check_checkpoint(
        &mut self,
        stored: &StoredCheckpoint,
        record: &ChainLink,
    ) -> Result<Checkpoint, ChainFault> {
        let stream_id = self.stream_id;
        let cp = check_signature(stream_id, stored, self.keys)?;
        if cp.sequence != record.sequence() || cp.head_hash != record.hash() {
            return Err(fault(
                stream_id,
                record.sequence(),
                FaultKind::BadCheckpoint,
                format!(
                    "signed checkpoint says record {} has hash {}, the chain has {} \
                     (the chain was rewritten)",
                    cp.sequence,
                    cp.head_hash,
                    record.hash()
                ),
            ));
        }
        if let Some(max) = self.max_checkpoint_gap
            && cp.sequence.saturating_sub(self.last_checkpointed) > max
        {
            return Err(fault(
                stream_id,
                self.last_checkpointed,
                FaultKind::BadCheckpoint,
                format!(
                    "no checkpoint between sequences {} and {} \
                     (more than {max} records): checkpoints were deleted",
                    self.last_checkpointed, cp.sequence
                ),
            ));
        }
        self.checked_checkpoints += 1;
        Ok(cp)
    }

    /// Follows the checkpoint key: a checkpoint signed by another key than the one before it
    /// must come after a `key_rotated` record naming both (see [`crate::signer`]), among the
    /// records since that previous checkpoint. The outer `Err` is a store error.
    async fn check_key(&mut self, cp: Checkpoint) -> Result<Result<(), ChainFault>, AuditError> {
        let since = self.last_checkpointed;
        self.last_checkpointed = cp.sequence;
        let Some(previous) = self.checkpoint_keys.last() else {
            self.checkpoint_keys.push(cp.key_id);
            return Ok(Ok(()));
        };
        if previous.eq_ignore_ascii_case(&cp.key_id) {
            return Ok(Ok(()));
        }
        let previous = previous.clone();
        if !self.rotation_recorded(since, &cp, &previous).await? {
            return Ok(Err(fault(
                self.stream_id,
                cp.sequence,
                FaultKind::BadCheckpoint,
                format!(
                    "the checkpoint key changed from {previous} to {} at sequence {} without a \
                     key_rotated record announcing it after sequence {since}",
                    cp.key_id, cp.sequence
                ),
            )));
        }
        self.checkpoint_keys.push(cp.key_id);
        Ok(Ok(()))
    }

    /// Whether records `since+1 ..= cp.sequence` hold a `key_rotated` record from `previous`
    /// to `cp.key_id`. Rotations are rare, so these few records are read a second time rather
    /// than parsing every record's kind on the fast path; the hash pass covers them.
    async fn rotation_recorded(
        &self,
        since: u64,
        cp: &Checkpoint,
        previous: &str,
    ) -> Result<bool, AuditError> {
        let store = self.checkpoints.store;
        let mut after = since;
        while after < cp.sequence {
            let want = usize::try_from(cp.sequence - after)
                .unwrap_or(usize::MAX)
                .min(1000);
            let rows = store.read_raw(self.stream_id, Some(after), want).await?;
            for row in &rows {
                let Ok(record) = row.to_record() else {
                    continue;
                };
                let names = |field: &str, key: &str| {
                    record
                        .event
                        .details
                        .get(field)
                        .and_then(|v| v.as_str())
                        .is_some_and(|v| v.eq_ignore_ascii_case(key))
                };
                if record.sequence <= cp.sequence
                    && record.event.kind == AuditEventKind::KeyRotated
                    && names("previous_key_id", previous)
                    && names("key_id", &cp.key_id)
                {
                    return Ok(true);
                }
            }
            match rows.last().and_then(|r| u64::try_from(r.sequence).ok()) {
                Some(last) if last > after => after = last,
                _ => break,
            }
        }
        Ok(false)
    }

    /// The report, after the checks that need the whole chain: a checkpoint beyond the last
    /// record (truncation), and the gap after the last checkpoint.
    async fn finish(mut self) -> Result<VerifyReport, AuditError> {
        let stream_id = self.stream_id;
        let mut report = self.verifier.finish();
        report.checkpoints_checked = self.checked_checkpoints;
        report.checkpoint_keys = std::mem::take(&mut self.checkpoint_keys);
        // Linking stops at its own fault (an unreadable row, a checkpoint), so any fault the
        // chain verifier then reports comes from ending early (an empty chain is "missing" its
        // genesis when row 0 itself was the fault): the own fault is the first.
        if self.own_fault.is_some() {
            report.fault = self.own_fault;
        }
        if report.fault.is_some() {
            return Ok(report);
        }
        let head = report.head.as_ref().map(|h| h.0).unwrap_or(0);
        // A checkpoint beyond the last record: the tail was truncated (or the checkpoint forged).
        let beyond = match self.checkpoints.peek().await? {
            Some(_) => self.checkpoints.pop(),
            None => None,
        };
        if let Some(stored) = beyond {
            report.fault = Some(match check_signature(stream_id, &stored, self.keys) {
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
        if let Some(max) = self.max_checkpoint_gap
            && head.saturating_sub(self.last_checkpointed) > max
        {
            report.fault = Some(fault(
                stream_id,
                self.last_checkpointed,
                FaultKind::BadCheckpoint,
                format!(
                    "records {}..={head} are not covered by a checkpoint (more than {max})",
                    self.last_checkpointed + 1
                ),
            ));
        }
        Ok(report)
    }
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
    use crate::store::{SealedRecord, StoredRecord};
    use async_trait::async_trait;
    use gateway_core::audit::chain::{body_hash, genesis, seal};
    use gateway_core::audit::{AuditEvent, AuditEventKind};
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
            _: &[SealedRecord],
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
            let start = crate::sql::start_sequence(after).unwrap_or(i64::MAX);
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

    /// A chain of `n` rows as stored: every row's text is the record's canonical body
    /// (`bodies`, as written now) or the event's JSON (as written before).
    fn rows(n: u64, bodies: bool) -> Vec<StoredRecord> {
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
            .into_iter()
            .map(|r| {
                let event = if bodies {
                    SealedRecord::new(r.clone()).unwrap().body
                } else {
                    serde_json::to_string(&r.event).unwrap()
                };
                StoredRecord {
                    stream_id: r.stream_id,
                    sequence: r.sequence as i64,
                    prev_hash: r.prev_hash,
                    hash: r.hash,
                    event,
                }
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
            legacy_bodies: true,
            ..VerifyOptions::default()
        };
        let report = verify_stream(&Rows(rows), "s", &options).await.unwrap();
        report.fault.map(|f| (f.sequence, f.kind))
    }

    /// Without `legacy_bodies`, a row in the older event format is a modification at that row,
    /// even though it hashes to the stored hash (it holds the same values as the body it
    /// replaced); with it, the row verifies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn older_format_rows_need_the_legacy_option() {
        let mut rows = rows(1200, true);
        let record = rows[900].to_record().unwrap();
        rows[900].event = serde_json::to_string(&record.event).unwrap();
        assert_eq!(parallel(rows.clone()).await, None, "legacy rows verify");
        let strict = VerifyOptions {
            page_size: 700,
            ..VerifyOptions::default()
        };
        let fault = verify_stream(&Rows(rows), "s", &strict)
            .await
            .unwrap()
            .fault
            .unwrap();
        assert_eq!((fault.sequence, fault.kind), (900, FaultKind::Modified));
        assert!(fault.detail.contains("older format"), "{fault}");
    }

    /// Parallel checking across pages reports exactly the fault the sequential verifier (parse,
    /// re-encode, hash) does, for rows in either format.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_verification_finds_the_same_first_fault() {
        for bodies in [true, false] {
            let clean = rows(2500, bodies);
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
                assert_eq!(
                    parallel(tampered).await,
                    expected,
                    "edit {i}, bodies {bodies}"
                );
            }
        }
    }

    /// Rows written before (event JSON) followed by rows written now (bodies) verify as one
    /// chain: existing databases keep verifying after an upgrade.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_of_both_formats_verifies() {
        let old = rows(1500, false);
        let new = rows(1500, true);
        // The same chain (same hashes) as either format: take the first 700 rows as they were
        // written before, the rest as written now.
        let mut mixed = rows_like(&old, &new, 700);
        assert_eq!(parallel(mixed.clone()).await, None);
        mixed[1000].event = mixed[1000].event.replace("a1000", "a1001");
        assert_eq!(parallel(mixed).await, Some((1000, FaultKind::Modified)));
    }

    /// `old`'s chain with the texts of rows `from..` re-encoded as bodies (`new` is only used to
    /// check the two helpers produce the same kind of chain).
    fn rows_like(old: &[StoredRecord], new: &[StoredRecord], from: usize) -> Vec<StoredRecord> {
        assert_eq!(old.len(), new.len());
        old.iter()
            .enumerate()
            .map(|(i, row)| {
                let mut row = row.clone();
                if i >= from {
                    row.event = SealedRecord::new(row.to_record().unwrap()).unwrap().body;
                }
                row
            })
            .collect()
    }

    /// Faults the stored body's own checks must find: a row rewritten and re-hashed over its new
    /// text (as an attacker without the checkpoint key can) whose body is not canonical, repeats
    /// a key, or disagrees with the row's columns, and columns changed under an intact body.
    /// Each is found at row 800 itself; were a check missing, the first fault would be the
    /// broken link at 801 (or none at all).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn body_rows_must_be_canonical_and_agree_with_their_columns() {
        let clean = rows(1200, true);
        // Rewrites row 800's text and re-hashes it over exactly the new text.
        fn forge(rows: &mut [StoredRecord], edit: impl Fn(&str) -> String) {
            let row = &mut rows[800];
            row.event = edit(&row.event);
            row.hash = body_hash(&row.prev_hash, row.event.as_bytes()).unwrap();
        }
        let edits: Vec<(&str, Edit)> = vec![
            (
                "whitespace",
                Box::new(|r| forge(r, |t| t.replacen(",", ", ", 1))),
            ),
            (
                "duplicate key",
                Box::new(|r| forge(r, |t| t.replacen("{", "{\"action\":\"x\",", 1))),
            ),
            (
                "duplicate details key",
                Box::new(|r| {
                    forge(r, |t| {
                        t.replacen("\"details\":{", "\"details\":{\"x\":1,", 1)
                    })
                }),
            ),
            (
                "escaped digits",
                Box::new(|r| forge(r, |t| t.replacen("a800", "a\\u0038\\u0030\\u0030", 1))),
            ),
            (
                "unknown key",
                Box::new(|r| forge(r, |t| t.replacen("\"kind\"", "\"jump\":1,\"kind\"", 1))),
            ),
            (
                "body of another sequence",
                Box::new(|r| forge(r, |t| t.replace("\"sequence\":800", "\"sequence\":801"))),
            ),
            (
                "body of another stream",
                Box::new(|r| {
                    forge(r, |t| {
                        t.replace("\"stream_id\":\"s\"", "\"stream_id\":\"t\"")
                    })
                }),
            ),
            (
                // Hashed as the canonical form would be: what a parse-and-re-encode verifier
                // accepts, but not the bytes that are stored.
                "hash of the canonical form over other bytes",
                Box::new(|r| {
                    let canonical = r[800].event.clone();
                    r[800].event = canonical.replacen(",", " ,", 1);
                    r[800].hash = body_hash(&r[800].prev_hash, canonical.as_bytes()).unwrap();
                }),
            ),
            (
                "sequence columns traded",
                Box::new(|r| {
                    r[800].sequence = 801;
                    r[801].sequence = 800;
                }),
            ),
            ("stream column", Box::new(|r| r[800].stream_id = "t".into())),
        ];
        for (name, edit) in &edits {
            let mut tampered = clean.clone();
            edit(&mut tampered);
            assert_ne!(tampered, clean, "{name} changed nothing");
            let fault = parallel(tampered).await;
            let expected_kind = if *name == "stream column" {
                FaultKind::Inserted
            } else {
                FaultKind::Modified
            };
            assert_eq!(fault, Some((800, expected_kind)), "{name}");
        }
    }
}
