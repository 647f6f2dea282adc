//! End-to-end tests of the REST API over real HTTP on core parts (StaticKeys, HmacBroker and the
//! core's in-memory doubles for policy, runner and audit).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Options, start, token};
use gateway_core::hmac_broker::TokenError;
use gateway_core::testing::Fault;
use gateway_core::{AgentLimits, AuditEventKind, RequestId, Secret};
use gateway_server::ServerConfig;
use serde_json::{Value, json};
use std::time::Duration;

fn action(name: &str) -> Value {
    json!({
        "id": RequestId::new(),
        "action": name,
        "resource": "ops:staging/web",
        "intent": "integration test",
    })
}

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

#[tokio::test]
async fn allowed_action_runs_with_a_clamped_revoked_jit_grant() {
    let h = start(Options::default()).await;
    let mut body = action("ops.echo");
    body["requested_ttl_seconds"] = json!(600);
    body["params"] = json!({"message": "hi"});
    let (status, outcome) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(outcome["correlation_id"], body["id"]);
    assert_eq!(outcome["agent"], "agent:a");
    assert_eq!(outcome["decision"]["allow"], true);
    // The policy caps grants at 60 s: the 600 s asked for is clamped.
    assert_eq!(outcome["grant"]["ttl_seconds"], 60);
    assert_eq!(outcome["grant"]["revoked"], true);
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 0})
    );
    // The job saw its just-in-time token (the caller sees it scrubbed), which is revoked now
    // that the job is over.
    assert_eq!(outcome["job"]["stdout"], "hello [REDACTED]");
    let runs = h.runner.runs();
    let jit = runs[0].secret_env[gateway_core::hmac_broker::TOKEN_ENV]
        .expose_str()
        .unwrap();
    assert!(jit.starts_with("agt1."), "{jit}");
    assert_eq!(
        h.broker
            .verify(jit, "ops:ops.echo", time::OffsetDateTime::now_utc()),
        Err(TokenError::Revoked)
    );
    // The caller's credential is never echoed.
    assert!(!outcome.to_string().contains(token(&h.agent_a)));
    assert_eq!(h.runner.runs().len(), 1);
    let id: RequestId = serde_json::from_value(body["id"].clone()).unwrap();
    let kinds: Vec<_> = h.audit.events_for(id).iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&AuditEventKind::Requested));
    assert_eq!(kinds.last(), Some(&AuditEventKind::Completed));
    assert!(kinds.contains(&AuditEventKind::Revoked));
}

#[tokio::test]
async fn failing_job_is_an_outcome_and_its_grant_is_revoked() {
    let h = start(Options::default()).await;
    let (status, outcome) = h
        .post("/v1/actions", Some(&h.agent_a), &action("ops.fail"))
        .await;
    assert_eq!(status, 200, "{outcome}");
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 3})
    );
    assert_eq!(outcome["grant"]["revoked"], true);
}

#[tokio::test]
async fn denied_action_is_403_with_reasons_and_nothing_runs() {
    let h = start(Options::default()).await;
    let body = action("ops.frozen");
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 403, "{err}");
    assert_error(&err, "denied", Some(&body["id"]));
    assert_eq!(err["error"]["reasons"], json!(["production is frozen"]));
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn bad_missing_or_approver_credentials_are_401() {
    let h = start(Options::default()).await;
    let body = action("ops.echo");
    let mut wrong = token(&h.agent_a).to_owned();
    wrong.pop();
    wrong.push('x');
    let (status, err) = h
        .post("/v1/actions", Some(&Secret::from(wrong.as_str())), &body)
        .await;
    assert_eq!(status, 401, "{err}");
    assert_error(&err, "unauthenticated", Some(&body["id"]));
    assert!(!err.to_string().contains(&wrong));

    let (status, err) = h.post("/v1/actions", None, &action("ops.echo")).await;
    assert_eq!(status, 401, "{err}");
    assert_error(&err, "unauthenticated", None);

    let (status, err) = h
        .post("/v1/actions", Some(&h.alice), &action("ops.echo"))
        .await;
    assert_eq!(status, 401, "{err}");
    // And agents are not approvers.
    let (status, _) = h.get("/v1/approvals", Some(&h.agent_a)).await;
    assert_eq!(status, 401);
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn invalid_input_is_422() {
    let h = start(Options::default()).await;
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.agent_a))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let err: Value = resp.json().await.unwrap();
    assert_error(&err, "invalid_input", None);

    let (status, err) = h
        .post(
            "/v1/actions",
            Some(&h.agent_a),
            &json!({"action": "ops.echo"}),
        )
        .await;
    assert_eq!(status, 422, "missing resource: {err}");

    let body = action("ops.nope");
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 422, "{err}");
    assert_error(&err, "invalid_input", Some(&body["id"]));

    let mut body = action("ops.echo");
    body["params"] = json!(["not", "an", "object"]);
    let (status, _) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 422);
    assert!(h.runner.runs().is_empty());
}

