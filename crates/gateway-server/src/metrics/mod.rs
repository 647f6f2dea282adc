//! Counters for decisions, refusals, grants, runs, approvals and audit latency, served at
//! `GET /metrics` by [`prometheus_client`], in OpenMetrics or the Prometheus text format
//! ([`Format::negotiate`]).
//!
//! The counts come from thin wrappers around the backends ([`Metrics::policy`],
//! [`Metrics::broker`], [`Metrics::runner`], [`Metrics::audit`]) passed to the gateway builder,
//! and from the results the front sees ([`Metrics::observe`]).
//!
//! | series | labels |
//! |---|---|
//! | `gateway_actions_total` | `result`: `ran` or an error kind (`denied`, `rate_limited`, …) |
//! | `gateway_decisions_total` | `decision`: `allow`, `deny` |
//! | `gateway_policy_errors_total` | — (each became a deny) |
//! | `gateway_grants_total` | `result`: `issued`, `failed` |
//! | `gateway_revocations_total` | `result`: `ok`, `failed` |
//! | `gateway_runs_total` | `status`: `succeeded`, `failed`, `signaled`, `timed_out`, `oom_killed`, `cancelled`, `error` |
//! | `gateway_approvals_total` | `event`: `requested`, `approved`, `denied` |
//! | `gateway_audit_append_failures_total` | — |
//! | `gateway_audit_append_seconds` | histogram of audit append latency (one per append or group) |
//!
//! Every label value is a member of a closed Rust enum (`labels.rs`): nothing a caller sends
//! (action name, agent id, resource) becomes a label, so the series are a fixed set, all
//! present from the start.

mod format;
mod labels;
mod metered;

pub use format::Format;
pub use metered::PROBE_ATTRIBUTE;

use gateway_core::{
    AccessBroker, ActionOutcome, AuditSink, ErrorKind, GatewayError, PolicyDecider, Runner,
};
use labels::{
    ApprovalLabel, Closed, DecisionLabel, GrantLabel, KINDS, One, ResultLabel, RevocationLabel,
    RunLabel,
};
use metered::Metered;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Instant;

/// Upper bounds of the audit latency histogram, in seconds (50 µs to 250 ms).
const AUDIT_BUCKETS: [f64; 10] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3, 250e-3,
];

/// A counter family over one closed label, with every series created (at zero) and registered.
fn family<V: Closed>(registry: &mut Registry, name: &str, help: &str) -> Family<One<V>, Counter> {
    let family = Family::<One<V>, Counter>::default();
    for value in V::ALL {
        // Created now so that the series is exposed (at zero) before its first event.
        drop(family.get_or_create(&One(*value)));
    }
    registry.register(name, help, family.clone());
    family
}

/// The counters and their registry. Share one `Arc<Metrics>` between the wrappers and the front.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    actions: Family<One<ResultLabel>, Counter>,
    decisions: Family<One<DecisionLabel>, Counter>,
    policy_errors: Counter,
    grants: Family<One<GrantLabel>, Counter>,
    revocations: Family<One<RevocationLabel>, Counter>,
    runs: Family<One<RunLabel>, Counter>,
    approvals: Family<One<ApprovalLabel>, Counter>,
    audit_failures: Counter,
    /// Acknowledged appends; not exposed (the histogram's count has them with the failures),
    /// kept for [`Metrics::audit_appends`].
    audit_acknowledged: Counter,
    audit_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let actions = family(
            r,
            "gateway_actions",
            "Actions submitted through this front, by result",
        );
        let decisions = family(r, "gateway_decisions", "Policy decisions");
        let policy_errors = Counter::default();
        r.register(
            "gateway_policy_errors",
            "Policy calls that failed (each became a deny)",
            policy_errors.clone(),
        );
        let grants = family(r, "gateway_grants", "Just-in-time grants");
        let revocations = family(r, "gateway_revocations", "Grant revocations");
        let runs = family(r, "gateway_runs", "Jobs run, by final status");
        let approvals = family(r, "gateway_approvals", "Human approvals");
        let audit_failures = Counter::default();
        r.register(
            "gateway_audit_append_failures",
            "Audit appends that failed",
            audit_failures.clone(),
        );
        let audit_latency = Histogram::new(AUDIT_BUCKETS);
        r.register_with_unit(
            "gateway_audit_append",
            "Audit append latency",
            Unit::Seconds,
            audit_latency.clone(),
        );
        Self {
            registry,
            actions,
            decisions,
            policy_errors,
            grants,
            revocations,
            runs,
            approvals,
            audit_failures,
            audit_acknowledged: Counter::default(),
            audit_latency,
        }
    }
}

