//! The in-memory doubles and the embedded backends pass the conformance suites.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_core::conformance;
use gateway_core::testing::script::MemoryRenderer;
use gateway_core::testing::{
    MemoryAuditSink, MemoryBroker, MemoryIdentity, MemoryPolicy, MemoryRunner,
};
use gateway_core::{
    AgentId, AgentIdentity, AuthMethod, Credential, Decision, HmacBroker, PolicyInput, RequestId,
    StaticKeys,
};
use std::collections::BTreeMap;

fn input(action: &str) -> PolicyInput {
    PolicyInput {
        contract_version: 1,
        agent: AgentIdentity::new(
            AgentId::new("agent:a").unwrap(),
            "owner",
            AuthMethod::Other {
                description: "test".into(),
            },
        ),
        action: action.into(),
        resource: "r".into(),
        params: serde_json::json!({}),
        intent: String::new(),
        requested_ttl_seconds: 60,
        request_time: time::OffsetDateTime::now_utc(),
        correlation_id: RequestId::new(),
        context: BTreeMap::new(),
    }
}

#[tokio::test]
async fn memory_identity() {
    let identity = MemoryIdentity::new()
        .with_agent("tok-a", "agent:a")
        .with_agent("tok-b", "agent:b");
    conformance::identity::run_all(
        &identity,
        conformance::identity::IdentityFixture {
            valid: vec![
                (
                    Credential::bearer("tok-a"),
                    AgentId::new("agent:a").unwrap(),
                ),
                (
                    Credential::bearer("tok-b"),
                    AgentId::new("agent:b").unwrap(),
                ),
            ],
            invalid: vec![Credential::bearer("tok-c")],
        },
    )
    .await;
}

#[tokio::test]
async fn static_keys() {
    let (keys, a) = StaticKeys::new()
        .with_generated_key("key-a", AgentId::new("agent:a").unwrap(), "alice")
        .unwrap();
    let (keys, b) = keys
        .with_generated_key("key-b", AgentId::new("agent:b").unwrap(), "bob")
        .unwrap();
    let mut wrong = a.expose().to_vec();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    conformance::identity::run_all(
        &keys,
        conformance::identity::IdentityFixture {
            valid: vec![
                (
                    Credential::Bearer(a.clone()),
                    AgentId::new("agent:a").unwrap(),
                ),
                (Credential::Bearer(b), AgentId::new("agent:b").unwrap()),
            ],
            invalid: vec![
                Credential::Bearer(gateway_core::Secret::new(wrong)),
                Credential::bearer("agk_unknown.abcdef"),
                Credential::bearer("agk_key-a"),
            ],
        },
    )
    .await;
}

#[tokio::test]
async fn memory_policy() {
    let policy = MemoryPolicy::from_fn(|i| {
        if i.action == "ok" {
            Decision::allow()
        } else {
            Decision::deny("not ok")
        }
    });
    conformance::policy::run_all(
        &policy,
        conformance::policy::PolicyFixture {
            allowed: input("ok"),
            denied: input("no"),
        },
    )
    .await;
}

#[tokio::test]
async fn memory_broker() {
    conformance::broker::run_all(&MemoryBroker::new(), vec!["s:read".into()]).await;
}

#[tokio::test]
async fn hmac_broker() {
    conformance::broker::run_all(
        &HmacBroker::generate(),
        vec!["s:read".into(), "s:write".into()],
    )
    .await;
}

#[tokio::test]
async fn memory_runner() {
    conformance::runner::run_all(&MemoryRunner::new(), &MemoryRenderer).await;
}

#[tokio::test]
async fn memory_audit() {
    conformance::audit::run_all(&MemoryAuditSink::new()).await;
}

#[tokio::test]
async fn memory_state_store_passes_the_state_suite() {
    let store = gateway_core::state::MemoryStateStore::new();
    conformance::state::run_all(&store).await;
    conformance::state::run_revocations(&store).await;
    conformance::state::run_locks(&store).await;
    conformance::state::run_slots(&store).await;
}
