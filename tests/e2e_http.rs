//! End-to-end tests of the REST API over real HTTP on the embedded defaults: embedded Rego on
//! `policies/`, the real local runner, HMAC grants and a real SQLite audit log (see
//! `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_gateway::core::{AgentLimits, AuditEventKind, AuditSink, Secret};
use common::{Harness, Options, presented_token, request, start, token};
use gateway_server::ServerConfig;
use serde_json::{Value, json};
use std::time::Duration;

fn assert_error(body: &Value, kind: &str, id: Option<&Value>) {
    let e = &body["error"];
    assert_eq!(e["kind"], kind, "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if let Some(id) = id {
        assert_eq!(&e["correlation_id"], id, "{body}");
    }
}

fn scale(namespace: &str, replicas: u64) -> Value {
    request(
        "k8s.scale",
        &format!("k8s:{namespace}/deployments/web"),
        json!({"replicas": replicas}),
    )
}

#[tokio::test]
async fn allowed_scale_runs_with_a_revoked_grant_and_a_verifiable_audit_chain() {
    let h = start(Options::default()).await;
    let mut body = scale("staging", 3);
    body["requested_ttl_seconds"] = json!(3600);
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, outcome) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["correlation_id"], body["id"]);
    assert_eq!(outcome["agent"], "agent:deployer");
    assert_eq!(outcome["decision"]["allow"], true);
    // The reference policy caps k8s.scale grants at 300 s.
    assert_eq!(outcome["grant"]["ttl_seconds"], 300, "{outcome}");
    assert_eq!(
        outcome["grant"]["scopes"],
        json!([
            "k8s:staging:deployments/web:get",
            "k8s:staging:deployments/web/scale:patch"
        ])
    );
    assert_eq!(outcome["grant"]["revoked"], true);
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 0}),
        "{outcome}"
    );
    let stdout = outcome["job"]["stdout"].as_str().unwrap();
    assert!(
        stdout.contains("scaled staging/web to 3 replicas"),
        "{stdout}"
    );
    // The job presented its just-in-time token; the caller sees it scrubbed.
    assert_eq!(
        presented_token(stdout).as_deref(),
        Some("[REDACTED]"),
        "{stdout}"
    );
    assert!(!outcome.to_string().contains(token(&h.deployer)));
    // The durable trail, read back from SQLite, covers every step; the chain verifies.
    let trail = h.trail(&id).await;
    for kind in [
        AuditEventKind::Requested,
        AuditEventKind::Decided,
        AuditEventKind::Granted,
        AuditEventKind::Started,
        AuditEventKind::Revoked,
        AuditEventKind::Completed,
    ] {
        assert!(trail.contains(&kind), "{kind:?} missing from {trail:?}");
    }
    assert_eq!(trail.first(), Some(&AuditEventKind::Requested));
    assert_eq!(trail.last(), Some(&AuditEventKind::Completed));
    assert!(h.verify_audit().await >= trail.len() as u64);
    // The job's output is recorded scrubbed too (the token itself is searched for in the
    // audit trail by gateway-core's `secrets_never_reach_the_audit_trail` and, for a real
    // password, by tests/infrastructure.rs).
    let all = serde_json::to_string(&h.parts.audit.read(None, usize::MAX).await.unwrap()).unwrap();
    assert!(!all.contains(" Bearer ") || all.contains("Bearer [REDACTED]"));
}

#[tokio::test]
async fn denied_actions_are_403_with_the_policy_reasons_and_nothing_runs() {
    let h = start(Options::default()).await;
    // Over the replica limit of policies/data.json.
    let body = scale("staging", 50);
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 403, "{err}");
    assert_error(&err, "denied", Some(&body["id"]));
    assert_eq!(
        err["error"]["reasons"],
        json!(["replicas 50 exceeds the limit of 10"])
    );
    // A namespace the agent was not given, and a role it does not have.
    let body = scale("kube-system", 1);
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(
        err["error"]["reasons"],
        json!(["agent may not act in namespace \"kube-system\""])
    );
    let body = request("db.query", "db:orders", json!({"sql": "SELECT 1"}));
    let (status, err) = h.post("/v1/actions", Some(&h.intern), &body).await;
    assert_eq!(status, 403, "{err}");
    assert_eq!(
        err["error"]["reasons"],
        json!(["agent role must be db-reader"])
    );
    // A write disguised as a query.
    let body = request(
        "db.query",
        "db:orders",
        json!({"sql": "DELETE FROM orders"}),
    );
    let (status, err) = h.post("/v1/actions", Some(&h.db_reader), &body).await;
    assert_eq!(status, 403, "{err}");
    let reasons = err["error"]["reasons"].to_string();
    assert!(
        reasons.contains("SQL must start with SELECT or WITH"),
        "{reasons}"
    );

    assert_eq!(h.runs_and_grants(), (0, 0), "nothing ran, no grant issued");
    let trail = h.trail(body["id"].as_str().unwrap()).await;
    assert!(trail.contains(&AuditEventKind::Decided), "{trail:?}");
    assert!(!trail.contains(&AuditEventKind::Granted), "{trail:?}");
    assert!(!trail.contains(&AuditEventKind::Started), "{trail:?}");
    h.verify_audit().await;
}