#[tokio::test]
async fn bodies_are_read_exactly_as_written() {
    // A number a float would change, and a key written twice, would reach the policy as
    // something the client did not write: refused before anything is recorded or granted.
    let h = start(Options::default()).await;
    let body = action("ops.echo").to_string();
    for text in [
        body.replacen("{", "{\"params\":{\"n\":4.0000000000000001},", 1),
        body.replacen("{", "{\"params\":{\"n\":9007199254740993},", 1),
        body.replacen("{", "{\"action\":\"ops.nope\",", 1),
    ] {
        let resp = h
            .http
            .post(format!("{}/v1/actions", h.base))
            .bearer_auth(token(&h.agent_a))
            .header("content-type", "application/json")
            .body(text.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 422, "{text}");
        let err: Value = resp.json().await.unwrap();
        assert_error(&err, "invalid_input", None);
    }
    assert!(h.runner.runs().is_empty());
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
    let mut body = action("ops.echo");
    body["intent"] = json!("x".repeat(4096));
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 413, "{err}");
    assert_error(&err, "invalid_input", None);
    assert!(h.runner.runs().is_empty());
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
    for _ in 0..2 {
        let (status, body) = h
            .post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.agent_a))
        .json(&action("ops.echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    // One request per 1000 s: the limiter says when the next would pass, not "1".
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (990..=1000).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let err: Value = resp.json().await.unwrap();
    assert_error(&err, "rate_limited", None);
    // Another agent has its own budget.
    let (status, _) = h
        .post("/v1/actions", Some(&h.agent_b), &action("ops.echo"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(h.runner.runs().len(), 3);
}

#[tokio::test]
async fn audit_down_is_503_and_nothing_runs() {
    let h = start(Options::default()).await;
    let _plan = h.audit.faults.clone().always(Fault::Error);
    let body = action("ops.echo");
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 503, "{err}");
    assert_error(&err, "unavailable", Some(&body["id"]));
    assert!(
        h.runner.runs().is_empty(),
        "nothing may run without an audit record"
    );
    assert!(
        h.broker
            .verifier()
            .verify("agt1.x.y", "s", time::OffsetDateTime::now_utc())
            .is_err()
    );
}

async fn submit_for_approval(h: &Harness) -> String {
    let body = action("ops.approve");
    let resp = h
        .http
        .post(format!("{}/v1/actions", h.base))
        .bearer_auth(token(&h.agent_a))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let id = body["id"].as_str().unwrap().to_owned();
    let location = resp
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, format!("/v1/actions/{id}"));
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["status"], "pending_approval", "{doc}");
    assert_eq!(doc["status_url"], location);
    assert!(doc["approval_deadline"].is_string());
    id
}

