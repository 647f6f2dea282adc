//! [`StateStore`] conformance: the atomicity and lifecycle every backend must give, so
//! replicas sharing one store never run a request twice or lose a vote.
//!
//! Every case uses fresh agent ids, so the suite runs on a store that holds other data (a
//! shared test database, an earlier interrupted run) and cases may run in any order.

use crate::action::ActionRequest;
use crate::approval::{ApprovalRequest, ApprovalRule, ApprovalTicket, ApprovalVote, TicketState};
use crate::grant::Grant;
use crate::identity::{AgentIdentity, AuthMethod};
use crate::ids::{AgentId, RequestId};
use crate::runner::{IsolationLevel, RunnerInfo};
use crate::state::{
    ActionKey, ActionRecord, AgentLock, Claim, ConcurrencySlots, LockList, LockTarget, Phase,
    RevocationList, RunLease, StateError, StateStore, StateStoreExt,
};
use std::time::Duration;
use time::OffsetDateTime;

const RETENTION: Duration = Duration::from_secs(3600);

/// Runs every case.
pub async fn run_all(store: &dyn StateStore) {
    records_round_trip_exactly(store).await;
    a_claim_is_per_agent_and_a_repeat_gets_the_original(store).await;
    concurrent_claims_have_exactly_one_winner(store).await;
    an_expired_record_frees_its_id_and_a_live_one_never_does(store).await;
    the_lifecycle_refuses_illegal_moves(store).await;
    concurrent_updates_are_serialised(store).await;
    a_failing_change_leaves_the_record_as_it_was(store).await;
    updating_a_missing_record_is_not_found(store).await;
    votes_count_once_and_a_quorum_approves(store).await;
    concurrent_votes_are_all_counted(store).await;
    in_phase_lists_oldest_first_within_the_limit(store).await;
    prune_removes_only_expired_records(store).await;
    a_run_lease_is_renewed_only_by_its_holder(store).await;
}

/// Runs every concurrency-slot case.
pub async fn run_slots(slots: &dyn ConcurrencySlots) {
    a_cap_holds_under_concurrent_acquisitions(slots).await;
    a_slot_is_renewed_and_released_only_by_its_holder(slots).await;
    a_slot_whose_lease_passed_is_free_again(slots).await;
}

/// Runs every lock-list case.
pub async fn run_locks(list: &dyn LockList) {
    a_lock_is_listed_until_lifted_and_replaced_by_a_newer_one(list).await;
}

/// Runs every revocation-list case.
pub async fn run_revocations(list: &dyn RevocationList) {
    a_revocation_holds_until_its_expiry_and_only_for_its_grant(list).await;
    a_revocation_is_never_shortened(list).await;
    prune_removes_only_past_revocations(list).await;
}

/// A fresh agent, unique to one case run.
pub fn agent(case: &str) -> AgentIdentity {
    let id =
        AgentId::new(format!("conformance:{case}-{}", RequestId::new())).expect("valid agent id");
    AgentIdentity::new(
        id,
        "team-conformance",
        AuthMethod::StaticKey { key_id: "k".into() },
    )
}

/// A request with params that stress a backend's JSON handling.
pub fn request() -> ActionRequest {
    ActionRequest::new("conformance.test", "conformance:resource")
        .with_params(serde_json::json!({
            "big": 9_007_199_254_740_993_u64,
            "text": "naïve \u{1F600} \"quoted\" \\ back",
            "nested": {"list": [1, 2.5, null, true]},
        }))
        .with_intent("prove the store keeps what it is given")
        .with_ttl_seconds(60)
}

fn received(who: &AgentIdentity) -> ActionRecord {
    ActionRecord::received(&request(), who, now())
}

/// The clock. Stores must keep timestamps to the nanosecond: the records they return are
/// compared with `==`, and the lifecycle rules set times from this clock.
fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

async fn claimed(store: &dyn StateStore, who: &AgentIdentity) -> ActionRecord {
    let record = received(who);
    assert_eq!(store.claim(&record).await.expect("claim"), Claim::Claimed);
    record
}

