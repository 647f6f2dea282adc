//! The fail-closed pipeline, step by step, on the in-memory doubles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::testing::{Entry, Fault};
use gateway_core::{
    ActionRequest, AgentLimits, AuditEventKind, AuditSink, Credential, Decision, ErrorKind,
    EventOutcome, GatewayError, JobStatus, NetworkAccess, Obligations, RunnerObligations, Secret,
    Stage,
};
use std::time::Duration;

fn statuses(h: &Harness, id: gateway_core::RequestId) -> Vec<AuditEventKind> {
    h.audit.events_for(id).iter().map(|e| e.kind).collect()
}

fn final_status(h: &Harness, id: gateway_core::RequestId) -> String {
    let events = h.audit.events_for(id);
    let last = events.last().expect("trail");
    last.details
        .get("status")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn allowed_action_runs_with_its_grant_and_is_fully_audited() {
    let h = harness(Parts::default());
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    assert!(out.job.succeeded());
    assert_eq!(out.agent.as_str(), "agent:a");
    assert!(out.grant.revoked);
    use AuditEventKind::*;
    assert_eq!(
        statuses(&h, out.correlation_id),
        vec![Requested, Decided, Granted, Started, Revoked, Completed]
    );
    // Same correlation id, agent and strictly increasing steps on every event.
    let events = h.audit.events_for(out.correlation_id);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.step, u32::try_from(i + 1).unwrap());
        assert_eq!(e.agent_id.as_ref().unwrap().as_str(), "agent:a");
        assert_eq!(e.action, "diag.echo");
    }
    // The job got the grant's token as a secret env var, and labels.
    let run = &h.runner.runs()[0];
    assert!(run.secret_env.contains_key("GATEWAY_GRANT_TOKEN"));
    assert_eq!(
        run.labels["agent-gateway.io/correlation-id"],
        out.correlation_id.to_string()
    );
    assert_eq!(run.command, vec!["echo".to_string(), "hi".to_string()]);
    assert!(h.audit.verify().await.unwrap().is_ok());
    assert_eq!(
        out.audit.sequence,
        h.audit.records().last().unwrap().sequence
    );
}

/// The groups the sink stored for one action, as event kinds: one entry per durable commit.
fn commits(h: &Harness, id: gateway_core::RequestId) -> Vec<Vec<AuditEventKind>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    for entry in h.journal.entries() {
        match entry {
            Entry::AuditAcked {
                correlation_id,
                kind,
                ..
            } if correlation_id == id => current.push(kind),
            Entry::AuditCommitted { correlation_id, .. } if correlation_id == id => {
                groups.push(std::mem::take(&mut current));
            }
            _ => {}
        }
    }
    groups
}

/// The write-ahead rule's commit budget (`docs/design.md`, "Two commits"): an allowed action
/// is two durable commits, a refused one is one, and the job starts only after commit 1.
#[tokio::test]
async fn an_allowed_action_is_two_commits_and_a_refusal_one() {
    use AuditEventKind::*;
    let h = harness(Parts::default());
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    assert_eq!(
        commits(&h, out.correlation_id),
        [
            vec![Requested, Decided, Granted, Started],
            vec![Revoked, Completed]
        ]
    );
    let journal = h.journal.entries();
    let pos = |f: &dyn Fn(&Entry) -> bool| journal.iter().position(f).unwrap();
    let commit_one = pos(&|e| matches!(e, Entry::AuditCommitted { .. }));
    let job = pos(&|e| matches!(e, Entry::JobStarted { .. }));
    let grant = pos(&|e| matches!(e, Entry::Granted { .. }));
    assert!(grant < commit_one && commit_one < job, "{journal:?}");

    let h = harness(Parts {
        policy: gateway_core::testing::MemoryPolicy::from_fn(|_| Decision::deny("not today")),
        ..Parts::default()
    });
    let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
    assert_eq!(
        commits(&h, err.correlation_id()),
        [vec![Requested, Decided, Completed]]
    );

    // Refused before the decision (no such action): one commit too.
    let h = harness(Parts::default());
    let mut bad = echo("hi");
    bad.action = "no.such.action".into();
    let err = h.gateway.execute(agent_a(), bad).await.unwrap_err();
    assert_eq!(
        commits(&h, err.correlation_id()),
        [vec![Requested, Rejected]]
    );
}

