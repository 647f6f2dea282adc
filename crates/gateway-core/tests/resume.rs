//! Approvals outlive the replica that asked for them: when it stops, the ticket stays
//! answerable on every replica, and once approved a recovery sweep on another replica runs the
//! action exactly once, continuing its trail; a denial or an expiry closes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::approval::ApprovalRule;
use gateway_core::audit::AuditSink as _;
use gateway_core::state::{ActionRecord, Phase, StateError, StateStore};
use gateway_core::testing::{MemoryPolicy, MemoryRunner};
use gateway_core::{AuditEventKind, Decision, Obligations};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

fn needs_approval() -> MemoryPolicy {
    MemoryPolicy::from_fn(|_| Decision {
        obligations: Obligations {
            require_approval: true,
            approval: ApprovalRule::default(),
            ..Obligations::default()
        },
        ..Decision::allow()
    })
}

/// Submits `request` on replica A (the harness's gateway) in a runtime of its own, waits until
/// it waits for approval, kills that runtime (as a SIGKILL would), and lets its lease pass.
async fn ask_then_kill_replica_a(h: &Harness, request: gateway_core::ActionRequest) {
    let id = request.id;
    kill_replica_a_in(h, request, Phase::AwaitingApproval).await;
    // The lease (15 s) passes at once.
    let expire = |r: &mut ActionRecord| -> Result<(), StateError> {
        r.lease_until = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
        Ok(())
    };
    h.state.update(&key_a(id), &expire).await.unwrap();
}

#[tokio::test]
async fn an_approval_outlives_its_replica_and_runs_once_on_another() {
    let h = harness(Parts {
        policy: needs_approval(),
        ..Parts::default()
    });
    let request = echo("outlives");
    let id = request.id;
    ask_then_kill_replica_a(&h, request).await;
    let runner_b = Arc::new(MemoryRunner::new());
    let b = replica_b(&h, runner_b.clone(), fast_config());

    // Unanswered, it stays: listed, and not closed by a sweep.
    let swept = b.recover().await.unwrap();
    assert_eq!((swept.approvals_abandoned, swept.approvals_resumed), (0, 0));
    let listed = h.approvals.pending().await.unwrap();
    assert!(listed.iter().any(|t| t.request.correlation_id == id));

    h.approvals
        .resolve(id, None, ballot("human:alice", true, "CHG-1"))
        .await
        .unwrap();
    let swept = b.recover().await.unwrap();
    assert_eq!(swept.approvals_resumed, 1, "{swept:?}");
    let done = phase_soon(&h, id, Phase::Completed).await;
    assert_eq!(
        b.recover().await.unwrap().approvals_resumed,
        0,
        "resumed twice"
    );
    assert_eq!(runner_b.runs().len(), 1);
    assert_eq!(
        done.outcome.as_ref().unwrap()["approved_by"],
        serde_json::json!("human:alice")
    );

    // One trail, continued where A left it.
    let events = h.audit.events_for(id);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditEventKind::Requested,
            AuditEventKind::Decided,
            AuditEventKind::ApprovalRequested,
            AuditEventKind::ApprovalResolved,
            AuditEventKind::Granted,
            AuditEventKind::Started,
            AuditEventKind::Revoked,
            AuditEventKind::Completed,
        ]
    );
    let steps: Vec<u32> = events.iter().map(|e| e.step).collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert_eq!(events[3].details["votes"][0]["reason"], "CHG-1");
    assert!(h.audit.verify().await.unwrap().is_ok());
    assert_eq!(h.broker.revocations().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn an_unattended_denial_is_closed_with_its_verdict() {
    let h = harness(Parts {
        policy: needs_approval(),
        ..Parts::default()
    });
    let request = echo("denied later");
    let id = request.id;
    ask_then_kill_replica_a(&h, request).await;
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), fast_config());
    h.approvals
        .resolve(id, None, ballot("human:alice", false, "not today"))
        .await
        .unwrap();
    let swept = b.recover().await.unwrap();
    assert_eq!(swept.approvals_abandoned, 1, "{swept:?}");
    let closed = h.state.get(&key_a(id)).await.unwrap().unwrap();
    assert_eq!(closed.phase, Phase::Failed);
    let reasons = &closed.outcome.as_ref().unwrap()["reasons"];
    assert!(reasons.to_string().contains("not today"), "{reasons}");
    let kinds: Vec<_> = h.audit.events_for(id).iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[2..],
        [
            AuditEventKind::ApprovalRequested,
            AuditEventKind::ApprovalResolved,
            AuditEventKind::Completed,
        ]
    );
    assert!(h.broker.issued().is_empty(), "a denied action was granted");
}

#[tokio::test]
async fn a_live_waiter_keeps_its_approved_action() {
    let h = harness(Parts {
        policy: needs_approval(),
        runner: MemoryRunner::new().with_duration(Duration::from_millis(300)),
        ..Parts::default()
    });
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), fast_config());
    let request = echo("attended");
    let id = request.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), request).await });
    assert!(pending_soon(&h.approvals, id).await);
    h.approvals
        .resolve(id, None, ballot("human:alice", true, "ok"))
        .await
        .unwrap();
    let mut resumed = 0;
    while !task.is_finished() {
        resumed += b.recover().await.unwrap().approvals_resumed;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.await.unwrap().unwrap();
    assert_eq!(resumed, 0, "B took over an action its replica still held");
    assert_eq!(h.runner.runs().len(), 1);
}
