//! The MCP endpoint driven by the official Python MCP SDK (PyPI `mcp`, installed by
//! `scripts/services/mcp_sdk.sh`; `tools/mcp_sdk/python_client.py` runs the steps): what the
//! SDK's own session, validation and progress handling make of it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Options, start, token};
use gateway_core::{RequestId, Secret};
use serde_json::{Value, json};
use std::time::Duration;

/// Runs the SDK client with `steps` as `bearer`; `None` (a skip) outside `scripts/test`.
async fn sdk(h: &Harness, bearer: &Secret, steps: Value) -> Option<Vec<Value>> {
    let (Ok(python), Ok(client)) = (
        std::env::var("GATEWAY_TEST_MCP_PYTHON"),
        std::env::var("GATEWAY_TEST_MCP_PYTHON_CLIENT"),
    ) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "GATEWAY_TEST_MCP_PYTHON is not set (CI=true: the official SDK is required; run \
             scripts/test)"
        );
        eprintln!("SKIPPED: GATEWAY_TEST_MCP_PYTHON is not set (run scripts/test)");
        return None;
    };
    let run = tokio::process::Command::new(python)
        .arg(client)
        .arg(format!("{}/mcp", h.base))
        .arg(token(bearer))
        .arg(steps.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK client did not finish in 60 s")
        .unwrap();
    assert!(
        out.status.success(),
        "SDK client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The SDK logs what it finds wrong with a server (e.g. a session it could not end).
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("failed"),
        "{stderr}"
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[tokio::test]
async fn the_python_sdk_lists_calls_and_sees_refusals() {
    let h = start(Options::default()).await;
    let steps = json!([
        {"list": true},
        {"call": "ops.echo", "arguments": {"resource": "ops:staging/web", "params": {"message": "x"}}},
        {"call": "ops.frozen", "arguments": {"resource": "ops:prod/web"}},
        {"call": "ops.echo", "arguments": {"nope": 1}},
    ]);
    let Some(a) = sdk(&h, &h.agent_a, steps.clone()).await else {
        return;
    };
    let tools = a[0]["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("ops.approve")), "{tools:?}");
    assert_eq!(a[1]["is_error"], false, "{}", a[1]);
    assert_eq!(a[1]["structured"]["status"], "completed", "{}", a[1]);
    assert!(
        a[1]["text"]
            .as_str()
            .unwrap()
            .contains("exited with code 0"),
        "{}",
        a[1]
    );
    assert_eq!(a[2]["is_error"], true, "{}", a[2]);
    assert_eq!(a[2]["structured"]["error"]["kind"], "denied", "{}", a[2]);
    assert!(
        a[2]["text"]
            .as_str()
            .unwrap()
            .contains("production is frozen"),
        "{}",
        a[2]
    );
    // Arguments the input schema refuses are an error, not a run.
    assert!(
        a[3].get("error").is_some() || a[3]["is_error"] == true,
        "{}",
        a[3]
    );
    assert_eq!(h.runner.runs().len(), 1);
    // Another agent is listed what the policy shows it.
    let b = sdk(&h, &h.agent_b, json!([{"list": true}])).await.unwrap();
    assert!(
        !b[0]["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("ops.approve")),
        "{}",
        b[0]
    );
}

#[tokio::test]
async fn the_python_sdk_gets_progress_while_a_call_waits_for_approval() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_secs(20);
    options.server.mcp_progress_interval = Duration::from_millis(200);
    let h = start(options).await;
    let id = RequestId::new().to_string();
    let steps = json!([{
        "call": "ops.approve",
        "arguments": {"resource": "ops:prod/db", "request_id": id},
        "progress": true,
    }]);
    let approve = async {
        if std::env::var("GATEWAY_TEST_MCP_PYTHON").is_err() {
            return;
        }
        h.approve_after(&id, Duration::from_millis(700)).await;
    };
    let (result, ()) = tokio::join!(sdk(&h, &h.agent_a, steps), approve);
    let Some(result) = result else {
        return;
    };
    let call = &result[0];
    assert_eq!(call["structured"]["status"], "completed", "{call}");
    assert_eq!(
        call["structured"]["outcome"]["approved_by"], "human:alice",
        "{call}"
    );
    let progress = call["progress"].as_array().unwrap();
    assert!(
        progress
            .iter()
            .filter(|m| m
                .as_str()
                .unwrap()
                .starts_with("waiting for human approval"))
            .count()
            >= 2,
        "{progress:?}"
    );
}

/// The Python SDK abandons a call waiting for approval (a cancel scope: the SDK sends
/// `notifications/cancelled`): the action is cancelled, nothing is granted or run, and no
/// approval is left pending.
#[tokio::test]
async fn cancelling_a_python_sdk_call_cancels_its_action() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_secs(20);
    options.server.mcp_progress_interval = Duration::from_millis(200);
    let h = start(options).await;
    let id = RequestId::new().to_string();
    let steps = json!([
        {
            "call": "ops.approve",
            "arguments": {"resource": "ops:prod/db", "request_id": id},
            "cancel_on_progress": "waiting for human approval",
        },
        // Still connected: only the notification said stop.
        {"sleep_ms": 500},
        {"call": "gateway.action_status", "arguments": {"request_id": id}},
    ]);
    let Some(run) = sdk(&h, &h.agent_a, steps).await else {
        return;
    };
    assert_eq!(run[0]["cancelled"], true, "{}", run[0]);
    let status = &run[2]["structured"];
    assert_eq!(status["status"], "failed", "{run:?}");
    assert!(
        status["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{run:?}"
    );
    h.assert_cancelled_while_waiting(&id).await;
}
