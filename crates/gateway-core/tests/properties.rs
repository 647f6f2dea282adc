//! Property tests: random fault schedules across all five parts never break the pipeline's
//! guarantees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::testing::{Entry, Fault};
use gateway_core::{AuditEventKind, AuditSink, GatewayError, Stage};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone)]
struct Schedule {
    identity: Vec<(u64, Fault)>,
    policy: Vec<(u64, Fault)>,
    grant: Vec<(u64, Fault)>,
    revoke: Vec<(u64, Fault)>,
    runner: Vec<(u64, Fault)>,
    audit: Vec<(u64, Fault)>,
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        4 => Just(Fault::Error),
        2 => Just(Fault::Panic),
        1 => Just(Fault::Hang),
        1 => (1u64..150).prop_map(|ms| Fault::Delay(Duration::from_millis(ms))),
    ]
}

fn faults(max_call: u64) -> impl Strategy<Value = Vec<(u64, Fault)>> {
    proptest::collection::vec((0..max_call, fault()), 0..3)
}

fn schedule() -> impl Strategy<Value = Schedule> {
    (
        faults(4),
        faults(4),
        faults(4),
        faults(4),
        faults(4),
        faults(24),
    )
        .prop_map(
            |(identity, policy, grant, revoke, runner, audit)| Schedule {
                identity,
                policy,
                grant,
                revoke,
                runner,
                audit,
            },
        )
}