#[tokio::test]
async fn approval_approved_runs_the_action() {
    let h = start(Options::default()).await;
    let id = submit_for_approval(&h).await;
    // Only the submitting agent sees the status; others get 404.
    let (status, doc) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_a)).await;
    assert_eq!(
        (status, doc["status"].clone()),
        (200, json!("pending_approval"))
    );
    let (status, _) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_b)).await;
    assert_eq!(status, 404);
    // Agents cannot approve, not even their own requests.
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.agent_a),
            &json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(status, 401);
    assert!(h.runner.runs().is_empty());

    h.wait_pending_approval(&id).await;
    let (status, list) = h.get("/v1/approvals", Some(&h.alice)).await;
    assert_eq!(status, 200);
    let entry = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["correlation_id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["agent"], "agent:a");
    assert_eq!(entry["action"], "ops.approve");

    let (status, answer) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "approve", "reason": "change ticket 42"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["approver"], "human:alice");
    let doc = h.wait_done(&id, &h.agent_a).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["outcome"]["approved_by"], "human:alice");
    assert_eq!(doc["outcome"]["job"]["stdout"], "approved run");
    assert_eq!(h.runner.runs().len(), 1);
    // The verdict, with the approver, is in the audit trail.
    let rid: RequestId = id.parse().unwrap();
    let resolved = h
        .audit
        .events_for(rid)
        .into_iter()
        .find(|e| e.kind == AuditEventKind::ApprovalResolved)
        .unwrap();
    assert_eq!(resolved.details["verdict"]["approver"], "human:alice");
    // A second verdict finds nothing pending.
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "deny"}),
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn approval_denied_stops_the_action() {
    let h = start(Options::default()).await;
    let id = submit_for_approval(&h).await;
    h.wait_pending_approval(&id).await;
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "deny", "reason": "not during the freeze"}),
        )
        .await;
    assert_eq!(status, 200);
    let doc = h.wait_done(&id, &h.agent_a).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["kind"], "denied");
    assert!(
        doc["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("not during the freeze"),
        "{doc}"
    );
    assert!(h.runner.runs().is_empty());
    // Bad verdict bodies are 422.
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "maybe"}),
        )
        .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn approval_expires_into_a_denial() {
    let mut options = Options::default();
    options.gateway.approval_timeout = Duration::from_millis(500);
    let h = start(options).await;
    let id = submit_for_approval(&h).await;
    let doc = h.wait_done(&id, &h.agent_a).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["error"]["kind"], "denied");
    assert!(
        doc["error"]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("deadline"),
        "{doc}"
    );
    assert!(h.runner.runs().is_empty());
    let (status, _) = h
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&h.alice),
            &json!({"verdict": "approve"}),
        )
        .await;
    assert_eq!(status, 404, "too late to approve");
}

#[tokio::test]
async fn unknown_things_are_404_and_duplicate_ids_409() {
    let h = start(Options::default()).await;
    let (status, err) = h
        .get(
            &format!("/v1/actions/{}", RequestId::new()),
            Some(&h.agent_a),
        )
        .await;
    assert_eq!(status, 404, "{err}");
    assert_error(&err, "not_found", None);
    let (status, _) = h.get("/v1/actions/not-a-uuid", Some(&h.agent_a)).await;
    assert_eq!(status, 404);
    let (status, _) = h.get("/v1/actions/not-a-uuid", None).await;
    assert_eq!(status, 401);
    let (status, _) = h.get("/nowhere", None).await;
    assert_eq!(status, 404);

    let body = action("ops.echo");
    assert_eq!(h.post("/v1/actions", Some(&h.agent_a), &body).await.0, 200);
    // The same agent repeating the id: 409, and nothing runs a second time.
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 409, "{err}");
    assert_eq!(h.runner.runs().len(), 1);
    // Another agent's ids are invisible: the same id is simply its own request (a 409 here
    // would tell it that agent A sent one).
    let (status, err) = h.post("/v1/actions", Some(&h.agent_b), &body).await;
    assert_eq!(status, 200, "{err}");
    assert_eq!(h.runner.runs().len(), 2);
}

