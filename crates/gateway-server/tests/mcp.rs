//! End-to-end tests of the MCP front with rmcp's own client over real streamable HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Options, start, token};
use gateway_core::testing::Fault;
use gateway_core::{RequestId, Secret};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const STATUS: &str = gateway_server::mcp::STATUS_TOOL;

async fn connect(base: &str, bearer: &Secret) -> RunningService<RoleClient, ()> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
            .auth_header(token(bearer).to_owned()),
    );
    ().serve(transport).await.expect("MCP handshake")
}

fn call(name: &str, args: Value) -> CallToolRequestParams {
    let Value::Object(map) = args else {
        panic!("args must be an object")
    };
    CallToolRequestParams::new(name.to_owned()).with_arguments(map)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn tools_list_publishes_the_catalog_with_schemas() {
    let h = start(Options::default()).await;
    let client = connect(&h.base, &h.agent_a).await;
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "ops.echo",
        "ops.fail",
        "ops.frozen",
        "ops.approve",
        "gateway.action_status",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }
    let echo = tools.iter().find(|t| t.name == "ops.echo").unwrap();
    let schema = serde_json::to_value(echo.input_schema.as_ref()).unwrap();
    assert_eq!(schema["required"], json!(["resource"]));
    // The action's own params schema is embedded.
    assert_eq!(
        schema["properties"]["params"]["properties"]["message"]["type"],
        "string"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn tools_call_executes_allowed_and_reports_denials_as_tool_errors() {
    let h = start(Options::default()).await;
    let client = connect(&h.base, &h.agent_a).await;

    let ok = client
        .call_tool(call(
            "ops.echo",
            json!({"resource": "ops:staging/web", "params": {"message": "x"}, "ttl_seconds": 900}),
        ))
        .await
        .unwrap();
    assert_ne!(ok.is_error, Some(true), "{ok:?}");
    let doc = ok.structured_content.clone().unwrap();
    assert_eq!(doc["status"], "completed", "{doc}");
    let outcome = &doc["outcome"];
    assert_eq!(outcome["agent"], "agent:a");
    assert_eq!(outcome["grant"]["ttl_seconds"], 60);
    assert_eq!(outcome["grant"]["revoked"], true);
    // The job printed its token; the caller sees it scrubbed.
    assert!(text(&ok).contains("hello [REDACTED]"), "{}", text(&ok));
    assert_eq!(h.runner.runs().len(), 1);

    let denied = client
        .call_tool(call(
            "ops.frozen",
            json!({"resource": "ops:prod/web", "intent": "try"}),
        ))
        .await
        .unwrap();
    assert_eq!(denied.is_error, Some(true));
    assert!(
        text(&denied).contains("production is frozen"),
        "{}",
        text(&denied)
    );
    assert_eq!(
        denied.structured_content.unwrap()["error"]["kind"],
        "denied"
    );

    let failed = client
        .call_tool(call("ops.fail", json!({"resource": "ops:staging/web"})))
        .await
        .unwrap();
    assert_eq!(
        failed.is_error,
        Some(true),
        "a job that exits 3 is reported as an error"
    );

    // Arguments the input schema refuses are tool errors the model can read (MCP 2025-11-25:
    // input validation errors are not protocol errors); an unknown tool is a protocol error.
    for bad in [
        call("ops.echo", json!({"nope": 1})),
        call("ops.echo", json!({"params": {}})),
        call("ops.echo", json!({"resource": 7})),
        call(STATUS, json!({"request_id": "not-a-uuid"})),
    ] {
        let refused = client.call_tool(bad.clone()).await.unwrap();
        assert_eq!(refused.is_error, Some(true), "{bad:?}: {refused:?}");
        let doc = refused.structured_content.clone().unwrap();
        assert_eq!(doc["status"], "failed", "{doc}");
        assert_eq!(doc["error"]["kind"], "invalid_input", "{doc}");
        assert!(
            text(&refused).starts_with("invalid_input: invalid arguments: "),
            "{}",
            text(&refused)
        );
    }
    assert!(
        client
            .call_tool(call("ops.unknown", json!({"resource": "r"})))
            .await
            .is_err()
    );
    assert_eq!(h.runner.runs().len(), 2);

    // Audit down: a tool error, and nothing runs.
    let _plan = h.audit.faults.clone().always(Fault::Error);
    let down = client
        .call_tool(call("ops.echo", json!({"resource": "ops:staging/web"})))
        .await
        .unwrap();
    assert_eq!(down.is_error, Some(true));
    assert_eq!(
        down.structured_content.unwrap()["error"]["kind"],
        "unavailable"
    );
    assert_eq!(h.runner.runs().len(), 2);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn approval_through_mcp_is_pollable() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_millis(300);
    let h = start(options).await;
    let client = connect(&h.base, &h.agent_a).await;
    let pending = client
        .call_tool(call("ops.approve", json!({"resource": "ops:prod/db"})))
        .await
        .unwrap();
    assert_ne!(pending.is_error, Some(true));
    let doc = pending.structured_content.unwrap();
    assert_eq!(doc["status"], "pending_approval", "{doc}");
    let id = doc["id"].as_str().unwrap().to_owned();

    h.approve_after(&id, Duration::ZERO).await;
    let mut last = Value::Null;
    for _ in 0..100 {
        let r = client
            .call_tool(call("gateway.action_status", json!({"request_id": id})))
            .await
            .unwrap();
        last = r.structured_content.unwrap();
        if last["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "completed", "{last}");
    assert_eq!(last["outcome"]["approved_by"], "human:alice");

    // Another agent cannot follow it.
    let other = connect(&h.base, &h.agent_b).await;
    let r = other
        .call_tool(call("gateway.action_status", json!({"request_id": id})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(r.structured_content.unwrap()["error"]["kind"], "not_found");
    client.cancel().await.unwrap();
    other.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_endpoint_requires_a_valid_agent_credential() {
    let h = start(Options::default()).await;
    for bearer in [None, Some("agk_key-a.wrong"), Some(token(&h.alice))] {
        let mut req = h
            .http
            .post(format!("{}/mcp", h.base))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{bearer:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "unauthenticated");
    }
}

/// Every result, whatever happened, carries `structuredContent` that validates against the
/// `outputSchema` its tool declares (what the official SDKs check), and a summary without Rust
/// `Debug` text.
#[tokio::test]
async fn every_result_matches_the_declared_output_schema() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_millis(200);
    let h = start(options).await;
    let client = connect(&h.base, &h.agent_a).await;
    let tools = client.list_all_tools().await.unwrap();
    let schema_of = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        let schema = Value::Object((**tool.output_schema.as_ref().unwrap()).clone());
        jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    };
    let pending = client
        .call_tool(call("ops.approve", json!({"resource": "ops:prod/db"})))
        .await
        .unwrap();
    let pending_id = pending.structured_content.as_ref().unwrap()["id"].clone();
    let results = [
        (
            "ops.echo",
            client
                .call_tool(call(
                    "ops.echo",
                    json!({"resource": "ops:staging/web", "params": {"message": "x"}}),
                ))
                .await
                .unwrap(),
        ),
        (
            "ops.fail",
            client
                .call_tool(call("ops.fail", json!({"resource": "ops:staging/web"})))
                .await
                .unwrap(),
        ),
        (
            "ops.frozen",
            client
                .call_tool(call("ops.frozen", json!({"resource": "ops:prod/web"})))
                .await
                .unwrap(),
        ),
        ("ops.approve", pending),
        (
            STATUS,
            client
                .call_tool(call(STATUS, json!({"request_id": pending_id})))
                .await
                .unwrap(),
        ),
        (
            STATUS,
            client
                .call_tool(call(STATUS, json!({"request_id": RequestId::new()})))
                .await
                .unwrap(),
        ),
    ];
    let mut statuses = Vec::new();
    for (tool, result) in &results {
        let doc = result.structured_content.clone().unwrap();
        let validator = schema_of(tool);
        let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{tool}: {errors:?}\n{doc}");
        let summary = text(result);
        assert!(
            !summary.contains("Exited {") && !summary.contains("Some("),
            "{summary}"
        );
        statuses.push((
            doc["status"].as_str().unwrap().to_owned(),
            result.is_error == Some(true),
        ));
    }
    assert_eq!(
        statuses,
        [
            ("completed".to_owned(), false),
            ("completed".to_owned(), true),
            ("failed".to_owned(), true),
            ("pending_approval".to_owned(), false),
            ("pending_approval".to_owned(), false),
            ("failed".to_owned(), true),
        ]
    );
    assert!(
        text(&results[0].1).contains("exited with code 0"),
        "{}",
        text(&results[0].1)
    );
    assert!(
        text(&results[1].1).contains("exited with code 3"),
        "{}",
        text(&results[1].1)
    );
    // The schema is not vacuous: a grant summary with an extra field (a token, say) fails it.
    let mut leaked = results[0].1.structured_content.clone().unwrap();
    leaked["outcome"]["grant"]["token"] = json!("secret");
    assert!(!schema_of("ops.echo").is_valid(&leaked));
    client.cancel().await.unwrap();
}

/// `tools/list` (and `GET /v1/catalog`) show each agent what the policy's listing rule shows
/// it; when the policy fails, nothing but the status tool.
#[tokio::test]
async fn each_agent_is_listed_what_the_policy_shows_it() {
    let h = start(Options::default()).await;
    let names = |tools: Vec<rmcp::model::Tool>| {
        let mut names: Vec<String> = tools.into_iter().map(|t| t.name.to_string()).collect();
        names.sort();
        names
    };
    let a = connect(&h.base, &h.agent_a).await;
    let b = connect(&h.base, &h.agent_b).await;
    let for_a = names(a.list_all_tools().await.unwrap());
    let for_b = names(b.list_all_tools().await.unwrap());
    assert!(for_a.contains(&"ops.approve".to_owned()), "{for_a:?}");
    assert!(!for_b.contains(&"ops.approve".to_owned()), "{for_b:?}");
    assert_eq!(for_a.len(), for_b.len() + 1);
    // The REST catalog lists the same.
    let (status, catalog) = h.get("/v1/catalog", Some(&h.agent_b)).await;
    assert_eq!(status, 200, "{catalog}");
    let mut rest: Vec<String> = catalog["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    rest.push(STATUS.to_owned());
    rest.sort();
    assert_eq!(rest, for_b);
    // A failing policy lists nothing (fail closed), never the whole catalog.
    let _down = h.policy.faults.clone().always(Fault::Error);
    assert_eq!(names(a.list_all_tools().await.unwrap()), [STATUS]);
    let (status, catalog) = h.get("/v1/catalog", Some(&h.agent_a)).await;
    assert_eq!(status, 200);
    assert_eq!(catalog["actions"], json!([]));
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
}

/// A client that records the progress notifications it gets.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<String>>>);

impl rmcp::ClientHandler for Progress {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.0
            .lock()
            .unwrap()
            .push(params.message.unwrap_or_default());
    }
}

async fn connect_with(
    base: &str,
    bearer: &Secret,
    handler: Progress,
) -> RunningService<RoleClient, Progress> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
            .auth_header(token(bearer).to_owned()),
    );
    handler.serve(transport).await.expect("MCP handshake")
}

/// A call that waits for a human stays open (up to `mcp_call_wait`) with progress
/// notifications, and returns the outcome once approved.
#[tokio::test]
async fn a_call_waiting_for_approval_reports_progress_then_the_outcome() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_secs(10);
    options.server.mcp_progress_interval = Duration::from_millis(100);
    let h = start(options).await;
    let progress = Progress::default();
    let client = connect_with(&h.base, &h.agent_a, progress.clone()).await;
    let id = RequestId::new().to_string();
    let call = client.call_tool(call(
        "ops.approve",
        json!({"resource": "ops:prod/db", "request_id": id}),
    ));
    let approve = async {
        h.approve_after(&id, Duration::from_millis(400)).await;
    };
    let (result, ()) = tokio::join!(call, approve);
    let result = result.unwrap();
    let doc = result.structured_content.clone().unwrap();
    assert_eq!(doc["status"], "completed", "{doc}");
    assert_eq!(doc["outcome"]["approved_by"], "human:alice");
    let seen = progress.0.lock().unwrap().clone();
    let waiting = seen
        .iter()
        .filter(|m| m.starts_with("waiting for human approval"))
        .count();
    assert!(waiting >= 2, "{seen:?}");
    client.cancel().await.unwrap();
}

/// Cancelling the call cancels its action: the approval is withdrawn, nothing runs, and the
/// trail ends with a terminal record.
#[tokio::test]
async fn cancelling_the_call_cancels_its_action() {
    let mut options = Options::default();
    options.server.mcp_call_wait = Duration::from_secs(10);
    let h = start(options).await;
    let client = connect(&h.base, &h.agent_a).await;
    let id = RequestId::new().to_string();
    let peer = client.peer().clone();
    let params = call(
        "ops.approve",
        json!({"resource": "ops:prod/db", "request_id": id}),
    );
    let pending_call = tokio::spawn(async move { peer.call_tool(params).await });
    h.wait_pending_approval(&id).await;
    // Dropping rmcp's request future sends notifications/cancelled.
    pending_call.abort();
    let doc = h.wait_done(&id, &h.agent_a).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{doc}"
    );
    h.assert_cancelled_while_waiting(&id).await;
    client.cancel().await.unwrap();
}

/// Malformed JSON-RPC gets JSON-RPC errors, which MCP clients understand: a body that is not
/// JSON a parse error, `arguments` that are not an object invalid params (for that id).
#[tokio::test]
async fn malformed_messages_get_json_rpc_errors() {
    let h = start(Options::default()).await;
    let post = |body: &'static str| {
        h.http
            .post(format!("{}/mcp", h.base))
            .bearer_auth(token(&h.agent_a))
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let resp = post(r#"{"jsonrpc": "2.0", "id": 1, "method""#)
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32700, "{body}");
    assert_eq!(body["id"], Value::Null, "{body}");

    let resp = post(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ops.echo","arguments":[1,2]}}"#,
    )
    .await
    .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert_eq!(body["id"], 7, "{body}");
    assert!(h.runner.runs().is_empty());
}

/// A browser page on another origin cannot use the endpoint, credential or not (DNS
/// rebinding); a listed origin and a client that sends none (the SDKs) can.
#[tokio::test]
async fn mcp_refuses_origins_that_are_not_allowed() {
    let h = start(Options {
        server: gateway_server::ServerConfig {
            mcp_allowed_origins: vec!["https://console.example:*".into()],
            // One bare POST per check, without an initialize handshake.
            mcp_sessions: false,
            ..gateway_server::ServerConfig::default()
        },
        ..Options::default()
    })
    .await;
    let list = |origin: Option<&str>| {
        let mut req = h
            .http
            .post(format!("{}/mcp", h.base))
            .bearer_auth(token(&h.agent_a))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        req.send()
    };
    for evil in [
        "http://evil.example",
        "https://console.example.evil.example",
        "null",
    ] {
        let resp = list(Some(evil)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{evil}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["kind"], "denied", "{body}");
    }
    for ok in [None, Some("https://console.example:8443")] {
        let resp = list(ok).await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(status, 200, "{ok:?} {}", resp.text().await.unwrap());
    }
}

/// The params schema an MCP client sees is the definition itself, byte for byte, and the
/// gateway enforces it: a value cannot pass one and fail the other.
#[tokio::test]
async fn published_params_schemas_are_the_definitions_and_are_enforced() {
    let h = start(Options::default()).await;
    let client = connect(&h.base, &h.agent_a).await;
    let tools = client.list_all_tools().await.unwrap();
    let catalog = common::catalog();
    let mut seen = 0;
    for def in catalog.actions() {
        let tool = tools.iter().find(|t| t.name == def.name).unwrap();
        let published = serde_json::to_value(tool.input_schema.as_ref()).unwrap();
        let published = &published["properties"]["params"];
        assert_eq!(
            serde_json::to_vec(published).unwrap(),
            serde_json::to_vec(def.params_schema.as_value()).unwrap(),
            "{}",
            def.name
        );
        // Compiled independently from what was published, it agrees with the gateway on a
        // table of params of every shape.
        let compiled = gateway_core::params_schema::ParamsSchema::new(published.clone()).unwrap();
        for params in [
            json!({}),
            json!({"message": "x"}),
            json!({"message": 3}),
            json!({"message": null}),
            json!({"message": "x", "other": 1}),
            json!({"other": [1, 2]}),
            json!({"message": {"nested": "x"}}),
        ] {
            let request = gateway_core::ActionRequest::new(def.name.clone(), "ops:staging/web")
                .with_params(params.clone());
            assert_eq!(
                compiled.validate(&params).is_ok(),
                catalog.validate(&request).is_ok(),
                "{} {params}",
                def.name
            );
        }
        seen += 1;
    }
    assert!(seen >= 4);
    // A call the schema refuses is refused by the gateway, naming the path.
    let refused = client
        .call_tool(call(
            "ops.echo",
            json!({"resource": "ops:staging/web", "params": {"message": 3}}),
        ))
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true), "{refused:?}");
    assert!(text(&refused).contains("/message"), "{}", text(&refused));
    client.cancel().await.unwrap();
}

