//! The quickstart: a gateway on embedded defaults, walking a realistic scenario.
//!
//! `cargo run --example quickstart [-- --json] [-- --fresh]`
//!
//! No flags and no services needed: static API keys for three agents, the reference Rego
//! policies (embedded), the local sandbox runner (the strongest isolation this machine offers),
//! HMAC just-in-time tokens, and a hash-chained SQLite audit log with signed checkpoints in
//! `.gateway/quickstart/`. A second run appends to the same log (`--fresh` starts a new one).
//!
//! The targets of `k8s.scale` and `db.query` are simulated here: their jobs print the call they
//! would make, authorised by an HMAC token that a simulated target verifies, and the quickstart
//! says so. `cargo run --example infrastructure` runs the real actions against a PostgreSQL
//! server and a Kubernetes cluster.
#![allow(clippy::print_stdout)]

use agent_gateway::core::approvals::Ballot;
use agent_gateway::core::hmac_broker::{TOKEN_ENV, TokenError, TokenVerifier};
use agent_gateway::core::{
    AccessBroker, AgentId, AgentIdentity, Approvals, AuditSink, AuthMethod, BrokerError,
    Credential, GatewayConfig, Grant, GrantRequest, HmacBroker, Secret, StaticKeys,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use agent_gateway::{ActionOutcome, ActionRequest, Gateway, GatewayError};
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The actions whose targets this quickstart only simulates: no cluster or database is needed.
const SIMULATED_TARGETS: [&str; 2] = ["k8s.scale", "db.query"];

/// One row of the summary table.
#[derive(Serialize)]
struct Row {
    step: &'static str,
    agent: String,
    action: String,
    resource: String,
    decision: String,
    grant_ttl_seconds: Option<u64>,
    runner: String,
    exit: String,
    duration_ms: Option<u128>,
    correlation_id: String,
    note: String,
}

struct Agents {
    deployer: Secret,
    db_reader: Secret,
    intern: Secret,
}

fn identities() -> Result<(StaticKeys, Agents), BoxError> {
    let mut keys = StaticKeys::new();
    let mut issue = |key_id: &str,
                     agent: &str,
                     owner: &str,
                     attrs: serde_json::Value|
     -> Result<Secret, BoxError> {
        let (key, hash) = StaticKeys::generate_key(key_id)?;
        let mut identity = AgentIdentity::new(
            AgentId::new(agent)?,
            owner,
            AuthMethod::StaticKey {
                key_id: key_id.to_owned(),
            },
        );
        if let serde_json::Value::Object(map) = attrs {
            identity.attributes.extend(map);
        }
        keys = std::mem::take(&mut keys).with_key_hash(key_id, &hash, identity)?;
        Ok(key)
    };
    let deployer = issue(
        "deployer-1",
        "agent:deployer",
        "platform-team@example.com",
        json!({"namespaces": ["staging", "production"]}),
    )?;
    let db_reader = issue(
        "db-reader-1",
        "agent:db-reader",
        "data-team@example.com",
        json!({"role": "db-reader"}),
    )?;
    let intern = issue(
        "intern-1",
        "agent:intern-bot",
        "it-team@example.com",
        json!({}),
    )?;
    Ok((
        keys,
        Agents {
            deployer,
            db_reader,
            intern,
        },
    ))
}

fn row(
    step: &'static str,
    agent: &str,
    req: &ActionRequest,
    result: &Result<ActionOutcome, GatewayError>,
    note: String,
) -> Row {
    let base = Row {
        step,
        agent: agent.to_owned(),
        action: req.action.clone(),
        resource: req.resource.clone(),
        decision: String::new(),
        grant_ttl_seconds: None,
        runner: "-".into(),
        exit: "-".into(),
        duration_ms: None,
        correlation_id: req.id.to_string(),
        note,
    };
    match result {
        Ok(out) => Row {
            decision: match &out.approved_by {
                Some(who) => format!("allow (approved by {who})"),
                None => "allow".into(),
            },
            grant_ttl_seconds: Some(out.grant.ttl_seconds),
            runner: format!("{} ({})", out.runner.backend, out.job.isolation),
            exit: match out.job.exit_code() {
                Some(code) => code.to_string(),
                None => format!("{:?}", out.job.status),
            },
            duration_ms: Some(out.job.duration.as_millis()),
            ..base
        },
        Err(GatewayError::Denied { reasons, .. }) => Row {
            decision: format!("deny: {}", reasons.join("; ")),
            ..base
        },
        Err(e) => Row {
            decision: format!("error ({}): {e}", e.kind()),
            ..base
        },
    }
}

/// The simulated target's side of the exchange: the token the job presents to it. The job's
/// output shows `Bearer [REDACTED]` (the gateway scrubs every grant secret from what it returns
/// and records), so the simulation hands the target the token the job was given.
struct SimulatedTarget {
    broker: Arc<HmacBroker>,
    presented: std::sync::Mutex<Option<String>>,
}

#[agent_gateway::core::async_trait]
impl AccessBroker for SimulatedTarget {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let grant = self.broker.grant(request).await?;
        let token = grant
            .job_env
            .get(TOKEN_ENV)
            .and_then(|t| t.expose_str())
            .map(str::to_owned);
        *self.presented.lock().unwrap_or_else(|e| e.into_inner()) = token;
        Ok(grant)
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        self.broker.revoke(grant).await
    }
}

