//! Counters for decisions, refusals, grants, runs, approvals and audit latency, rendered in the
//! Prometheus text format at `GET /metrics`.
//!
//! The counts come from thin wrappers around the backends ([`Metrics::policy`],
//! [`Metrics::broker`], [`Metrics::runner`], [`Metrics::audit`]) passed to the gateway builder,
//! and from the results the front sees ([`Metrics::observe`]). Plain atomics: no registry, no
//! allocation on the hot path.

use gateway_core::audit::VerifyReport;
use gateway_core::{
    AccessBroker, ActionOutcome, AuditError, AuditEvent, AuditReceipt, AuditRecord, AuditSink,
    BrokerError, CancellationToken, Decision, ErrorKind, GatewayError, Grant, GrantRequest,
    JobOutcome, JobSpec, JobStatus, PolicyDecider, PolicyError, PolicyInput, Runner, RunnerError,
    RunnerInfo, async_trait,
};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Context attribute that marks a readiness probe's policy input; such decisions are not counted.
pub const PROBE_ATTRIBUTE: &str = "gateway_readiness_probe";

const KINDS: [ErrorKind; 10] = [
    ErrorKind::Unauthenticated,
    ErrorKind::Denied,
    ErrorKind::InvalidInput,
    ErrorKind::RateLimited,
    ErrorKind::Unavailable,
    ErrorKind::Timeout,
    ErrorKind::Cancelled,
    ErrorKind::NotFound,
    ErrorKind::Conflict,
    ErrorKind::Internal,
];

fn kind_index(kind: ErrorKind) -> usize {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(KINDS.len() - 1)
}

const RUN_STATUSES: [&str; 7] = [
    "succeeded",
    "failed",
    "signaled",
    "timed_out",
    "oom_killed",
    "cancelled",
    "error",
];

fn run_index(status: &JobStatus) -> usize {
    match status {
        JobStatus::Exited { code: 0 } => 0,
        JobStatus::Exited { .. } => 1,
        JobStatus::Signaled { .. } => 2,
        JobStatus::TimedOut => 3,
        JobStatus::OomKilled => 4,
        JobStatus::Cancelled => 5,
        #[allow(unreachable_patterns)]
        _ => 6,
    }
}

/// Upper bounds of the audit latency histogram, in microseconds.
const AUDIT_BUCKETS_US: [u64; 10] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000,
];

/// The counters. Share one `Arc<Metrics>` between the wrappers and the front.
#[derive(Debug, Default)]
pub struct Metrics {
    actions_ok: AtomicU64,
    refusals: [AtomicU64; 10],
    decisions_allow: AtomicU64,
    decisions_deny: AtomicU64,
    policy_errors: AtomicU64,
    grants_issued: AtomicU64,
    grants_failed: AtomicU64,
    revocations_ok: AtomicU64,
    revocations_failed: AtomicU64,
    runs: [AtomicU64; 7],
    approvals_requested: AtomicU64,
    approvals_approved: AtomicU64,
    approvals_denied: AtomicU64,
    audit_appends: AtomicU64,
    audit_failures: AtomicU64,
    audit_micros_sum: AtomicU64,
    audit_buckets: [AtomicU64; 10],
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts the result of one action as the front saw it.
    pub fn observe(&self, result: &Result<ActionOutcome, GatewayError>) {
        match result {
            Ok(_) => self.actions_ok.fetch_add(1, Relaxed),
            Err(e) => self.refusals[kind_index(e.kind())].fetch_add(1, Relaxed),
        };
    }

    /// Counts an approval request being parked.
    pub fn approval_requested(&self) {
        self.approvals_requested.fetch_add(1, Relaxed);
    }

    /// Counts an approver's verdict.
    pub fn approval_resolved(&self, approved: bool) {
        if approved {
            self.approvals_approved.fetch_add(1, Relaxed);
        } else {
            self.approvals_denied.fetch_add(1, Relaxed);
        }
    }

    /// Actions that ran to an outcome, and refused ones by kind.
    pub fn actions(&self) -> (u64, Vec<(ErrorKind, u64)>) {
        let refused = KINDS
            .iter()
            .zip(&self.refusals)
            .map(|(k, c)| (*k, c.load(Relaxed)))
            .collect();
        (self.actions_ok.load(Relaxed), refused)
    }