/// Without a session, a `notifications/cancelled` (its own POST) cancels the call it names for
/// the same credential while the call's response is still open, and that response ends with
/// no result, as in a session; another agent's, or another id, cancels nothing.
#[tokio::test]
async fn a_sessionless_cancellation_cancels_the_call_it_names() {
    let h = start(Options {
        server: gateway_server::ServerConfig {
            mcp_sessions: false,
            mcp_call_wait: Duration::from_secs(10),
            ..gateway_server::ServerConfig::default()
        },
        ..Options::default()
    })
    .await;
    let post = |bearer: &Secret, body: Value| {
        h.http
            .post(format!("{}/mcp", h.base))
            .bearer_auth(token(bearer))
            .header("accept", "application/json, text/event-stream")
            .json(&body)
            .send()
    };
    let cancelled = |id: Value| json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}});
    let id = RequestId::new().to_string();
    let call = post(
        &h.agent_a,
        json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "ops.approve", "arguments": {"resource": "ops:prod/db", "request_id": id}}}),
    );
    let call = tokio::spawn(async move { call.await.unwrap().text().await.unwrap() });
    h.wait_pending_approval(&id).await;
    for (bearer, rpc_id) in [
        (&h.agent_b, json!(5)),
        (&h.agent_a, json!(6)),
        (&h.agent_a, json!("5")),
    ] {
        let resp = post(bearer, cancelled(rpc_id)).await.unwrap();
        assert_eq!(resp.status().as_u16(), 202);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, doc) = h.get(&format!("/v1/actions/{id}"), Some(&h.agent_a)).await;
    assert_eq!(doc["status"], "pending_approval", "{doc}");

    let resp = post(&h.agent_a, cancelled(json!(5))).await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the cancelled call's response ends")
        .unwrap();
    assert!(!answer.contains("\"result\""), "{answer}");
    let doc = h.wait_done(&id, &h.agent_a).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{doc}"
    );
    let (_, pending) = h.get("/v1/approvals", Some(&h.alice)).await;
    assert_eq!(pending["pending"], json!([]), "{pending}");
    assert!(h.runner.runs().is_empty());
}