#[tokio::test]
async fn an_unauthenticated_request_cannot_reserve_an_id_and_refused_ones_can_be_retried() {
    let h = start(Options::default()).await;
    let body = action("ops.echo");
    // A stranger submits the agent's id first: refused (401), and the id stays free.
    let (status, _) = h
        .post("/v1/actions", Some(&Secret::from("nobody")), &body)
        .await;
    assert_eq!(status, 401);
    let (status, err) = h.post("/v1/actions", Some(&h.agent_a), &body).await;
    assert_eq!(status, 200, "{err}");
    assert_eq!(h.runner.runs().len(), 1);
    // The agent sees its own action after it finished, and a refused one too.
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, doc) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_a)).await;
    assert_eq!(status, 200, "{doc}");
    let (status, _) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_b)).await;
    assert_eq!(status, 404);
    let denied = action("ops.frozen");
    let (status, _) = h.post("/v1/actions", Some(&h.agent_a), &denied).await;
    assert_eq!(status, 403);
    let denied_id = denied["id"].as_str().unwrap().to_owned();
    let (status, doc) = h
        .get(&format!("/v1/actions/{denied_id}"), Some(&h.agent_a))
        .await;
    assert_eq!(
        status, 200,
        "a refused action is visible to its agent: {doc}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let mut options = Options::default();
    options.server.readiness_timeout = Duration::from_millis(200);
    let h = start(options).await;
    assert_eq!(h.get("/healthz", None).await.0, 200);
    assert_eq!(h.get("/readyz", None).await.0, 200);

    h.post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
        .await;
    h.post("/v1/actions", Some(&h.agent_a), &action("ops.frozen"))
        .await;
    let (status, text) = h.get("/metrics", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    for line in [
        "gateway_decisions_total{decision=\"allow\"} 1",
        "gateway_decisions_total{decision=\"deny\"} 1",
        "gateway_actions_total{result=\"ran\"} 1",
        "gateway_actions_total{result=\"denied\"} 1",
        "gateway_grants_total{result=\"issued\"} 1",
        "gateway_revocations_total{result=\"ok\"} 1",
        "gateway_runs_total{status=\"succeeded\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // Two actions, one commit each timed: the allowed one is two (write-ahead, two commits),
    // the denied one is one.
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("gateway_audit_append_seconds_count "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(count, 3);

    // Policy down: not ready.
    let plan = h.policy.faults.clone().always(Fault::Error);
    let (status, err) = h.get("/readyz", None).await;
    assert_eq!(status, 503, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("policy"));
    plan.clear();
    let _plan = h.policy.faults.clone().always(Fault::Hang);
    assert_eq!(h.get("/readyz", None).await.0, 503);
}

/// `GET /v1/catalog` serves each action's params schema byte for byte as defined, to agents
/// only; a request the schema refuses is refused with the failing path.
#[tokio::test]
async fn catalog_serves_the_enforced_schemas() {
    let h = start(Options::default()).await;
    let (status, _) = h.get("/v1/catalog", None).await;
    assert_eq!(status, 401);
    let (status, body) = h.get("/v1/catalog", Some(&h.agent_a)).await;
    assert_eq!(status, 200, "{body}");
    let catalog = common::catalog();
    let served = body["actions"].as_array().unwrap();
    assert_eq!(served.len(), catalog.actions().count());
    for def in catalog.actions() {
        let entry = served
            .iter()
            .find(|a| a["name"] == def.name.as_str())
            .unwrap();
        assert_eq!(
            serde_json::to_vec(&entry["params_schema"]).unwrap(),
            serde_json::to_vec(def.params_schema.as_value()).unwrap(),
            "{}",
            def.name
        );
    }
    let (status, body) = h
        .post(
            "/v1/actions",
            Some(&h.agent_a),
            &serde_json::json!({"action": "ops.echo", "resource": "ops:staging/web", "params": {"message": 3}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("/message"), "{body}");
}

/// Once a 202 says `pending_approval`, the approval is listed and can be resolved at once: the
/// tracker reports pending only after the queue holds the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_202_pending_approval_is_resolvable_at_once() {
    let h = start(Options::default()).await;
    for _ in 0..20 {
        let (s, doc) = h
            .post(
                "/v1/actions",
                Some(&h.agent_a),
                &json!({"action": "ops.approve", "resource": "ops:prod/db"}),
            )
            .await;
        assert_eq!(
            (s, doc["status"].as_str()),
            (202, Some("pending_approval")),
            "{doc}"
        );
        let id = doc["id"].as_str().unwrap();
        let (s, b) = h
            .post(
                &format!("/v1/approvals/{id}"),
                Some(&h.alice),
                &json!({"verdict": "deny", "reason": "no"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
}

#[tokio::test]
async fn a_flood_of_bad_credentials_is_budgeted_per_source_and_counted_not_run() {
    let h = start(Options::default()).await;
    let before = h.audit.records().len();
    let stranger = gateway_core::Secret::from("agk_nobody.garbage".to_owned());
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let resp = h
            .http
            .post(format!("{}/v1/actions", h.base))
            .bearer_auth(token(&stranger))
            .json(&action("ops.echo"))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        if status == 429 {
            assert_eq!(resp.headers()["retry-after"], "10");
        }
        statuses.push(status);
    }
    let unauthenticated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    // The default budget: a burst of 20 (and 1 per second after it).
    assert!((20..=21).contains(&unauthenticated), "{statuses:?}");
    assert_eq!(unauthenticated + refused, 30, "{statuses:?}");
    // Each of the first is audited; the rest cost no record of their own.
    assert_eq!(h.audit.records().len() - before, unauthenticated);
    // The real agent is untouched by the flood.
    let (status, body) = h
        .post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
        .await;
    assert_eq!(status, 200, "{body}");
    // At shutdown the refusals are written as one counted summary for the source.
    h.shut_down().await;
    let summaries: Vec<_> = h
        .audit
        .records()
        .into_iter()
        .map(|r| r.event)
        .filter(|e| e.details.contains_key("refused_count"))
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].kind, gateway_core::AuditEventKind::Rejected);
    assert_eq!(summaries[0].origin.as_deref(), Some("127.0.0.1"));
    assert_eq!(summaries[0].details["refused_count"], json!(refused));
}

#[tokio::test]
async fn the_kill_switch_locks_and_unlocks_an_agent_for_approvers_only() {
    let h = start(Options::default()).await;
    let lock = json!({"agent": "agent:a", "reason": "INC-3"});
    // Agents may not lock anyone, nor read the locks.
    let (status, _) = h.post("/v1/locks", Some(&h.agent_a), &lock).await;
    assert_eq!(status, 401);
    let (status, _) = h.get("/v1/locks", Some(&h.agent_a)).await;
    assert_eq!(status, 401);
    // Exactly one target, and a reason.
    for bad in [
        json!({"reason": "no target"}),
        json!({"agent": "agent:a", "owner": "team-a", "reason": "both"}),
        json!({"agent": "agent:a", "reason": ""}),
        json!({"agent": "agent:a"}),
    ] {
        let (status, err) = h.post("/v1/locks", Some(&h.alice), &bad).await;
        assert_eq!(status, 422, "{bad}: {err}");
    }

    let (status, locked) = h.post("/v1/locks", Some(&h.alice), &lock).await;
    assert_eq!(status, 200, "{locked}");
    assert_eq!(locked["lock"]["agent"], "agent:a");
    assert_eq!(locked["lock"]["locked_by"], "human:alice");
    assert_eq!(locked["audited"], true);
    let (status, list) = h.get("/v1/locks", Some(&h.alice)).await;
    assert_eq!(
        (status, list["locks"].as_array().map(Vec::len)),
        (200, Some(1))
    );

    let (status, err) = h
        .post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
        .await;
    assert_eq!(status, 403, "{err}");
    assert!(err.to_string().contains("INC-3"), "{err}");
    // agent:b is not locked.
    let (status, _) = h
        .post("/v1/actions", Some(&h.agent_b), &action("ops.echo"))
        .await;
    assert_eq!(status, 200);

    let unlock = json!({"agent": "agent:a", "reason": "INC-3 resolved"});
    let (status, answer) = h.post("/v1/locks/unlock", Some(&h.alice), &unlock).await;
    assert_eq!(
        (status, &answer["unlocked"]),
        (200, &json!(true)),
        "{answer}"
    );
    tokio::time::sleep(gateway_core::gateway::LOCK_CACHE).await;
    let (status, done) = h
        .post("/v1/actions", Some(&h.agent_a), &action("ops.echo"))
        .await;
    assert_eq!(status, 200, "{done}");
}