#[tokio::test]
async fn failing_job_is_an_outcome_and_its_grant_is_revoked() {
    let h = start(Options::default()).await;
    let body = request("db.query", "db:missing", json!({"sql": "SELECT 1"}));
    let (status, outcome) = h.post("/v1/actions", Some(&h.db_reader), &body).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 2}),
        "{outcome}"
    );
    assert_eq!(outcome["grant"]["revoked"], true);
    assert_eq!(outcome["grant"]["ttl_seconds"], 120);
}

#[tokio::test]
async fn bad_credentials_are_401_and_nothing_runs() {
    let h = start(Options::default()).await;
    let body = scale("staging", 2);
    let mut wrong = token(&h.deployer).to_owned();
    wrong.pop();
    wrong.push(if wrong.ends_with('x') { 'y' } else { 'x' });
    let (status, err) = h
        .post("/v1/actions", Some(&Secret::from(wrong.as_str())), &body)
        .await;
    assert_eq!(status, 401, "{err}");
    assert_error(&err, "unauthenticated", Some(&body["id"]));
    assert!(!err.to_string().contains(&wrong));
    let (status, err) = h.post("/v1/actions", None, &scale("staging", 2)).await;
    assert_eq!(status, 401, "{err}");
    // The approver's token is not an agent credential, and agents cannot approve.
    let (status, _) = h
        .post("/v1/actions", Some(&h.alice), &scale("staging", 2))
        .await;
    assert_eq!(status, 401);
    let (status, _) = h.get("/v1/approvals", Some(&h.deployer)).await;
    assert_eq!(status, 401);
    assert_eq!(h.runs_and_grants(), (0, 0));
}

#[tokio::test]
async fn unknown_action_and_bad_params_are_422() {
    let h = start(Options::default()).await;
    let body = request("k8s.delete", "k8s:staging/deployments/web", json!({}));
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 422, "{err}");
    assert_error(&err, "invalid_input", Some(&body["id"]));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("k8s.delete"),
        "{err}"
    );
    // Params that do not match the action's schema.
    let body = request(
        "k8s.scale",
        "k8s:staging/deployments/web",
        json!({"replicas": "three"}),
    );
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 422, "{err}");
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.deployer))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    assert_eq!(h.runs_and_grants(), (0, 0));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let h = start(Options {
        server: ServerConfig {
            max_body_bytes: 1024,
            ..ServerConfig::default()
        },
        ..Options::default()
    })
    .await;
    let mut body = scale("staging", 2);
    body["intent"] = json!("x".repeat(4096));
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 413, "{err}");
    assert_error(&err, "invalid_input", None);
    // Just under the cap is fine.
    let (status, out) = h
        .post("/v1/actions", Some(&h.deployer), &scale("staging", 2))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(h.runs_and_grants(), (1, 1));
}

#[tokio::test]
async fn rate_limit_is_429_per_agent() {
    let mut options = Options::default();
    options.gateway.agent_limits = AgentLimits {
        max_concurrent: 16,
        requests_per_second: 0.001,
        burst: 2,
        ..AgentLimits::default()
    };
    let h = start(options).await;
    let echo = || request("diag.echo", "diag:ping", json!({"message": "ping"}));
    for _ in 0..2 {
        let (status, body) = h.post("/v1/actions", Some(&h.deployer), &echo()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["job"]["stdout"], "ping\n", "{body}");
    }
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.deployer))
        .json(&echo())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let err: Value = resp.json().await.unwrap();
    assert_error(&err, "rate_limited", None);
    // Another agent has its own budget.
    let (status, _) = h.post("/v1/actions", Some(&h.db_reader), &echo()).await;
    assert_eq!(status, 200);
    assert_eq!(h.runs_and_grants(), (3, 3));
}

