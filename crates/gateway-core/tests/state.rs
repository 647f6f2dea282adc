//! The pipeline on its state store: a request id is claimed once per agent, every phase is
//! stored, approvals are votes in the store, and a store that fails stops the action.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::approval::{ApprovalRule, TicketState};
use gateway_core::state::{ActionKey, ActionRecord, Phase, StateError, StateStore};
use gateway_core::{AgentId, AuditEventKind, Decision, ErrorKind, GatewayError, Obligations};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use time::OffsetDateTime;

fn agent(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

fn approval_policy(rule: ApprovalRule) -> gateway_core::testing::MemoryPolicy {
    gateway_core::testing::MemoryPolicy::from_fn(move |_| Decision {
        obligations: Obligations {
            require_approval: true,
            approval: rule.clone(),
            ..Obligations::default()
        },
        ..Decision::allow()
    })
}

#[tokio::test]
async fn a_repeated_id_is_answered_from_the_store_and_never_runs_twice() {
    let h = harness(Parts::default());
    let request = echo("once");
    let id = request.id;
    let first = h.gateway.execute(agent_a(), request.clone()).await.unwrap();
    let trail = h.audit.events_for(id).len();

    let err = h
        .gateway
        .execute(agent_a(), request.clone())
        .await
        .unwrap_err();
    let GatewayError::Duplicate { record, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(record.phase, Phase::Completed);
    assert_eq!(record.request_hash, request.content_hash());
    let stored = record.outcome.as_ref().expect("outcome document");
    assert_eq!(stored["job"]["stdout"], serde_json::json!(first.job.stdout));
    assert_eq!(h.runner.runs().len(), 1, "the repeat ran");
    assert_eq!(
        h.audit.events_for(id).len(),
        trail,
        "the repeat was recorded"
    );
    let started = h
        .audit
        .events_for(id)
        .iter()
        .filter(|e| e.kind == AuditEventKind::Started)
        .count();
    assert_eq!(started, 1);

    // Another agent may use the same id: it is a different key, and it runs.
    h.gateway
        .execute(gateway_core::Credential::bearer("tok-b"), request)
        .await
        .unwrap();
    assert_eq!(h.runner.runs().len(), 2);
}

#[tokio::test]
async fn concurrent_repeats_run_once() {
    let h = harness(Parts::default());
    let request = echo("race");
    let runs = (0..8).map(|_| h.gateway.execute(agent_a(), request.clone()));
    let results = futures::future::join_all(runs).await;
    let ran = results.iter().filter(|r| r.is_ok()).count();
    let duplicates = results
        .iter()
        .filter(|r| matches!(r, Err(GatewayError::Duplicate { .. })))
        .count();
    assert_eq!((ran, duplicates), (1, 7), "{results:?}");
    assert_eq!(h.runner.runs().len(), 1);
}

#[tokio::test]
async fn every_phase_is_visible_and_refusals_keep_their_reason() {
    let parts = Parts {
        policy: gateway_core::testing::MemoryPolicy::from_fn(|input| {
            if input.params["message"] == "no" {
                Decision::deny("not this message")
            } else {
                Decision::allow()
            }
        }),
        ..Parts::default()
    };
    let h = harness(parts);
    let a = agent("agent:a");
    let denied = echo("no");
    let err = h
        .gateway
        .execute(agent_a(), denied.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Denied);
    let record = h
        .gateway
        .action_state(&a, denied.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.phase, Phase::Failed);
    let doc = record.outcome.unwrap();
    assert_eq!(doc["kind"], "denied");
    assert_eq!(doc["reasons"], serde_json::json!(["not this message"]));
    assert!(record.expires_at.unwrap() > OffsetDateTime::now_utc() + time::Duration::minutes(30));
    // Invisible to another agent.
    let b = agent("agent:b");
    assert_eq!(h.gateway.action_state(&b, denied.id).await.unwrap(), None);
}

#[tokio::test]
async fn an_unauthenticated_request_claims_nothing() {
    let h = harness(Parts::default());
    let request = echo("stranger");
    let err = h
        .gateway
        .execute(gateway_core::Credential::bearer("nobody"), request.clone())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    assert!(h.state.is_empty(), "a stranger reserved an id");
    h.gateway.execute(agent_a(), request).await.unwrap();
}

#[tokio::test]
async fn a_waiting_approval_holds_no_slot_and_the_reason_is_recorded() {
    let mut parts = Parts {
        policy: gateway_core::testing::MemoryPolicy::from_fn(|input| {
            let mut d = Decision::allow();
            d.obligations.require_approval = input.params["message"] == "approve me";
            d
        }),
        ..Parts::default()
    };
    parts.config.agent_limits.max_concurrent = 1;
    let h = harness(parts);
    let waiting = echo("approve me");
    let id = waiting.id;
    let g = h.gateway.clone();
    let task = tokio::spawn(async move { g.execute(agent_a(), waiting).await });
    assert!(pending_soon(&h.approvals, id).await);
    // The one slot is free while a human decides.
    h.gateway
        .execute(agent_a(), echo("meanwhile"))
        .await
        .unwrap();
    let ticket = h.approvals.pending().await.unwrap().remove(0);
    let mut vote = ballot("human:alice", true, "CHG-42");
    vote.request_hash = Some(ticket.request.request_hash.clone());
    assert_eq!(
        h.approvals.resolve(id, None, vote).await.unwrap(),
        TicketState::Approved
    );
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.approved_by.as_deref(), Some("human:alice"));
    let resolved = h
        .audit
        .events_for(id)
        .into_iter()
        .find(|e| e.kind == AuditEventKind::ApprovalResolved)
        .unwrap();
    assert_eq!(resolved.details["verdict"]["reason"], "CHG-42");
    assert_eq!(resolved.details["votes"][0]["reason"], "CHG-42");
    assert_eq!(
        resolved.details["request_hash"],
        ticket.request.request_hash
    );
}

#[tokio::test]
async fn a_quorum_of_distinct_approvers_none_of_them_the_owner() {
    let parts = Parts {
        policy: approval_policy(ApprovalRule {
            quorum: 2,
            separate_from_owner: true,
        }),
        ..Parts::default()
    };
    let h = harness(parts);
    let request = echo("two keys");
    let id = request.id;
    let g = h.gateway.clone();
    let task = tokio::spawn(async move { g.execute(agent_a(), request).await });
    assert!(pending_soon(&h.approvals, id).await);
    let owner = h.approvals.pending().await.unwrap()[0]
        .request
        .owner
        .clone();
    assert!(!owner.is_empty());
    let refused = h
        .approvals
        .resolve(id, None, ballot(&owner, true, "mine"))
        .await;
    assert!(refused.is_err(), "the owner approved: {refused:?}");
    assert_eq!(
        h.approvals
            .resolve(id, None, ballot("human:alice", true, "one"))
            .await
            .unwrap(),
        TicketState::Pending {
            approvals: 1,
            quorum: 2
        }
    );
    assert!(
        h.approvals
            .resolve(id, None, ballot("human:alice", true, "again"))
            .await
            .is_err()
    );
    assert!(h.runner.runs().is_empty(), "ran on one approval of two");
    h.approvals
        .resolve(id, None, ballot("human:bob", true, "two"))
        .await
        .unwrap();
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.approved_by.as_deref(), Some("human:alice, human:bob"));
    assert_eq!(h.runner.runs().len(), 1);
}