#[tokio::test]
async fn secrets_never_reach_the_audit_trail() {
    let h = harness(Parts::default());
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    let records = serde_json::to_string(&h.audit.records()).unwrap();
    let grant = &h.broker.issued()[0];
    let token = grant.job_env["GATEWAY_GRANT_TOKEN"]
        .expose_str()
        .unwrap()
        .to_owned();
    assert!(!records.contains(&token), "grant token in audit");
    assert!(!records.contains("tok-a"), "credential in audit");
    assert!(
        !format!("{out:?}").contains(&token),
        "grant token in outcome Debug"
    );
}

#[tokio::test]
async fn a_job_that_prints_its_credential_hands_it_to_nobody() {
    let h = harness(Parts::default());
    let out = h
        .gateway
        .execute(agent_a(), ActionRequest::new("diag.leak", "diag:x"))
        .await
        .unwrap();
    let token = h.broker.issued()[0].job_env["GATEWAY_GRANT_TOKEN"]
        .expose_str()
        .unwrap()
        .to_owned();
    assert_eq!(out.job.stdout, "token=[REDACTED]", "{out:?}");
    let records = serde_json::to_string(&h.audit.records()).unwrap();
    assert!(!records.contains(&token), "grant token in audit");
}

#[tokio::test]
async fn deny_stops_before_grant_and_run() {
    let h = harness(Parts {
        policy: gateway_core::testing::MemoryPolicy::from_fn(|_| Decision::deny("not today")),
        ..Parts::default()
    });
    let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
    match &err {
        GatewayError::Denied { reasons, .. } => assert_eq!(reasons, &vec!["not today".to_string()]),
        other => panic!("expected deny, got {other:?}"),
    }
    assert!(h.broker.issued().is_empty());
    assert!(h.runner.runs().is_empty());
    use AuditEventKind::*;
    assert_eq!(
        statuses(&h, err.correlation_id()),
        vec![Requested, Decided, Completed]
    );
    assert_eq!(final_status(&h, err.correlation_id()), "denied");
}

#[tokio::test]
async fn policy_errors_timeouts_and_panics_are_denies() {
    for fault in [Fault::Error, Fault::Hang, Fault::Panic] {
        let parts = Parts::default();
        parts.policy.faults.clone().always(fault);
        let h = harness(parts);
        let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
        let GatewayError::Denied { reasons, .. } = &err else {
            panic!("{fault:?}: {err:?}")
        };
        assert!(
            reasons[0].contains("no valid policy decision"),
            "{reasons:?}"
        );
        assert!(h.runner.runs().is_empty(), "{fault:?}: job ran");
        assert!(h.broker.issued().is_empty());
        let decided = &h.audit.events_for(err.correlation_id())[1];
        assert_eq!(decided.kind, AuditEventKind::Decided);
        assert!(!decided.decision.as_ref().unwrap().allow);
    }
}

#[tokio::test]
async fn ttl_is_clamped_and_job_timeout_never_exceeds_it() {
    let policy = gateway_core::testing::MemoryPolicy::from_fn(|_| Decision {
        obligations: Obligations {
            max_ttl_seconds: Some(1),
            ..Obligations::default()
        },
        ..Decision::allow()
    });
    let h = harness(Parts {
        policy,
        ..Parts::default()
    });
    let out = h
        .gateway
        .execute(agent_a(), echo("hi").with_ttl_seconds(3600))
        .await
        .unwrap();
    assert_eq!(out.grant.ttl_seconds, 1);
    let run = &h.runner.runs()[0];
    assert!(
        run.limits.timeout <= Duration::from_secs(1),
        "{:?}",
        run.limits.timeout
    );

    // The gateway's own maximum applies when the policy says nothing.
    let mut parts = Parts::default();
    parts.config.max_grant_ttl = Duration::from_secs(30);
    let h = harness(parts);
    let out = h
        .gateway
        .execute(agent_a(), echo("hi").with_ttl_seconds(3600))
        .await
        .unwrap();
    assert_eq!(out.grant.ttl_seconds, 30);
    // And the request's own smaller TTL wins.
    let out = h
        .gateway
        .execute(agent_a(), echo("hi").with_ttl_seconds(7))
        .await
        .unwrap();
    assert_eq!(out.grant.ttl_seconds, 7);
}

