//! Setup shared by the `server` and `mcp_server` examples: the HTTP + MCP front
//! (`gateway-server`) over a gateway on embedded defaults.
//!
//! Embedded Rego on `policies/`, the local sandbox runner, HMAC grants and a hash-chained SQLite
//! audit log with signed checkpoints under `.gateway/<name>/` (appended to on every run; delete
//! the directory to start over). Agent keys and the approver token are generated at every start
//! and printed once: nothing is stored but the audit log and its checkpoint signing key.

use agent_gateway::core::{
    AgentId, AgentIdentity, AuthMethod, GatewayConfig, Identity, Secret, StaticKeys,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use gateway_server::{AppState, Approvers, Frontend, ServerConfig};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// The examples' error type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A gateway and its front, bound but not yet serving.
pub struct Server {
    /// The bound listener (`GATEWAY_ADDR`, default 127.0.0.1:8080).
    pub listener: TcpListener,
    /// `http://<bound address>`.
    pub base: String,
    /// The handlers' state.
    pub state: AppState,
    /// The embedded backends (kept to sign a last checkpoint and verify the log on exit).
    pub parts: EmbeddedParts,
    /// The audit log file.
    pub audit_path: PathBuf,
    /// `agent:deployer`'s key (namespaces staging and production).
    pub deployer: Secret,
    /// `agent:db-reader`'s key (role db-reader).
    pub db_reader: Secret,
    /// `human:alice`'s approver token.
    pub approver: Secret,
}

/// Installs a `tracing` subscriber honouring `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// A generated key for `agent`, bound to an identity with `attributes`.
fn issue(
    keys: StaticKeys,
    key_id: &str,
    agent: &str,
    owner: &str,
    attributes: Value,
) -> Result<(StaticKeys, Secret), BoxError> {
    let (key, hash) = StaticKeys::generate_key(key_id)?;
    let mut identity = AgentIdentity::new(
        AgentId::new(agent)?,
        owner,
        AuthMethod::StaticKey {
            key_id: key_id.to_owned(),
        },
    );
    if let Value::Object(map) = attributes {
        identity.attributes.extend(map);
    }
    Ok((keys.with_key_hash(key_id, &hash, identity)?, key))
}

/// Builds the gateway on embedded defaults with its audit log in `.gateway/<name>/`, wraps the
/// backends with the front's metrics, puts the front's approval queue in front of the pipeline
/// and binds `GATEWAY_ADDR` (default 127.0.0.1:8080).
pub async fn start(name: &str) -> Result<Server, BoxError> {
    let dir = PathBuf::from(".gateway").join(name);
    std::fs::create_dir_all(&dir)?;
    let audit_path = dir.join("audit.db");
    // The signing key lives apart from the log (the embedded parts refuse it beside the log).
    let key_dir = PathBuf::from(".gateway").join(format!("{name}-keys"));
    let options = EmbeddedOptions::new(&audit_path).with_signing_key_dir(&key_dir)?;
    let parts = EmbeddedParts::open(&options).await?;

    let (keys, deployer) = issue(
        StaticKeys::new(),
        "deployer-1",
        "agent:deployer",
        "platform-team@example.com",
        json!({"namespaces": ["staging", "production"]}),
    )?;
    let (keys, db_reader) = issue(
        keys,
        "db-reader-1",
        "agent:db-reader",
        "data-team@example.com",
        json!({"role": "db-reader"}),
    )?;
    // Approvers are a separate namespace of credentials: an approver token never acts as an
    // agent, and agent keys never approve.
    let (approvers, approver) = Approvers::new().with_generated_token("human:alice")?;
    let identity: Arc<dyn Identity> = Arc::new(keys);

    let front = Frontend::with_state(ServerConfig::default(), parts.state.clone());
    let m = front.metrics();
    // `parts.builder` sets every embedded part; the metrics-wrapped ones replace them.
    let gateway = parts
        .builder(Arc::clone(&identity))
        .policy(m.policy(parts.policy.clone()))
        .broker(m.broker(parts.broker.clone()))
        .runner(m.runner(parts.runner.clone()))
        .audit(m.audit(parts.audit.clone()))
        .approvals(front.approval_gate())
        .config(GatewayConfig::default())
        .build()?;
    let state = front.into_state(gateway, identity, approvers);

    let addr = std::env::var("GATEWAY_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = TcpListener::bind(&addr).await?;
    let base = format!("http://{}", listener.local_addr()?);
    Ok(Server {
        listener,
        base,
        state,
        parts,
        audit_path,
        deployer,
        db_reader,
        approver,
    })
}

/// The secret's text, for printing once at start (these are development credentials: printing
/// them is what makes the examples usable with curl).
pub fn show(secret: &Secret) -> &str {
    secret.expose_str().unwrap_or_default()
}

/// One line describing the backends.
pub fn describe(server: &Server) -> String {
    let runner = server.state.gateway().runner_info();
    format!(
        "embedded Rego ({}), local runner (isolation = {}), HMAC grants, SQLite audit at {}",
        server.parts.policy.policy_id(),
        runner.isolation,
        server.audit_path.display()
    )
}

/// Serves until Ctrl-C, then signs a last audit checkpoint and verifies the log.
pub async fn serve_until_ctrl_c(server: Server) -> Result<(), BoxError> {
    let Server {
        listener,
        state,
        parts,
        ..
    } = server;
    gateway_server::serve_with_shutdown(listener, state, async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("Ctrl-C: finishing in-flight requests");
    })
    .await?;
    parts.audit.checkpoint().await?;
    let report = parts.verify_audit().await?;
    match &report.fault {
        None => println!(
            "stopped; audit chain verified: {} records, {} signed checkpoints",
            report.records_checked, report.checkpoints_checked
        ),
        Some(fault) => return Err(format!("audit chain fault: {fault}").into()),
    }
    Ok(())
}
