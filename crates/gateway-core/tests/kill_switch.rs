//! The kill switch: a locked agent (or every agent of an owner) is refused new requests and its
//! live actions are stopped, on every replica sharing the store; locking and unlocking are
//! audited; a list that cannot be read refuses requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::approval::ApprovalRule;
use gateway_core::audit::AuditSink as _;
use gateway_core::state::{LockTarget, Phase};
use gateway_core::testing::{MemoryPolicy, MemoryRunner};
use gateway_core::{
    AgentId, AuditEventKind, Decision, ErrorKind, Gateway, GatewayError, Obligations, Stage,
};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn agent(name: &str) -> LockTarget {
    LockTarget::Agent(AgentId::new(name).unwrap())
}

fn long_jobs() -> Harness {
    let mut config = fast_config();
    config.max_job_limits.timeout = Duration::from_secs(60);
    harness(Parts {
        runner: MemoryRunner::new().with_duration(Duration::from_secs(30)),
        config,
        ..Parts::default()
    })
}

#[tokio::test]
async fn a_locked_agent_is_refused_until_unlocked_and_both_are_audited() {
    let h = harness(Parts::default());
    let report = h
        .gateway
        .lock(agent("agent:a"), "human:alice", "INC-9: leaked key")
        .await
        .unwrap();
    assert_eq!(report.stopped_here, 0);
    assert_eq!(
        h.gateway.locks().await.unwrap(),
        std::slice::from_ref(&report.lock)
    );

    let refused = echo("while locked");
    let err = h
        .gateway
        .execute(agent_a(), refused.clone())
        .await
        .unwrap_err();
    let GatewayError::Denied { reasons, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reasons[0].contains("INC-9"), "{reasons:?}");
    assert!(reasons[0].contains("human:alice"), "{reasons:?}");
    assert!(h.broker.issued().is_empty(), "a locked agent got a grant");
    let kinds: Vec<_> = h
        .audit
        .events_for(refused.id)
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [AuditEventKind::Requested, AuditEventKind::Completed]
    );
    // Another agent is not locked.
    h.gateway
        .execute(gateway_core::Credential::bearer("tok-b"), echo("b"))
        .await
        .unwrap();

    assert!(
        h.gateway
            .unlock(agent("agent:a"), "human:bob", "INC-9 closed")
            .await
            .unwrap()
    );
    // The request path goes by a list at most LOCK_CACHE old.
    tokio::time::sleep(gateway_core::gateway::LOCK_CACHE).await;
    h.gateway.execute(agent_a(), echo("after")).await.unwrap();

    let all = h.audit.read(None, 1000).await.unwrap();
    let locked = all
        .iter()
        .find(|r| r.event.kind == AuditEventKind::AgentLocked)
        .expect("agent_locked recorded");
    assert_eq!(locked.event.resource, "agent:agent:a");
    assert_eq!(locked.event.details["locked_by"], "human:alice");
    assert_eq!(locked.event.details["reason"], "INC-9: leaked key");
    let unlocked = all
        .iter()
        .find(|r| r.event.kind == AuditEventKind::AgentUnlocked)
        .expect("agent_unlocked recorded");
    assert_eq!(unlocked.event.details["unlocked_by"], "human:bob");
    assert!(h.audit.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn an_owner_lock_covers_every_agent_of_the_owner() {
    let h = harness(Parts::default());
    h.gateway
        .lock(
            LockTarget::Owner("test-owner".into()),
            "human:alice",
            "team offboarded",
        )
        .await
        .unwrap();
    for token in ["tok-a", "tok-b"] {
        let err = h
            .gateway
            .execute(gateway_core::Credential::bearer(token), echo("x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Denied, "{token}: {err:?}");
    }
}

#[tokio::test]
async fn a_lock_on_another_replica_stops_a_running_job_within_the_watch_period() {
    let h = long_jobs();
    let _watch = h.gateway.spawn_lock_watch(Duration::from_millis(100));
    let request = echo("running");
    let id = request.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), request).await });
    phase_soon(&h, id, Phase::Running).await;

    let b = replica_b(&h, Arc::new(MemoryRunner::new()), fast_config());
    let report = b
        .lock(agent("agent:a"), "human:alice", "INC-10")
        .await
        .unwrap();
    assert_eq!(report.stopped_here, 0, "B runs nothing of agent:a");
    let locked_at = std::time::Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the job was not stopped")
        .unwrap()
        .unwrap_err();
    let stopped_after = locked_at.elapsed();
    assert!(
        stopped_after < Duration::from_secs(1),
        "stopped {stopped_after:?} after the lock"
    );
    let GatewayError::Backend { stage, kind, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*stage, *kind), (Stage::KillSwitch, ErrorKind::Denied));
    assert!(err.to_string().contains("INC-10"), "{err}");
    // The grant was revoked, and the trail ends with the kill switch's record.
    assert_eq!(h.broker.revocations().values().sum::<u32>(), 1);
    let events = h.audit.events_for(id);
    let completed = events.last().unwrap();
    assert_eq!(completed.kind, AuditEventKind::Completed);
    assert_eq!(completed.details["stage"], "kill_switch");
    assert_eq!(completed.details["status"], "denied");
    assert_eq!(completed.details["grant_revoked"], true);
}

#[tokio::test]
async fn a_lock_stops_an_action_waiting_for_approval() {
    let h = harness(Parts {
        policy: MemoryPolicy::from_fn(|_| Decision {
            obligations: Obligations {
                require_approval: true,
                approval: ApprovalRule::default(),
                ..Obligations::default()
            },
            ..Decision::allow()
        }),
        ..Parts::default()
    });
    let request = echo("waiting");
    let id = request.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), request).await });
    assert!(pending_soon(&h.approvals, id).await);
    let report = h
        .gateway
        .lock(agent("agent:a"), "human:alice", "INC-11")
        .await
        .unwrap();
    assert_eq!(report.stopped_here, 1);
    // Well before the approval deadline (5 s): the lock, not the deadline, ended the wait.
    let err = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the wait was not stopped")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied, "{err:?}");
    assert!(err.to_string().contains("kill switch"), "{err}");
    assert!(h.broker.issued().is_empty(), "granted after the lock");
}

#[tokio::test]
async fn an_unreadable_lock_list_refuses_requests() {
    let h = harness(Parts::default());
    let store = Arc::new(FaultyStore::default());
    let gateway = Gateway::builder()
        .identity(h.identity.clone())
        .policy(h.policy.clone())
        .broker(h.broker.clone())
        .runner(h.runner.clone())
        .audit(h.audit.clone())
        .state(store.clone())
        .catalog(catalog())
        .config(fast_config())
        .build()
        .unwrap();
    gateway.execute(agent_a(), echo("up")).await.unwrap();
    store.fail_locks.store(true, Ordering::SeqCst);
    tokio::time::sleep(gateway_core::gateway::LOCK_CACHE).await;
    let err = gateway.execute(agent_a(), echo("down")).await.unwrap_err();
    let GatewayError::Backend { stage, kind, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*stage, *kind), (Stage::State, ErrorKind::Unavailable));
    assert_eq!(h.runner.runs().len(), 1, "ran without reading the locks");
}

#[tokio::test]
async fn lock_requests_without_a_name_or_reason_are_refused() {
    let h = harness(Parts::default());
    for (by, reason) in [
        ("", "why"),
        ("human:alice", "  "),
        ("human:alice", &*"x".repeat(5000)),
    ] {
        let err = h
            .gateway
            .lock(agent("agent:a"), by, reason)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    }
    assert!(h.gateway.locks().await.unwrap().is_empty());
}
