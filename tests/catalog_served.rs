//! The params schema a client is served over HTTP (`GET /v1/catalog`) and MCP (`tools/list`)
//! is byte for byte the catalog file's `params` text, with the whitespace between JSON tokens
//! removed (`docs/catalog.md`, "Byte-identical"). The raw response bodies are searched for those
//! bytes: nothing is parsed and re-serialised on the client side.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_core::hmac_broker::HmacBroker;
use gateway_core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
use gateway_core::{AgentId, Gateway, Identity, StaticKeys};
use gateway_server::{Approvers, Frontend, ServerConfig};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Each action's `params` text from the file, read as TOML strings (not as JSON).
fn file_schemas() -> Vec<(String, String)> {
    #[derive(serde::Deserialize)]
    struct File {
        action: Vec<Action>,
    }
    #[derive(serde::Deserialize)]
    struct Action {
        name: String,
        params: String,
    }
    let file: File = toml::from_str(agent_gateway::reference::REFERENCE_TOML).unwrap();
    file.action
        .into_iter()
        .map(|a| (a.name, a.params))
        .collect()
}

/// `text` without the whitespace outside JSON strings.
fn minify(text: &str) -> String {
    let (mut out, mut in_string, mut escaped) = (String::new(), false, false);
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn http_and_mcp_serve_the_files_schema_bytes() {
    let (keys, key) = StaticKeys::new()
        .with_generated_key("k", AgentId::new("agent:a").unwrap(), "team")
        .unwrap();
    let identity: Arc<dyn Identity> = Arc::new(keys);
    let front = Frontend::new(ServerConfig {
        mcp_sessions: false,
        ..ServerConfig::default()
    });
    let gateway = Gateway::builder()
        .identity(identity.clone())
        .policy(Arc::new(MemoryPolicy::allow_all()))
        .broker(Arc::new(HmacBroker::generate()))
        .runner(Arc::new(MemoryRunner::new()))
        .audit(Arc::new(MemoryAuditSink::new()))
        .catalog(agent_gateway::reference::catalog())
        .build()
        .unwrap();
    let state = front.into_state(gateway, identity, Approvers::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        gateway_server::serve_with_shutdown(listener, state, async move { s.cancelled().await })
            .await
            .unwrap();
    });
    let http = reqwest::Client::new();
    let token = key.expose_str().unwrap().to_owned();
    let catalog = http
        .get(format!("{base}/v1/catalog"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tools = http
        .post(format!("{base}/mcp"))
        .bearer_auth(&token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let schemas = file_schemas();
    assert_eq!(schemas.len(), 4);
    for (name, text) in schemas {
        let bytes = minify(&text);
        assert!(bytes.len() > 40, "{name}: {bytes}");
        let http_entry = format!("\"params_schema\":{bytes}");
        assert!(
            catalog.contains(&http_entry),
            "HTTP {name}: {bytes} not in {catalog}"
        );
        let mcp_entry = format!("\"params\":{bytes}");
        assert!(
            tools.contains(&mcp_entry),
            "MCP {name}: {bytes} not in {tools}"
        );
        assert!(tools.contains(&format!("\"name\":\"{name}\"")), "{tools}");
    }
    stop.cancel();
}