/// The token the job presented, if its output shows it presented one.
fn presented_token(out: &ActionOutcome, target: &SimulatedTarget) -> Option<String> {
    let presented = out
        .job
        .stdout
        .lines()
        .any(|l| l.starts_with("target-request: ") && l.contains(" Bearer "));
    presented
        .then(|| {
            target
                .presented
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
        .flatten()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = args.iter().any(|a| a == "--json");
    let fresh = args.iter().any(|a| a == "--fresh");
    if let Some(bad) = args.iter().find(|a| *a != "--json" && *a != "--fresh") {
        return Err(format!("unknown argument {bad:?} (use --json and/or --fresh)").into());
    }
    let say = |line: String| {
        if !as_json {
            println!("{line}");
        }
    };

    // --- Assemble the gateway on embedded defaults.
    let dir = PathBuf::from(".gateway/quickstart");
    let audit_path = dir.join("audit.db");
    // The checkpoint witness: a copy of every checkpoint in another directory, which the
    // log's host would need to rewrite too (a deployment puts it on another host, or uses a
    // PostgreSQL witness database). Appends stop while it cannot be written.
    let witness_dir = PathBuf::from(".gateway/quickstart-witness");
    if fresh {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", audit_path.display()));
        }
        // A new log starts a new history: the old one's witnessed heads would be ahead of it.
        let _ = std::fs::remove_dir_all(&witness_dir);
    }
    let existed = audit_path.exists();
    std::fs::create_dir_all(&dir)?;
    // The checkpoint signing key lives in a directory apart from the log: whoever can rewrite
    // the log's directory must not also find the key there (a deployment keeps it in a
    // PKCS#11 token or a secret manager). Its public key is written beside it, for verifying.
    // (A key kept beside the log by earlier runs is moved there.)
    let key_dir = PathBuf::from(".gateway/quickstart-keys");
    let options = EmbeddedOptions::new(&audit_path)
        .with_signing_key_dir(&key_dir)?
        .with_witness_dir(&witness_dir);
    let pubkey_path = key_dir.join("checkpoint.pub");
    std::fs::write(
        &pubkey_path,
        format!("{}\n", options.checkpoint_signer.key_id()),
    )?;
    let parts = EmbeddedParts::open(&options).await?;
    let before = parts.audit.read(None, usize::MAX).await?.len();
    let (keys, agents) = identities()?;
    let approvals = Approvals::new(parts.state.clone());
    let config = GatewayConfig {
        approval_timeout: Duration::from_secs(30),
        ..GatewayConfig::default()
    };
    // The HMAC key is shared with the target system, which checks tokens itself: `target`
    // checks signature, expiry and scope offline; `revocations` is the broker's own verifier,
    // which also knows what the gateway revoked.
    let hmac_key = Secret::new(rand_key());
    let broker = Arc::new(HmacBroker::new(hmac_key.clone())?);
    let target = TokenVerifier::new(hmac_key);
    let revocations = broker.verifier();
    let simulated = Arc::new(SimulatedTarget {
        broker,
        presented: std::sync::Mutex::new(None),
    });
    let gateway: Gateway = parts
        .builder(Arc::new(keys))
        .broker(simulated.clone())
        .approvals(Arc::new(approvals.clone()))
        .config(config)
        .build()?;
    let runner = gateway.runner_info();

    say("agent-gateway quickstart (embedded defaults)".into());
    say(format!(
        "  policy   : embedded Rego, {}",
        parts.policy.policy_id()
    ));
    say(format!(
        "  runner   : local sandbox, isolation = {} (strongest available here)",
        runner.isolation
    ));
    say("  grants   : HMAC-SHA256 capability tokens, revoked after every job".into());
    say(format!(
        "  audit    : {} ({})",
        audit_path.display(),
        if existed {
            format!("appending to the existing log, {before} records")
        } else {
            "new log".into()
        }
    ));
    say(String::new());

    let mut rows = Vec::new();
    let deployer = Credential::Bearer(agents.deployer.clone());
    let db_reader = Credential::Bearer(agents.db_reader.clone());

    // 1. Allowed: the deployer scales a staging deployment; the job uses its token.
    let req = ActionRequest::new("k8s.scale", "k8s:staging/deployments/web")
        .with_params(json!({"replicas": 3}))
        .with_intent("traffic is rising on staging, add two replicas")
        .with_ttl_seconds(120);
    let result = gateway.execute(deployer.clone(), req.clone()).await;
    let mut note = String::new();
    if let Ok(out) = &result {
        let scope = out.grant.scopes.last().cloned().unwrap_or_default();
        match presented_token(out, &simulated) {
            Some(token) => {
                let now = time::OffsetDateTime::now_utc();
                let verdict = |r: Result<_, TokenError>| match r {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => format!("rejected ({e})"),
                };
                note = format!(
                    "job presented its token; target check for {scope}: {}; for production: {}; after the job: {}",
                    verdict(target.verify(&token, &scope, now)),
                    verdict(target.verify(
                        &token,
                        "k8s:production:deployments/web/scale:patch",
                        now
                    )),
                    verdict(revocations.verify(&token, &scope, now)),
                );
            }
            None => note = format!("job did not present {TOKEN_ENV}"),
        }
    }
    rows.push(row("allowed", "agent:deployer", &req, &result, note));

    // 2. Denied: too many replicas.
    let req = ActionRequest::new("k8s.scale", "k8s:staging/deployments/web")
        .with_params(json!({"replicas": 50}))
        .with_intent("load test");
    let result = gateway.execute(deployer.clone(), req.clone()).await;
    rows.push(row(
        "denied",
        "agent:deployer",
        &req,
        &result,
        String::new(),
    ));

    // 3. Denied: an agent without the role tries to read a database.
    let req = ActionRequest::new("db.query", "db:orders")
        .with_params(json!({"sql": "SELECT * FROM customers"}))
        .with_intent("curious");
    let result = gateway
        .execute(Credential::Bearer(agents.intern.clone()), req.clone())
        .await;
    rows.push(row(
        "denied",
        "agent:intern-bot",
        &req,
        &result,
        String::new(),
    ));

    // 4. TTL clamped: asks for an hour, the policy caps db.query grants.
    let req = ActionRequest::new("db.query", "db:orders")
        .with_params(json!({"sql": "SELECT count(*) FROM orders WHERE created_at > now() - interval '1 day'"}))
        .with_intent("daily order count for the report")
        .with_ttl_seconds(3600);
    let result = gateway.execute(db_reader.clone(), req.clone()).await;
    let note = match &result {
        Ok(out) => format!("asked for 3600 s, granted {} s", out.grant.ttl_seconds),
        Err(_) => String::new(),
    };
    rows.push(row("ttl clamped", "agent:db-reader", &req, &result, note));

    // 5. Needs approval: production. A human approver (here, this program) approves it.
    let req = ActionRequest::new("k8s.scale", "k8s:production/deployments/checkout")
        .with_params(json!({"replicas": 6}))
        .with_intent("black friday traffic")
        .with_ttl_seconds(120);
    let gw = gateway.clone();
    let (cred, r) = (deployer.clone(), req.clone());
    let pending = tokio::spawn(async move { gw.execute(cred, r).await });
    let mut approved_note = "no approval was requested".to_string();
    for _ in 0..500 {
        if let Some(waiting) = approvals
            .pending()
            .await?
            .into_iter()
            .map(|t| t.request)
            .find(|p| p.correlation_id == req.id)
        {
            say(format!(
                "approval requested: {} wants {} on {} ({}); approving as human:oncall-operator",
                waiting.agent,
                waiting.action,
                waiting.resource,
                if waiting.reasons.is_empty() {
                    "production".to_string()
                } else {
                    waiting.reasons.join("; ")
                }
            ));
            let ballot = Ballot {
                approver: "human:oncall-operator".into(),
                approve: true,
                reason: "CHG-1001: quickstart demo".into(),
                request_hash: Some(waiting.request_hash.clone()),
            };
            approvals.resolve(req.id, None, ballot).await?;
            approved_note = "a human approved it before the deadline".into();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let result = pending.await?;
    rows.push(row(
        "approval",
        "agent:deployer",
        &req,
        &result,
        approved_note,
    ));

    // 6. A failing job: its grant is still revoked.
    let req = ActionRequest::new("db.query", "db:missing")
        .with_params(json!({"sql": "SELECT 1"}))
        .with_intent("health check of a database that does not exist");
    let result = gateway.execute(db_reader.clone(), req.clone()).await;
    let note = match &result {
        Ok(out) => format!("job failed; grant revoked: {}", out.grant.revoked),
        Err(_) => String::new(),
    };
    rows.push(row("failing job", "agent:db-reader", &req, &result, note));

    // --- Verify the audit chain and its signed checkpoints.
    parts.audit.checkpoint().await?;
    let report = parts.verify_audit().await?;
    let after = parts.audit.read(None, usize::MAX).await?.len();

    if as_json {
        let doc = json!({
            "runner_isolation": runner.isolation,
            "policy_id": parts.policy.policy_id(),
            "audit": {
                "path": audit_path,
                "appended_to_existing": existed,
                "records_before": before,
                "records_after": after,
                "verified": report.is_ok(),
                "records_checked": report.records_checked,
                "checkpoints_checked": report.checkpoints_checked,
                "fault": report.fault,
            },
            "actions": rows,
            "simulated_targets": SIMULATED_TARGETS,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print_table(&rows);
        println!();
        println!(
            "simulated targets: {} (their jobs print the call they would make, with an HMAC \
             token a simulated target verifies; `cargo run --example infrastructure` runs the \
             real ones against PostgreSQL and Kubernetes)",
            SIMULATED_TARGETS.join(", ")
        );
        match &report.fault {
            None => println!(
                "audit chain verified: {} records, {} signed checkpoint(s), no tampering ({} new records this run)",
                report.records_checked,
                report.checkpoints_checked,
                after - before
            ),
            Some(fault) => println!("AUDIT CHAIN FAULT: {fault}"),
        }
        println!(
            "audit log: {} (signing key kept apart, in {})",
            audit_path.display(),
            key_dir.display()
        );
        println!(
            "verify it yourself: cargo run -p gateway-audit --features cli --bin gateway-audit -- \
             verify --db sqlite://{} --pubkey {} --expect-stream {} --witness {}",
            audit_path.display(),
            pubkey_path.display(),
            options.stream_id,
            witness_dir.display()
        );
    }
    if !report.is_ok() {
        return Err("audit chain did not verify".into());
    }
    Ok(())
}

/// A fresh 32-byte HMAC key.
fn rand_key() -> Vec<u8> {
    use rand::RngCore;
    let mut key = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

fn print_table(rows: &[Row]) {
    let headers = [
        "step",
        "agent",
        "action",
        "decision",
        "grant ttl",
        "runner",
        "exit",
        "duration",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.step.to_owned(),
                r.agent.clone(),
                format!("{} {}", r.action, r.resource),
                truncate(&r.decision, 60),
                r.grant_ttl_seconds.map_or("-".into(), |t| format!("{t}s")),
                r.runner.clone(),
                r.exit.clone(),
                r.duration_ms.map_or("-".into(), |d| format!("{d}ms")),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(headers.to_vec()));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  ")
    );
    for (row, r) in cells.iter().zip(rows) {
        println!("{}", line(row.iter().map(String::as_str).collect()));
        if !r.note.is_empty() {
            println!("    └ {}", r.note);
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(max - 1).collect::<String>())
    }
}
