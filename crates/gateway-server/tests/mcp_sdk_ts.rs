//! The MCP endpoint driven by the official TypeScript MCP SDK (npm `@modelcontextprotocol/sdk`,
//! pinned in `tools/mcp_sdk/ts/package-lock.json` and installed by
//! `scripts/services/mcp_sdk_ts.sh`; `tools/mcp_sdk/ts/client.mjs` runs the steps): what the
//! SDK's own handshake, output-schema validation, progress, cancellation and HTTP error handling
//! make of it, with sessions and without.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, Options, start, token};
use gateway_core::RequestId;
use serde_json::{Value, json};
use std::time::Duration;

/// The protocol version the pinned SDK asks for, and that the server agrees to.
const SDK_PROTOCOL: &str = "2025-11-25";

/// Runs the SDK client with `steps` as `bearer`; `None` (a skip) outside `scripts/test`.
async fn sdk(h: &Harness, bearer: &str, steps: Value) -> Option<Value> {
    let (Ok(node), Ok(client)) = (
        std::env::var("GATEWAY_TEST_MCP_NODE"),
        std::env::var("GATEWAY_TEST_MCP_TS_CLIENT"),
    ) else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "GATEWAY_TEST_MCP_NODE / GATEWAY_TEST_MCP_TS_CLIENT are not set (CI=true: the \
             official TypeScript SDK is required; run scripts/test)"
        );
        eprintln!("SKIPPED: GATEWAY_TEST_MCP_NODE is not set (run scripts/test)");
        return None;
    };
    let run = tokio::process::Command::new(node)
        .arg(client)
        .arg(format!("{}/mcp", h.base))
        .arg(bearer)
        .arg(steps.to_string())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK client did not finish in 60 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK client failed: {stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// Options for a server with sessions (`true`) or without.
fn options(sessions: bool) -> Options {
    let mut options = Options::default();
    options.server.mcp_sessions = sessions;
    options
}

/// Asserts the SDK connected (with a session or not) and reported nothing wrong.
fn assert_clean(run: &Value, sessions: bool) {
    let connect = &run["connect"];
    assert_eq!(connect["protocol_version"], SDK_PROTOCOL, "{run}");
    assert_eq!(connect["server"], "agent-gateway", "{run}");
    assert_eq!(connect["session_id"].is_string(), sessions, "{run}");
    assert_eq!(run["errors"], json!([]), "{run}");
}

fn names(step: &Value) -> Vec<String> {
    let mut names: Vec<String> = step["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tool list: {step}"))
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Each agent is listed what the policy's listing rule shows it, with a session and without;
/// the session ends with a DELETE the SDK accepts.
#[tokio::test]
async fn the_ts_sdk_lists_each_agent_its_own_tools() {
    for sessions in [true, false] {
        let h = start(options(sessions)).await;
        let steps = json!([{"list": true}, {"terminate": true}]);
        let Some(a) = sdk(&h, token(&h.agent_a), steps.clone()).await else {
            return;
        };
        let b = sdk(&h, token(&h.agent_b), steps).await.unwrap();
        assert_clean(&a, sessions);
        assert_clean(&b, sessions);
        let (for_a, for_b) = (names(&a["steps"][0]), names(&b["steps"][0]));
        assert!(for_a.contains(&"ops.approve".to_owned()), "{for_a:?}");
        assert!(!for_b.contains(&"ops.approve".to_owned()), "{for_b:?}");
        let mut expected_b = for_a.clone();
        expected_b.retain(|n| n != "ops.approve");
        assert_eq!(for_b, expected_b);
        assert!(for_a.contains(&"gateway.action_status".to_owned()));
        // Without a session there is nothing to end: the SDK sends no DELETE.
        assert_eq!(a["steps"][1]["terminated"], true, "{a}");
    }
}

/// The SDK checks `structuredContent` against each tool's `outputSchema` itself (once it has
/// listed the tools): an allowed call, a denial and an input error all pass that check, and
/// refusals are tool errors with the reasons; only an unknown tool is a protocol error.
#[tokio::test]
async fn the_ts_sdk_validates_results_and_sees_refusals() {
    for sessions in [true, false] {
        let h = start(options(sessions)).await;
        let steps = json!([
            {"list": true},
            {"call": "ops.echo", "arguments": {"resource": "ops:staging/web", "params": {"message": "x"}}},
            {"call": "ops.frozen", "arguments": {"resource": "ops:prod/web", "intent": "try"}},
            {"call": "ops.echo", "arguments": {"resource": "ops:staging/web", "params": {"message": 3}}},
            {"call": "ops.echo", "arguments": {"nope": 1}},
            {"call": "ops.unknown", "arguments": {"resource": "ops:staging/web"}},
        ]);
        let Some(run) = sdk(&h, token(&h.agent_a), steps).await else {
            return;
        };
        assert_clean(&run, sessions);
        let s = run["steps"].as_array().unwrap();

        let ok = &s[1];
        assert_eq!(ok["validated"], true, "the SDK had no validator: {ok}");
        assert_eq!(ok["is_error"], false, "{ok}");
        assert_eq!(ok["structured"]["status"], "completed", "{ok}");
        assert_eq!(ok["structured"]["outcome"]["agent"], "agent:a", "{ok}");
        assert_eq!(
            ok["structured"]["outcome"]["grant"]["revoked"], true,
            "{ok}"
        );
        let text = ok["text"].as_str().unwrap();
        assert!(text.contains("exited with code 0"), "{ok}");
        assert!(text.contains("hello [REDACTED]"), "{ok}");

        let denied = &s[2];
        assert_eq!(denied["validated"], true, "{denied}");
        assert_eq!(denied["is_error"], true, "{denied}");
        let error = &denied["structured"]["error"];
        assert_eq!(error["kind"], "denied", "{denied}");
        assert_eq!(
            error["reasons"],
            json!(["production is frozen"]),
            "{denied}"
        );
        assert!(
            denied["text"]
                .as_str()
                .unwrap()
                .contains("production is frozen"),
            "{denied}"
        );

        // Input the schemas refuse is a tool error the model can read and correct.
        for bad in [&s[3], &s[4]] {
            assert_eq!(bad["is_error"], true, "{bad}");
            assert_eq!(bad["validated"], true, "{bad}");
            assert_eq!(bad["structured"]["status"], "failed", "{bad}");
            assert_eq!(bad["structured"]["error"]["kind"], "invalid_input", "{bad}");
        }
        assert!(
            s[3]["text"].as_str().unwrap().contains("/message"),
            "{}",
            s[3]
        );
        assert!(s[4]["text"].as_str().unwrap().contains("nope"), "{}", s[4]);

        // An unknown tool is a JSON-RPC error, which the SDK throws as an McpError.
        let unknown = &s[5]["error"];
        assert_eq!(unknown["name"], "McpError", "{}", s[5]);
        assert_eq!(unknown["code"], -32602, "{}", s[5]);
        assert!(
            unknown["message"].as_str().unwrap().contains("ops.unknown"),
            "{}",
            s[5]
        );
        assert_eq!(h.runner.runs().len(), 1, "only the allowed call ran");

        // The SDK's check is not vacuous: the same document with a grant that carries one more
        // field (a token, say) fails the validator it compiled from the listed outputSchema.
        let mut leaked = ok["structured"].clone();
        leaked["outcome"]["grant"]["token"] = json!("secret");
        let checks = json!([
            {"list": true},
            {"check_output": "ops.echo", "structured": ok["structured"]},
            {"check_output": "ops.echo", "structured": leaked},
        ]);
        let checked = sdk(&h, token(&h.agent_a), checks).await.unwrap();
        let c = &checked["steps"];
        assert_eq!(
            c[1],
            json!({"validator": true, "valid": true, "message": null})
        );
        assert_eq!(c[2]["valid"], false, "{checked}");
        assert!(
            c[2]["message"]
                .as_str()
                .unwrap()
                .contains("additional properties"),
            "{checked}"
        );
    }
}

/// A call that waits for a human stays open with progress notifications; the SDK resets its
/// request timeout on each, so a call that outlasts the timeout still gets its outcome.
#[tokio::test]
async fn the_ts_sdk_gets_progress_while_a_call_waits_for_approval() {
    for sessions in [true, false] {
        let mut options = options(sessions);
        options.server.mcp_call_wait = Duration::from_secs(20);
        options.server.mcp_progress_interval = Duration::from_millis(200);
        let h = start(options).await;
        let id = RequestId::new().to_string();
        let steps = json!([
            {"list": true},
            {
                "call": "ops.approve",
                "arguments": {"resource": "ops:prod/db", "request_id": id},
                "progress": true,
                // Shorter than the wait for the approver below: only progress keeps it alive.
                "timeout_ms": 1000,
            },
        ]);
        let approve = async {
            if std::env::var("GATEWAY_TEST_MCP_NODE").is_err() {
                return;
            }
            h.approve_after(&id, Duration::from_millis(1500)).await;
        };
        let (run, ()) = tokio::join!(sdk(&h, token(&h.agent_a), steps), approve);
        let Some(run) = run else {
            return;
        };
        assert_clean(&run, sessions);
        let call = &run["steps"][1];
        assert_eq!(call["validated"], true, "{call}");
        assert_eq!(call["is_error"], false, "{call}");
        assert_eq!(call["structured"]["status"], "completed", "{call}");
        assert_eq!(
            call["structured"]["outcome"]["approved_by"], "human:alice",
            "{call}"
        );
        let waiting = call["progress"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m.as_str()
                    .unwrap()
                    .starts_with("waiting for human approval")
            })
            .count();
        assert!(waiting >= 5, "{call}");
        assert_eq!(h.runner.runs().len(), 1);
    }
}

