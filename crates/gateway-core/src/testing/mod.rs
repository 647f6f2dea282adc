//! In-memory test doubles of every trait, with fault injection ([`FaultPlan`]) and a shared
//! [`Journal`] of what they did. They need nothing external and pass the conformance suites, so
//! tests of code built on the traits can use them in place of real backends.

mod faults;
mod journal;
pub mod script;
#[cfg(any(test, feature = "strategies"))]
pub mod strategies;

pub use faults::{Fault, FaultPlan};
pub use journal::{Entry, Journal};

use crate::audit::chain::{ChainVerifier, GENESIS_PREV_HASH, genesis, seal};
use crate::audit::{
    AuditError, AuditEvent, AuditEventKind, AuditReceipt, AuditRecord, AuditSink, VerifyReport,
    only_receipt,
};
use crate::grant::{AccessBroker, BrokerError, Grant, GrantRequest};
use crate::identity::{AgentIdentity, AuthMethod, Credential, Identity, IdentityError};
use crate::ids::AgentId;
use crate::policy::{Decision, ListingInput, PolicyDecider, PolicyError, PolicyInput};
use crate::runner::{
    AbandonedJob, IsolationLevel, JobOutcome, JobSpec, JobStatus, Runner, RunnerError, RunnerInfo,
    Teardown,
};
use crate::secret::Secret;
use async_trait::async_trait;
use script::{MEMORY_SCRIPT, Step};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An identity double: a fixed map of bearer tokens to identities.
#[derive(Default)]
pub struct MemoryIdentity {
    tokens: HashMap<Vec<u8>, AgentIdentity>,
    /// Faults on `authenticate`.
    pub faults: FaultPlan,
}

impl MemoryIdentity {
    /// An empty double.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `token` to a new identity for `agent`.
    pub fn with_agent(mut self, token: &str, agent: &str) -> Self {
        // Test helper: callers pass literal, valid ids.
        #[allow(clippy::expect_used)]
        let id = AgentId::new(agent).expect("valid agent id in test double");
        let identity = AgentIdentity::new(
            id,
            "test-owner",
            AuthMethod::Other {
                description: "memory".into(),
            },
        );
        self.tokens.insert(token.as_bytes().to_vec(), identity);
        self
    }
}

#[async_trait]
impl Identity for MemoryIdentity {
    async fn authenticate(&self, credential: &Credential) -> Result<AgentIdentity, IdentityError> {
        self.faults
            .enter()
            .await
            .map_err(|()| IdentityError::unavailable_msg("injected fault"))?;
        self.tokens
            .get(credential.secret().expose())
            .cloned()
            .ok_or_else(|| IdentityError::unauthenticated("unknown token"))
    }
}

type DecideFn = dyn Fn(&PolicyInput) -> Decision + Send + Sync;

type ListingFn = dyn Fn(&ListingInput) -> Vec<String> + Send + Sync;

/// A policy double: a function from input to decision (allow-all by default), and one from a
/// listing to the visible actions (all of them by default).
pub struct MemoryPolicy {
    decide: Arc<DecideFn>,
    listing: Arc<ListingFn>,
    /// Faults on `decide` and `visible_actions` alike.
    pub faults: FaultPlan,
    inputs: Mutex<Vec<PolicyInput>>,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self::allow_all()
    }
}

impl MemoryPolicy {
    /// Allows everything.
    pub fn allow_all() -> Self {
        Self::from_fn(|_| Decision::allow())
    }

    /// Decides with `f`.
    pub fn from_fn(f: impl Fn(&PolicyInput) -> Decision + Send + Sync + 'static) -> Self {
        Self {
            decide: Arc::new(f),
            listing: Arc::new(|input| input.actions.clone()),
            faults: FaultPlan::new(),
            inputs: Mutex::new(Vec::new()),
        }
    }

    /// Answers catalog listings with `f` instead of showing every action.
    pub fn with_listing(
        mut self,
        f: impl Fn(&ListingInput) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.listing = Arc::new(f);
        self
    }

    /// The inputs seen so far.
    pub fn inputs(&self) -> Vec<PolicyInput> {
        lock(&self.inputs).clone()
    }
}

