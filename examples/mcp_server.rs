//! The gateway as an MCP server (streamable HTTP at `/mcp`) on embedded defaults.
//!
//! ```text
//! cargo run --example mcp_server      # listens on GATEWAY_ADDR, default 127.0.0.1:8080
//! ```
//!
//! The same gateway as the `server` example (the REST API is served too), with its audit log in
//! `.gateway/mcp_server/` so both examples can run side by side without sharing an audit stream.
//! Each catalog action is an MCP tool (`k8s.scale`, `db.query`, `diag.echo`, plus
//! `gateway.action_status` to follow one that waits for a human); MCP clients authenticate with
//! the agent's key as a bearer token. Denials come back as tool errors carrying the policy's
//! reasons. Ctrl-C stops gracefully and verifies the audit chain.
#![allow(clippy::print_stdout)]

#[path = "support/mod.rs"]
mod support;

use support::{BoxError, describe, show};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let server = support::start("mcp_server").await?;
    let base = &server.base;
    let deployer = show(&server.deployer);
    println!("agent-gateway MCP server: {base}/mcp (streamable HTTP)");
    println!("  {}", describe(&server));
    println!();
    println!("Credentials (generated now, shown once):");
    println!("  export DEPLOYER={deployer}   # agent:deployer");
    println!(
        "  export READER={}   # agent:db-reader",
        show(&server.db_reader)
    );
    println!(
        "  export APPROVER={}   # human:alice (REST /v1/approvals only)",
        show(&server.approver)
    );
    println!(
        r#"
Connect an MCP client:
  URL    : {base}/mcp
  header : Authorization: Bearer $DEPLOYER
  e.g. a client config entry:
    {{"mcpServers": {{"agent-gateway": {{"type": "http", "url": "{base}/mcp",
      "headers": {{"Authorization": "Bearer <value of $DEPLOYER>"}}}}}}}}

Or by hand, with a session (protocol 2025-06-18; every request still carries the bearer):
  H=(-H "Authorization: Bearer $DEPLOYER" -H 'Accept: application/json, text/event-stream' \
     -H 'Content-Type: application/json')
  curl -si {base}/mcp "${{H[@]}}" -d '{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"curl","version":"1"}}}}}}' | grep -i mcp-session-id
  export SID=<the Mcp-Session-Id value>; S=(-H "Mcp-Session-Id: $SID" -H 'MCP-Protocol-Version: 2025-06-18')
  curl -s {base}/mcp "${{H[@]}}" "${{S[@]}}" -d '{{"jsonrpc":"2.0","method":"notifications/initialized"}}'
  curl -s {base}/mcp "${{H[@]}}" "${{S[@]}}" -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list"}}'
  curl -s {base}/mcp "${{H[@]}}" "${{S[@]}}" \
       -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"k8s.scale","arguments":{{"resource":"k8s:staging/deployments/web","params":{{"replicas":3}}}}}}}}'
Production changes wait for a human: approve with
  curl -s {base}/v1/approvals -H "Authorization: Bearer $APPROVER"
  curl -s {base}/v1/approvals/<id> -H "Authorization: Bearer $APPROVER" -d '{{"verdict":"approve"}}'
Ctrl-C stops."#
    );
    support::serve_until_ctrl_c(server).await
}
