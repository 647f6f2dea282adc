//! Recovery across replicas sharing one state store: a running action is held under a lease
//! its replica renews; when that replica stops, another replica's sweep revokes the grant,
//! reaps the job, closes the trail and records the action as abandoned, exactly once. A
//! replica that no longer holds its action stops the job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::audit::AuditSink as _;
use gateway_core::state::{ActionRecord, Phase, StateError, StateStore};
use gateway_core::testing::MemoryRunner;
use gateway_core::{AuditEventKind, ErrorKind, GatewayConfig, GatewayError};
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(400);

fn config() -> GatewayConfig {
    let mut config = fast_config();
    config.run_lease = LEASE;
    config.max_job_limits.timeout = Duration::from_secs(60);
    config
}

fn long_job_harness() -> Harness {
    harness(Parts {
        runner: MemoryRunner::new().with_duration(Duration::from_secs(30)),
        config: config(),
        ..Parts::default()
    })
}

#[tokio::test]
async fn a_run_whose_replica_stopped_is_revoked_reaped_and_abandoned_once() {
    let h = long_job_harness();
    let request = echo("killed");
    let id = request.id;
    let running = kill_replica_a_in(&h, request, Phase::Running).await;
    let run = running
        .run
        .clone()
        .expect("a running action records its run");
    assert_eq!(run.replica, h.gateway.replica());
    assert_eq!(run.grant.id, h.broker.issued()[0].id);

    let reaper = Arc::new(MemoryRunner::new());
    let b = replica_b(&h, reaper.clone(), config());
    let early = b.recover().await.unwrap();
    assert_eq!(early.runs_abandoned, 0, "swept before the lease passed");
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    let swept = b.recover().await.unwrap();
    assert_eq!(swept.runs_abandoned, 1, "{swept:?}");
    assert_eq!(b.recover().await.unwrap().runs_abandoned, 0, "swept twice");

    // The grant was revoked once, by the broker that issued it.
    assert_eq!(h.broker.revocations().get(&run.grant.id), Some(&1));
    // The job's environment was handed to the runner's reaper.
    let reaped = reaper.reaped();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].correlation_id, id);
    assert_eq!(reaped[0].runner, run.runner);
    // The trail continues where A's stopped, and ends.
    let events = h.audit.events_for(id);
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            AuditEventKind::Requested,
            AuditEventKind::Decided,
            AuditEventKind::Granted,
            AuditEventKind::Started,
            AuditEventKind::Revoked,
            AuditEventKind::Completed,
        ]
    );
    let steps: Vec<u32> = events.iter().map(|e| e.step).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    let completed = events.last().unwrap();
    assert_eq!(completed.details["grant_revoked"], serde_json::json!(true));
    let reason = completed.details["reason"].as_str().unwrap();
    assert!(reason.contains("abandoned"), "{reason}");
    assert!(h.audit.verify().await.unwrap().is_ok());
    // The store says so, for the agent's status reads.
    let closed = h.state.get(&key_a(id)).await.unwrap().unwrap();
    assert_eq!(closed.phase, Phase::Abandoned);
    assert_eq!(closed.lease_until, None);
    assert_eq!(
        closed.outcome.as_ref().unwrap()["kind"],
        serde_json::json!("unavailable")
    );
}

#[tokio::test]
async fn a_live_replica_keeps_a_job_longer_than_its_lease() {
    let h = harness(Parts {
        runner: MemoryRunner::new().with_duration(LEASE * 4),
        config: config(),
        ..Parts::default()
    });
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), config());
    let request = echo("long");
    let id = request.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), request).await });
    phase_soon(&h, id, Phase::Running).await;
    let mut swept = 0;
    while !task.is_finished() {
        swept += b.recover().await.unwrap().runs_abandoned;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let outcome = task.await.unwrap().expect("the job ran to its end");
    assert!(outcome.job.succeeded());
    assert_eq!(swept, 0, "a held action was swept");
    assert_eq!(
        h.state.get(&key_a(id)).await.unwrap().unwrap().phase,
        Phase::Completed
    );
    assert_eq!(h.broker.revocations().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn a_replica_that_lost_its_action_stops_the_job() {
    let h = long_job_harness();
    let request = echo("taken over");
    let id = request.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), request).await });
    phase_soon(&h, id, Phase::Running).await;
    // What a sweep of another replica does when it takes the action over.
    let take_over = |r: &mut ActionRecord| -> Result<(), StateError> {
        if let Some(run) = r.run.as_mut() {
            run.replica = "replica-b".into();
        }
        Ok(())
    };
    h.state.update(&key_a(id), &take_over).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the job did not stop")
        .unwrap()
        .unwrap_err();
    let GatewayError::Backend { stage, kind, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*stage, gateway_core::Stage::State);
    assert_eq!(*kind, ErrorKind::Conflict);
    assert!(
        err.to_string().contains("took the running action over"),
        "{err}"
    );
    // A still revokes its own grant on the way out (revocation is idempotent).
    assert_eq!(h.broker.revocations().values().sum::<u32>(), 1);
}

#[tokio::test]
async fn a_grant_that_cannot_be_revoked_is_retried_by_the_next_sweep() {
    let h = long_job_harness();
    let request = echo("broker down");
    let id = request.id;
    kill_replica_a_in(&h, request, Phase::Running).await;
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), config());
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;

    h.broker
        .revoke_faults
        .clone()
        .always(gateway_core::testing::Fault::Error);
    let first = b.recover().await.unwrap();
    assert_eq!((first.runs_abandoned, first.runs_retrying), (0, 1));
    assert_eq!(
        h.state.get(&key_a(id)).await.unwrap().unwrap().phase,
        Phase::Running
    );
    assert!(
        h.audit
            .events_for(id)
            .iter()
            .all(|e| e.kind != AuditEventKind::Completed),
        "closed before the grant was revoked"
    );

    h.broker.revoke_faults.clear();
    // The failed sweep holds the action for one lease; then any sweep may try again.
    tokio::time::sleep(LEASE + Duration::from_millis(100)).await;
    let second = b.recover().await.unwrap();
    assert_eq!(second.runs_abandoned, 1, "{second:?}");
    assert_eq!(
        h.state.get(&key_a(id)).await.unwrap().unwrap().phase,
        Phase::Abandoned
    );
}
