//! Helpers shared by the integration tests: reference-policy inputs and a tiny OPA stand-in
//! that evaluates the same Rego with regorus and answers in OPA's Data API shape.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use gateway_core::{AgentId, AgentIdentity, AuthMethod, PolicyInput, RequestId};
use gateway_opa::EmbeddedRego;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const DECISION_URL_PATH: &str = "/v1/data/agent_gateway/authz/decision";

pub fn policies_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

pub fn agent(id: &str, attributes: Value) -> AgentIdentity {
    let mut identity = AgentIdentity::new(
        AgentId::new(id).unwrap(),
        "team-platform",
        AuthMethod::StaticKey {
            key_id: "key-1".into(),
        },
    );
    if let Value::Object(map) = attributes {
        identity.attributes = map.into_iter().collect();
    }
    identity
}

pub fn deployer() -> AgentIdentity {
    agent("agent:deployer", json!({"namespaces": ["team-a", "prod"]}))
}

pub fn analyst() -> AgentIdentity {
    agent("agent:analyst", json!({"role": "db-reader"}))
}

/// An input at a fixed time (Monday 2025-01-06 10:30 UTC).
pub fn input(agent: AgentIdentity, action: &str, resource: &str, params: Value) -> PolicyInput {
    PolicyInput {
        contract_version: 1,
        agent,
        action: action.into(),
        resource: resource.into(),
        params,
        intent: "integration test".into(),
        requested_ttl_seconds: 900,
        request_time: time::macros::datetime!(2025-01-06 10:30 UTC),
        correlation_id: RequestId::new(),
        context: BTreeMap::new(),
    }
}

pub fn echo() -> PolicyInput {
    input(
        analyst(),
        "diag.echo",
        "diag:smoke",
        json!({"message": "hello"}),
    )
}

pub fn unknown_action() -> PolicyInput {
    input(
        deployer(),
        "k8s.delete",
        "k8s:team-a/deployments/web",
        json!({}),
    )
}

/// Answers the Data API like an OPA server loaded with the same policies: evaluation through
/// regorus, `decision_id` on every answer, no `result` when the rule is undefined, and OPA's
/// error documents for bad requests and evaluation errors.
pub struct RegoAsOpa {
    engine: Arc<EmbeddedRego>,
    next_id: AtomicU64,
}

impl RegoAsOpa {
    pub fn new(engine: Arc<EmbeddedRego>) -> Self {
        Self {
            engine,
            next_id: AtomicU64::new(1),
        }
    }

    /// Starts a mock server answering at the default decision path.
    pub async fn serve(engine: Arc<EmbeddedRego>) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(DECISION_URL_PATH))
            .respond_with(Self::new(engine))
            .mount(&server)
            .await;
        server
    }
}

impl Respond for RegoAsOpa {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let decision_id = format!("dec-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => {
                return ResponseTemplate::new(400).set_body_json(json!({
                    "code": "invalid_parameter",
                    "message": format!("body contains malformed input document: {e}"),
                }));
            }
        };
        let Some(input) = body.get("input") else {
            return ResponseTemplate::new(200).set_body_json(json!({
                "result": false,
                "warning": {"code": "api_usage_warning", "message": "'input' key missing from the request"},
            }));
        };
        match self.engine.evaluate_document(input) {
            Ok(Some(result)) => ResponseTemplate::new(200)
                .set_body_json(json!({"decision_id": decision_id, "result": result})),
            Ok(None) => {
                ResponseTemplate::new(200).set_body_json(json!({"decision_id": decision_id}))
            }
            Err(e) => ResponseTemplate::new(500).set_body_json(json!({
                "code": "internal_error",
                "message": "error(s) occurred while evaluating query",
                "errors": [{"code": "eval_error", "message": e.to_string()}],
            })),
        }
    }
}

/// The real OPA engine (OPA v1.20.2 through tools/opa/opa_harness.py), as installed and
/// exported by `scripts/services/opa.sh`. Missing: a failure under `CI=true`, otherwise a skip
/// notice and `None`.
pub struct RealOpa {
    pub harness: PathBuf,
    pub pythonpath: String,
}

fn missing_service(test: &str, what: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "{test}: {what} is not set (CI=true: the real OPA engine is required; run scripts/test)"
        );
    }
    eprintln!("SKIPPED {test}: {what} is not set (run scripts/test)");
}

pub fn real_opa(test: &str) -> Option<RealOpa> {
    let harness = std::env::var("GATEWAY_TEST_OPA_HARNESS")
        .ok()
        .filter(|v| !v.is_empty());
    let pythonpath = std::env::var("GATEWAY_TEST_OPA_PYTHONPATH")
        .ok()
        .filter(|v| !v.is_empty());
    match (harness, pythonpath) {
        (Some(harness), Some(pythonpath)) => Some(RealOpa {
            harness: harness.into(),
            pythonpath,
        }),
        _ => {
            missing_service(
                test,
                "GATEWAY_TEST_OPA_HARNESS / GATEWAY_TEST_OPA_PYTHONPATH",
            );
            None
        }
    }
}

/// The base URL of the Data API server backed by the real OPA engine.
pub fn real_opa_url(test: &str) -> Option<String> {
    match std::env::var("GATEWAY_TEST_OPA_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            missing_service(test, "GATEWAY_TEST_OPA_URL");
            None
        }
    }
}

impl RealOpa {
    /// Runs the harness with `args`, feeding `stdin`; panics (failing the test) when it does
    /// not finish within `limit` or exits non-zero. Returns its standard output.
    pub fn run(&self, args: &[&str], stdin: Vec<u8>, limit: std::time::Duration) -> String {
        use std::io::{Read, Write};
        use std::process::{Command, Stdio};
        let mut child = Command::new("python3")
            .arg(&self.harness)
            .args(args)
            .env("PYTHONPATH", &self.pythonpath)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 starts");
        let mut child_stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = child_stdin.write_all(&stdin);
        });
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).map(|_| out)
        });
        let mut stderr = child.stderr.take().unwrap();
        let err_reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stderr.read_to_string(&mut out);
            out
        });
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the OPA harness {args:?} did not finish within {limit:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        writer.join().unwrap();
        let out = reader.join().unwrap().expect("harness output is UTF-8");
        let err = err_reader.join().unwrap();
        assert!(
            status.success(),
            "the OPA harness {args:?} failed ({status}): {err}"
        );
        out
    }
}