#[async_trait]
impl PolicyDecider for MemoryPolicy {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        self.faults
            .enter()
            .await
            .map_err(|()| PolicyError::unavailable_msg("injected fault"))?;
        lock(&self.inputs).push(input.clone());
        Ok((self.decide)(input))
    }

    async fn visible_actions(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        self.faults
            .enter()
            .await
            .map_err(|()| PolicyError::unavailable_msg("injected fault"))?;
        Ok((self.listing)(input))
    }
}

/// A broker double: issues opaque tokens and counts revocations per grant.
#[derive(Default)]
pub struct MemoryBroker {
    /// Faults on `grant`.
    pub grant_faults: FaultPlan,
    /// Faults on `revoke`.
    pub revoke_faults: FaultPlan,
    journal: Option<Journal>,
    next: AtomicU64,
    issued: Mutex<Vec<Grant>>,
    revocations: Mutex<HashMap<String, u32>>,
}

impl MemoryBroker {
    /// A broker with no faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports to a journal.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Grants issued so far.
    pub fn issued(&self) -> Vec<Grant> {
        lock(&self.issued).clone()
    }

    /// How many times `revoke` was called for each grant id.
    pub fn revocations(&self) -> HashMap<String, u32> {
        lock(&self.revocations).clone()
    }
}

#[async_trait]
impl AccessBroker for MemoryBroker {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        self.grant_faults
            .enter()
            .await
            .map_err(|()| BrokerError::unavailable_msg("injected fault"))?;
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let now = OffsetDateTime::now_utc();
        let ttl = time::Duration::try_from(request.ttl).unwrap_or(time::Duration::ZERO);
        let mut job_env = BTreeMap::new();
        job_env.insert(
            "GATEWAY_GRANT_TOKEN".to_owned(),
            Secret::from(format!("memory-token-{n}")),
        );
        let grant = Grant {
            id: format!("memory-grant-{n}"),
            correlation_id: request.correlation_id,
            agent: request.agent.clone(),
            scopes: request.scopes.clone(),
            issued_at: now,
            not_after: now + ttl,
            hints: BTreeMap::new(),
            job_env,
            job_vars: BTreeMap::new(),
            job_mounts: Vec::new(),
        };
        lock(&self.issued).push(grant.clone());
        if let Some(j) = &self.journal {
            j.push(Entry::Granted {
                correlation_id: request.correlation_id,
                grant_id: grant.id.clone(),
            });
        }
        Ok(grant)
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        *lock(&self.revocations).entry(grant.id.clone()).or_default() += 1;
        if let Some(j) = &self.journal {
            j.push(Entry::RevokeCalled {
                grant_id: grant.id.clone(),
            });
        }
        self.revoke_faults
            .enter()
            .await
            .map_err(|()| BrokerError::unavailable_msg("injected fault"))
    }
}

/// A runner double. It interprets scripts rendered by [`script::MemoryRenderer`]; any other
/// command "exits" with the configured default code after the configured duration.
pub struct MemoryRunner {
    /// Faults on `run`.
    pub faults: FaultPlan,
    journal: Option<Journal>,
    default_exit: i32,
    default_duration: Duration,
    runs: Mutex<Vec<JobSpec>>,
    torn_down: AtomicU64,
    reaped: Mutex<Vec<AbandonedJob>>,
}

impl Default for MemoryRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryRunner {
    /// Jobs exit 0 at once.
    pub fn new() -> Self {
        Self {
            faults: FaultPlan::new(),
            journal: None,
            default_exit: 0,
            default_duration: Duration::ZERO,
            runs: Mutex::new(Vec::new()),
            torn_down: AtomicU64::new(0),
            reaped: Mutex::new(Vec::new()),
        }
    }