#[tokio::test]
async fn policy_runner_obligations_tighten_the_job() {
    let policy = gateway_core::testing::MemoryPolicy::from_fn(|_| Decision {
        obligations: Obligations {
            runner: RunnerObligations {
                memory_bytes: Some(1 << 20),
                pids: Some(3),
                timeout_seconds: Some(1),
                network: NetworkAccess::None,
                cpu_millis: Some(100),
            },
            ..Obligations::default()
        },
        ..Decision::allow()
    });
    let h = harness(Parts {
        policy,
        ..Parts::default()
    });
    h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    let limits = &h.runner.runs()[0].limits;
    assert_eq!(
        (limits.memory_bytes, limits.pids, limits.cpu_millis),
        (1 << 20, 3, 100)
    );
    assert_eq!(limits.timeout, Duration::from_secs(1));
}

#[tokio::test]
async fn failing_job_still_revokes() {
    let h = harness(Parts {
        runner: gateway_core::testing::MemoryRunner::new().with_exit_code(2),
        ..Parts::default()
    });
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    assert_eq!(out.job.status, JobStatus::Exited { code: 2 });
    assert!(out.grant.revoked);
    assert_eq!(
        h.broker.revocations().values().copied().collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(final_status(&h, out.correlation_id), "failed");
    let last = h.audit.events_for(out.correlation_id).pop().unwrap();
    assert_eq!(last.outcome, Some(EventOutcome::Failure));
}

#[tokio::test]
async fn runner_error_panic_and_hang_still_revoke() {
    for fault in [Fault::Error, Fault::Panic, Fault::Hang] {
        let parts = Parts::default();
        parts.runner.faults.clone().always(fault);
        let h = harness(parts);
        let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
        assert_eq!(err.stage(), Some(Stage::Run), "{fault:?}: {err}");
        let revocations = h.broker.revocations();
        assert_eq!(revocations.len(), 1, "{fault:?}");
        assert!(revocations.values().all(|n| *n == 1));
        assert!(statuses(&h, err.correlation_id()).contains(&AuditEventKind::Revoked));
        assert_eq!(final_status(&h, err.correlation_id()), "error");
    }
}

#[tokio::test]
async fn broker_failure_means_no_run() {
    for fault in [Fault::Error, Fault::Panic, Fault::Hang] {
        let parts = Parts::default();
        parts.broker.grant_faults.clone().always(fault);
        let h = harness(parts);
        let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
        assert_eq!(err.stage(), Some(Stage::Grant), "{fault:?}");
        assert!(h.runner.runs().is_empty());
    }
}

#[tokio::test]
async fn audit_failure_of_commit_one_means_no_run_and_a_closed_trail() {
    // Commit 1 (append 0) holds requested + decided + granted + started: the only append before
    // the run.
    let parts = Parts::default();
    parts.audit.faults.clone().on_call(0, Fault::Error);
    let h = harness(parts);
    let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Audit), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        h.runner.runs().is_empty(),
        "commit 1 failed but the job ran"
    );
    // The grant issued before commit 1 was revoked, once.
    assert_eq!(h.broker.issued().len(), 1);
    assert!(h.broker.revocations().values().all(|c| *c == 1));
    assert_eq!(h.broker.revocations().len(), 1);
    // Nothing deferred was lost with the failed group: it is stored with the revocation and
    // the outcome (the sink has recovered), and the job never started.
    use AuditEventKind::*;
    assert_eq!(
        statuses(&h, err.correlation_id()),
        [Requested, Decided, Granted, Revoked, Completed]
    );
}