fn ticket(record: &ActionRecord, who: &AgentIdentity, quorum: u32) -> ApprovalTicket {
    let request = request();
    ApprovalTicket::new(ApprovalRequest {
        correlation_id: record.key.id,
        agent: who.id.clone(),
        owner: who.owner.clone(),
        action: request.action.clone(),
        resource: request.resource.clone(),
        intent: request.intent.clone(),
        params: request.params.clone(),
        reasons: vec!["conformance".into()],
        requested_ttl_seconds: request.requested_ttl_seconds,
        request_hash: request.content_hash(),
        rule: ApprovalRule {
            quorum,
            separate_from_owner: true,
        },
        deadline: now() + time::Duration::minutes(10),
    })
}

fn vote(approver: &str, approve: bool) -> ApprovalVote {
    ApprovalVote {
        approver: approver.into(),
        approve,
        reason: format!("CHG-{approver}"),
        at: now(),
    }
}

/// A stored record reads back field for field, params (an integer beyond 2^53, unicode,
/// escapes) and approval ticket included.
pub async fn records_round_trip_exactly(store: &dyn StateStore) {
    let who = agent("round-trip");
    let record = claimed(store, &who).await;
    assert_eq!(
        store.get(&record.key).await.expect("get"),
        Some(record.clone())
    );
    let resume = crate::state::Resume {
        identity: who.clone(),
        decision: crate::policy::Decision::allow(),
        origin: Some("203.0.113.7".into()),
        trail_steps: 3,
        verdict_recorded: false,
    };
    let with_ticket = store
        .await_approval(&record.key, ticket(&record, &who, 2), Some(resume))
        .await
        .expect("await approval");
    assert!(with_ticket.resume.is_some());
    assert_eq!(
        store.get(&record.key).await.expect("get"),
        Some(with_ticket.clone())
    );
    let params = &with_ticket
        .approval
        .as_ref()
        .expect("ticket")
        .request
        .params;
    assert_eq!(params["big"], serde_json::json!(9_007_199_254_740_993_u64));
    assert_eq!(
        params["text"],
        serde_json::json!("naïve \u{1F600} \"quoted\" \\ back")
    );
}

/// A key is claimed once per agent: a repeat gets the stored record back, and another agent
/// may use the same request id without seeing the first.
pub async fn a_claim_is_per_agent_and_a_repeat_gets_the_original(store: &dyn StateStore) {
    let alice = agent("claim-a");
    let record = claimed(store, &alice).await;
    let mut repeat = received(&alice);
    repeat.key.id = record.key.id;
    repeat.action = "something.else".into();
    match store.claim(&repeat).await.expect("claim") {
        Claim::Existing(existing) => assert_eq!(*existing, record, "the original comes back"),
        Claim::Claimed => panic!("a repeated id was claimed twice"),
    }
    let bob = agent("claim-b");
    let mut other = received(&bob);
    other.key.id = record.key.id;
    assert_eq!(store.claim(&other).await.expect("claim"), Claim::Claimed);
    let key = ActionKey::new(bob.id.clone(), record.key.id);
    assert_eq!(
        store.get(&key).await.expect("get").map(|r| r.key.agent),
        Some(bob.id)
    );
    assert_eq!(
        store.get(&record.key).await.expect("get").map(|r| r.action),
        Some(record.action)
    );
}

