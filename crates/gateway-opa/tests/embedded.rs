//! EmbeddedRego: conformance, loading errors, runtime errors, input limits, strategies, reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::conformance::policy::{PolicyFixture, run_all};
use gateway_core::{ErrorKind, PolicyDecider, PolicyError};
use gateway_opa::{EmbeddedRego, EvalStrategy, InputLimits, POLICY_UNDEFINED, SetupError};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const STRATEGIES: [EvalStrategy; 4] = [
    EvalStrategy::Vm,
    EvalStrategy::ClonePerCall,
    EvalStrategy::Pool,
    EvalStrategy::Compiled,
];

const ALLOW_ALL: &str = "package agent_gateway.authz\n\ndecision := {\"allow\": true}\n";

fn reference(strategy: EvalStrategy) -> EmbeddedRego {
    EmbeddedRego::builder()
        .policy_dir(policies_dir())
        .strategy(strategy)
        .build()
        .expect("reference policies load")
}

#[tokio::test]
async fn conformance_with_every_strategy() {
    for strategy in STRATEGIES {
        let decider = reference(strategy);
        run_all(
            &decider,
            PolicyFixture {
                allowed: echo(),
                denied: unknown_action(),
            },
        )
        .await;
    }
}

#[tokio::test]
async fn strategies_agree_and_policy_id_names_rule_and_digest() {
    let deciders: Vec<_> = STRATEGIES.into_iter().map(reference).collect();
    let inputs = [
        echo(),
        unknown_action(),
        input(
            deployer(),
            "k8s.scale",
            "k8s:prod/deployments/web",
            json!({"replicas": 4}),
        ),
        input(
            analyst(),
            "db.query",
            "db:analytics",
            json!({"sql": "DELETE FROM t"}),
        ),
    ];
    for i in &inputs {
        let first = deciders[0].decide(i).await.unwrap();
        for d in &deciders[1..] {
            assert_eq!(d.decide(i).await.unwrap(), first);
        }
    }
    let id = deciders[0].policy_id();
    assert!(
        id.starts_with("data.agent_gateway.authz.decision@sha256:"),
        "{id}"
    );
    assert_eq!(
        id.len(),
        "data.agent_gateway.authz.decision@sha256:".len() + 12
    );
    let d = deciders[0].decide(&echo()).await.unwrap();
    assert_eq!(d.policy_id.as_deref(), Some(id.as_str()));
    assert_eq!(d.decision_id, None);
}

#[test]
fn parse_errors_name_file_line_and_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.rego"), ALLOW_ALL).unwrap();
    std::fs::write(
        dir.path().join("broken.rego"),
        "package agent_gateway.other\n\nallow if {\n  input.x ==\n}\n",
    )
    .unwrap();
    let err = EmbeddedRego::from_dir(dir.path()).unwrap_err();
    let SetupError::Parse {
        file,
        line,
        column,
        message,
    } = &err
    else {
        panic!("expected a parse error, got {err:?}");
    };
    assert!(file.ends_with("broken.rego"), "{file}");
    assert!((4..=5).contains(line), "line {line}");
    assert!(*column > 0);
    assert!(!message.is_empty());
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("broken.rego:"), "{err}");
}

#[test]
fn rego_v0_syntax_is_rejected() {
    let err = EmbeddedRego::builder()
        .policy(
            "v0.rego",
            "package agent_gateway.authz\n\ndecision = {\"allow\": true} { true }\n",
        )
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Parse { .. }), "{err:?}");
}

#[test]
fn missing_package_rule_or_sources_are_setup_errors() {
    let err = EmbeddedRego::builder()
        .policy("p.rego", "package other\n\nx := 1\n")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("agent_gateway.authz"), "{err}");
    let err = EmbeddedRego::builder()
        .policy("p.rego", ALLOW_ALL)
        .decision_path("data.agent_gateway.authz.nothing")
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Policy { .. }), "{err:?}");
    assert!(
        err.to_string().contains("data.agent_gateway.authz.nothing"),
        "{err}"
    );
    let err = EmbeddedRego::builder().build().unwrap_err();
    assert!(matches!(err, SetupError::Policy { .. }), "{err:?}");
    let err = EmbeddedRego::from_dir("/nonexistent/policies").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err:?}");
    let err = EmbeddedRego::builder()
        .policy("p.rego", ALLOW_ALL)
        .decision_path("data.agent_gateway")
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Config { .. }), "{err:?}");
}

