//! Two server replicas over one state store (in one process here; `tests/replicas.rs` of the
//! facade runs them as separate processes on PostgreSQL): an approval asked on one is answered
//! on the other, the action runs once, and each replica answers for the other's requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::RequestId;
use serde_json::{Value, json};

fn action(name: &str) -> Value {
    json!({
        "id": RequestId::new(),
        "action": name,
        "resource": "ops:staging/web",
        "intent": "replica test",
    })
}

#[tokio::test]
async fn an_approval_asked_on_one_replica_is_answered_on_the_other_and_runs_once() {
    let a = start(Options::default()).await;
    let b = start(Options {
        replica_of: Some(a.shared.clone()),
        ..Options::default()
    })
    .await;
    let body = action("ops.approve");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, doc) = a.post("/v1/actions", Some(&a.agent_a), &body).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (202, Some("pending_approval")),
        "{doc}"
    );

    // B never saw the request, yet lists it, with the hash the vote is bound to.
    let (status, list) = b.get("/v1/approvals", Some(&b.alice)).await;
    assert_eq!(status, 200, "{list}");
    let entry = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["correlation_id"] == id.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("not listed on the other replica: {list}"));
    let hash = entry["request_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64, "{entry}");
    // B reports the status of A's action, from the store.
    let (status, doc) = b.get(&format!("/v1/actions/{id}"), Some(&b.agent_a)).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (200, Some("pending_approval")),
        "{doc}"
    );

    // A vote quoting another hash is refused; the right one is counted.
    let (status, answer) = b
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&b.alice),
            &json!({"verdict": "approve", "reason": "CHG-42", "request_hash": "0".repeat(64)}),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = b
        .post(
            &format!("/v1/approvals/{id}"),
            Some(&b.alice),
            &json!({"verdict": "approve", "reason": "CHG-42", "request_hash": hash}),
        )
        .await;
    assert_eq!(
        (status, answer["verdict"].as_str()),
        (200, Some("approved")),
        "{answer}"
    );

    let doc = a.wait_done(&id, &a.agent_a).await;
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["outcome"]["approved_by"], "human:alice");
    assert_eq!(a.runner.runs().len(), 1);
    assert!(
        b.runner.runs().is_empty(),
        "the approving replica ran it too"
    );
    // The approve reason is in the trail, with the hash it was bound to.
    let rid: RequestId = id.parse().unwrap();
    let resolved = a
        .audit
        .events_for(rid)
        .into_iter()
        .find(|e| e.kind == gateway_core::AuditEventKind::ApprovalResolved)
        .unwrap();
    assert_eq!(resolved.details["votes"][0]["reason"], "CHG-42");
    assert_eq!(resolved.details["request_hash"], hash.as_str());

    // B answers for A's finished action; a repeat of its id on B is 409 and runs nothing;
    // another agent gets 404 on either replica.
    let (status, doc) = b.get(&format!("/v1/actions/{id}"), Some(&b.agent_a)).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (200, Some("completed")),
        "{doc}"
    );
    assert_eq!(doc["outcome"]["approved_by"], "human:alice", "{doc}");
    let (status, doc) = b.post("/v1/actions", Some(&b.agent_a), &body).await;
    assert_eq!(status, 409, "{doc}");
    assert!(b.runner.runs().is_empty() && a.runner.runs().len() == 1);
    for h in [&a, &b] {
        let (status, _) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_b)).await;
        assert_eq!(status, 404);
    }
}

#[tokio::test]
async fn a_refused_action_reads_the_same_on_both_replicas() {
    let a = start(Options::default()).await;
    let b = start(Options {
        replica_of: Some(a.shared.clone()),
        ..Options::default()
    })
    .await;
    let body = action("ops.frozen");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, doc) = a.post("/v1/actions", Some(&a.agent_a), &body).await;
    assert_eq!(status, 403, "{doc}");
    let (_, on_a) = a.get(&format!("/v1/actions/{id}"), Some(&a.agent_a)).await;
    let (status, on_b) = b.get(&format!("/v1/actions/{id}"), Some(&b.agent_a)).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b["status"], "failed");
    assert_eq!(on_b["error"]["kind"], on_a["error"]["kind"]);
    assert_eq!(
        on_b["error"]["reasons"], on_a["error"]["reasons"],
        "{on_a} vs {on_b}"
    );
}