fn run_case(schedule: &Schedule, exit_code: i32) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut parts = Parts {
            runner: gateway_core::testing::MemoryRunner::new().with_exit_code(exit_code),
            ..Parts::default()
        };
        parts.config.identity_timeout = Duration::from_millis(100);
        parts.config.policy_timeout = Duration::from_millis(100);
        parts.config.audit_timeout = Duration::from_millis(100);
        parts.config.broker_timeout = Duration::from_millis(100);
        parts.config.runner_grace = Duration::from_millis(100);
        parts.config.max_job_limits.timeout = Duration::from_millis(200);
        for (n, f) in &schedule.identity {
            parts.identity.faults = parts.identity.faults.clone().on_call(*n, *f);
        }
        for (n, f) in &schedule.policy {
            parts.policy.faults = parts.policy.faults.clone().on_call(*n, *f);
        }
        for (n, f) in &schedule.grant {
            parts.broker.grant_faults = parts.broker.grant_faults.clone().on_call(*n, *f);
        }
        for (n, f) in &schedule.revoke {
            parts.broker.revoke_faults = parts.broker.revoke_faults.clone().on_call(*n, *f);
        }
        for (n, f) in &schedule.runner {
            parts.runner.faults = parts.runner.faults.clone().on_call(*n, *f);
        }
        for (n, f) in &schedule.audit {
            parts.audit.faults = parts.audit.faults.clone().on_call(*n, *f);
        }
        let h = harness(parts);

        // Four actions, two at a time.
        let mut results = Vec::new();
        for pair in 0..2 {
            let a = h.gateway.execute(agent_a(), echo(&format!("a{pair}")));
            let b = h.gateway.execute(agent_a(), echo(&format!("b{pair}")));
            let (ra, rb) = tokio::join!(a, b);
            results.push(ra);
            results.push(rb);
        }

        // No panic escapes execute: every failure is a typed error from a pipeline step.
        for r in &results {
            if let Err(e) = r {
                prop_assert_ne!(
                    e.stage(),
                    Some(Stage::Pipeline),
                    "pipeline task died: {}",
                    e
                );
            }
        }

        let journal = h.journal.entries();
        // Write-ahead, two commits (`docs/design.md`): no job runs, so no credential leaves,
        // unless `requested`, `decided(allow)`, `granted` and `started` were acknowledged
        // before it (commit 1).
        let mut requested = HashSet::new();
        let mut granted_for = HashSet::new();
        let mut commits: HashMap<gateway_core::RequestId, u32> = HashMap::new();
        let mut allowed = HashSet::new();
        let mut granted = HashSet::new();
        let mut started = HashSet::new();
        for entry in &journal {
            match entry {
                Entry::AuditAcked {
                    correlation_id,
                    kind: AuditEventKind::Granted,
                    ..
                } => {
                    granted.insert(*correlation_id);
                }
                Entry::AuditAcked {
                    correlation_id,
                    kind: AuditEventKind::Started,
                    ..
                } => {
                    started.insert(*correlation_id);
                }
                Entry::AuditAcked {
                    correlation_id,
                    kind: AuditEventKind::Requested,
                    ..
                } => {
                    requested.insert(*correlation_id);
                }
                Entry::AuditAcked {
                    correlation_id,
                    kind: AuditEventKind::Decided,
                    allow: Some(true),
                } => {
                    allowed.insert(*correlation_id);
                }
                Entry::JobStarted { correlation_id } => {
                    prop_assert!(
                        requested.contains(correlation_id),
                        "job ran before `requested` was durable"
                    );
                    prop_assert!(
                        allowed.contains(correlation_id),
                        "job ran before `decided(allow)` was durable"
                    );
                    prop_assert!(
                        granted.contains(correlation_id) && started.contains(correlation_id),
                        "job ran before `granted` and `started` were durable"
                    );
                }
                Entry::Granted { correlation_id, .. } => {
                    granted_for.insert(*correlation_id);
                }
                Entry::AuditCommitted { correlation_id, .. } => {
                    *commits.entry(*correlation_id).or_default() += 1;
                }
                _ => {}
            }
        }
        // A grant is issued (before commit 1) only for an action the policy allowed: once its
        // trail is stored at all, it holds `decided(allow)`.
        for id in &granted_for {
            let stored = journal.iter().any(
                |e| matches!(e, Entry::AuditAcked { correlation_id, .. } if correlation_id == id),
            );
            prop_assert!(
                !stored || allowed.contains(id),
                "grant issued for {} without an allow decision",
                id
            );
        }

        // Every issued grant is revoked exactly once; nothing else is revoked.
        let issued: HashSet<String> = h.broker.issued().into_iter().map(|g| g.id).collect();
        let revocations: HashMap<String, u32> = h.broker.revocations();
        prop_assert_eq!(issued.len(), revocations.len());
        for id in &issued {
            prop_assert_eq!(
                revocations.get(id).copied(),
                Some(1),
                "grant {} not revoked exactly once",
                id
            );
        }

        // Every action's trail starts with `requested` (or is a lone `rejected` for a failed
        // authentication) and ends with a terminal event, unless the sink refused that very
        // terminal record (and its retry).
        let records = h.audit.records();
        let mut trails: HashMap<gateway_core::RequestId, Vec<AuditEventKind>> = HashMap::new();
        for r in records.iter().skip(1) {
            trails
                .entry(r.event.correlation_id)
                .or_default()
                .push(r.event.kind);
        }
        let audit_faults = schedule.audit.len();
        for (id, kinds) in &trails {
            let first = kinds[0];
            prop_assert!(
                first == AuditEventKind::Requested || (kinds == &vec![AuditEventKind::Rejected]),
                "trail {} starts with {:?}",
                id,
                kinds
            );
            let closed = kinds.last().is_some_and(|k| k.is_terminal());
            // With no audit fault every trail must be closed; with faults, a trail may stay open
            // only if its action returned an audit error.
            let result = results.iter().find(|r| match r {
                Ok(o) => o.correlation_id == *id,
                Err(e) => e.correlation_id() == *id,
            });
            let audit_error = matches!(result, Some(Err(GatewayError::OutcomeNotRecorded { .. })))
                || matches!(result, Some(Err(e)) if e.stage() == Some(Stage::Audit));
            prop_assert!(
                closed || (audit_faults > 0 && audit_error),
                "trail {} not closed: {:?}",
                id,
                kinds
            );
            // The commit budget: a trail with a job is two commits (commit 1 before the job,
            // then the outcome, or its retry); any other trail is one (its terminal record,
            // holding everything deferred). Failed groups are not commits; an open trail may
            // have fewer.
            let budget = if kinds.contains(&AuditEventKind::Started) {
                2
            } else {
                1
            };
            let made = commits.get(id).copied().unwrap_or(0);
            prop_assert!(
                made == budget || (!closed && made < budget),
                "trail {} took {} commits, budget {}: {:?}",
                id,
                made,
                budget,
                kinds
            );
            // Steps are strictly increasing from 1.
            let steps: Vec<u32> = records
                .iter()
                .filter(|r| r.event.correlation_id == *id)
                .map(|r| r.event.step)
                .collect();
            prop_assert!(
                steps.windows(2).all(|w| w[0] < w[1]),
                "steps not increasing: {:?}",
                steps
            );
        }

        // Successful results are fully recorded.
        for r in results.iter().flatten() {
            let kinds = &trails[&r.correlation_id];
            prop_assert_eq!(kinds.last(), Some(&AuditEventKind::Completed));
        }
        prop_assert!(h.audit.verify().await.map(|r| r.is_ok()).unwrap_or(false));
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_fault_schedules_never_break_the_guarantees(schedule in schedule(), exit_code in prop_oneof![Just(0), Just(1)]) {
        run_case(&schedule, exit_code)?;
    }
}
