//! OpaHttp against a Data API server backed by the real OPA engine (OPA v1.20.2, started by
//! `scripts/services/opa.sh` with `policies/` loaded): the conformance suite, the same
//! decisions as the embedded engine, and OPA's own answers for undefined and malformed
//! decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::conformance::policy::{PolicyFixture, run_all};
use gateway_core::{PolicyDecider, PolicyError, PolicyInput};
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
