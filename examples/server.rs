//! The HTTP + MCP gateway on embedded defaults, to try with curl.
//!
//! ```text
//! cargo run --example server          # listens on GATEWAY_ADDR, default 127.0.0.1:8080
//! ```
//!
//! Embedded Rego on `policies/`, the local sandbox runner, HMAC just-in-time grants and a
//! hash-chained SQLite audit log in `.gateway/server/` (appended to on every run). Two agents
//! (`agent:deployer`, namespaces staging and production; `agent:db-reader`, role db-reader) and
//! one human approver (`human:alice`) get fresh credentials at every start, printed once with
//! ready-to-paste curl commands. Ctrl-C stops gracefully and verifies the audit chain.
#![allow(clippy::print_stdout)]

#[path = "support/mod.rs"]
mod support;

use support::{BoxError, describe, show};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    support::init_logging();
    let server = support::start("server").await?;
    let base = &server.base;
    println!("agent-gateway server on {base}");
    println!("  {}", describe(&server));
    println!();
    println!("Credentials (generated now, shown once):");
    println!(
        "  export DEPLOYER={}   # agent:deployer",
        show(&server.deployer)
    );
    println!(
        "  export READER={}   # agent:db-reader",
        show(&server.db_reader)
    );
    println!(
        "  export APPROVER={}   # human:alice",
        show(&server.approver)
    );
    println!(
        r#"
Try:
  # allowed: runs the job with a just-in-time grant (TTL clamped to the policy's 300 s)
  curl -s {base}/v1/actions -H "Authorization: Bearer $DEPLOYER" \
       -d '{{"action":"k8s.scale","resource":"k8s:staging/deployments/web","params":{{"replicas":3}},"requested_ttl_seconds":600}}'
  # denied (403, with the policy's reasons): over the replica limit
  curl -s {base}/v1/actions -H "Authorization: Bearer $DEPLOYER" \
       -d '{{"action":"k8s.scale","resource":"k8s:staging/deployments/web","params":{{"replicas":50}}}}'
  # allowed: a read-only query
  curl -s {base}/v1/actions -H "Authorization: Bearer $READER" \
       -d '{{"action":"db.query","resource":"db:orders","params":{{"sql":"SELECT count(*) FROM orders"}}}}'
  # production needs a human: 202 + Location of the status document
  curl -si {base}/v1/actions -H "Authorization: Bearer $DEPLOYER" \
       -d '{{"action":"k8s.scale","resource":"k8s:production/deployments/checkout","params":{{"replicas":6}}}}'
  curl -s {base}/v1/approvals -H "Authorization: Bearer $APPROVER"
  curl -s {base}/v1/approvals/<id> -H "Authorization: Bearer $APPROVER" -d '{{"verdict":"approve","reason":"CHG-42"}}'
  curl -s {base}/v1/actions/<id> -H "Authorization: Bearer $DEPLOYER"
  curl -s {base}/readyz; curl -s {base}/metrics
MCP (streamable HTTP): {base}/mcp with the same bearer (see `cargo run --example mcp_server`).
Ctrl-C stops."#
    );
    support::serve_until_ctrl_c(server).await
}
