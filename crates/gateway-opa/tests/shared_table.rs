//! One table of (input, expected decision) cases on the reference policy, run through
//! EmbeddedRego and through OpaHttp talking to an OPA stand-in that evaluates the same Rego
//! (regorus behind OPA's Data API), so both backends are held to identical semantics. The
//! embedded side runs the default bytecode VM, the stand-in regorus's interpreter, so the table
//! also holds the two regorus engines to the same decisions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::policy::{NetworkAccess, PolicyInput};
use gateway_core::{Decision, PolicyDecider};
use gateway_opa::{EmbeddedRego, EvalStrategy, OpaHttp};
use serde_json::json;
use std::sync::Arc;

struct Case {
    name: &'static str,
    input: PolicyInput,
    allow: bool,
    reasons: Vec<&'static str>,
    max_ttl: Option<u64>,
    scopes: Vec<&'static str>,
    approval: bool,
}

fn allow(
    name: &'static str,
    input: PolicyInput,
    ttl: u64,
    scopes: Vec<&'static str>,
    approval: bool,
) -> Case {
    Case {
        name,
        input,
        allow: true,
        reasons: vec![],
        max_ttl: Some(ttl),
        scopes,
        approval,
    }
}

fn deny(name: &'static str, input: PolicyInput, reasons: Vec<&'static str>) -> Case {
    Case {
        name,
        input,
        allow: false,
        reasons,
        max_ttl: Some(0),
        scopes: vec![],
        approval: false,
    }
}

fn scale(ns: &str, replicas: serde_json::Value) -> PolicyInput {
    input(
        deployer(),
        "k8s.scale",
        &format!("k8s:{ns}/deployments/web"),
        json!({"replicas": replicas}),
    )
}

fn query(db: &str, sql: &str) -> PolicyInput {
    input(
        analyst(),
        "db.query",
        &format!("db:{db}"),
        json!({"sql": sql}),
    )
}

fn cases() -> Vec<Case> {
    let mut v2 = echo();
    v2.contract_version = 2;
    let mut admin = query("analytics", "SELECT 1");
    admin
        .agent
        .attributes
        .insert("role".into(), json!("db-admin"));
    vec![
        allow(
            "scale own namespace",
            scale("team-a", json!(3)),
            300,
            vec![
                "k8s:team-a:deployments/web:get",
                "k8s:team-a:deployments/web/scale:patch",
            ],
            false,
        ),
        allow(
            "scale prod needs approval",
            scale("prod", json!(2)),
            300,
            vec![
                "k8s:prod:deployments/web:get",
                "k8s:prod:deployments/web/scale:patch",
            ],
            true,
        ),
        deny(
            "scale over limit",
            scale("team-a", json!(11)),
            vec!["replicas 11 exceeds the limit of 10"],
        ),
        deny(
            "scale foreign namespace",
            scale("team-b", json!(1)),
            vec!["agent may not act in namespace \"team-b\""],
        ),
        deny(
            "scale fractional",
            scale("team-a", json!(2.5)),
            vec!["params.replicas must be a non-negative integer"],
        ),
        allow(
            "select",
            query("analytics", "SELECT * FROM orders"),
            120,
            vec![
                "pg:analytics:public.customers:select",
                "pg:analytics:public.orders:select",
            ],
            false,
        ),
        allow(
            "select production",
            query("production", "with x as (select 1) select * from x"),
            120,
            vec!["pg:production:public.orders:select"],
            true,
        ),
        deny(
            "delete",
            query("analytics", "DELETE FROM orders"),
            vec![
                "SQL contains the non-read-only keyword DELETE",
                "SQL must start with SELECT or WITH",
            ],
        ),
        deny(
            "stacked",
            query("analytics", "SELECT 1; DROP TABLE orders"),
            vec![
                "SQL contains the non-read-only keyword DROP",
                "SQL must be a single statement",
            ],
        ),
        deny("not a reader", admin, vec!["agent role must be db-reader"]),
        allow("echo", echo(), 60, vec!["diag:echo"], false),
        deny(
            "unknown action",
            unknown_action(),
            vec!["unknown action \"k8s.delete\""],
        ),
        deny(
            "unknown contract",
            v2,
            vec!["unsupported contract_version 2"],
        ),
    ]
}

fn check(backend: &str, case: &Case, d: &Decision) {
    let ctx = format!("{backend} / {}", case.name);
    assert_eq!(d.allow, case.allow, "{ctx}: {d:?}");
    assert_eq!(d.reasons, case.reasons, "{ctx}");
    assert_eq!(d.obligations.max_ttl_seconds, case.max_ttl, "{ctx}");
    assert_eq!(d.obligations.scopes, case.scopes, "{ctx}");
    assert_eq!(d.obligations.require_approval, case.approval, "{ctx}");
    assert_eq!(d.obligations.runner.network, NetworkAccess::None, "{ctx}");
}

#[tokio::test]
async fn both_backends_decide_the_table_identically() {
    let embedded = EmbeddedRego::from_dir(policies_dir()).unwrap();
    assert_eq!(embedded.active_strategy(), EvalStrategy::Vm);
    let interpreter = EmbeddedRego::builder()
        .policy_dir(policies_dir())
        .strategy(EvalStrategy::Pool)
        .build()
        .unwrap();
    let server = RegoAsOpa::serve(Arc::new(interpreter)).await;
    let opa = OpaHttp::builder(server.uri()).build().unwrap();
    let cases = cases();
    for case in &cases {
        let local = embedded.decide(&case.input).await.unwrap();
        check("embedded", case, &local);
        let remote = opa.decide(&case.input).await.unwrap();
        check("opa_http", case, &remote);
        assert!(remote.decision_id.is_some(), "{}", case.name);
        assert_eq!(local.obligations, remote.obligations, "{}", case.name);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), cases.len());
}
