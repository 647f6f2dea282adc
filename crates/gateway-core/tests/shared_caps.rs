//! A concurrency cap that holds across replicas (`AgentLimits::across_replicas`): two gateways
//! on one state store give an agent capped at 1 one action at a time between them; a slot
//! comes back when its action ends, when it starts waiting for a human, and when the replica
//! holding it dies (its lease passes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::approval::ApprovalRule;
use gateway_core::testing::{MemoryPolicy, MemoryRunner};
use gateway_core::{AgentLimits, Decision, ErrorKind, GatewayConfig, Obligations};
use std::sync::Arc;
use std::time::Duration;

const LEASE: Duration = Duration::from_millis(400);

fn capped_at_one() -> GatewayConfig {
    let mut config = fast_config();
    config.agent_limits = AgentLimits {
        max_concurrent: 1,
        across_replicas: true,
        ..AgentLimits::unlimited()
    };
    config.run_lease = LEASE;
    config.max_job_limits.timeout = Duration::from_secs(60);
    config
}

fn harness_with(runner: MemoryRunner, policy: MemoryPolicy) -> Harness {
    harness(Parts {
        runner,
        policy,
        config: capped_at_one(),
        ..Parts::default()
    })
}

#[tokio::test]
async fn a_cap_of_one_holds_across_two_replicas_under_a_burst() {
    let slow = || MemoryRunner::new().with_duration(Duration::from_millis(500));
    let h = harness_with(slow(), MemoryPolicy::allow_all());
    let b = replica_b(&h, Arc::new(slow()), capped_at_one());
    let burst = (0..8).map(|n| {
        let gateway = if n % 2 == 0 {
            h.gateway.clone()
        } else {
            b.clone()
        };
        async move { gateway.execute(agent_a(), echo("burst")).await }
    });
    let results = futures::future::join_all(burst).await;
    let ran = results.iter().filter(|r| r.is_ok()).count();
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ran, 1, "{results:?}");
    assert_eq!(refused.len(), 7);
    for err in &refused {
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    }
    assert!(
        refused
            .iter()
            .any(|e| e.to_string().contains("across replicas")),
        "the other replica's refusals must name the shared cap: {refused:?}"
    );
    // The slot came back with the action's end: the next one runs, on either replica.
    b.execute(agent_a(), echo("after")).await.unwrap();
    // Another agent has its own cap.
    h.gateway
        .execute(gateway_core::Credential::bearer("tok-b"), echo("b"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dead_replicas_slot_comes_back_when_its_lease_passes() {
    let h = harness_with(
        MemoryRunner::new().with_duration(Duration::from_secs(30)),
        MemoryPolicy::allow_all(),
    );
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), capped_at_one());
    // Replica A takes the slot, runs, then dies.
    kill_replica_a_in(
        &h,
        echo("dies holding the slot"),
        gateway_core::Phase::Running,
    )
    .await;

    let err = b.execute(agent_a(), echo("too soon")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    // A slot is first taken for the run lease plus the policy's and the broker's deadlines
    // (the job's renewals shorten that to the run lease; A died before its first).
    let config = capped_at_one();
    let first_lease = config.run_lease + config.policy_timeout + config.broker_timeout;
    tokio::time::sleep(first_lease + Duration::from_millis(100)).await;
    b.execute(agent_a(), echo("after the lease"))
        .await
        .expect("the dead replica's slot did not come back");
}

#[tokio::test]
async fn waiting_for_a_human_gives_the_shared_slot_back() {
    let approval = MemoryPolicy::from_fn(|input| Decision {
        obligations: Obligations {
            require_approval: input.intent == "needs a human",
            approval: ApprovalRule::default(),
            ..Obligations::default()
        },
        ..Decision::allow()
    });
    let h = harness_with(MemoryRunner::new(), approval);
    let b = replica_b(&h, Arc::new(MemoryRunner::new()), capped_at_one());
    let waiting = echo("w").with_intent("needs a human");
    let id = waiting.id;
    let a = h.gateway.clone();
    let task = tokio::spawn(async move { a.execute(agent_a(), waiting).await });
    assert!(pending_soon(&h.approvals, id).await);
    // The waiting request on A holds no slot: B runs the agent's next action.
    b.execute(agent_a(), echo("meanwhile")).await.unwrap();
    h.approvals
        .resolve(id, None, ballot("human:alice", true, "ok"))
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_ok(), "{outcome:?}");
}
