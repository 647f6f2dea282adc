//! OpaHttp against wiremock: every real OPA 1.x answer the issue lists, transport failures,
//! limits, token handling and configuration, plus conformance against an OPA stand-in that
//! evaluates the reference policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::conformance::policy::{PolicyFixture, run_all};
use gateway_core::{ErrorKind, PolicyDecider, PolicyError};
use gateway_opa::{EmbeddedRego, OpaHttp, OpaHttpBuilder, POLICY_UNDEFINED, SetupError};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn opa_answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DECISION_URL_PATH))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn client(server: &MockServer) -> OpaHttp {
    OpaHttp::builder(server.uri()).build().unwrap()
}

async fn decide_raw(status: u16, body: &str) -> Result<gateway_core::Decision, PolicyError> {
    let server = opa_answering(
        ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json"),
    )
    .await;
    client(&server).decide(&echo()).await
}

#[tokio::test]
async fn allowed_decision_carries_decision_id_and_policy_id() {
    let d = decide_raw(
        200,
        r#"{"decision_id":"0c8d6a3e-0c1b-4a9e-9c53-2f0d8a1b7e11","result":{"allow":true}}"#,
    )
    .await
    .unwrap();
    assert!(d.allow);
    assert_eq!(
        d.decision_id.as_deref(),
        Some("0c8d6a3e-0c1b-4a9e-9c53-2f0d8a1b7e11")
    );
    assert_eq!(
        d.policy_id.as_deref(),
        Some("opa:data.agent_gateway.authz.decision")
    );
}

#[tokio::test]
async fn decision_id_is_optional() {
    let d = decide_raw(200, r#"{"result":{"allow":false,"reasons":["nope"]}}"#)
        .await
        .unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, vec!["nope"]);
    assert_eq!(d.decision_id, None);
}

#[tokio::test]
async fn undefined_document_denies_with_policy_undefined() {
    let d = decide_raw(
        200,
        r#"{"decision_id":"a23d7c51-6f8e-4d2b-b1a0-5c9e8f7d6b4a"}"#,
    )
    .await
    .unwrap();
    assert!(!d.allow);
    assert_eq!(d.reasons, vec![POLICY_UNDEFINED]);
    assert_eq!(
        d.decision_id.as_deref(),
        Some("a23d7c51-6f8e-4d2b-b1a0-5c9e8f7d6b4a")
    );
}

#[tokio::test]
async fn input_key_missing_warning_with_false_result_is_malformed() {
    let err = decide_raw(
        200,
        r#"{"result":false,"warning":{"code":"api_usage_warning","message":"'input' key missing from the request"}}"#,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, PolicyError::Malformed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("must be an object, got boolean"),
        "{err}"
    );
}

#[tokio::test]
async fn eval_conflict_is_an_evaluation_error_with_opas_message() {
    let err = decide_raw(
        500,
        r#"{"code":"internal_error","message":"error(s) occurred while evaluating query","errors":[{"code":"eval_conflict_error","message":"complete rules must not produce multiple outputs","location":{"file":"conflict","row":5,"col":1}}]}"#,
    )
    .await
    .unwrap_err();
    let PolicyError::Evaluation { message } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        message,
        "OPA answered HTTP 500: internal_error: error(s) occurred while evaluating query; \
         eval_conflict_error: complete rules must not produce multiple outputs (conflict:5:1)"
    );
}

#[tokio::test]
async fn bad_request_is_invalid_input() {
    let err = decide_raw(
        400,
        r#"{"code":"invalid_parameter","message":"body contains malformed input document: unexpected EOF"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("invalid_parameter: body contains malformed input document: unexpected EOF"),
        "{err}"
    );
}