fn gateway_on(store: Arc<FaultyStore>) -> (gateway_core::Gateway, Harness) {
    let h = harness(Parts::default());
    let gateway = gateway_core::Gateway::builder()
        .identity(h.identity.clone())
        .policy(h.policy.clone())
        .broker(h.broker.clone())
        .runner(h.runner.clone())
        .audit(h.audit.clone())
        .state(store)
        .catalog(catalog())
        .config(fast_config())
        .build()
        .unwrap();
    (gateway, h)
}

#[tokio::test]
async fn a_store_that_fails_stops_the_action_before_and_after_the_grant() {
    let store = Arc::new(FaultyStore::default());
    let (gateway, h) = gateway_on(store.clone());

    store.fail_claims.store(true, Ordering::SeqCst);
    let request = echo("no claim");
    let err = gateway
        .execute(agent_a(), request.clone())
        .await
        .unwrap_err();
    assert_eq!(err.stage(), Some(gateway_core::Stage::State), "{err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(h.broker.issued().is_empty(), "granted without a claim");
    let kinds: Vec<_> = h
        .audit
        .events_for(request.id)
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, [AuditEventKind::Rejected]);

    store.fail_claims.store(false, Ordering::SeqCst);
    store.fail_running.store(true, Ordering::SeqCst);
    let request = echo("no running");
    let err = gateway
        .execute(agent_a(), request.clone())
        .await
        .unwrap_err();
    assert_eq!(err.stage(), Some(gateway_core::Stage::State), "{err}");
    assert!(h.runner.runs().is_empty(), "ran without its running state");
    assert_eq!(
        h.broker.revocations().values().sum::<u32>(),
        1,
        "the grant was not revoked"
    );
    let key = ActionKey::new(agent("agent:a"), request.id);
    assert_eq!(store.get(&key).await.unwrap().unwrap().phase, Phase::Failed);
}

