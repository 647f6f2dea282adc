//! The arithmetic of limits and lifetimes: how long a grant may live, what a job may use, and
//! whether a broker handed out more than it was asked for.

use crate::grant::{Grant, GrantRequest};
use crate::policy::RunnerObligations;
use crate::runner::JobLimits;
use std::time::Duration;
use time::OffsetDateTime;

/// The grant TTL the gateway asks for: min(requested, policy maximum, gateway maximum).
pub(crate) fn grant_ttl_seconds(
    requested: u64,
    policy_max: Option<u64>,
    gateway_max: Duration,
) -> u64 {
    requested
        .min(policy_max.unwrap_or(u64::MAX))
        .min(gateway_max.as_secs())
}

/// The tighter of two limits, field by field.
pub(crate) fn tighten(spec: &JobLimits, max: &JobLimits) -> JobLimits {
    JobLimits {
        cpu_millis: spec.cpu_millis.min(max.cpu_millis),
        memory_bytes: spec.memory_bytes.min(max.memory_bytes),
        pids: spec.pids.min(max.pids),
        open_files: spec.open_files.min(max.open_files),
        timeout: spec.timeout.min(max.timeout),
        max_output_bytes: spec.max_output_bytes.min(max.max_output_bytes),
    }
}

/// The most a job may use: the gateway's maximum, tightened by the policy's runner
/// obligations, with the wall timeout capped by the grant's remaining lifetime.
pub(crate) fn job_limit_ceiling(
    gateway_max: &JobLimits,
    obligations: &RunnerObligations,
    grant_remaining: Duration,
) -> JobLimits {
    let mut max = gateway_max.clone();
    if let Some(cpu) = obligations.cpu_millis {
        max.cpu_millis = max.cpu_millis.min(cpu);
    }
    if let Some(memory) = obligations.memory_bytes {
        max.memory_bytes = max.memory_bytes.min(memory);
    }
    if let Some(pids) = obligations.pids {
        max.pids = max.pids.min(pids);
    }
    if let Some(seconds) = obligations.timeout_seconds {
        max.timeout = max.timeout.min(Duration::from_secs(seconds));
    }
    // Never let the job outlive the grant.
    max.timeout = max.timeout.min(grant_remaining);
    max
}

/// A grant that goes beyond its request: a broker must never hand out more than it was asked
/// for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "broker issued a grant beyond the request (ttl too long: {ttl_too_long}, extra scope: {extra_scope:?}, agent matches: {agent_matches})"
)]
pub struct OverIssued {
    /// The grant outlives the TTL asked for (by more than a second of clock slack).
    pub ttl_too_long: bool,
    /// A scope that was not asked for.
    pub extra_scope: Option<String>,
    /// Whether the grant is for the agent it was asked for.
    pub agent_matches: bool,
}

/// Checks `grant` against what was `asked` at `requested_at`.
pub(crate) fn check_issued(
    grant: &Grant,
    asked: &GrantRequest,
    requested_at: OffsetDateTime,
) -> Result<(), OverIssued> {
    let slack = time::Duration::seconds(1);
    let ttl_too_long = grant.not_after > requested_at + asked.ttl + slack;
    let extra_scope = grant
        .scopes
        .iter()
        .find(|s| !asked.scopes.contains(s))
        .cloned();
    let agent_matches = grant.agent == asked.agent;
    if ttl_too_long || extra_scope.is_some() || !agent_matches {
        return Err(OverIssued {
            ttl_too_long,
            extra_scope,
            agent_matches,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_ttl_is_the_smallest_of_the_three() {
        let day = Duration::from_secs(86_400);
        assert_eq!(grant_ttl_seconds(300, None, day), 300);
        assert_eq!(grant_ttl_seconds(300, Some(60), day), 60);
        assert_eq!(
            grant_ttl_seconds(300, Some(600), Duration::from_secs(90)),
            90
        );
    }

    #[test]
    fn the_ceiling_never_outlives_the_grant() {
        let obligations = RunnerObligations {
            timeout_seconds: Some(600),
            ..RunnerObligations::default()
        };
        let max = job_limit_ceiling(&JobLimits::default(), &obligations, Duration::from_secs(5));
        assert_eq!(max.timeout, Duration::from_secs(5));
    }
}