#[tokio::test]
async fn undefined_document_404_is_not_found() {
    let err = decide_raw(404, r#"{"code":"undefined_document","message":"document missing: data.agent_gateway.authz.decision"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("undefined_document"), "{err}");
}

#[tokio::test]
async fn other_http_errors_are_unavailable() {
    for status in [401, 403, 502, 503] {
        let err = decide_raw(status, r#"{"code":"unauthorized","message":"x"}"#)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{status}: {err:?}");
    }
    // A 500 that is not OPA's evaluation-error document (e.g. from a proxy) is unavailability.
    let err = decide_raw(500, "<html>bad gateway</html>")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
}

#[tokio::test]
async fn body_that_is_not_json_is_malformed() {
    for body in ["<html>hello</html>", "", "{\"result\": {\"allow\": tr"] {
        let err = decide_raw(200, body).await.unwrap_err();
        assert!(
            matches!(err, PolicyError::Malformed { .. }),
            "{body:?}: {err:?}"
        );
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
    let err = decide_raw(200, "[1,2]").await.unwrap_err();
    assert!(
        err.to_string().contains("must be an object, got array"),
        "{err}"
    );
}

#[tokio::test]
async fn malformed_result_names_the_field_and_keeps_the_decision_id() {
    let err = decide_raw(
        200,
        r#"{"decision_id":"d-1","result":{"allow":true,"max_ttl_seconds":"300"}}"#,
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`max_ttl_seconds`") && msg.contains("decision_id d-1"),
        "{msg}"
    );
}

#[tokio::test]
async fn ten_mib_body_is_refused_without_reading_it_all() {
    let huge = format!(
        r#"{{"result":{{"allow":true,"reasons":["{}"]}}}}"#,
        "x".repeat(10 * 1024 * 1024)
    );
    let err = decide_raw(200, &huge).await.unwrap_err();
    assert!(matches!(err, PolicyError::Malformed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("larger than 1048576 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn small_cap_applies_to_ordinary_bodies_too() {
    let server = opa_answering(
        ResponseTemplate::new(200)
            .set_body_json(json!({"result": {"allow": true, "reasons": ["a".repeat(200)]}})),
    )
    .await;
    let opa = OpaHttp::builder(server.uri())
        .max_response_bytes(100)
        .build()
        .unwrap();
    let err = opa.decide(&echo()).await.unwrap_err();
    assert!(err.to_string().contains("larger than 100 bytes"), "{err}");
}

#[tokio::test]
async fn timeout_is_a_timeout_error() {
    let server = opa_answering(
        ResponseTemplate::new(200)
            .set_body_json(json!({"result": {"allow": true}}))
            .set_delay(Duration::from_secs(5)),
    )
    .await;
    let opa = OpaHttp::builder(server.uri())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = opa.decide(&echo()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // A request that reached OPA is not retried.
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn connection_refused_is_unavailable_after_bounded_retries() {
    // Bind then drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let opa = OpaHttp::builder(format!("http://127.0.0.1:{port}"))
        .retries(2, Duration::from_millis(20))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = opa.decide(&echo()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    assert!(err.to_string().contains("after 3 attempts"), "{err}");
    // Two backoffs: 20 ms + 40 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_recover_when_opa_comes_up() {
    // Reserve a port, start OPA on it only after the first attempt has failed.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let opa = OpaHttp::builder(format!("http://{addr}"))
        .retries(5, Duration::from_millis(100))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let server = MockServer::builder().listener(listener).start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"result": {"allow": true}})),
            )
            .mount(&server)
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(server);
    });
    let d = opa.decide(&echo()).await.unwrap();
    assert!(d.allow);
    starter.abort();
}

#[tokio::test]
async fn sends_input_envelope_bearer_token_and_contract_fields() {
    let server = MockServer::start().await;
    let input = echo();
    let expected = json!({"input": serde_json::to_value(&input).unwrap()});
    Mock::given(method("POST"))
        .and(path("/v1/data/custom/pkg/rule"))
        .and(header("authorization", "Bearer s3cret-token"))
        .and(header("content-type", "application/json"))
        .and(body_json(&expected))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"result": {"allow": true}})))
        .expect(1)
        .mount(&server)
        .await;
    let opa = OpaHttp::builder(server.uri())
        .bearer_token("s3cret-token")
        .decision_path("data.custom.pkg.rule")
        .policy_version("bundle-42")
        .build()
        .unwrap();
    let debug = format!("{opa:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let d = opa.decide(&input).await.unwrap();
    assert!(d.allow);
    assert_eq!(
        d.policy_id.as_deref(),
        Some("opa:data.custom.pkg.rule@bundle-42")
    );
    let body: serde_json::Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    let sent = &body["input"];
    for field in [
        "contract_version",
        "agent",
        "action",
        "resource",
        "params",
        "intent",
        "requested_ttl_seconds",
        "request_time",
        "correlation_id",
        "context",
    ] {
        assert!(sent.get(field).is_some(), "input.{field} missing: {sent}");
    }
    assert_eq!(sent["request_time"], "2025-01-06T10:30:00Z");
    assert_eq!(
        sent["agent"]["auth"],
        json!({"method": "static_key", "key_id": "key-1"})
    );
}

