//! Backends wrapped to count what they do into [`Metrics`].
//!
//! Each impl denies `clippy::missing_trait_methods`: a method added to a backend trait later
//! (with a default body) must be forwarded here explicitly, or the build fails, so a wrapper
//! can never silently run the trait's default instead of the wrapped backend's method.

use super::Metrics;
use super::labels::{DecisionLabel, GrantLabel, RevocationLabel, RunLabel};
use gateway_core::audit::VerifyReport;
use gateway_core::{
    AbandonedJob, AccessBroker, AuditError, AuditEvent, AuditReceipt, AuditRecord, AuditSink,
    BrokerError, CancellationToken, Decision, Grant, GrantRequest, JobOutcome, JobSpec,
    ListingInput, PolicyDecider, PolicyError, PolicyInput, Runner, RunnerError, RunnerInfo,
    Teardown, async_trait,
};
use std::sync::Arc;
use std::time::Instant;

/// Context attribute that marks a readiness probe's policy input; such decisions are not counted.
pub const PROBE_ATTRIBUTE: &str = "gateway_readiness_probe";

/// A backend wrapped to report to [`Metrics`].
pub(super) struct Metered<T: ?Sized> {
    pub(super) inner: Arc<T>,
    pub(super) metrics: Arc<Metrics>,
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl PolicyDecider for Metered<dyn PolicyDecider> {
    async fn decide(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let result = self.inner.decide(input).await;
        if !input.context.contains_key(PROBE_ATTRIBUTE) {
            match &result {
                Ok(d) if d.allow => self.metrics.decided(DecisionLabel::Allow),
                Ok(_) => self.metrics.decided(DecisionLabel::Deny),
                Err(_) => {
                    self.metrics.policy_errors.inc();
                }
            }
        }
        result
    }

    /// Listings are not decisions: forwarded, not counted.
    async fn visible_actions(&self, input: &ListingInput) -> Result<Vec<String>, PolicyError> {
        self.inner.visible_actions(input).await
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl AccessBroker for Metered<dyn AccessBroker> {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let result = self.inner.grant(request).await;
        self.metrics.granted(match &result {
            Ok(_) => GrantLabel::Issued,
            Err(_) => GrantLabel::Failed,
        });
        result
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        let result = self.inner.revoke(grant).await;
        self.metrics.revoked(match &result {
            Ok(()) => RevocationLabel::Ok,
            Err(_) => RevocationLabel::Failed,
        });
        result
    }
}

#[deny(clippy::missing_trait_methods)]
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
        self.metrics
            .ran(RunLabel::of(result.as_ref().ok().map(|o| &o.status)));
        result
    }

    async fn reap_abandoned(&self, job: &AbandonedJob) -> Result<Teardown, RunnerError> {
        self.inner.reap_abandoned(job).await
    }
}

#[deny(clippy::missing_trait_methods)]
#[async_trait]
impl AuditSink for Metered<dyn AuditSink> {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        let started = Instant::now();
        let result = self.inner.append(event).await;
        self.metrics.appended(started, result.is_ok());
        result
    }

    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        let started = Instant::now();
        let result = self.inner.append_all(events).await;
        self.metrics.appended(started, result.is_ok());
        result
    }

    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        self.inner.read(after, limit).await
    }

    async fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.inner.verify().await
    }
}