    /// Allow and deny decisions made by the policy (readiness probes excluded).
    pub fn decisions(&self) -> (u64, u64) {
        (
            self.decisions_allow.load(Relaxed),
            self.decisions_deny.load(Relaxed),
        )
    }

    /// Grants issued, and grant requests that failed.
    pub fn grants(&self) -> (u64, u64) {
        (
            self.grants_issued.load(Relaxed),
            self.grants_failed.load(Relaxed),
        )
    }

    /// Jobs the runner finished with status `succeeded` (exit 0).
    pub fn runs_succeeded(&self) -> u64 {
        self.runs[0].load(Relaxed)
    }

    /// Audit appends (acknowledged, failed).
    pub fn audit_appends(&self) -> (u64, u64) {
        (
            self.audit_appends.load(Relaxed),
            self.audit_failures.load(Relaxed),
        )
    }

    fn record_audit(&self, started: Instant, ok: bool) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if ok {
            self.audit_appends.fetch_add(1, Relaxed);
        } else {
            self.audit_failures.fetch_add(1, Relaxed);
        }
        self.audit_micros_sum.fetch_add(micros, Relaxed);
        if let Some(i) = AUDIT_BUCKETS_US.iter().position(|b| micros <= *b) {
            self.audit_buckets[i].fetch_add(1, Relaxed);
        }
    }

    /// Wraps a policy decider to count its decisions.
    pub fn policy(self: &Arc<Self>, inner: Arc<dyn PolicyDecider>) -> Arc<dyn PolicyDecider> {
        Arc::new(Metered {
            inner,
            metrics: Arc::clone(self),
        })
    }

    /// Wraps a broker to count grants and revocations.
    pub fn broker(self: &Arc<Self>, inner: Arc<dyn AccessBroker>) -> Arc<dyn AccessBroker> {
        Arc::new(Metered {
            inner,
            metrics: Arc::clone(self),
        })
    }

    /// Wraps a runner to count runs by status.
    pub fn runner(self: &Arc<Self>, inner: Arc<dyn Runner>) -> Arc<dyn Runner> {
        Arc::new(Metered {
            inner,
            metrics: Arc::clone(self),
        })
    }

    /// Wraps an audit sink to measure append latency and count failures.
    pub fn audit(self: &Arc<Self>, inner: Arc<dyn AuditSink>) -> Arc<dyn AuditSink> {
        Arc::new(Metered {
            inner,
            metrics: Arc::clone(self),
        })
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let c = |a: &AtomicU64| a.load(Relaxed);
        // Writing to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP gateway_actions_total Actions submitted through this front, by result.\n\
             # TYPE gateway_actions_total counter\n\
             gateway_actions_total{{result=\"ran\"}} {}",
            c(&self.actions_ok)
        );
        for (kind, n) in KINDS.iter().zip(&self.refusals) {
            let _ = writeln!(out, "gateway_actions_total{{result=\"{kind}\"}} {}", c(n));
        }
        let _ = writeln!(
            out,
            "# HELP gateway_decisions_total Policy decisions.\n\
             # TYPE gateway_decisions_total counter\n\
             gateway_decisions_total{{decision=\"allow\"}} {}\n\
             gateway_decisions_total{{decision=\"deny\"}} {}\n\
             # HELP gateway_policy_errors_total Policy calls that failed (each became a deny).\n\
             # TYPE gateway_policy_errors_total counter\n\
             gateway_policy_errors_total {}",
            c(&self.decisions_allow),
            c(&self.decisions_deny),
            c(&self.policy_errors)
        );
        let _ = writeln!(
            out,
            "# HELP gateway_grants_total Just-in-time grants.\n\
             # TYPE gateway_grants_total counter\n\
             gateway_grants_total{{result=\"issued\"}} {}\n\
             gateway_grants_total{{result=\"failed\"}} {}\n\
             # HELP gateway_revocations_total Grant revocations.\n\
             # TYPE gateway_revocations_total counter\n\
             gateway_revocations_total{{result=\"ok\"}} {}\n\
             gateway_revocations_total{{result=\"failed\"}} {}",
            c(&self.grants_issued),
            c(&self.grants_failed),
            c(&self.revocations_ok),
            c(&self.revocations_failed)
        );
        let _ = writeln!(
            out,
            "# HELP gateway_runs_total Jobs run, by final status.\n# TYPE gateway_runs_total counter"
        );
        for (status, n) in RUN_STATUSES.iter().zip(&self.runs) {
            let _ = writeln!(out, "gateway_runs_total{{status=\"{status}\"}} {}", c(n));
        }
        let _ = writeln!(
            out,
            "# HELP gateway_approvals_total Human approvals.\n\
             # TYPE gateway_approvals_total counter\n\
             gateway_approvals_total{{event=\"requested\"}} {}\n\
             gateway_approvals_total{{event=\"approved\"}} {}\n\
             gateway_approvals_total{{event=\"denied\"}} {}",
            c(&self.approvals_requested),
            c(&self.approvals_approved),
            c(&self.approvals_denied)
        );
        let _ = writeln!(
            out,
            "# HELP gateway_audit_append_failures_total Audit appends that failed.\n\
             # TYPE gateway_audit_append_failures_total counter\n\
             gateway_audit_append_failures_total {}\n\
             # HELP gateway_audit_append_seconds Audit append latency.\n\
             # TYPE gateway_audit_append_seconds histogram",
            c(&self.audit_failures)
        );
        let mut cumulative = 0;
        for (bound, n) in AUDIT_BUCKETS_US.iter().zip(&self.audit_buckets) {
            cumulative += c(n);
            let _ = writeln!(
                out,
                "gateway_audit_append_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let count = c(&self.audit_appends) + c(&self.audit_failures);
        let _ = writeln!(
            out,
            "gateway_audit_append_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             gateway_audit_append_seconds_sum {}\n\
             gateway_audit_append_seconds_count {count}",
            c(&self.audit_micros_sum) as f64 / 1e6
        );
        out
    }
}

/// A backend wrapped to report to [`Metrics`].
struct Metered<T: ?Sized> {
    inner: Arc<T>,
    metrics: Arc<Metrics>,
}

#[async_trait]
impl PolicyDecider for Metered<dyn PolicyDecider> {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let result = self.inner.decide(input).await;
        if !input.context.contains_key(PROBE_ATTRIBUTE) {
            let m = &self.metrics;
            match &result {
                Ok(d) if d.allow => m.decisions_allow.fetch_add(1, Relaxed),
                Ok(_) => m.decisions_deny.fetch_add(1, Relaxed),
                Err(_) => m.policy_errors.fetch_add(1, Relaxed),
            };
        }
        result
    }
}

#[async_trait]
impl AccessBroker for Metered<dyn AccessBroker> {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let result = self.inner.grant(request).await;
        match &result {
            Ok(_) => self.metrics.grants_issued.fetch_add(1, Relaxed),
            Err(_) => self.metrics.grants_failed.fetch_add(1, Relaxed),
        };
        result
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        let result = self.inner.revoke(grant).await;
        match &result {
            Ok(()) => self.metrics.revocations_ok.fetch_add(1, Relaxed),
            Err(_) => self.metrics.revocations_failed.fetch_add(1, Relaxed),
        };
        result
    }
}

#[async_trait]
impl Runner for Metered<dyn Runner> {
    fn info(&self) -> RunnerInfo {
        self.inner.info()
    }

    async fn run(
        &self,
        spec: JobSpec,
        cancel: CancellationToken,
    ) -> Result<JobOutcome, RunnerError> {
        let result = self.inner.run(spec, cancel).await;
        let i = match &result {
            Ok(outcome) => run_index(&outcome.status),
            Err(_) => RUN_STATUSES.len() - 1,
        };
        self.metrics.runs[i].fetch_add(1, Relaxed);
        result
    }
}

#[async_trait]
impl AuditSink for Metered<dyn AuditSink> {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        let started = Instant::now();
        let result = self.inner.append(event).await;
        self.metrics.record_audit(started, result.is_ok());
        result
    }

    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        let started = Instant::now();
        let result = self.inner.append_all(events).await;
        self.metrics.record_audit(started, result.is_ok());
        result
    }

    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.read(after, limit).await
    }

    async fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.inner.verify().await
    }
}