#[tokio::test]
async fn finished_records_past_their_retention_are_pruned_as_claims_go_on() {
    let h = harness(Parts::default());
    let who = gateway_core::AgentIdentity::new(
        agent("agent:old"),
        "team",
        gateway_core::AuthMethod::StaticKey { key_id: "k".into() },
    );
    let old = ActionRecord::received(&echo("old"), &who, OffsetDateTime::now_utc());
    h.state.claim(&old).await.unwrap();
    let retention = std::time::Duration::ZERO;
    gateway_core::StateStoreExt::advance(&*h.state, &old.key, Phase::Failed, None, retention)
        .await
        .unwrap();
    let live = ActionRecord::received(&echo("live"), &who, OffsetDateTime::now_utc());
    h.state.claim(&live).await.unwrap();
    for _ in 0..1024 {
        h.gateway.execute(agent_a(), echo("x")).await.unwrap();
    }
    let mut pruned = false;
    for _ in 0..200 {
        if h.state.get(&old.key).await.unwrap().is_none() {
            pruned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(pruned, "an expired record outlived 1024 claims");
    assert!(
        h.state.get(&live.key).await.unwrap().is_some(),
        "a live record was pruned"
    );
    assert_eq!(h.state.len(), 1024 + 1, "the retained records stay");
}

fn expire_lease(record: &mut ActionRecord) -> Result<(), StateError> {
    record.lease_until = Some(OffsetDateTime::now_utc() - time::Duration::seconds(1));
    Ok(())
}

#[tokio::test]
async fn a_waiter_renews_its_lease_and_an_orphaned_approval_is_abandoned() {
    let parts = Parts {
        policy: approval_policy(ApprovalRule::default()),
        ..Parts::default()
    };
    let h = harness(parts);
    let request = echo("waiting");
    let id = request.id;
    let key = ActionKey::new(agent("agent:a"), id);
    let g = h.gateway.clone();
    let task = tokio::spawn(async move { g.execute(agent_a(), request).await });
    assert!(pending_soon(&h.approvals, id).await);

    // A live waiter renews a lease that runs low.
    let short = |r: &mut ActionRecord| {
        r.lease_until = Some(OffsetDateTime::now_utc() + time::Duration::seconds(1));
        Ok(())
    };
    h.state.update(&key, &short).await.unwrap();
    let mut renewed = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let lease = h
            .state
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .lease_until
            .unwrap();
        if lease > OffsetDateTime::now_utc() + time::Duration::seconds(5) {
            renewed = true;
            break;
        }
    }
    assert!(renewed, "the waiter did not renew its lease");
    task.abort();
    let _ = task.await;

    // An approval whose waiter is gone: not listed, not votable, and the sweep closes it.
    let orphan = echo("orphan");
    let who = gateway_core::AgentIdentity::new(
        agent("agent:a"),
        "team",
        gateway_core::AuthMethod::StaticKey { key_id: "k".into() },
    );
    let record = ActionRecord::received(&orphan, &who, OffsetDateTime::now_utc());
    h.state.claim(&record).await.unwrap();
    let ticket = gateway_core::approval::ApprovalTicket::new(gateway_core::ApprovalRequest {
        correlation_id: orphan.id,
        agent: who.id.clone(),
        owner: who.owner.clone(),
        action: orphan.action.clone(),
        resource: orphan.resource.clone(),
        intent: orphan.intent.clone(),
        params: orphan.params.clone(),
        reasons: vec![],
        requested_ttl_seconds: orphan.requested_ttl_seconds,
        request_hash: orphan.content_hash(),
        rule: ApprovalRule::default(),
        deadline: OffsetDateTime::now_utc() + time::Duration::minutes(5),
    });
    gateway_core::StateStoreExt::await_approval(&*h.state, &record.key, ticket, None)
        .await
        .unwrap();
    assert!(
        pending_soon(&h.approvals, orphan.id).await,
        "a live ticket is listed"
    );
    h.state.update(&record.key, &expire_lease).await.unwrap();
    let listed = h.approvals.pending().await.unwrap();
    assert!(
        listed.iter().all(|t| t.request.correlation_id != orphan.id),
        "orphan listed"
    );
    let vote = h
        .approvals
        .resolve(
            orphan.id,
            Some(&who.id),
            ballot("human:alice", true, "late"),
        )
        .await;
    assert!(
        matches!(
            vote,
            Err(gateway_core::approvals::ResolveError::Refused(
                gateway_core::approval::VoteRefused::Abandoned
            ))
        ),
        "{vote:?}"
    );
    let abandoned = h.gateway.abandon_orphaned_approvals().await.unwrap();
    assert!(abandoned >= 1, "{abandoned}");
    let stored = h.state.get(&record.key).await.unwrap().unwrap();
    assert_eq!(stored.phase, Phase::Abandoned);
    assert_eq!(stored.outcome.as_ref().unwrap()["kind"], "unavailable");
    let trail = h.audit.events_for(orphan.id);
    let last = trail.last().expect("a terminal record");
    assert_eq!(last.kind, AuditEventKind::Completed);
    assert_eq!(
        last.step, 4,
        "continues after requested, decided, approval_requested"
    );
    assert_eq!(
        h.gateway.abandon_orphaned_approvals().await.unwrap(),
        0,
        "closed once"
    );
}