#[tokio::test]
async fn audit_down_is_503_and_nothing_runs() {
    let h = start(Options::default()).await;
    // Healthy first, so the switch is the only difference.
    assert_eq!(h.get("/readyz", None).await.0, 200);
    h.audit.set_down(true);
    let body = scale("staging", 2);
    let (status, err) = h.post("/v1/actions", Some(&h.deployer), &body).await;
    assert_eq!(status, 503, "{err}");
    assert_error(&err, "unavailable", Some(&body["id"]));
    // Nothing ran without commit 1. The grant issued before it (write-ahead, two commits:
    // a grant is usable by nobody until the job starts) was revoked.
    let (runs, grants) = h.runs_and_grants();
    assert_eq!(runs, 0, "nothing may run without an audit record");
    assert_eq!(grants, 1);
    assert_eq!(h.metrics.revocations(), (1, 0));
    h.audit.set_down(false);
    // Nothing of the refused request reached the log, and the chain is intact.
    assert!(h.trail(body["id"].as_str().unwrap()).await.is_empty());
    h.verify_audit().await;
    // Back up: the same agent is served again.
    let (status, out) = h
        .post("/v1/actions", Some(&h.deployer), &scale("staging", 2))
        .await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(h.runs_and_grants(), (1, 2));
}

/// Submits a production scale (which the reference policy sends to a human) and checks the 202.
async fn submit_production_scale(h: &Harness) -> String {
    let body = scale("production", 6);
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.deployer))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = body["id"].as_str().unwrap().to_owned();
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/actions/{id}"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["status"], "pending_approval", "{doc}");
    assert_eq!(doc["status_url"], location);
    assert!(doc["approval_deadline"].is_string(), "{doc}");
    id
}

#[tokio::test]
async fn production_approved_by_a_human_runs() {
    let h = start(Options::default()).await;
    let id = submit_production_scale(&h).await;
    let entry = h.wait_pending_approval(&id).await;
    assert_eq!(entry["agent"], "agent:deployer");
    assert_eq!(entry["action"], "k8s.scale");
    assert_eq!(entry["resource"], "k8s:production/deployments/web");
    // The agent cannot approve its own request; nothing has run yet.
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.deployer),
            &json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(h.runs_and_grants(), (0, 0));

    let (status, answer) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "approve", "reason": "CHG-42"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let doc = h.wait_done(&id, &h.deployer).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    let outcome = &doc["outcome"];
    assert_eq!(outcome["approved_by"], "human:alice");
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 0})
    );
    assert!(
        outcome["job"]["stdout"]
            .as_str()
            .unwrap()
            .contains("scaled production/web to 6 replicas"),
        "{doc}"
    );
    assert_eq!(outcome["grant"]["revoked"], true);
    let trail = h.trail(&id).await;
    assert!(
        trail.contains(&AuditEventKind::ApprovalRequested),
        "{trail:?}"
    );
    assert!(
        trail.contains(&AuditEventKind::ApprovalResolved),
        "{trail:?}"
    );
    assert_eq!(trail.last(), Some(&AuditEventKind::Completed));
    h.verify_audit().await;
}

#[tokio::test]
async fn production_denied_by_a_human_does_not_run() {
    let h = start(Options::default()).await;
    let id = submit_production_scale(&h).await;
    h.wait_pending_approval(&id).await;
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "deny", "reason": "change freeze"}),
        )
        .await;
    assert_eq!(status, 200);
    let doc = h.wait_done(&id, &h.deployer).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["kind"], "denied");
    assert!(
        doc["error"]["reasons"]
            .to_string()
            .contains("change freeze"),
        "{doc}"
    );
    assert_eq!(h.runs_and_grants(), (0, 0));
    let trail = h.trail(&id).await;
    assert!(
        trail.contains(&AuditEventKind::ApprovalResolved),
        "{trail:?}"
    );
    assert!(!trail.contains(&AuditEventKind::Started), "{trail:?}");
    h.verify_audit().await;
}

#[tokio::test]
async fn production_approval_expires_into_a_denial() {
    let mut options = Options::default();
    options.gateway.approval_timeout = Duration::from_millis(500);
    let h = start(options).await;
    let id = submit_production_scale(&h).await;
    let doc = h.wait_done(&id, &h.deployer).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["kind"], "denied");
    assert!(
        doc["error"]["reasons"].to_string().contains("deadline"),
        "{doc}"
    );
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(status, 404, "too late to approve");
    assert_eq!(h.runs_and_grants(), (0, 0));
    assert!(
        h.trail(&id)
            .await
            .contains(&AuditEventKind::ApprovalResolved)
    );
    h.verify_audit().await;
}

#[tokio::test]
async fn health_and_readiness_on_embedded_backends() {
    let h = start(Options::default()).await;
    assert_eq!(h.get("/healthz", None).await.0, 200);
    let (status, body) = h.get("/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    // Readiness asks the audit backend: with the store down, not ready.
    h.audit.set_down(true);
    let (status, body) = h.get("/readyz", None).await;
    h.audit.set_down(false);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("audit"),
        "{body}"
    );
    assert_eq!(h.get("/readyz", None).await.0, 200);
}
