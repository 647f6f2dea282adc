//! OpaHttp against a Data API server backed by the real OPA engine (OPA v1.20.2, started by
//! `scripts/services/opa.sh` with `policies/` loaded): the conformance suite, the same
//! decisions as the embedded engine, and OPA's own answers for undefined and malformed
//! decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::conformance::policy::{PolicyFixture, run_all};
use gateway_core::{ListingInput, PolicyDecider, PolicyError, PolicyInput};
use gateway_opa::{EmbeddedRego, OpaHttp, POLICY_UNDEFINED};
use serde_json::json;

fn inputs() -> Vec<PolicyInput> {
    let scale = |ns: &str, replicas: serde_json::Value| {
        input(
            deployer(),
            "k8s.scale",
            &format!("k8s:{ns}/deployments/web"),
            json!({ "replicas": replicas }),
        )
    };
    let query = |sql: &str| input(analyst(), "db.query", "db:analytics", json!({ "sql": sql }));
    vec![
        echo(),
        unknown_action(),
        scale("team-a", json!(3)),
        scale("prod", json!(2)),
        scale("team-a", json!(11)),
        scale("team-a", json!(1.5)),
        scale("team-b", json!(1)),
        query("SELECT 1"),
        query("DELETE FROM orders"),
        query("SELECT 1; SELECT 2"),
        input(
            analyst(),
            "db.query",
            "db:production",
            json!({"sql": "WITH t AS (SELECT 1) SELECT * FROM t"}),
        ),
    ]
}

#[tokio::test]
async fn real_opa_passes_the_policy_conformance_suite() {
    let Some(url) = real_opa_url("real_opa_passes_the_policy_conformance_suite") else {
        return;
    };
    let opa = OpaHttp::builder(url).build().unwrap();
    run_all(
        &opa,
        PolicyFixture {
            allowed: echo(),
            denied: unknown_action(),
        },
    )
    .await;
}

#[tokio::test]
async fn real_opa_and_embedded_engine_decide_alike() {
    let Some(url) = real_opa_url("real_opa_and_embedded_engine_decide_alike") else {
        return;
    };
    let opa = OpaHttp::builder(url).build().unwrap();
    let embedded = EmbeddedRego::from_dir(policies_dir()).unwrap();
    let mut allowed = 0;
    for input in inputs() {
        let on_opa = opa.decide(&input).await.unwrap();
        let local = embedded.decide(&input).await.unwrap();
        let what = format!("{} {} {}", input.action, input.resource, input.params);
        assert_eq!(on_opa.allow, local.allow, "{what}");
        assert_eq!(on_opa.reasons, local.reasons, "{what}");
        assert_eq!(on_opa.obligations, local.obligations, "{what}");
        // A plain OPA server (no decision logging) gives no decision_id.
        assert_eq!(on_opa.decision_id, None, "{what}");
        allowed += usize::from(on_opa.allow);
    }
    assert!(
        allowed >= 4 && allowed < inputs().len(),
        "{allowed} allowed"
    );
}

#[tokio::test]
async fn real_opa_undefined_rule_denies_with_policy_undefined() {
    let Some(url) = real_opa_url("real_opa_undefined_rule_denies_with_policy_undefined") else {
        return;
    };
    let opa = OpaHttp::builder(url)
        .decision_path("agent_gateway/authz/no_such_rule")
        .build()
        .unwrap();
    let d = opa.decide(&echo()).await.unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, vec![POLICY_UNDEFINED.to_owned()]);
}

#[tokio::test]
async fn real_opa_decision_without_allow_is_malformed() {
    let Some(url) = real_opa_url("real_opa_decision_without_allow_is_malformed") else {
        return;
    };
    // ttl_caps is an object without `allow`.
    let opa = OpaHttp::builder(url)
        .decision_path("agent_gateway/authz/ttl_caps")
        .build()
        .unwrap();
    let err = opa.decide(&echo()).await.unwrap_err();
    assert!(
        matches!(&err, PolicyError::Malformed { .. }) && err.to_string().contains("allow"),
        "{err:?}"
    );
}

fn listing(agent: gateway_core::AgentIdentity) -> ListingInput {
    ListingInput {
        contract_version: 1,
        agent,
        actions: ["db.query", "diag.echo", "k8s.scale", "not.in.policy"]
            .map(str::to_owned)
            .to_vec(),
        request_time: time::OffsetDateTime::now_utc(),
        context: Default::default(),
    }
}

/// The catalog listing rule (`visible_actions`) answers the same on the real OPA and in the
/// embedded engine, for agents that may see different actions; an undefined rule lists
/// nothing on both.
#[tokio::test]
async fn real_opa_and_embedded_engine_list_alike() {
    let Some(url) = real_opa_url("real_opa_and_embedded_engine_list_alike") else {
        return;
    };
    let opa = OpaHttp::builder(&url).build().unwrap();
    let embedded = EmbeddedRego::from_dir(policies_dir()).unwrap();
    let plain = agent("agent:plain", json!({}));
    let mut stale = listing(deployer());
    stale.contract_version = 2;
    let cases = [
        (listing(deployer()), vec!["diag.echo", "k8s.scale"]),
        (listing(analyst()), vec!["db.query", "diag.echo"]),
        (listing(plain), vec!["diag.echo"]),
        (stale, vec![]),
    ];
    for (input, expected) in cases {
        let mut on_opa = opa.visible_actions(&input).await.unwrap();
        let mut local = embedded.visible_actions(&input).await.unwrap();
        on_opa.sort();
        local.sort();
        assert_eq!(on_opa, expected, "{}", input.agent.id);
        assert_eq!(local, expected, "{}", input.agent.id);
    }
    let undefined = OpaHttp::builder(&url)
        .listing_path("agent_gateway/authz/no_such_rule")
        .build()
        .unwrap();
    assert!(
        undefined
            .visible_actions(&listing(deployer()))
            .await
            .unwrap()
            .is_empty()
    );
}
