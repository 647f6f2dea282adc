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
