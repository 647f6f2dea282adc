//! Two gateway replicas as separate OS processes on one PostgreSQL database (the state store
//! and the audit log): an approval asked on one is answered on the other and the action runs
//! exactly once; each replica answers for the other's requests; a repeated id runs nowhere.
//!
//! The replicas are this test binary run again with `GATEWAY_TEST_REPLICA` set (the
//! `replica_process` test then serves until its stdin closes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
use gateway_audit::{AuditStore, PostgresAuditSink, PostgresStore, SinkConfig};
use gateway_core::testing::{MemoryPolicy, MemoryRunner};
use gateway_core::{
    ActionCatalog, ActionDef, AgentId, AgentIdentity, AuthMethod, Decision, Gateway, JobSpec,
    RequestId, Secret, StaticKeys,
};
use gateway_server::{Approvers, Frontend, ServerConfig};
use gateway_state::PostgresStateStore;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHILD: &str = "GATEWAY_TEST_REPLICA";

/// One replica: real state store and audit log on PostgreSQL, the in-memory policy (the
/// `ops.approve` action needs a human) and runner.
#[tokio::test]
async fn replica_process() {
    let Ok(name) = std::env::var(CHILD) else {
        return; // Run as a test of its own: nothing to do.
    };
    let url = std::env::var("REPLICA_DATABASE_URL").unwrap();
    let agent_key = Secret::from(std::env::var("REPLICA_AGENT_KEY").unwrap());
    let approver_token = Secret::from(std::env::var("REPLICA_APPROVER_TOKEN").unwrap());
    let identity = AgentIdentity::new(
        AgentId::new("agent:a").unwrap(),
        "team-a",
        AuthMethod::StaticKey {
            key_id: "key-a".into(),
        },
    );
    let keys = StaticKeys::new()
        .with_key_hash("key-a", &StaticKeys::hash_key(&agent_key), identity)
        .unwrap();
    let approvers = Approvers::new()
        .with_token_hash("human:alice", &Approvers::hash_token(&approver_token))
        .unwrap();
    let state = Arc::new(PostgresStateStore::connect(&url).await.unwrap());
    let audit = PostgresAuditSink::open(
        PostgresStore::connect(&url).await.unwrap(),
        SinkConfig::new(format!("replica-{name}")),
    )
    .await
    .unwrap();
    let policy = MemoryPolicy::from_fn(|input| {
        let mut d = Decision::allow();
        d.obligations.require_approval = input.action == "ops.approve";
        d
    });
    let job = |req: &gateway_core::ActionRequest, who: &AgentIdentity| {
        Ok(JobSpec::new(req.id, who.id.clone(), vec!["echo".into()]))
    };
    let catalog = ActionCatalog::new()
        .register(ActionDef::new("ops.echo", "echo", job))
        .register(ActionDef::new("ops.approve", "needs a human", job));
    let front = Frontend::with_state(ServerConfig::default(), state);
    let identity: Arc<dyn gateway_core::Identity> = Arc::new(keys);
    let gateway = Gateway::builder()
        .identity(identity.clone())
        .policy(Arc::new(policy))
        .broker(Arc::new(gateway_core::HmacBroker::generate()))
        .runner(Arc::new(MemoryRunner::new()))
        .audit(Arc::new(audit))
        .approvals(front.approval_gate())
        .catalog(catalog)
        .build()
        .unwrap();
    let app = front.into_state(gateway, identity, approvers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTENING http://{}", listener.local_addr().unwrap());
    // Serve until the parent closes our stdin.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
    });
    gateway_server::serve_with_shutdown(listener, app, async move {
        let _ = stdin_closed.await;
    })
    .await
    .unwrap();
}

struct Replica {
    child: Child,
    base: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, url: &str, agent_key: &Secret, token: &Secret) -> Replica {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "replica_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, name)
        .env("REPLICA_DATABASE_URL", url)
        .env("REPLICA_AGENT_KEY", agent_key.expose_str().unwrap())
        .env("REPLICA_APPROVER_TOKEN", token.expose_str().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("replica {name} exited before listening"))
            .unwrap();
        // libtest prints the test's name on the same line first.
        if let Some((_, base)) = line.split_once("LISTENING ") {
            break base.trim().to_owned();
        }
    };
    Replica { child, base }
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    bearer: &Secret,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, url)
        .bearer_auth(bearer.expose_str().unwrap());
    if let Some(body) = body {
        req = req.json(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_approvals_ids_and_status() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let test = "two_processes_share_approvals_ids_and_status";
    let Some(base_url) = env::required("GATEWAY_TEST_POSTGRES_URL", test) else {
        return;
    };
    let schema = format!(
        "t_replicas_{}",
        RequestId::new().to_string().replace('-', "")
    );
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(&base_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let url = format!("{base_url}{sep}options=-c%20search_path%3D{schema}");
    let agent_key = StaticKeys::generate_key("key-a").unwrap().0;
    let token = Approvers::generate_token().0;
    let a = spawn("a", &url, &agent_key, &token);
    let b = spawn("b", &url, &agent_key, &token);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    use reqwest::Method;

    let id = RequestId::new();
    let body =
        json!({"id": id, "action": "ops.approve", "resource": "ops:prod", "intent": "replicas"});
    let (status, doc) = call(
        &http,
        Method::POST,
        format!("{}/v1/actions", a.base),
        &agent_key,
        Some(&body),
    )
    .await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (202, Some("pending_approval")),
        "{doc}"
    );
    let (status, list) = call(
        &http,
        Method::GET,
        format!("{}/v1/approvals", b.base),
        &token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let hash = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["correlation_id"] == json!(id))
        .unwrap_or_else(|| panic!("B does not list A's approval: {list}"))["request_hash"]
        .clone();
    let vote = json!({"verdict": "approve", "reason": "CHG-7", "request_hash": hash});
    let (status, answer) = call(
        &http,
        Method::POST,
        format!("{}/v1/approvals/{id}", b.base),
        &token,
        Some(&vote),
    )
    .await;
    assert_eq!(
        (status, answer["verdict"].as_str()),
        (200, Some("approved")),
        "{answer}"
    );

    // A's waiting request sees B's vote (within its poll interval) and runs.
    let mut done = Value::Null;
    for _ in 0..100 {
        let (_, doc) = call(
            &http,
            Method::GET,
            format!("{}/v1/actions/{id}", a.base),
            &agent_key,
            None,
        )
        .await;
        if doc["status"] == "completed" || doc["status"] == "failed" {
            done = doc;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["outcome"]["approved_by"], "human:alice");
    // B answers for it from the store; a repeat of the id on B is refused.
    let (status, on_b) = call(
        &http,
        Method::GET,
        format!("{}/v1/actions/{id}", b.base),
        &agent_key,
        None,
    )
    .await;
    assert_eq!(
        (status, on_b["status"].as_str()),
        (200, Some("completed")),
        "{on_b}"
    );
    let (status, again) = call(
        &http,
        Method::POST,
        format!("{}/v1/actions", b.base),
        &agent_key,
        Some(&body),
    )
    .await;
    assert_eq!(status, 409, "{again}");

    // Exactly one run in the audit log of either replica.
    let store = PostgresStore::connect(&url).await.unwrap();
    let mut started = 0;
    for stream in ["replica-a", "replica-b"] {
        for row in store.read_raw(stream, None, 10_000).await.unwrap() {
            let event: Value = serde_json::from_str(&row.event).unwrap();
            if event["correlation_id"] == json!(id) && event["kind"] == "started" {
                started += 1;
            }
        }
    }
    assert_eq!(started, 1, "runs recorded for {id}");
    drop((a, b));
}
