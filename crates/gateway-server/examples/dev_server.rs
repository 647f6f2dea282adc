//! A development server on core parts only, to try the HTTP and MCP API with curl.
//!
//! Identities are real (`StaticKeys`, generated at start), grants are real (`HmacBroker`), but
//! policy, runner and audit are the core's IN-MEMORY TEST DOUBLES: `MemoryPolicy` (a Rust
//! closure, not Rego), `MemoryRunner` (runs nothing; scripted output) and `MemoryAuditSink`
//! (hash-chained, lost on exit). Not for production; see the workspace's `server` example for
//! the embedded backends.
//!
//! ```text
//! cargo run -p gateway-server --example dev_server      # GATEWAY_ADDR=127.0.0.1:8080 by default
//! ```
#![allow(clippy::expect_used)]

use gateway_core::hmac_broker::TOKEN_ENV;
use gateway_core::testing::script::{MemoryRenderer, ScriptRenderer, Step};
use gateway_core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
use gateway_core::{
    ActionCatalog, ActionDef, AgentId, Decision, Gateway, GatewayConfig, HmacBroker, Identity,
    JobSpec, StaticKeys,
};
use gateway_server::{Approvers, Frontend, ServerConfig};
use std::sync::Arc;

fn scripted(steps: Vec<Step>) -> ActionDef {
    ActionDef::new("placeholder", "", move |req, who| {
        let (_, command) = MemoryRenderer.render(&steps);
        Ok(JobSpec::new(req.id, who.id.clone(), command))
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr = std::env::var("GATEWAY_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());

    let (keys, deployer) = StaticKeys::new().with_generated_key(
        "deployer",
        AgentId::new("agent:deployer")?,
        "platform-team",
    )?;
    let (keys, reader) =
        keys.with_generated_key("reader", AgentId::new("agent:reader")?, "data-team")?;
    let (approvers, alice) = Approvers::new().with_generated_token("human:alice")?;
    let identity: Arc<dyn Identity> = Arc::new(keys);

    let catalog = ActionCatalog::new()
        .register(
            ActionDef {
                name: "k8s.scale".into(),
                description: "Scale a deployment (simulated).".into(),
                ..scripted(vec![
                    Step::Stdout("scaled; grant token: ".into()),
                    Step::PrintEnv(TOKEN_ENV.into()),
                ])
            }
            .with_schema(serde_json::json!({
                "type": "object",
                "properties": {"replicas": {"type": "integer", "minimum": 0, "maximum": 50}},
                "required": ["replicas"]
            }))?,
        )
        .register(ActionDef {
            name: "db.migrate".into(),
            description: "Run a schema migration (simulated; needs human approval).".into(),
            ..scripted(vec![Step::Stdout("migrated".into())])
        });
    // TEST DOUBLE policy: deployer may scale staging (60 s grants); migrations need approval.
    let policy = MemoryPolicy::from_fn(|input| {
        let agent = input.agent.id.as_str();
        match (agent, input.action.as_str()) {
            ("agent:deployer", "k8s.scale") if input.resource.starts_with("k8s:staging/") => {
                let mut d = Decision::allow();
                d.obligations.max_ttl_seconds = Some(60);
                d.obligations.scopes = vec![format!("k8s:scale:{}", input.resource)];
                d
            }
            ("agent:deployer", "db.migrate") => {
                let mut d = Decision::allow();
                d.obligations.require_approval = true;
                d
            }
            _ => Decision::deny(format!(
                "{agent} may not {} on {}",
                input.action, input.resource
            )),
        }
    });

    let front = Frontend::new(ServerConfig::default());
    let m = front.metrics();
    let gateway = Gateway::builder()
        .identity(Arc::clone(&identity))
        .policy(m.policy(Arc::new(policy)))
        .broker(m.broker(Arc::new(HmacBroker::generate())))
        .runner(m.runner(Arc::new(MemoryRunner::new())))
        .audit(m.audit(Arc::new(MemoryAuditSink::new())))
        .approvals(front.approval_gate())
        .catalog(catalog)
        .config(GatewayConfig::default())
        .build()?;
    let state = front.into_state(gateway, identity, approvers);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let base = format!("http://{}", listener.local_addr()?);

    // Development only: printing credentials is what makes this example usable with curl.
    let show = |s: &gateway_core::Secret| s.expose_str().unwrap_or_default().to_owned();
    println!("agent-gateway dev server on {base} (policy, runner, audit: IN-MEMORY TEST DOUBLES)");
    println!("  DEPLOYER={}", show(&deployer));
    println!("  READER={}", show(&reader));
    println!("  APPROVER={}   # human:alice", show(&alice));
    println!(
        r#"
  curl -s {base}/v1/actions -H "Authorization: Bearer $DEPLOYER" \
       -d '{{"action":"k8s.scale","resource":"k8s:staging/deployments/web","params":{{"replicas":3}},"requested_ttl_seconds":600}}'
  curl -s {base}/v1/actions -H "Authorization: Bearer $READER" \
       -d '{{"action":"k8s.scale","resource":"k8s:prod/deployments/web","params":{{"replicas":0}}}}'      # 403
  curl -si {base}/v1/actions -H "Authorization: Bearer $DEPLOYER" \
       -d '{{"action":"db.migrate","resource":"db:prod/orders"}}'                                      # 202
  curl -s {base}/v1/approvals -H "Authorization: Bearer $APPROVER"
  curl -s {base}/v1/approvals/<id> -H "Authorization: Bearer $APPROVER" -d '{{"verdict":"approve"}}'
  curl -s {base}/v1/actions/<id> -H "Authorization: Bearer $DEPLOYER"
  curl -s {base}/readyz; curl -s {base}/metrics
  MCP (streamable HTTP): {base}/mcp with the same bearer"#
    );
    gateway_server::serve_with_shutdown(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