    /// Non-script jobs exit with this code.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.default_exit = code;
        self
    }

    /// Non-script jobs take this long.
    pub fn with_duration(mut self, d: Duration) -> Self {
        self.default_duration = d;
        self
    }

    /// Reports to a journal.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Specs of the jobs started so far.
    pub fn runs(&self) -> Vec<JobSpec> {
        lock(&self.runs).clone()
    }

    /// How many job environments were torn down.
    pub fn torn_down(&self) -> u64 {
        self.torn_down.load(Ordering::SeqCst)
    }

    /// The abandoned jobs a recovery sweep asked this runner to reap.
    pub fn reaped(&self) -> Vec<AbandonedJob> {
        lock(&self.reaped).clone()
    }

    fn env_value(spec: &JobSpec, name: &str) -> String {
        spec.env
            .get(name)
            .cloned()
            .or_else(|| {
                spec.secret_env
                    .get(name)
                    .and_then(|s| s.expose_str().map(str::to_owned))
            })
            .unwrap_or_default()
    }

    async fn interpret(
        spec: &JobSpec,
        steps: &[Step],
        cancel: &CancellationToken,
    ) -> (JobStatus, Vec<u8>, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + spec.limits.timeout;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for step in steps {
            match step {
                Step::Stdout(s) => out.extend_from_slice(s.as_bytes()),
                Step::Stderr(s) => err.extend_from_slice(s.as_bytes()),
                Step::PrintEnv(v) => out.extend_from_slice(Self::env_value(spec, v).as_bytes()),
                Step::StdoutBytes(n) => out.extend(std::iter::repeat_n(b'a', *n)),
                Step::SleepSeconds(n) => {
                    let until = tokio::time::Instant::now() + Duration::from_secs(*n);
                    tokio::select! {
                        () = cancel.cancelled() => return (JobStatus::Cancelled, out, err),
                        () = tokio::time::sleep_until(until.min(deadline)) => {
                            if until > deadline {
                                return (JobStatus::TimedOut, out, err);
                            }
                        }
                    }
                }
                Step::Exit(code) => return (JobStatus::Exited { code: *code }, out, err),
            }
        }
        (JobStatus::Exited { code: 0 }, out, err)
    }
}

fn cap(bytes: Vec<u8>, max: usize) -> (String, bool) {
    let truncated = bytes.len() > max;
    let kept = &bytes[..bytes.len().min(max)];
    (String::from_utf8_lossy(kept).into_owned(), truncated)
}

#[async_trait]
impl Runner for MemoryRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo {
            backend: "memory".into(),
            instance: "memory".into(),
            isolation: IsolationLevel::None,
        }
    }

    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        self.faults
            .enter()
            .await
            .map_err(|()| RunnerError::unavailable_msg("injected fault"))?;
        if spec.command.is_empty() {
            return Err(RunnerError::invalid_input("empty command"));
        }
        let started = Instant::now();
        lock(&self.runs).push(spec.clone());
        if let Some(j) = &self.journal {
            j.push(Entry::JobStarted {
                correlation_id: spec.correlation_id,
            });
        }
        // The "environment" is torn down on every path, including this future being dropped.
        struct TearDown<'a>(&'a MemoryRunner, crate::ids::RequestId);
        impl Drop for TearDown<'_> {
            fn drop(&mut self) {
                self.0.torn_down.fetch_add(1, Ordering::SeqCst);
                if let Some(j) = &self.0.journal {
                    j.push(Entry::JobTornDown {
                        correlation_id: self.1,
                    });
                }
            }
        }
        let _teardown = TearDown(self, spec.correlation_id);
        let (status, out, err) = if spec.command[0] == MEMORY_SCRIPT {
            let steps: Vec<Step> = spec
                .command
                .get(1)
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| RunnerError::invalid_input("bad memory script"))?;
            Self::interpret(&spec, &steps, &cancel).await
        } else {
            let d = self.default_duration.min(spec.limits.timeout);
            if d.is_zero() {
                // Even a zero-length tokio sleep waits for the next timer tick (~1 ms), which
                // would make this "no-op" runner the slowest part of a benchmark.
                (
                    JobStatus::Exited {
                        code: self.default_exit,
                    },
                    Vec::new(),
                    Vec::new(),
                )
            } else {
                tokio::select! {
                    () = cancel.cancelled() => (JobStatus::Cancelled, Vec::new(), Vec::new()),
                    () = tokio::time::sleep(d) => {
                        if self.default_duration > spec.limits.timeout {
                            (JobStatus::TimedOut, Vec::new(), Vec::new())
                        } else {
                            (JobStatus::Exited { code: self.default_exit }, Vec::new(), Vec::new())
                        }
                    }
                }
            }
        };
        let max = spec.limits.max_output_bytes;
        let (stdout, stdout_truncated) = cap(out, max);
        let (stderr, stderr_truncated) = cap(err, max);
        Ok(JobOutcome {
            status,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
            duration: started.elapsed(),
            environment_id: format!("memory-{}", spec.correlation_id),
            isolation: IsolationLevel::None,
            teardown: Teardown::complete(),
        })
    }

    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError> {
        lock(&self.reaped).push(job.clone());
        Ok(job
            .other_backend("memory")
            .unwrap_or_else(Teardown::complete))
    }
}