/// Aborting a call (its AbortSignal: the SDK sends `notifications/cancelled`) cancels its
/// action while the client is still connected, with a session and without: the approval is
/// withdrawn, nothing runs, and the audit trail ends with a terminal record.
#[tokio::test]
async fn aborting_a_ts_sdk_call_cancels_its_action() {
    for sessions in [true, false] {
        let mut options = options(sessions);
        options.server.mcp_call_wait = Duration::from_secs(20);
        let h = start(options).await;
        // One call aborted once its progress says it waits for a human (its response is an
        // open event stream by then), one aborted after a while without asking for progress
        // (its response has not begun).
        let (streamed, quiet) = (RequestId::new().to_string(), RequestId::new().to_string());
        let steps = json!([
            {
                "call": "ops.approve",
                "arguments": {"resource": "ops:prod/db", "request_id": streamed},
                "abort_on_progress": "waiting for human approval",
            },
            {
                "call": "ops.approve",
                "arguments": {"resource": "ops:prod/db", "request_id": quiet},
                "abort_after_ms": 500,
            },
            // Still connected: only the notification said stop.
            {"sleep_ms": 500},
            {"call": "gateway.action_status", "arguments": {"request_id": streamed}},
            {"call": "gateway.action_status", "arguments": {"request_id": quiet}},
        ]);
        let Some(run) = sdk(&h, token(&h.agent_a), steps).await else {
            return;
        };
        // Nothing reached the SDK for the calls it gave up (no late progress or response).
        assert_clean(&run, sessions);
        for (i, id) in [(0, &streamed), (1, &quiet)] {
            let aborted = &run["steps"][i];
            assert_eq!(aborted["aborted"], true, "{aborted}");
            assert_eq!(aborted["error"]["name"], "McpError", "{aborted}");
            let status = &run["steps"][3 + i]["structured"];
            assert_eq!(status["id"], json!(id), "{run}");
            assert_eq!(status["status"], "failed", "sessions {sessions}: {run}");
            assert!(
                status["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("cancelled"),
                "{run}"
            );
            let doc = h.wait_done(id, &h.agent_a).await;
            assert_eq!(doc["status"], "failed", "{doc}");
            h.assert_cancelled_while_waiting(id).await;
        }
    }
}

/// A credential the gateway does not accept: the SDK's handshake fails with the HTTP 401.
#[tokio::test]
async fn the_ts_sdk_reports_a_bad_bearer_as_http_401() {
    let h = start(Options::default()).await;
    for bearer in ["agk_key-a.wrong", token(&h.alice)] {
        let Some(run) = sdk(&h, bearer, json!([{"list": true}])).await else {
            return;
        };
        let error = &run["connect"]["error"];
        assert_eq!(error["name"], "StreamableHTTPError", "{run}");
        assert_eq!(error["code"], 401, "{run}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("unauthenticated"),
            "{run}"
        );
        assert_eq!(run["steps"], json!([]), "{run}");
    }
    assert!(h.runner.runs().is_empty());
}