/// Reads one series of a family whose series all exist from the start.
fn count<V: Closed>(family: &Family<One<V>, Counter>, value: V) -> u64 {
    family.get_or_create(&One(value)).get()
}

impl Metrics {
    /// Fresh counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts the result of one action as the front saw it.
    pub fn observe(&self, result: &Result<ActionOutcome, GatewayError>) {
        let label = match result {
            Ok(_) => ResultLabel::Ran,
            Err(e) => ResultLabel::refused(e.kind()),
        };
        self.actions.get_or_create(&One(label)).inc();
    }

    /// Counts an approval request being parked.
    pub fn approval_requested(&self) {
        self.approvals
            .get_or_create(&One(ApprovalLabel::Requested))
            .inc();
    }

    /// Counts an approver's verdict.
    pub fn approval_resolved(&self, approved: bool) {
        let label = if approved {
            ApprovalLabel::Approved
        } else {
            ApprovalLabel::Denied
        };
        self.approvals.get_or_create(&One(label)).inc();
    }

    /// Actions that ran to an outcome, and refused ones by kind.
    pub fn actions(&self) -> (u64, Vec<(ErrorKind, u64)>) {
        let refused = KINDS
            .iter()
            .map(|k| (*k, count(&self.actions, ResultLabel::Refused(*k))))
            .collect();
        (count(&self.actions, ResultLabel::Ran), refused)
    }

    /// Allow and deny decisions made by the policy (readiness probes excluded).
    pub fn decisions(&self) -> (u64, u64) {
        (
            count(&self.decisions, DecisionLabel::Allow),
            count(&self.decisions, DecisionLabel::Deny),
        )
    }

    /// Grants issued, and grant requests that failed.
    pub fn grants(&self) -> (u64, u64) {
        (
            count(&self.grants, GrantLabel::Issued),
            count(&self.grants, GrantLabel::Failed),
        )
    }

    /// Revocations that succeeded, and ones that failed.
    pub fn revocations(&self) -> (u64, u64) {
        (
            count(&self.revocations, RevocationLabel::Ok),
            count(&self.revocations, RevocationLabel::Failed),
        )
    }

    /// Jobs the runner finished with status `succeeded` (exit 0).
    pub fn runs_succeeded(&self) -> u64 {
        count(&self.runs, RunLabel::Succeeded)
    }

    /// Jobs handed to the runner, whatever their status (runner errors included).
    pub fn runs(&self) -> u64 {
        RunLabel::ALL.iter().map(|s| count(&self.runs, *s)).sum()
    }

    /// Audit appends (acknowledged, failed); a group appended at once counts as one.
    pub fn audit_appends(&self) -> (u64, u64) {
        (self.audit_acknowledged.get(), self.audit_failures.get())
    }

    fn decided(&self, decision: DecisionLabel) {
        self.decisions.get_or_create(&One(decision)).inc();
    }

    fn granted(&self, result: GrantLabel) {
        self.grants.get_or_create(&One(result)).inc();
    }

    fn revoked(&self, result: RevocationLabel) {
        self.revocations.get_or_create(&One(result)).inc();
    }

    fn ran(&self, status: RunLabel) {
        self.runs.get_or_create(&One(status)).inc();
    }

    fn appended(&self, started: Instant, ok: bool) {
        if ok {
            self.audit_acknowledged.inc();
        } else {
            self.audit_failures.inc();
        }
        self.audit_latency.observe(started.elapsed().as_secs_f64());
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

    /// The exposition in `format`. Fails only if encoding fails, which writing into a `String`
    /// with these label sets does not; the error is passed on rather than assumed away.
    pub fn render(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        match format {
            Format::OpenMetrics => text::encode(&mut out, &self.registry)?,
            Format::PrometheusText => prometheus_text::encode(&mut out, &self.registry)?,
        }
        Ok(out)
    }
}