/// An audit double: a hash-chained log in memory.
pub struct MemoryAuditSink {
    stream_id: String,
    records: Mutex<Vec<AuditRecord>>,
    /// Faults on `append`.
    pub faults: FaultPlan,
    /// Faults on `read` and `verify` (e.g. to make a readiness probe fail).
    pub read_faults: FaultPlan,
    journal: Option<Journal>,
}

impl Default for MemoryAuditSink {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryAuditSink {
    /// An empty chain (with its genesis record) named `memory`.
    pub fn new() -> Self {
        Self::with_stream("memory")
    }

    /// An empty chain with the given stream id.
    pub fn with_stream(stream_id: &str) -> Self {
        let records = genesis(stream_id).map(|g| vec![g]).unwrap_or_default();
        Self {
            stream_id: stream_id.into(),
            records: Mutex::new(records),
            faults: FaultPlan::new(),
            read_faults: FaultPlan::new(),
            journal: None,
        }
    }

    /// Reports acknowledgements to a journal.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// All records, genesis included.
    pub fn records(&self) -> Vec<AuditRecord> {
        lock(&self.records).clone()
    }

    /// The events of one action, in order.
    pub fn events_for(&self, correlation_id: crate::ids::RequestId) -> Vec<AuditEvent> {
        lock(&self.records)
            .iter()
            .filter(|r| {
                r.event.correlation_id == correlation_id && r.event.kind != AuditEventKind::Genesis
            })
            .map(|r| r.event.clone())
            .collect()
    }

    /// Direct access for tamper tests.
    pub fn tamper(&self, f: impl FnOnce(&mut Vec<AuditRecord>)) {
        f(&mut lock(&self.records));
    }
}

#[async_trait]
impl AuditSink for MemoryAuditSink {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        only_receipt(self.append_all(vec![event]).await?)
    }

    /// Atomic: one fault check for the whole group, sealed and stored under one lock.
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        self.faults
            .enter()
            .await
            .map_err(|()| AuditError::unavailable_msg("injected fault"))?;
        let mut records = lock(&self.records);
        let (mut seq, mut prev) = records
            .last()
            .map_or((0, GENESIS_PREV_HASH.to_owned()), |r| {
                (r.sequence + 1, r.hash.clone())
            });
        let mut sealed = Vec::with_capacity(events.len());
        for event in events {
            let record = seal(&self.stream_id, seq, &prev, event)?;
            prev = record.hash.clone();
            seq += 1;
            sealed.push(record);
        }
        let mut receipts = Vec::with_capacity(sealed.len());
        let group = sealed
            .first()
            .map(|r| (r.event.correlation_id, sealed.len()));
        for record in sealed {
            receipts.push(AuditReceipt {
                stream_id: self.stream_id.clone(),
                sequence: record.sequence,
                hash: record.hash.clone(),
            });
            // Journal under the same lock, so journal order equals chain order.
            if let Some(j) = &self.journal {
                j.push(Entry::AuditAcked {
                    correlation_id: record.event.correlation_id,
                    kind: record.event.kind,
                    allow: record.event.decision.as_ref().map(|d| d.allow),
                });
            }
            records.push(record);
        }
        if let (Some(j), Some((correlation_id, events))) = (&self.journal, group) {
            j.push(Entry::AuditCommitted {
                correlation_id,
                events,
            });
        }
        Ok(receipts)
    }

    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.read_faults
            .enter()
            .await
            .map_err(|()| AuditError::unavailable_msg("injected fault"))?;
        Ok(lock(&self.records)
            .iter()
            .filter(|r| after.is_none_or(|a| r.sequence > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.read_faults
            .enter()
            .await
            .map_err(|()| AuditError::unavailable_msg("injected fault"))?;
        let mut verifier = ChainVerifier::new(self.stream_id.clone());
        for r in lock(&self.records).iter() {
            if verifier.push(r).is_err() {
                break;
            }
        }
        Ok(verifier.finish())
    }
}