/// Of many concurrent claims of one key, exactly one wins.
pub async fn concurrent_claims_have_exactly_one_winner(store: &dyn StateStore) {
    let who = agent("race");
    let first = received(&who);
    let claims = (0..16).map(|_| {
        let record = first.clone();
        async move { store.claim(&record).await }
    });
    let results = futures::future::join_all(claims).await;
    let won = results
        .iter()
        .filter(|r| matches!(r, Ok(Claim::Claimed)))
        .count();
    assert_eq!(won, 1, "claims that won: {won} of 16 ({results:?})");
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// A finished record's key is free again once its retention ends, not before; a live record's
/// key is never free.
pub async fn an_expired_record_frees_its_id_and_a_live_one_never_does(store: &dyn StateStore) {
    let who = agent("expiry");
    let record = claimed(store, &who).await;
    let mut later = received(&who);
    later.key.id = record.key.id;
    later.created_at = now() + time::Duration::days(365);
    assert!(
        matches!(
            store.claim(&later).await.expect("claim"),
            Claim::Existing(_)
        ),
        "a live record's id was reclaimed"
    );
    store
        .advance(
            &record.key,
            Phase::Failed,
            Some(serde_json::json!({"kind": "denied"})),
            RETENTION,
        )
        .await
        .expect("fail");
    let mut soon = later.clone();
    soon.created_at = now() + time::Duration::seconds(60);
    assert!(
        matches!(store.claim(&soon).await.expect("claim"), Claim::Existing(_)),
        "a finished record's id was reclaimed within its retention"
    );
    assert_eq!(store.claim(&later).await.expect("claim"), Claim::Claimed);
    let stored = store.get(&record.key).await.expect("get").expect("record");
    assert_eq!(
        stored.phase,
        Phase::Received,
        "the new claim replaced the old record"
    );
    assert_eq!(stored.created_at, later.created_at);
}

/// Phases move only forward along the lifecycle; a terminal phase stores the outcome and
/// starts the retention.
pub async fn the_lifecycle_refuses_illegal_moves(store: &dyn StateStore) {
    let who = agent("lifecycle");
    let record = claimed(store, &who).await;
    let err = store
        .advance(&record.key, Phase::Completed, None, RETENTION)
        .await
        .expect_err("received -> completed");
    assert!(
        matches!(
            err,
            StateError::IllegalTransition {
                from: Phase::Received,
                to: Phase::Completed,
                ..
            }
        ),
        "{err}"
    );
    store
        .advance(&record.key, Phase::Running, None, RETENTION)
        .await
        .expect("running");
    let outcome = serde_json::json!({"job": {"exit_code": 0}});
    let done = store
        .advance(
            &record.key,
            Phase::Completed,
            Some(outcome.clone()),
            RETENTION,
        )
        .await
        .expect("completed");
    assert_eq!(done.outcome, Some(outcome));
    let expires = done.expires_at.expect("retention started");
    assert!(expires > now() + time::Duration::minutes(59), "{expires}");
    for to in Phase::ALL {
        assert!(
            store
                .advance(&record.key, to, None, RETENTION)
                .await
                .is_err(),
            "completed -> {to} was allowed"
        );
    }
    assert_eq!(
        store.get(&record.key).await.expect("get").map(|r| r.phase),
        Some(Phase::Completed)
    );
}

/// Concurrent read-modify-write updates of one record are serialised: none is lost.
pub async fn concurrent_updates_are_serialised(store: &dyn StateStore) {
    let who = agent("updates");
    let record = claimed(store, &who).await;
    let bump = |r: &mut ActionRecord| {
        let n = r
            .outcome
            .as_ref()
            .and_then(|o| o["n"].as_u64())
            .unwrap_or(0);
        r.outcome = Some(serde_json::json!({"n": n + 1}));
        Ok(())
    };
    let updates = (0..20).map(|_| store.update(&record.key, &bump));
    for result in futures::future::join_all(updates).await {
        result.expect("update");
    }
    let stored = store.get(&record.key).await.expect("get").expect("record");
    assert_eq!(
        stored.outcome,
        Some(serde_json::json!({"n": 20})),
        "an update was lost"
    );
}

/// A change that fails stores nothing, and its error comes back as it was.
pub async fn a_failing_change_leaves_the_record_as_it_was(store: &dyn StateStore) {
    let who = agent("failing");
    let record = claimed(store, &who).await;
    let fail = |r: &mut ActionRecord| {
        r.phase = Phase::Running;
        Err(StateError::Conflict {
            message: "refused by the change".into(),
        })
    };
    let err = store
        .update(&record.key, &fail)
        .await
        .expect_err("change fails");
    assert!(matches!(err, StateError::Conflict { .. }), "{err}");
    assert_eq!(
        store.get(&record.key).await.expect("get"),
        Some(record.clone())
    );
    let move_key = |r: &mut ActionRecord| {
        r.key.id = RequestId::new();
        Ok(())
    };
    assert!(store.update(&record.key, &move_key).await.is_err());
    assert_eq!(store.get(&record.key).await.expect("get"), Some(record));
}

/// Updating a key nobody claimed is `NotFound`, and creates nothing.
pub async fn updating_a_missing_record_is_not_found(store: &dyn StateStore) {
    let key = ActionKey::new(agent("missing").id, RequestId::new());
    let err = store
        .advance(&key, Phase::Running, None, RETENTION)
        .await
        .expect_err("no record");
    assert!(matches!(err, StateError::NotFound { .. }), "{err}");
    assert_eq!(store.get(&key).await.expect("get"), None);
}

/// A vote is counted once per approver; the agent and its owner are refused; the vote that
/// completes the quorum moves the action to `approved`; votes are kept with their reasons.
pub async fn votes_count_once_and_a_quorum_approves(store: &dyn StateStore) {
    let who = agent("votes");
    let record = claimed(store, &who).await;
    let key = record.key.clone();
    assert!(
        store.vote(&key, vote("alice", true), None).await.is_err(),
        "no ticket yet"
    );
    store
        .await_approval(&key, ticket(&record, &who, 2), None)
        .await
        .expect("await approval");
    let hash = request().content_hash();
    assert_eq!(
        store
            .vote(&key, vote("alice", true), Some(hash.clone()))
            .await
            .expect("vote"),
        TicketState::Pending {
            approvals: 1,
            quorum: 2
        }
    );
    for refused in [
        vote("alice", true),
        vote(who.id.as_str(), true),
        vote(&who.owner, true),
    ] {
        let err = store
            .vote(&key, refused, None)
            .await
            .expect_err("refused vote");
        assert!(matches!(err, StateError::VoteRefused { .. }), "{err}");
    }
    let err = store
        .vote(&key, vote("bob", true), Some("not-the-hash".into()))
        .await
        .expect_err("changed request");
    assert!(matches!(err, StateError::VoteRefused { .. }), "{err}");
    assert_eq!(
        store
            .vote(&key, vote("bob", true), None)
            .await
            .expect("vote"),
        TicketState::Approved
    );
    let stored = store.get(&key).await.expect("get").expect("record");
    assert_eq!(stored.phase, Phase::Approved);
    let votes = stored.approval.expect("ticket").votes;
    let who_voted: Vec<_> = votes
        .iter()
        .map(|v| (v.approver.as_str(), v.reason.as_str()))
        .collect();
    assert_eq!(who_voted, [("alice", "CHG-alice"), ("bob", "CHG-bob")]);
    assert!(
        store.vote(&key, vote("carol", false), None).await.is_err(),
        "closed ticket"
    );
}

/// Concurrent votes of distinct approvers are all counted (none overwrites another).
pub async fn concurrent_votes_are_all_counted(store: &dyn StateStore) {
    let who = agent("vote-race");
    let record = claimed(store, &who).await;
    store
        .await_approval(&record.key, ticket(&record, &who, 8), None)
        .await
        .expect("await approval");
    let names: Vec<String> = (0..8).map(|i| format!("approver-{i}")).collect();
    let votes = names
        .iter()
        .map(|name| store.vote(&record.key, vote(name, true), None));
    for result in futures::future::join_all(votes).await {
        result.expect("vote");
    }
    let stored = store.get(&record.key).await.expect("get").expect("record");
    assert_eq!(
        stored.approval.expect("ticket").votes.len(),
        8,
        "a vote was lost"
    );
    assert_eq!(stored.phase, Phase::Approved);
}

/// `in_phase` lists the records in one phase, oldest claim first, at most `limit`.
pub async fn in_phase_lists_oldest_first_within_the_limit(store: &dyn StateStore) {
    let who = agent("listing");
    let mut keys = Vec::new();
    for minutes in [-30, -20, -10] {
        let mut record = received(&who);
        record.created_at = now() + time::Duration::minutes(minutes);
        assert_eq!(store.claim(&record).await.expect("claim"), Claim::Claimed);
        store
            .await_approval(&record.key, ticket(&record, &who, 1), None)
            .await
            .expect("await approval");
        keys.push(record.key);
    }
    // A shared store may hold other runs' records: look at this case's own, in listing order.
    let all = store
        .in_phase(Phase::AwaitingApproval, 100_000)
        .await
        .expect("in phase");
    assert!(all.iter().all(|r| r.phase == Phase::AwaitingApproval));
    assert!(
        all.windows(2).all(|w| w[0].created_at <= w[1].created_at),
        "not oldest first"
    );
    let mine: Vec<_> = all
        .into_iter()
        .filter(|r| r.key.agent == who.id)
        .map(|r| r.key)
        .collect();
    assert_eq!(mine, keys, "oldest first");
    let one = store
        .in_phase(Phase::AwaitingApproval, 1)
        .await
        .expect("in phase");
    assert_eq!(one.len(), 1, "at most the limit");
    for key in &keys {
        store
            .advance(key, Phase::Failed, None, RETENTION)
            .await
            .expect("fail");
    }
}

/// `prune` deletes the records whose retention ended, and nothing else.
pub async fn prune_removes_only_expired_records(store: &dyn StateStore) {
    let who = agent("prune");
    let live = claimed(store, &who).await;
    let finished = claimed(store, &who).await;
    store
        .advance(&finished.key, Phase::Failed, None, Duration::ZERO)
        .await
        .expect("fail");
    let kept = claimed(store, &who).await;
    store
        .advance(&kept.key, Phase::Failed, None, RETENTION)
        .await
        .expect("fail");
    let pruned = store
        .prune(now() + time::Duration::seconds(1))
        .await
        .expect("prune");
    assert!(pruned >= 1, "pruned {pruned}");
    assert_eq!(store.get(&finished.key).await.expect("get"), None);
    assert!(
        store.get(&live.key).await.expect("get").is_some(),
        "a live record was pruned"
    );
    assert!(
        store.get(&kept.key).await.expect("get").is_some(),
        "a retained record was pruned"
    );
}

/// What a replica stores when its action starts running.
fn run_lease(record: &ActionRecord, replica: &str) -> RunLease {
    let now = now();
    RunLease {
        replica: replica.to_owned(),
        grant: Grant {
            id: format!("grant-{}", record.key.id),
            correlation_id: record.key.id,
            agent: record.key.agent.clone(),
            scopes: vec!["conformance:scope".into()],
            issued_at: now,
            not_after: now + time::Duration::minutes(5),
            hints: [("service_account".to_owned(), "sa-1".to_owned())].into(),
            job_env: Default::default(),
            job_vars: [("PGUSER".to_owned(), "role_1".to_owned())].into(),
            job_mounts: Vec::new(),
        },
        broker: Some("conformance-broker".into()),
        runner: RunnerInfo {
            backend: "memory".into(),
            instance: "conformance".into(),
            isolation: IsolationLevel::Container,
        },
        trail_steps: 4,
    }
}

/// A running action's lease reads back whole; only its holder renews it, and nobody once the
/// action has finished.
pub async fn a_run_lease_is_renewed_only_by_its_holder(store: &dyn StateStore) {
    let who = agent("run-lease");
    let record = claimed(store, &who).await;
    let lease = Duration::from_secs(30);
    let held = run_lease(&record, "replica-a");
    let running = store
        .start_running(&record.key, held.clone(), lease)
        .await
        .expect("start running");
    assert_eq!(running.phase, Phase::Running);
    assert_eq!(running.run.as_ref(), Some(&held));
    assert_eq!(
        store.get(&record.key).await.expect("get").as_ref(),
        Some(&running),
        "a run lease must read back as stored"
    );
    let until = running.lease_until.expect("a running action has a lease");
    assert!(!running.runner_gone(now()), "a fresh lease has not passed");
    assert!(running.runner_gone(until), "a lease has passed at its end");
    let renewed = store
        .renew_run_lease(&record.key, "replica-a", lease)
        .await
        .expect("the holder renews");
    assert!(renewed.lease_until >= Some(until));
    let stolen = store
        .renew_run_lease(&record.key, "replica-b", lease)
        .await
        .expect_err("another replica must not renew");
    assert!(matches!(stolen, StateError::Conflict { .. }), "{stolen:?}");
    let done = store
        .advance(&record.key, Phase::Completed, None, RETENTION)
        .await
        .expect("complete");
    assert_eq!(done.lease_until, None, "a finished action holds no lease");
    let late = store
        .renew_run_lease(&record.key, "replica-a", lease)
        .await
        .expect_err("a finished action is held by nobody");
    assert!(matches!(late, StateError::Conflict { .. }), "{late:?}");
}

/// A revoked grant is revoked until its expiry, and another grant is not.
pub async fn a_revocation_holds_until_its_expiry_and_only_for_its_grant(list: &dyn RevocationList) {
    let grant = format!("conformance-grant-{}", RequestId::new());
    let other = format!("conformance-grant-{}", RequestId::new());
    let not_after = now() + time::Duration::minutes(5);
    assert!(!list.is_revoked(&grant, now()).await.expect("look up"));
    list.revoke(&grant, not_after).await.expect("revoke");
    list.revoke(&grant, not_after)
        .await
        .expect("revoking twice is fine");
    assert!(list.is_revoked(&grant, now()).await.expect("look up"));
    assert!(!list.is_revoked(&other, now()).await.expect("look up"));
    assert!(
        !list.is_revoked(&grant, not_after).await.expect("look up"),
        "an entry is past at its grant's expiry"
    );
}

/// Revoking again with an earlier expiry keeps the later one.
pub async fn a_revocation_is_never_shortened(list: &dyn RevocationList) {
    let grant = format!("conformance-grant-{}", RequestId::new());
    let later = now() + time::Duration::minutes(10);
    list.revoke(&grant, later).await.expect("revoke");
    list.revoke(&grant, now() + time::Duration::seconds(1))
        .await
        .expect("revoke again");
    let in_five_minutes = now() + time::Duration::minutes(5);
    assert!(
        list.is_revoked(&grant, in_five_minutes)
            .await
            .expect("look up"),
        "a second, shorter revocation shortened the first"
    );
}

/// Pruning deletes past entries only.
pub async fn prune_removes_only_past_revocations(list: &dyn RevocationList) {
    let past = format!("conformance-grant-{}", RequestId::new());
    let live = format!("conformance-grant-{}", RequestId::new());
    let soon = now() + time::Duration::seconds(2);
    list.revoke(&past, soon).await.expect("revoke");
    list.revoke(&live, now() + time::Duration::minutes(5))
        .await
        .expect("revoke");
    let pruned = list
        .prune_revocations(soon + time::Duration::seconds(1))
        .await
        .expect("prune");
    assert!(pruned >= 1, "pruned {pruned}");
    assert!(
        list.is_revoked(&live, now()).await.expect("look up"),
        "a live revocation was pruned"
    );
}

/// A lock reads back whole, a second lock of the same target replaces the first, an agent lock
/// and an owner lock of the same name are different locks, and a lifted lock is gone.
pub async fn a_lock_is_listed_until_lifted_and_replaced_by_a_newer_one(list: &dyn LockList) {
    let who = agent("lock");
    let agent_lock = AgentLock {
        target: LockTarget::Agent(who.id.clone()),
        locked_by: "human:alice".into(),
        reason: "INC-1: naïve \"quoted\"".into(),
        locked_at: now(),
    };
    // An owner named like the agent: another target.
    let owner_lock = AgentLock {
        target: LockTarget::Owner(who.id.to_string()),
        ..agent_lock.clone()
    };
    let mine = |locks: Vec<AgentLock>| -> Vec<AgentLock> {
        let mut mine: Vec<_> = locks
            .into_iter()
            .filter(|l| l.target == agent_lock.target || l.target == owner_lock.target)
            .collect();
        mine.sort_by(|a, b| a.target.cmp(&b.target));
        mine
    };
    list.lock(&agent_lock).await.expect("lock");
    list.lock(&owner_lock).await.expect("lock");
    assert_eq!(
        mine(list.locks().await.expect("list")),
        [agent_lock.clone(), owner_lock.clone()]
    );
    let newer = AgentLock {
        reason: "INC-2".into(),
        locked_by: "human:bob".into(),
        ..agent_lock.clone()
    };
    list.lock(&newer).await.expect("lock again");
    assert_eq!(
        mine(list.locks().await.expect("list")),
        [newer.clone(), owner_lock.clone()]
    );
    assert!(list.unlock(&agent_lock.target).await.expect("unlock"));
    assert!(!list.unlock(&agent_lock.target).await.expect("unlock twice"));
    assert_eq!(
        mine(list.locks().await.expect("list")),
        std::slice::from_ref(&owner_lock)
    );
    assert!(list.unlock(&owner_lock.target).await.expect("unlock"));
}

/// 12 concurrent acquisitions of a cap of 3 give exactly 3 distinct slots.
pub async fn a_cap_holds_under_concurrent_acquisitions(slots: &dyn ConcurrencySlots) {
    let who = agent("slots-race").id;
    let lease = Duration::from_secs(60);
    let tries = (0..12).map(|n| {
        let who = who.clone();
        async move {
            slots
                .acquire_slot(&who, 3, &format!("holder-{n}"), lease)
                .await
                .expect("acquire")
        }
    });
    let mut won: Vec<u32> = futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect();
    won.sort_unstable();
    assert_eq!(won, [0, 1, 2], "the cap of 3 did not hold");
    assert_eq!(
        slots
            .acquire_slot(&who, 3, "late", lease)
            .await
            .expect("acquire"),
        None
    );
    // Another agent's cap is its own.
    let other = agent("slots-other").id;
    assert_eq!(
        slots
            .acquire_slot(&other, 1, "x", lease)
            .await
            .expect("acquire"),
        Some(0)
    );
}

/// Only the holder renews or releases its slot; a released slot is free.
pub async fn a_slot_is_renewed_and_released_only_by_its_holder(slots: &dyn ConcurrencySlots) {
    let who = agent("slots-holder").id;
    let lease = Duration::from_secs(60);
    let slot = slots
        .acquire_slot(&who, 1, "a", lease)
        .await
        .expect("acquire")
        .expect("a free slot");
    assert!(
        slots
            .renew_slot(&who, slot, "a", lease)
            .await
            .expect("renew")
    );
    assert!(
        !slots
            .renew_slot(&who, slot, "b", lease)
            .await
            .expect("renew")
    );
    slots.release_slot(&who, slot, "b").await.expect("release");
    assert_eq!(
        slots
            .acquire_slot(&who, 1, "b", lease)
            .await
            .expect("acquire"),
        None,
        "a stranger released the slot"
    );
    slots.release_slot(&who, slot, "a").await.expect("release");
    assert!(
        !slots
            .renew_slot(&who, slot, "a", lease)
            .await
            .expect("renew")
    );
    assert_eq!(
        slots
            .acquire_slot(&who, 1, "b", lease)
            .await
            .expect("acquire"),
        Some(slot)
    );
}

/// A slot whose lease passed is taken by the next acquisition, and its old holder can no longer
/// renew it.
pub async fn a_slot_whose_lease_passed_is_free_again(slots: &dyn ConcurrencySlots) {
    let who = agent("slots-lease").id;
    let short = Duration::from_millis(200);
    let slot = slots
        .acquire_slot(&who, 1, "gone", short)
        .await
        .expect("acquire")
        .expect("a free slot");
    tokio::time::sleep(short + Duration::from_millis(50)).await;
    assert_eq!(
        slots
            .acquire_slot(&who, 1, "next", Duration::from_secs(60))
            .await
            .expect("acquire"),
        Some(slot)
    );
    assert!(
        !slots
            .renew_slot(&who, slot, "gone", Duration::from_secs(60))
            .await
            .expect("renew")
    );
}