#[test]
fn invalid_data_json_is_rejected_with_its_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.rego"), ALLOW_ALL).unwrap();
    std::fs::write(dir.path().join("data.json"), "{\"limits\": ").unwrap();
    let err = EmbeddedRego::from_dir(dir.path()).unwrap_err();
    let SetupError::Data { file, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(file.ends_with("data.json"));
}

#[test]
fn data_json_is_nested_at_its_directory_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("agent_gateway/limits")).unwrap();
    std::fs::write(
        dir.path().join("agent_gateway/limits/data.json"),
        "{\"ttl\": 42}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p.rego"),
        "package agent_gateway.authz\n\ndecision := {\"allow\": true, \"max_ttl_seconds\": data.agent_gateway.limits.ttl}\n",
    )
    .unwrap();
    let decider = EmbeddedRego::from_dir(dir.path()).unwrap();
    let d = decider.decide_sync(&echo()).unwrap();
    assert_eq!(d.obligations.max_ttl_seconds, Some(42));
}

#[tokio::test]
async fn runtime_errors_deny_with_the_engine_message() {
    // Two complete definitions with different values for the same input: a conflict.
    let decider = EmbeddedRego::builder()
        .policy(
            "conflict.rego",
            "package agent_gateway.authz\n\ndecision := {\"allow\": true} if input.action\n\ndecision := {\"allow\": false} if input.resource\n",
        )
        .build()
        .unwrap();
    let err = decider.decide(&echo()).await.unwrap_err();
    let PolicyError::Evaluation { message } = &err else {
        panic!("{err:?}")
    };
    assert!(!message.is_empty());
    assert_eq!(err.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn undefined_decision_denies_with_policy_undefined() {
    let decider = EmbeddedRego::builder()
        .policy("p.rego", "package agent_gateway.authz\n\ndecision := {\"allow\": true} if input.action == \"nothing\"\n")
        .build()
        .unwrap();
    let d = decider.decide(&echo()).await.unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, vec![POLICY_UNDEFINED]);
    assert!(d.policy_id.is_some());
}

#[tokio::test]
async fn malformed_decisions_are_errors_naming_the_field() {
    for (body, field) in [
        ("decision := false", "the decision must be an object"),
        ("decision := {\"reasons\": []}", "`allow` is missing"),
        (
            "decision := {\"allow\": true, \"max_ttl_seconds\": \"60\"}",
            "`max_ttl_seconds`",
        ),
        ("decision := {\"allow\": true, \"scopes\": {\"a\"}}", ""),
    ] {
        let decider = EmbeddedRego::builder()
            .policy("p.rego", format!("package agent_gateway.authz\n\n{body}\n"))
            .build()
            .unwrap();
        let result = decider.decide(&echo()).await;
        if field.is_empty() {
            // A Rego set serialises as an array of strings: accepted like OPA's JSON.
            assert_eq!(result.unwrap().obligations.scopes, vec!["a"]);
            continue;
        }
        let err = result.unwrap_err();
        assert!(
            matches!(err, PolicyError::Malformed { .. }),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains(field), "{body}: {err}");
    }
}

#[tokio::test]
async fn oversized_or_deep_inputs_are_invalid_input() {
    let decider = EmbeddedRego::builder()
        .policy_dir(policies_dir())
        .input_limits(InputLimits {
            max_depth: 64,
            max_bytes: 4096,
        })
        .build()
        .unwrap();
    let big = input(
        analyst(),
        "diag.echo",
        "diag:x",
        json!({"message": "x".repeat(5000)}),
    );
    let err = decider.decide(&big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");

    let mut deep = json!("leaf");
    for _ in 0..70 {
        deep = json!([deep]);
    }
    let err = decider
        .decide(&input(
            analyst(),
            "diag.echo",
            "diag:x",
            json!({"message": "hi", "deep": deep}),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deeper than 64"), "{err}");

    // Exactly at the limit is fine: params is depth 2, so 62 more arrays reach depth 64.
    let mut ok = json!("leaf");
    for _ in 0..61 {
        ok = json!([ok]);
    }
    let d = decider
        .decide(&input(
            analyst(),
            "diag.echo",
            "diag:x",
            json!({"message": "hi", "deep": ok}),
        ))
        .await
        .unwrap();
    assert!(d.allow);

    let err = decider
        .decide_document(&json!(["not", "an", "object"]))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[tokio::test]
async fn runaway_policies_time_out_and_deny() {
    // 9 million iterations: seconds of work, cut off by the evaluation timer.
    let slow = "package agent_gateway.authz\n\ndecision := {\"allow\": count([1 | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000)]) > 0}\n";
    for strategy in [
        EvalStrategy::Vm,
        EvalStrategy::ClonePerCall,
        EvalStrategy::Pool,
    ] {
        let decider = EmbeddedRego::builder()
            .policy("slow.rego", slow)
            .strategy(strategy)
            .eval_timeout(Duration::from_millis(50))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let err = decider.decide(&echo()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{strategy:?}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn reload_swaps_atomically_and_keeps_old_policies_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.rego");
    std::fs::write(&file, ALLOW_ALL).unwrap();
    let decider = Arc::new(EmbeddedRego::from_dir(dir.path()).unwrap());
    let before = decider.policy_id();
    assert!(decider.decide(&echo()).await.unwrap().allow);

    // A broken file is refused and the old policies stay.
    std::fs::write(&file, "package agent_gateway.authz\n\ndecision := {\n").unwrap();
    assert!(matches!(decider.reload(), Err(SetupError::Parse { .. })));
    assert_eq!(decider.policy_id(), before);
    assert!(decider.decide(&echo()).await.unwrap().allow);

    // Decisions keep flowing on other threads while policies swap; each sees one version.
    std::fs::write(
        &file,
        "package agent_gateway.authz\n\ndecision := {\"allow\": false, \"reasons\": [\"v2\"]}\n",
    )
    .unwrap();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let decider = decider.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for _ in 0..300 {
                    let d = decider
                        .decide_sync(&echo())
                        .expect("no decision fails during reload");
                    seen.push(d.allow);
                    assert!(d.allow || d.reasons == vec!["v2"]);
                }
                seen
            })
        })
        .collect();
    let after = decider.reload().unwrap();
    assert_ne!(after, before);
    for worker in workers {
        worker.join().unwrap();
    }
    let d = decider.decide(&echo()).await.unwrap();
    assert!(!d.allow);
    assert_eq!(d.policy_id.as_deref(), Some(after.as_str()));
}

#[tokio::test]
async fn policies_the_vm_cannot_compile_run_on_the_interpreter() {
    // regorus's bytecode compiler does not support `with` (yet); the policy must still work.
    let policy = "package agent_gateway.authz\n\n\
                  allowed if input.action == \"diag.echo\"\n\n\
                  decision := {\"allow\": x} if {\n\tx := allowed with input.action as \"diag.echo\"\n}\n";
    let decider = EmbeddedRego::builder()
        .policy("with.rego", policy)
        .build()
        .unwrap();
    assert_eq!(decider.active_strategy(), EvalStrategy::Pool);
    assert!(decider.decide(&unknown_action()).await.unwrap().allow);

    assert_eq!(
        reference(EvalStrategy::Vm).active_strategy(),
        EvalStrategy::Vm
    );
    assert_eq!(
        reference(EvalStrategy::Compiled).active_strategy(),
        EvalStrategy::Compiled
    );
}

/// The bytecode VM and the interpreter give the same decision document for every input of a
/// grid over the reference policy's branches, including wrongly typed fields, and every
/// decision is allowed exactly when it carries no reason.
#[test]
fn vm_and_interpreter_agree_across_the_reference_policy() {
    let vm = reference(EvalStrategy::Vm);
    let interpreter = reference(EvalStrategy::Pool);
    let agents = [
        json!({"id": "agent:deployer", "owner": "o", "attributes": {"namespaces": ["team-a", "prod"]}, "auth": {"method": "static_key", "key_id": "k"}}),
        json!({"id": "agent:analyst", "owner": "o", "attributes": {"role": "db-reader"}, "auth": {"method": "static_key", "key_id": "k"}}),
        json!({"id": "agent:odd", "owner": "o", "attributes": {"namespaces": "team-a", "role": 7}, "auth": {"method": "static_key", "key_id": "k"}}),
        json!({"id": "", "owner": "o", "attributes": {}, "auth": {"method": "static_key", "key_id": "k"}}),
    ];
    let requests = [
        (
            "k8s.scale",
            json!("k8s:team-a/deployments/web"),
            json!({"replicas": 3}),
        ),
        (
            "k8s.scale",
            json!("k8s:prod/deployments/web"),
            json!({"replicas": 10}),
        ),
        (
            "k8s.scale",
            json!("k8s:team-a/deployments/web"),
            json!({"replicas": 11}),
        ),
        (
            "k8s.scale",
            json!("k8s:team-a/deployments/web"),
            json!({"replicas": 2.5}),
        ),
        (
            "k8s.scale",
            json!("k8s:team-a/deployments/web"),
            json!({"replicas": "3"}),
        ),
        (
            "k8s.scale",
            json!("k8s:other/deployments/web"),
            json!({"replicas": -1}),
        ),
        ("k8s.scale", json!("k8s:Team-A/deployments/-web"), json!({})),
        (
            "k8s.scale",
            json!("k8s:team-a/pods/web"),
            json!({"replicas": 1}),
        ),
        ("k8s.scale", json!(42), json!(null)),
        (
            "db.query",
            json!("db:analytics"),
            json!({"sql": "select * from t"}),
        ),
        (
            "db.query",
            json!("db:prod"),
            json!({"sql": " WITH x AS (SELECT 1) SELECT * FROM x "}),
        ),
        (
            "db.query",
            json!("db:analytics"),
            json!({"sql": "DELETE FROM t"}),
        ),
        (
            "db.query",
            json!("db:analytics"),
            json!({"sql": "select 1; drop table t"}),
        ),
        (
            "db.query",
            json!("db:analytics"),
            json!({"sql": "select * into x from t"}),
        ),
        ("db.query", json!("db:bad name"), json!({"sql": 5})),
        ("db.query", json!("db:analytics"), json!({})),
        ("diag.echo", json!("diag:x"), json!({"message": "hello"})),
        ("diag.echo", json!("diag:x"), json!({"message": 1})),
        ("diag.echo", json!("other:x"), json!({"message": "hello"})),
        ("k8s.delete", json!("k8s:team-a/deployments/web"), json!({})),
        ("", json!(""), json!({})),
    ];
    let mut compared = 0;
    for contract_version in [json!(1), json!(2), json!("1")] {
        for agent in &agents {
            for (action, resource, params) in &requests {
                for time in [
                    "2025-01-06T10:30:00Z",
                    "2025-01-06T23:59:59+02:00",
                    "yesterday",
                ] {
                    let input = json!({
                        "contract_version": contract_version,
                        "agent": agent,
                        "action": action,
                        "resource": resource,
                        "params": params,
                        "intent": "differential test",
                        "requested_ttl_seconds": 600,
                        "request_time": time,
                        "correlation_id": "0193f5d2-6a1b-7c3d-8e4f-001122334455",
                        "context": {},
                    });
                    let a = vm
                        .evaluate_document(&input)
                        .unwrap_or_else(|e| panic!("VM on {input}: {e}"));
                    let b = interpreter
                        .evaluate_document(&input)
                        .unwrap_or_else(|e| panic!("interpreter on {input}: {e}"));
                    assert_eq!(a, b, "engines disagree on {input}");
                    // `grant` and `deny` use the same conditions (positively, and as `not`):
                    // a request is allowed exactly when it has no reason.
                    let doc = a.expect("the reference policy always decides");
                    assert_eq!(
                        doc["allow"].as_bool(),
                        Some(doc["reasons"].as_array().is_some_and(|r| r.is_empty())),
                        "allow and reasons disagree on {input}: {doc}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert_eq!(compared, 3 * 4 * 21 * 3);
}

/// A builtin regorus evaluates differently from OPA, with no OPA-compatible replacement, is
/// refused when the policy loads, naming the file, the line and the reason; mentioning it in a
/// comment is not a use.
#[test]
fn divergent_builtins_are_refused_at_load_time() {
    let policy = "package p\n\n# regex.template_match(...) in a comment is fine\nallow if regex.template_match(\"{a}\", input.x, \"{\", \"}\")\n";
    let err = EmbeddedRego::builder()
        .policy("p.rego", policy)
        .decision_path("data.p.allow")
        .build()
        .unwrap_err();
    match &err {
        SetupError::Parse {
            file,
            line,
            message,
            ..
        } => {
            assert_eq!((file.as_str(), *line), ("p.rego", 4), "{err}");
            assert!(message.contains("regex.template_match"), "{message}");
            assert!(message.contains("Go RE2"), "{message}");
        }
        other => panic!("not a parse error: {other:?}"),
    }
    let ok = EmbeddedRego::builder()
        .policy(
            "p.rego",
            "package p\n\n# time.parse_ns(layout, value) is refused\nallow if input.x == 1\n",
        )
        .decision_path("data.p.allow")
        .build();
    assert!(ok.is_ok(), "{ok:?}");
}

/// A pattern OPA accepts but the embedded engine cannot evaluate as OPA would denies the
/// whole decision with an error naming the pattern, even under `not` (where a silent
/// non-match would allow).
#[tokio::test]
async fn untranslatable_regex_fails_the_decision() {
    let engine = EmbeddedRego::builder()
        .policy(
            "p.rego",
            "package p\n\nmatches if regex.match(input.pattern, \"x\")\n\ndecision := {\"allow\": true} if not matches\n",
        )
        .decision_path("data.p.decision")
        .build()
        .unwrap();
    let err = engine
        .decide_document(&json!({"pattern": "[a--b]"}))
        .unwrap_err();
    assert!(err.to_string().contains("[a--b]"), "{err}");
    // A pattern Go also refuses is an ordinary failing builtin: undefined, so `not` holds.
    let d = engine.decide_document(&json!({"pattern": "a**"})).unwrap();
    assert!(d.allow);
    // And a translatable one matches as Go would (so `not` fails and the rule is undefined).
    let d = engine
        .decide_document(&json!({"pattern": "\\bx\\b"}))
        .unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, vec![POLICY_UNDEFINED.to_owned()]);
}

/// `not f(x)` with an argument that may be undefined is undefined on OPA (its compiler moves the
/// argument out of the negation) and true on regorus: refused at load time, naming the line;
/// the same condition negated through a named rule loads.
#[test]
fn negated_calls_over_maybe_undefined_arguments_are_refused() {
    for (body, line) in [
        ("allow if not startswith(input.resource, \"k8s:\")", 3),
        ("caps := {\"a\": 1}\n\nallow if not caps[input.action]", 5),
        (
            "allow if {\n\tinput.x == 1\n\tnot count(input.items) > 0\n}",
            5,
        ),
        (
            "allow if every x in input.xs { not startswith(data.prefix, x) }",
            3,
        ),
    ] {
        let policy = format!("package p\n\n{body}\n");
        let err = EmbeddedRego::builder()
            .policy("p.rego", policy.clone())
            .decision_path("data.p.allow")
            .build()
            .unwrap_err();
        match &err {
            SetupError::Parse {
                file,
                line: at,
                message,
                ..
            } => {
                assert_eq!((file.as_str(), *at), ("p.rego", line), "{policy}: {err}");
                assert!(message.contains("`not`"), "{message}");
            }
            other => panic!("{policy}: not a parse error: {other:?}"),
        }
    }
    for ok in [
        "prefixed if startswith(input.resource, \"k8s:\")\n\nallow if not prefixed",
        "allow if not input.missing",
        "allow if not input.x == 1",
        "allow if {\n\tx := input.x\n\tnot startswith(x, \"a\")\n}",
    ] {
        let built = EmbeddedRego::builder()
            .policy("p.rego", format!("package p\n\n{ok}\n"))
            .decision_path("data.p.allow")
            .build();
        assert!(built.is_ok(), "{ok}: {built:?}");
    }
}

/// The listing rule of the reference policies, and a policy without one: it lists nothing
/// (an error, which the gateway shows as an empty list), never everything.
#[tokio::test]
async fn listing_follows_the_policy_and_fails_closed_without_a_rule() {
    use gateway_core::ListingInput;
    let listing = |agent| ListingInput {
        contract_version: 1,
        agent,
        actions: vec!["db.query".into(), "diag.echo".into(), "k8s.scale".into()],
        request_time: time::OffsetDateTime::now_utc(),
        context: Default::default(),
    };
    let reference = EmbeddedRego::from_dir(policies_dir()).unwrap();
    let mut seen = reference
        .visible_actions(&listing(deployer()))
        .await
        .unwrap();
    seen.sort();
    assert_eq!(seen, ["diag.echo", "k8s.scale"]);
    let without = EmbeddedRego::builder()
        .policy(
            "p.rego",
            "package agent_gateway.authz\ndecision := {\"allow\": true}",
        )
        .build()
        .unwrap();
    let answer = without.visible_actions(&listing(deployer())).await;
    assert!(
        answer.as_ref().is_ok_and(Vec::is_empty) || answer.is_err(),
        "{answer:?}"
    );
}