#[tokio::test]
async fn audit_failure_of_a_refusals_only_commit_is_an_audit_error_then_recorded() {
    let parts = Parts {
        policy: gateway_core::testing::MemoryPolicy::from_fn(|_| Decision::deny("not today")),
        ..Parts::default()
    };
    parts.audit.faults.clone().on_call(0, Fault::Error);
    let h = harness(parts);
    let err = h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Audit), "{err}");
    assert!(h.broker.issued().is_empty());
    // The fallback terminal record stores the deferred request and decision with it.
    use AuditEventKind::*;
    assert_eq!(
        statuses(&h, err.correlation_id()),
        [Requested, Decided, Completed]
    );
    assert_eq!(final_status(&h, err.correlation_id()), "error");
}

#[tokio::test]
async fn final_audit_failure_is_retried_then_reported_with_the_outcome() {
    // Appends: commit 1 (0), revoked + completed (1), retry (2).
    let parts = Parts::default();
    parts.audit.faults.clone().on_call(1, Fault::Error);
    let h = harness(parts);
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    assert_eq!(final_status(&h, out.correlation_id), "succeeded");
    // The revocation deferred into the failed group is stored by the retry, once.
    let kinds = statuses(&h, out.correlation_id);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditEventKind::Revoked)
            .count(),
        1,
        "{kinds:?}"
    );

    let parts = Parts::default();
    parts
        .audit
        .faults
        .clone()
        .on_call(1, Fault::Error)
        .on_call(2, Fault::Error);
    let h = harness(parts);
    match h.gateway.execute(agent_a(), echo("hi")).await.unwrap_err() {
        GatewayError::OutcomeNotRecorded { outcome, .. } => assert!(outcome.job.succeeded()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalid_requests_are_rejected_and_recorded() {
    let h = harness(Parts::default());
    let cases = [
        ActionRequest::new("no.such.action", "x"),
        ActionRequest::new("diag.echo", ""),
        echo("x").with_params(serde_json::json!([1, 2])),
        echo("x").with_params(serde_json::json!({"message": 5})),
        echo("x").with_params(serde_json::json!({"message": "a".repeat(20_000)})),
        echo("x").with_ttl_seconds(0),
        ActionRequest::new("broken.job", "x"),
        // NUL bytes, which no argv, environment or C API downstream can carry: refused before
        // the decision, so no grant is issued for a job that could never start.
        echo("a\0b"),
        echo("x").with_params(serde_json::json!({"message": "x", "\0": 1})),
        echo("x").with_intent("why\0not"),
    ];
    for req in cases {
        let err = h.gateway.execute(agent_a(), req.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{req:?}: {err}");
        assert!(h.broker.issued().is_empty(), "{req:?}: a grant was issued");
        let kinds = statuses(&h, req.id);
        assert_eq!(kinds.first(), Some(&AuditEventKind::Requested));
        assert!(kinds.last().unwrap().is_terminal());
    }
    for req in [
        echo("a\0b"),
        echo("x").with_params(serde_json::json!({"message": "x", "\0": 1})),
        echo("x").with_intent("why\0not"),
    ] {
        let err = h.gateway.execute(agent_a(), req.clone()).await.unwrap_err();
        assert!(err.to_string().contains("NUL byte"), "{req:?}: {err}");
    }
    // Deep nesting is refused without recursion trouble.
    let mut deep = serde_json::json!(1);
    for _ in 0..100 {
        deep = serde_json::json!({ "a": deep });
    }
    let err = h
        .gateway
        .execute(agent_a(), echo("x").with_params(deep))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn bad_credentials_are_unauthenticated_and_recorded_without_the_credential() {
    let h = harness(Parts::default());
    let creds = [
        Credential::bearer("wrong"),
        Credential::bearer(""),
        Credential::Bearer(Secret::new(vec![0xff, 0x00, 0xc3])),
        Credential::Bearer(Secret::new(vec![b'x'; 1024 * 1024])),
    ];
    for c in creds {
        let req = echo("x");
        let err = h.gateway.execute(c, req.clone()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
        let events = h.audit.events_for(req.id);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, AuditEventKind::Rejected);
        assert!(events[0].agent_id.is_none());
    }
    assert!(
        !serde_json::to_string(&h.audit.records())
            .unwrap()
            .contains("wrong")
    );
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn rate_and_concurrency_limits_are_enforced_per_agent_and_audited() {
    let mut parts = Parts::default();
    parts.config.agent_limits = AgentLimits {
        max_concurrent: 100,
        requests_per_second: 0.001,
        burst: 2,
        ..AgentLimits::default()
    };
    let h = harness(parts);
    h.gateway.execute(agent_a(), echo("1")).await.unwrap();
    h.gateway.execute(agent_a(), echo("2")).await.unwrap();
    let err = h.gateway.execute(agent_a(), echo("3")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(
        statuses(&h, err.correlation_id()),
        vec![AuditEventKind::Requested, AuditEventKind::Rejected]
    );
    // Another agent has its own bucket.
    h.gateway
        .execute(Credential::bearer("tok-b"), echo("4"))
        .await
        .unwrap();

    let mut parts = Parts {
        runner: gateway_core::testing::MemoryRunner::new()
            .with_duration(Duration::from_millis(500)),
        ..Parts::default()
    };
    parts.config.agent_limits = AgentLimits {
        max_concurrent: 1,
        requests_per_second: 1000.0,
        burst: 1000,
        ..AgentLimits::default()
    };
    let h = harness(parts);
    let g = h.gateway.clone();
    let first = tokio::spawn(async move { g.execute(agent_a(), echo("slow")).await });
    assert!(eventually(|| !h.runner.runs().is_empty()).await);
    let err = h
        .gateway
        .execute(agent_a(), echo("second"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(first.await.unwrap().is_ok());
    // The slot is released afterwards.
    h.gateway.execute(agent_a(), echo("third")).await.unwrap();
}

fn approval_policy() -> gateway_core::testing::MemoryPolicy {
    gateway_core::testing::MemoryPolicy::from_fn(|_| Decision {
        reasons: vec!["production change".into()],
        obligations: Obligations {
            require_approval: true,
            ..Obligations::default()
        },
        ..Decision::allow()
    })
}

#[tokio::test]
async fn approval_approve_deny_and_expire() {
    let mut parts = Parts {
        policy: approval_policy(),
        ..Parts::default()
    };
    parts.config.approval_timeout = Duration::from_millis(300);
    let h = harness(parts);

    // Expire.
    let err = h.gateway.execute(agent_a(), echo("x")).await.unwrap_err();
    let GatewayError::Denied { reasons, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reasons[0].contains("deadline"), "{reasons:?}");
    assert!(h.runner.runs().is_empty());

    let mut parts = Parts {
        policy: approval_policy(),
        ..Parts::default()
    };
    parts.config.approval_timeout = Duration::from_secs(10);
    let h = harness(parts);
    // Approve (by a human, not by the agent itself).
    let g = h.gateway.clone();
    let req = echo("x");
    let id = req.id;
    let task = tokio::spawn(async move { g.execute(agent_a(), req).await });
    assert!(pending_soon(&h.approvals, id).await);
    assert!(
        h.approvals
            .resolve(id, None, ballot("agent:a", true, "self"))
            .await
            .is_err()
    );
    h.approvals
        .resolve(id, None, ballot("human:alice", true, "CHG-42"))
        .await
        .unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.approved_by.as_deref(), Some("human:alice"));
    use AuditEventKind::*;
    assert_eq!(
        statuses(&h, id),
        vec![
            Requested,
            Decided,
            ApprovalRequested,
            ApprovalResolved,
            Granted,
            Started,
            Revoked,
            Completed
        ]
    );

    // Deny.
    let g = h.gateway.clone();
    let req = echo("y");
    let id = req.id;
    let task = tokio::spawn(async move { g.execute(agent_a(), req).await });
    assert!(pending_soon(&h.approvals, id).await);
    h.approvals
        .resolve(id, None, ballot("human:bob", false, "not now"))
        .await
        .unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert_eq!(h.runner.runs().len(), 1, "the denied request must not run");
}

#[tokio::test]
async fn approval_required_without_an_approver_is_denied() {
    let identity = std::sync::Arc::new(
        gateway_core::testing::MemoryIdentity::new().with_agent("tok-a", "agent:a"),
    );
    let runner = std::sync::Arc::new(gateway_core::testing::MemoryRunner::new());
    let gw = gateway_core::Gateway::builder()
        .identity(identity)
        .policy(std::sync::Arc::new(approval_policy()))
        .broker(std::sync::Arc::new(
            gateway_core::testing::MemoryBroker::new(),
        ))
        .runner(runner.clone())
        .audit(std::sync::Arc::new(
            gateway_core::testing::MemoryAuditSink::new(),
        ))
        .catalog(catalog())
        .build()
        .unwrap();
    let err = gw.execute(agent_a(), echo("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    assert!(err.to_string().contains("no approver"));
    assert!(runner.runs().is_empty());
}

#[tokio::test]
async fn dropping_the_execute_future_cancels_the_job_and_still_revokes_and_audits() {
    let h = harness(Parts {
        runner: gateway_core::testing::MemoryRunner::new().with_duration(Duration::from_secs(60)),
        ..Parts {
            config: {
                let mut c = fast_config();
                c.max_job_limits.timeout = Duration::from_secs(120);
                c
            },
            ..Parts::default()
        }
    });
    let g = h.gateway.clone();
    let req = echo("long");
    let id = req.id;
    let task = tokio::spawn(async move { g.execute(agent_a(), req).await });
    assert!(
        eventually(|| !h.runner.runs().is_empty()).await,
        "job never started"
    );
    task.abort(); // drops the execute future mid-run
    assert!(task.await.unwrap_err().is_cancelled());

    assert!(
        eventually(|| h.runner.torn_down() == 1).await,
        "no teardown"
    );
    assert!(
        eventually(|| h.broker.revocations().values().sum::<u32>() == 1).await,
        "no revoke"
    );
    assert!(
        eventually(|| h
            .audit
            .events_for(id)
            .last()
            .is_some_and(|e| e.kind == AuditEventKind::Completed))
        .await,
        "no terminal record"
    );
    assert_eq!(final_status(&h, id), "cancelled");
    // Teardown happened before revocation, and both after the start.
    let journal = h.journal.entries();
    let pos = |pred: &dyn Fn(&Entry) -> bool| journal.iter().position(pred).unwrap();
    let started = pos(&|e| matches!(e, Entry::JobStarted { .. }));
    let torn = pos(&|e| matches!(e, Entry::JobTornDown { .. }));
    let revoked = pos(&|e| matches!(e, Entry::RevokeCalled { .. }));
    assert!(started < torn && torn < revoked, "{journal:?}");
}

#[tokio::test]
async fn dropping_before_the_grant_cancels_without_running() {
    let parts = Parts::default();
    // The policy hangs (up to its 5 s timeout), so the drop below lands while it decides.
    // Nothing is stored before then: `requested` is deferred.
    parts.policy.faults.clone().always(Fault::Hang);
    let mut parts = parts;
    parts.config.policy_timeout = Duration::from_secs(5);
    let h = harness(parts);
    let g = h.gateway.clone();
    let req = echo("x");
    let id = req.id;
    let task = tokio::spawn(async move { g.execute(agent_a(), req).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.audit.events_for(id).is_empty());
    task.abort();
    assert!(
        eventually(|| h
            .audit
            .events_for(id)
            .last()
            .is_some_and(|e| e.kind == AuditEventKind::Completed))
        .await
    );
    assert_eq!(final_status(&h, id), "cancelled");
    use AuditEventKind::*;
    assert_eq!(statuses(&h, id), [Requested, Completed]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.runner.runs().is_empty());
    assert!(h.broker.issued().is_empty());
}

/// The gateway redacts every event before the sink sees it: the in-memory sink stores events as
/// given, so anything it holds came from the gateway as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_params_intent_and_output_reach_no_in_memory_sink() {
    let sink = std::sync::Arc::new(gateway_core::testing::MemoryAuditSink::new());
    gateway_core::conformance::redaction::secrets_reach_no_sink(sink.clone()).await;
    assert!(sink.verify().await.unwrap().is_ok());
}