#[tokio::test]
async fn input_limits_apply_before_any_request() {
    let server =
        opa_answering(ResponseTemplate::new(200).set_body_json(json!({"result": {"allow": true}})))
            .await;
    let opa = client(&server);
    let mut deep = json!(1);
    for _ in 0..80 {
        deep = json!({"d": deep});
    }
    let err = opa
        .decide(&input(analyst(), "diag.echo", "diag:x", deep))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let err = opa
        .decide_document(&json!("string input"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let big = input(
        analyst(),
        "diag.echo",
        "diag:x",
        json!({"message": "x".repeat(300 * 1024)}),
    );
    assert_eq!(
        opa.decide(&big).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[test]
fn configuration_from_environment_and_validation() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    let opa = OpaHttpBuilder::from_lookup(env(&[
        ("OPA_URL", "http://127.0.0.1:8181/"),
        ("OPA_TOKEN", "tok"),
        ("OPA_DECISION_PATH", "acme/gateway/decision"),
        ("OPA_TIMEOUT_MS", "300"),
    ]))
    .unwrap()
    .build()
    .unwrap();
    assert_eq!(
        opa.endpoint(),
        "http://127.0.0.1:8181/v1/data/acme/gateway/decision"
    );
    assert!(!format!("{opa:?}").contains("tok\""));

    let err = OpaHttpBuilder::from_lookup(env(&[])).unwrap_err();
    assert!(err.to_string().contains("OPA_URL"), "{err}");
    let err =
        OpaHttpBuilder::from_lookup(env(&[("OPA_URL", "http://x"), ("OPA_TIMEOUT_MS", "soon")]))
            .unwrap_err();
    assert!(err.to_string().contains("OPA_TIMEOUT_MS"), "{err}");

    for (url, expect) in [
        ("ftp://opa:8181", "scheme"),
        ("not a url", "invalid"),
        ("http://user:pw@opa:8181", "credentials"),
        ("http://opa:8181/?x=1", "query"),
    ] {
        let err = OpaHttp::builder(url).build().unwrap_err();
        assert!(
            matches!(err, SetupError::Config { .. }) && err.to_string().contains(expect),
            "{url}: {err}"
        );
        assert!(!err.to_string().contains("pw"), "{err}");
    }
    // A token never goes over plain HTTP to another host unless explicitly allowed.
    let err = OpaHttp::builder("http://opa.internal:8181")
        .bearer_token("t")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("plain HTTP"), "{err}");
    assert!(
        OpaHttp::builder("http://opa.internal:8181")
            .bearer_token("t")
            .allow_plaintext_token(true)
            .build()
            .is_ok()
    );
    assert!(
        OpaHttp::builder("http://[::1]:8181")
            .bearer_token("t")
            .build()
            .is_ok()
    );
    assert!(
        OpaHttp::builder("http://localhost:8181")
            .bearer_token("t")
            .build()
            .is_ok()
    );
    let err = OpaHttp::builder("http://localhost:8181")
        .decision_path("a/../b")
        .build()
        .unwrap_err();
    assert!(matches!(err, SetupError::Config { .. }), "{err:?}");
}

#[tokio::test]
async fn conformance_against_an_opa_speaking_the_reference_policy() {
    let engine = Arc::new(EmbeddedRego::from_dir(policies_dir()).unwrap());
    let server = RegoAsOpa::serve(engine).await;
    let opa = client(&server);
    run_all(
        &opa,
        PolicyFixture {
            allowed: echo(),
            denied: unknown_action(),
        },
    )
    .await;
    let d = opa.decide(&echo()).await.unwrap();
    assert!(
        d.decision_id
            .as_deref()
            .is_some_and(|id| id.starts_with("dec-"))
    );
}
