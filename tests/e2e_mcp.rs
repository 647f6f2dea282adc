//! End-to-end tests of the MCP front with rmcp's own client over real streamable HTTP, on the
//! embedded defaults (embedded Rego, local runner, HMAC grants, SQLite audit; see
//! `common/mod.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use agent_gateway::core::{AuditEventKind, Secret};
use common::{Options, presented_token, start, token};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

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
async fn tools_list_shows_the_reference_actions_with_their_schemas() {
    let h = start(Options::default()).await;
    let client = connect(&h.base, &h.deployer).await;
    let reader = connect(&h.base, &h.db_reader).await;
    // Each agent is shown what the reference policy's listing rule shows it: the deployer
    // (namespaces, no db-reader role) not db.query, the db-reader not k8s.scale.
    let mut tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "diag.echo",
            "k8s.rollout_restart",
            "k8s.scale",
            "gateway.action_status"
        ]
    );
    let for_reader = reader.list_all_tools().await.unwrap();
    let names: Vec<&str> = for_reader.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["db.query", "diag.echo", "gateway.action_status"]);
    tools.extend(for_reader);
    let schema_of = |name: &str| {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        assert!(
            tool.description.as_deref().is_some_and(|d| !d.is_empty()),
            "{name} has no description"
        );
        serde_json::to_value(tool.input_schema.as_ref()).unwrap()
    };
    // Each tool's input embeds the action's own params schema from the reference catalog.
    let scale = schema_of("k8s.scale");
    assert!(
        scale["required"]
            .as_array()
            .unwrap()
            .contains(&json!("resource")),
        "{scale}"
    );
    let params = &scale["properties"]["params"];
    assert_eq!(
        params["properties"]["replicas"]["type"], "integer",
        "{scale}"
    );
    assert_eq!(params["properties"]["replicas"]["maximum"], 1000, "{scale}");
    assert_eq!(params["required"], json!(["replicas"]), "{scale}");
    let query = schema_of("db.query");
    assert_eq!(
        query["properties"]["params"]["properties"]["sql"]["type"], "string",
        "{query}"
    );
    let echo = schema_of("diag.echo");
    assert_eq!(
        echo["properties"]["params"]["properties"]["message"]["type"], "string",
        "{echo}"
    );
    client.cancel().await.unwrap();
    reader.cancel().await.unwrap();
}

#[tokio::test]
async fn allowed_call_returns_the_job_output_and_denied_call_is_a_tool_error() {
    let h = start(Options::default()).await;
    let client = connect(&h.base, &h.deployer).await;

    let ok = client
        .call_tool(call(
            "k8s.scale",
            json!({
                "resource": "k8s:staging/deployments/api",
                "params": {"replicas": 4},
                "intent": "MCP end-to-end test",
            }),
        ))
        .await
        .unwrap();
    assert_ne!(ok.is_error, Some(true), "{ok:?}");
    let doc = ok.structured_content.clone().unwrap();
    assert_eq!(doc["status"], "completed", "{doc}");
    let outcome = &doc["outcome"];
    assert_eq!(outcome["agent"], "agent:deployer");
    assert_eq!(outcome["grant"]["revoked"], true);
    assert_eq!(
        outcome["job"]["status"],
        json!({"status": "exited", "code": 0}),
        "{outcome}"
    );
    // The job's output reaches the MCP client, as text and in the structured outcome.
    assert!(
        text(&ok).contains("scaled staging/api to 4 replicas"),
        "{}",
        text(&ok)
    );
    let stdout = outcome["job"]["stdout"].as_str().unwrap();
    assert_eq!(
        presented_token(stdout).as_deref(),
        Some("[REDACTED]"),
        "{stdout}"
    );
    assert_eq!(h.runs_and_grants(), (1, 1));

    let denied = client
        .call_tool(call(
            "k8s.scale",
            json!({"resource": "k8s:staging/deployments/api", "params": {"replicas": 50}}),
        ))
        .await
        .unwrap();
    assert_eq!(denied.is_error, Some(true), "{denied:?}");
    assert!(
        text(&denied).contains("replicas 50 exceeds the limit of 10"),
        "{}",
        text(&denied)
    );
    let err = denied.structured_content.unwrap();
    assert_eq!(err["error"]["kind"], "denied", "{err}");
    assert_eq!(
        err["error"]["reasons"],
        json!(["replicas 50 exceeds the limit of 10"])
    );
    assert_eq!(h.runs_and_grants(), (1, 1), "the denied call ran nothing");

    // The MCP calls went through the same audited pipeline.
    let id = outcome["correlation_id"].as_str().unwrap();
    let trail = h.trail(id).await;
    assert_eq!(trail.first(), Some(&AuditEventKind::Requested));
    assert_eq!(trail.last(), Some(&AuditEventKind::Completed));
    h.verify_audit().await;
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_needs_a_valid_agent_credential() {
    let h = start(Options::default()).await;
    for bearer in [None, Some("agk_deployer-1.wrong"), Some(token(&h.alice))] {
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
    }
}
