//! Two gateway replicas as separate OS processes on one PostgreSQL database (the state store
//! and the audit log): an approval asked on one is answered on the other and the action runs
//! exactly once; each replica answers for the other's requests; a repeated id runs nowhere; a
//! replica SIGKILLed mid-job has its grant revoked (its token fails everywhere), its container
//! removed and its action closed as abandoned by the other, within the lease bound.
//!
//! The replicas are this test binary run again with `GATEWAY_TEST_REPLICA` set (the
//! `replica_process` test then serves until its stdin closes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/env.rs"]
mod env;
use gateway_audit::{
    AuditStore, PostgresAuditSink, PostgresStore, SinkConfig, SqliteAuditSink, SqliteStore,
};
use gateway_core::AuditSink;
use gateway_core::hmac_broker::{TOKEN_ENV, TokenError, TokenVerifier};
use gateway_core::state::{RevocationList, StateStore};
use gateway_core::testing::script::{MemoryRenderer, ScriptRenderer, Step};
use gateway_core::testing::{MemoryPolicy, MemoryRunner};
use gateway_core::{
    ActionCatalog, ActionDef, AgentId, AgentIdentity, AuthMethod, Decision, Gateway, GatewayConfig,
    HmacBroker, JobSpec, RequestId, Runner, Secret, StaticKeys,
};
use gateway_server::{Approvers, Frontend, ServerConfig};
use gateway_state::{PostgresStateStore, SqliteStateStore};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const CHILD: &str = "GATEWAY_TEST_REPLICA";

/// The replicas' run lease, short so the SIGKILL test's bound is short.
const RUN_LEASE: Duration = Duration::from_secs(2);
/// How often each replica sweeps.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// The scope `ops.slow` is granted (what its token is checked for).
const SLOW_SCOPE: &str = "ops:prod:run";

/// One replica: real state store and audit log on PostgreSQL, the in-memory policy (the
/// `ops.approve` action needs a human) and runner.
#[tokio::test]
async fn replica_process() {
    let Ok(name) = std::env::var(CHILD) else {
        return; // Run as a test of its own: nothing to do.
    };
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
    // State and audit on PostgreSQL (replicas), or on SQLite files (one process, restarted).
    let stream = SinkConfig::new(format!("replica-{name}"));
    let (state, audit): (Arc<dyn StateStore>, Arc<dyn AuditSink>) =
        match std::env::var("REPLICA_SQLITE_DIR") {
            Ok(dir) => {
                let dir = std::path::Path::new(&dir);
                let state = SqliteStateStore::open(dir.join("state.db")).await.unwrap();
                let store = SqliteStore::open(dir.join("audit.db")).await.unwrap();
                let audit = SqliteAuditSink::open(store, stream).await.unwrap();
                (Arc::new(state), Arc::new(audit))
            }
            Err(_) => {
                let url = std::env::var("REPLICA_DATABASE_URL").unwrap();
                let state = PostgresStateStore::connect(&url).await.unwrap();
                let store = PostgresStore::connect(&url).await.unwrap();
                let audit = PostgresAuditSink::open(store, stream).await.unwrap();
                (Arc::new(state), Arc::new(audit))
            }
        };
    let policy = MemoryPolicy::from_fn(|input| {
        let mut d = Decision::allow();
        d.obligations.require_approval = input.action == "ops.approve";
        if input.action == "ops.slow" {
            d.obligations.scopes = vec![SLOW_SCOPE.into()];
        }
        d
    });
    // With a Docker image, `ops.slow` runs in a real container (which the other replica must
    // remove when this one is killed); every other job runs on the in-memory runner.
    let docker_image = std::env::var("REPLICA_DOCKER_IMAGE").ok();
    let runner: Arc<dyn Runner> = match &docker_image {
        Some(image) => Arc::new(
            gateway_runners::DockerRunner::from_env()
                .unwrap()
                .instance(format!("replica-{name}-{}", std::process::id()))
                .default_image(image.clone())
                .build()
                .await
                .unwrap(),
        ),
        None => Arc::new(MemoryRunner::new()),
    };
    let in_docker = docker_image.is_some();
    let job = move |req: &gateway_core::ActionRequest, who: &AgentIdentity| {
        let command = if in_docker {
            vec!["echo".into(), "done".into()]
        } else {
            vec!["echo".into()]
        };
        Ok(JobSpec::new(req.id, who.id.clone(), command))
    };
    let slow = move |req: &gateway_core::ActionRequest, who: &AgentIdentity| {
        let command = if in_docker {
            vec!["sleep".into(), "120".into()]
        } else {
            MemoryRenderer.render(&[Step::SleepSeconds(120)]).1
        };
        Ok(JobSpec::new(req.id, who.id.clone(), command))
    };
    let second = |req: &gateway_core::ActionRequest, who: &AgentIdentity| {
        let command = MemoryRenderer.render(&[Step::SleepSeconds(1)]).1;
        Ok(JobSpec::new(req.id, who.id.clone(), command))
    };
    let catalog = ActionCatalog::new()
        .register(ActionDef::new("ops.echo", "echo", job))
        .register(ActionDef::new("ops.approve", "needs a human", job))
        .register(ActionDef::new("ops.slow", "runs for two minutes", slow))
        .register(ActionDef::new("ops.second", "runs for a second", second));
    // Every replica signs grants with the same key and shares revocations through the store,
    // so a grant revoked anywhere (by a sweep, after its replica died) fails on every verifier.
    let hmac_key = Secret::from(std::env::var("REPLICA_HMAC_KEY").unwrap());
    let broker = HmacBroker::new(hmac_key).unwrap().with_shared_revocations(
        state.clone() as Arc<dyn RevocationList>,
        Duration::from_secs(1),
    );
    let server_config = ServerConfig {
        recovery_interval: Some(SWEEP_EVERY),
        ..ServerConfig::default()
    };
    let front = Frontend::with_state(server_config, state);
    let identity: Arc<dyn gateway_core::Identity> = Arc::new(keys);
    let mut config = GatewayConfig {
        run_lease: RUN_LEASE,
        ..GatewayConfig::default()
    };
    config.max_job_limits.timeout = Duration::from_secs(300);
    if let Ok(cap) = std::env::var("REPLICA_SHARED_CAP") {
        config.agent_limits = gateway_core::AgentLimits {
            max_concurrent: cap.parse().unwrap(),
            across_replicas: true,
            ..gateway_core::AgentLimits::default()
        };
    }
    let gateway = Gateway::builder()
        .identity(identity.clone())
        .policy(Arc::new(policy))
        .broker(Arc::new(broker))
        .runner(runner)
        .audit(audit)
        .approvals(front.approval_gate())
        .catalog(catalog)
        .config(config)
        .replica(format!("replica-{name}"))
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

/// What every replica of one test shares.
struct Shared {
    url: String,
    agent_key: Secret,
    approver_token: Secret,
    hmac_key: Secret,
    docker_image: Option<String>,
    /// A concurrency cap shared by the replicas (`AgentLimits::across_replicas`).
    shared_cap: Option<u32>,
    /// State and audit in SQLite files here instead of PostgreSQL.
    sqlite_dir: Option<std::path::PathBuf>,
}

impl Shared {
    /// A fresh schema on the test server, and fresh keys.
    async fn new(base_url: &str) -> Self {
        let schema = format!(
            "t_replicas_{}",
            RequestId::new().to_string().replace('-', "")
        );
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(base_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let sep = if base_url.contains('?') { '&' } else { '?' };
        Self {
            url: format!("{base_url}{sep}options=-c%20search_path%3D{schema}"),
            agent_key: StaticKeys::generate_key("key-a").unwrap().0,
            approver_token: Approvers::generate_token().0,
            hmac_key: Secret::from(hex::encode(rand::random::<[u8; 32]>())),
            docker_image: None,
            shared_cap: None,
            sqlite_dir: None,
        }
    }

    /// Fresh keys, and state and audit in SQLite files in `dir`.
    fn sqlite(dir: &std::path::Path) -> Self {
        Self {
            url: String::new(),
            agent_key: StaticKeys::generate_key("key-a").unwrap().0,
            approver_token: Approvers::generate_token().0,
            hmac_key: Secret::from(hex::encode(rand::random::<[u8; 32]>())),
            docker_image: None,
            shared_cap: None,
            sqlite_dir: Some(dir.to_owned()),
        }
    }
}

fn spawn(name: &str, shared: &Shared) -> Replica {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "replica_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, name)
        .env("REPLICA_DATABASE_URL", &shared.url)
        .env("REPLICA_AGENT_KEY", shared.agent_key.expose_str().unwrap())
        .env(
            "REPLICA_APPROVER_TOKEN",
            shared.approver_token.expose_str().unwrap(),
        )
        .env("REPLICA_HMAC_KEY", shared.hmac_key.expose_str().unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(image) = &shared.docker_image {
        command.env("REPLICA_DOCKER_IMAGE", image);
    }
    if let Some(cap) = shared.shared_cap {
        command.env("REPLICA_SHARED_CAP", cap.to_string());
    }
    if let Some(dir) = &shared.sqlite_dir {
        command.env("REPLICA_SQLITE_DIR", dir);
    }
    let mut child = command.spawn().unwrap();
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

/// Polls `GET /v1/actions/{id}` on `base` (every 100 ms, `within` at most) until its status
/// is one of `statuses`; the status document.
async fn status_on(
    http: &reqwest::Client,
    base: &str,
    id: RequestId,
    key: &Secret,
    statuses: &[&str],
    within: Duration,
) -> Value {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        let (_, doc) = call(
            http,
            reqwest::Method::GET,
            format!("{base}/v1/actions/{id}"),
            key,
            None,
        )
        .await;
        if doc["status"]
            .as_str()
            .is_some_and(|s| statuses.contains(&s))
        {
            return doc;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("action {id} was not {statuses:?} within {within:?}");
}

/// [`status_on`] until the action has finished.
async fn finished_on(
    http: &reqwest::Client,
    base: &str,
    id: RequestId,
    key: &Secret,
    within: Duration,
) -> Value {
    status_on(http, base, id, key, &["completed", "failed"], within).await
}

/// Every event of `stream`, as stored.
async fn events_on(store: &PostgresStore, stream: &str) -> Vec<Value> {
    store
        .read_raw(stream, None, 10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| serde_json::from_str(&row.event).unwrap())
        .collect()
}

/// How many times `id` started, in either replica's stream.
async fn runs_of(store: &PostgresStore, id: RequestId) -> usize {
    let mut started = 0;
    for stream in ["replica-a", "replica-b"] {
        started += events_on(store, stream)
            .await
            .iter()
            .filter(|e| e["correlation_id"] == json!(id) && e["kind"] == "started")
            .count();
    }
    started
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
    let shared = Shared::new(&base_url).await;
    let (url, agent_key, token) = (&shared.url, &shared.agent_key, &shared.approver_token);
    let a = spawn("a", &shared);
    let b = spawn("b", &shared);
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
        agent_key,
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
        token,
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
        token,
        Some(&vote),
    )
    .await;
    assert_eq!(
        (status, answer["verdict"].as_str()),
        (200, Some("approved")),
        "{answer}"
    );

    // A's waiting request sees B's vote (within its poll interval) and runs.
    let done = finished_on(&http, &a.base, id, agent_key, Duration::from_secs(10)).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["outcome"]["approved_by"], "human:alice");
    // B answers for it from the store; a repeat of the id on B is refused.
    let (status, on_b) = call(
        &http,
        Method::GET,
        format!("{}/v1/actions/{id}", b.base),
        agent_key,
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
        agent_key,
        Some(&body),
    )
    .await;
    assert_eq!(status, 409, "{again}");

    // Exactly one run in the audit log of either replica.
    let store = PostgresStore::connect(url).await.unwrap();
    assert_eq!(runs_of(&store, id).await, 1, "runs recorded for {id}");
    drop((a, b));
}

/// `docker` CLI output, trimmed; panics with its stderr on failure.
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The containers labelled with `id`, running or not.
fn containers_of(id: RequestId) -> Vec<String> {
    let filter = format!("label={}={id}", gateway_core::labels::CORRELATION_ID);
    docker(&["ps", "-a", "-q", "--filter", &filter])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_job_is_closed_by_the_other_within_the_lease() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let test = "a_replica_killed_mid_job_is_closed_by_the_other_within_the_lease";
    let Some(base_url) = env::required("GATEWAY_TEST_POSTGRES_URL", test) else {
        return;
    };
    let Some(image) = env::required("GATEWAY_TEST_DOCKER_IMAGE", test) else {
        return;
    };
    let mut shared = Shared::new(&base_url).await;
    shared.docker_image = Some(image);
    let mut a = spawn("a", &shared);
    let b = spawn("b", &shared);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();

    // A runs a two-minute job in a container. The submission waits on A; nobody reads it.
    let id = RequestId::new();
    let body = json!({"id": id, "action": "ops.slow", "resource": "ops:prod", "intent": "kill"});
    // (It fails when A dies; that is the point.)
    let submit = http
        .post(format!("{}/v1/actions", a.base))
        .bearer_auth(shared.agent_key.expose_str().unwrap())
        .json(&body)
        .send();
    let submit = tokio::spawn(submit);
    let container = {
        let mut found = Vec::new();
        for _ in 0..200 {
            found = containers_of(id);
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(found.len(), 1, "A's job container: {found:?}");
        found.remove(0)
    };
    // The job's credential, as the job holds it (Docker keeps a container's environment).
    let env = docker(&[
        "inspect",
        "-f",
        "{{range .Config.Env}}{{println .}}{{end}}",
        &container,
    ]);
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{TOKEN_ENV}=")))
        .expect("the job holds its grant token")
        .to_owned();
    // A target verifying tokens against the shared revocation list.
    let list = Arc::new(PostgresStateStore::connect(&shared.url).await.unwrap());
    let target =
        TokenVerifier::new(shared.hmac_key.clone()).with_shared_revocations(list, Duration::ZERO);
    let now = time::OffsetDateTime::now_utc;
    assert!(target.verify_async(&token, SLOW_SCOPE, now()).await.is_ok());

    // SIGKILL A mid-job: no revocation, no teardown, no terminal record from it.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = std::time::Instant::now();
    let _ = submit.await;

    // B's sweep closes the action once A's lease passes.
    let closed = finished_on(
        &http,
        &b.base,
        id,
        &shared.agent_key,
        Duration::from_secs(30),
    )
    .await;
    let took = killed.elapsed();
    assert_eq!(closed["status"], "failed", "{closed}");
    let message = closed.to_string();
    assert!(message.contains("abandoned"), "{closed}");
    // Lease + one sweep interval, with room for a loaded machine.
    let bound = RUN_LEASE + SWEEP_EVERY + Duration::from_secs(5);
    assert!(
        took <= bound,
        "closed {took:?} after the kill (bound {bound:?})"
    );
    println!(
        "closed {took:?} after the SIGKILL (lease {RUN_LEASE:?}, sweep every {SWEEP_EVERY:?})"
    );

    // The grant is revoked everywhere, and A's container is gone.
    assert_eq!(
        target.verify_async(&token, SLOW_SCOPE, now()).await,
        Err(TokenError::Revoked)
    );
    assert_eq!(
        containers_of(id),
        Vec::<String>::new(),
        "A's container survived"
    );

    // The trail: started on A's stream, then revoked and completed on B's.
    let store = PostgresStore::connect(&shared.url).await.unwrap();
    let kinds_on = |stream: &'static str| {
        let store = &store;
        async move {
            events_on(store, stream)
                .await
                .into_iter()
                .filter(|e| e["correlation_id"] == json!(id))
                .map(|e| e["kind"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        kinds_on("replica-a").await,
        ["requested", "decided", "granted", "started"]
    );
    assert_eq!(kinds_on("replica-b").await, ["revoked", "completed"]);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kill_switch_reaches_both_replicas_within_the_bound() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let test = "the_kill_switch_reaches_both_replicas_within_the_bound";
    let Some(base_url) = env::required("GATEWAY_TEST_POSTGRES_URL", test) else {
        return;
    };
    let shared = Shared::new(&base_url).await;
    let (a, b) = (spawn("a", &shared), spawn("b", &shared));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let key = &shared.agent_key;
    use reqwest::Method;

    // One long job on each replica (the submissions wait; nobody reads them).
    let ids = [RequestId::new(), RequestId::new()];
    for (id, replica) in ids.iter().zip([&a, &b]) {
        let body = json!({"id": id, "action": "ops.slow", "resource": "ops:prod", "intent": "x"});
        let submit = http
            .post(format!("{}/v1/actions", replica.base))
            .bearer_auth(key.expose_str().unwrap())
            .json(&body)
            .send();
        tokio::spawn(submit);
    }
    for (id, replica) in ids.iter().zip([&a, &b]) {
        status_on(
            &http,
            &replica.base,
            *id,
            key,
            &["running"],
            Duration::from_secs(10),
        )
        .await;
    }

    // Lock the agent through B.
    let lock = json!({"agent": "agent:a", "reason": "INC-77: rotate everything"});
    let (status, locked) = call(
        &http,
        Method::POST,
        format!("{}/v1/locks", b.base),
        &shared.approver_token,
        Some(&lock),
    )
    .await;
    assert_eq!(status, 200, "{locked}");
    assert_eq!(locked["stopped_here"], 1, "{locked}");
    let locked_at = std::time::Instant::now();
    // Both jobs stop: B's at once, A's within its lock watch period (1 s by default).
    for (id, replica) in ids.iter().zip([&a, &b]) {
        let doc = finished_on(&http, &replica.base, *id, key, Duration::from_secs(15)).await;
        assert!(doc.to_string().contains("kill switch"), "{doc}");
        assert!(doc.to_string().contains("INC-77"), "{doc}");
    }
    let took = locked_at.elapsed();
    let bound = Duration::from_secs(3);
    assert!(
        took <= bound,
        "the lock took {took:?} to stop both (bound {bound:?})"
    );
    println!("the lock stopped both replicas' jobs within {took:?}");
    // New requests are refused on both.
    for replica in [&a, &b] {
        let body = json!({"id": RequestId::new(), "action": "ops.echo", "resource": "ops:prod"});
        let (status, doc) = call(
            &http,
            Method::POST,
            format!("{}/v1/actions", replica.base),
            key,
            Some(&body),
        )
        .await;
        assert_eq!(status, 403, "{doc}");
    }

    // Unlock through A; B serves the agent again within the cache age.
    let unlock = json!({"agent": "agent:a", "reason": "INC-77 closed"});
    let (status, answer) = call(
        &http,
        Method::POST,
        format!("{}/v1/locks/unlock", a.base),
        &shared.approver_token,
        Some(&unlock),
    )
    .await;
    assert_eq!(
        (status, &answer["unlocked"]),
        (200, &json!(true)),
        "{answer}"
    );
    tokio::time::sleep(gateway_core::gateway::LOCK_CACHE).await;
    let body = json!({"id": RequestId::new(), "action": "ops.echo", "resource": "ops:prod"});
    let (status, doc) = call(
        &http,
        Method::POST,
        format!("{}/v1/actions", b.base),
        key,
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{doc}");

    // Both operations are in the audit trail, each on the replica that did it; both jobs'
    // grants were revoked.
    let store = PostgresStore::connect(&shared.url).await.unwrap();
    let mut seen = Vec::new();
    for stream in ["replica-a", "replica-b"] {
        for event in events_on(&store, stream).await {
            let kind = event["kind"].as_str().unwrap().to_owned();
            if kind.starts_with("agent_") {
                seen.push((stream, kind.clone(), event["details"]["reason"].clone()));
            }
            if ids.iter().any(|id| event["correlation_id"] == json!(id)) && kind == "revoked" {
                seen.push((stream, kind, Value::Null));
            }
        }
    }
    seen.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
    assert_eq!(
        seen,
        [
            (
                "replica-a",
                "agent_unlocked".to_owned(),
                json!("INC-77 closed")
            ),
            ("replica-a", "revoked".to_owned(), Value::Null),
            (
                "replica-b",
                "agent_locked".to_owned(),
                json!("INC-77: rotate everything")
            ),
            ("replica-b", "revoked".to_owned(), Value::Null),
        ]
    );
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_cap_of_one_holds_across_both_replicas_under_a_burst() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let test = "a_concurrency_cap_of_one_holds_across_both_replicas_under_a_burst";
    let Some(base_url) = env::required("GATEWAY_TEST_POSTGRES_URL", test) else {
        return;
    };
    let mut shared = Shared::new(&base_url).await;
    shared.shared_cap = Some(1);
    let (a, b) = (spawn("a", &shared), spawn("b", &shared));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Ten one-second actions at once, five on each replica.
    let burst = (0..10).map(|n| {
        let base = if n % 2 == 0 { &a.base } else { &b.base };
        let body = json!({"id": RequestId::new(), "action": "ops.second", "resource": "ops:prod"});
        let (http, key) = (&http, &shared.agent_key);
        async move {
            call(
                http,
                reqwest::Method::POST,
                format!("{base}/v1/actions"),
                key,
                Some(&body),
            )
            .await
        }
    });
    let answers = futures::future::join_all(burst).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    let ran = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ran, refused), (1, 9), "{answers:?}");
    assert!(
        answers
            .iter()
            .any(|(_, doc)| doc.to_string().contains("across replicas")),
        "the other replica's refusals must name the shared cap: {answers:?}"
    );
    // The slot came back: the next one runs, on the other replica too.
    for base in [&a.base, &b.base] {
        let body = json!({"id": RequestId::new(), "action": "ops.echo", "resource": "ops:prod"});
        let (status, doc) = call(
            &http,
            reqwest::Method::POST,
            format!("{base}/v1/actions"),
            &shared.agent_key,
            Some(&body),
        )
        .await;
        assert_eq!(status, 200, "{doc}");
    }
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_approval_survives_a_restart_of_both_replicas() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let test = "a_pending_approval_survives_a_restart_of_both_replicas";
    let Some(base_url) = env::required("GATEWAY_TEST_POSTGRES_URL", test) else {
        return;
    };
    let shared = Shared::new(&base_url).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    use reqwest::Method;
    let (mut a, mut b) = (spawn("a", &shared), spawn("b", &shared));
    let id = RequestId::new();
    let body =
        json!({"id": id, "action": "ops.approve", "resource": "ops:prod", "intent": "restart"});
    let (status, doc) = call(
        &http,
        Method::POST,
        format!("{}/v1/actions", a.base),
        &shared.agent_key,
        Some(&body),
    )
    .await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (202, Some("pending_approval")),
        "{doc}"
    );
    // Both replicas die (SIGKILL) and come back as new processes.
    for replica in [&mut a, &mut b] {
        replica.child.kill().unwrap();
        replica.child.wait().unwrap();
    }
    drop((a, b));
    let (a, b) = (spawn("a", &shared), spawn("b", &shared));

    // The ticket is still listed and answerable.
    let (status, list) = call(
        &http,
        Method::GET,
        format!("{}/v1/approvals", b.base),
        &shared.approver_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let listed = list["pending"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["correlation_id"] == json!(id));
    assert!(listed, "the approval did not survive the restart: {list}");
    let vote = json!({"verdict": "approve", "reason": "CHG-9"});
    let (status, answer) = call(
        &http,
        Method::POST,
        format!("{}/v1/approvals/{id}", b.base),
        &shared.approver_token,
        Some(&vote),
    )
    .await;
    assert_eq!(
        (status, answer["verdict"].as_str()),
        (200, Some("approved")),
        "{answer}"
    );

    // A sweep runs it once the first waiter's hold (15 s) has passed.
    let voted = std::time::Instant::now();
    let done = finished_on(
        &http,
        &a.base,
        id,
        &shared.agent_key,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["outcome"]["approved_by"], "human:alice");
    println!("ran {:?} after the vote", voted.elapsed());
    // Exactly one run, in either replica's stream.
    let store = PostgresStore::connect(&shared.url).await.unwrap();
    assert_eq!(runs_of(&store, id).await, 1);
    drop((a, b));
}

/// The same lifecycle on SQLite, one process restarted: a pending approval survives the
/// restart and runs once approved; a job whose process was SIGKILLed is closed by the next
/// process's sweep, its grant revoked in the shared list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_on_sqlite_survives_its_restarts() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let shared = Shared::sqlite(dir.path());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    use reqwest::Method;
    let key = &shared.agent_key;
    let restart = |mut replica: Replica| {
        replica.child.kill().unwrap();
        replica.child.wait().unwrap();
        drop(replica);
        spawn("a", &shared)
    };

    // A pending approval survives a restart and runs once approved.
    let a = spawn("a", &shared);
    let id = RequestId::new();
    let body = json!({"id": id, "action": "ops.approve", "resource": "ops:prod", "intent": "x"});
    let (status, doc) = call(
        &http,
        Method::POST,
        format!("{}/v1/actions", a.base),
        key,
        Some(&body),
    )
    .await;
    assert_eq!(status, 202, "{doc}");
    let a = restart(a);
    let vote = json!({"verdict": "approve", "reason": "CHG-11"});
    let (status, answer) = call(
        &http,
        Method::POST,
        format!("{}/v1/approvals/{id}", a.base),
        &shared.approver_token,
        Some(&vote),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let done = finished_on(&http, &a.base, id, key, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A job killed with its process is closed by the next one's sweep.
    let id = RequestId::new();
    let body = json!({"id": id, "action": "ops.slow", "resource": "ops:prod", "intent": "x"});
    let submit = http
        .post(format!("{}/v1/actions", a.base))
        .bearer_auth(key.expose_str().unwrap())
        .json(&body)
        .send();
    tokio::spawn(submit);
    let state = SqliteStateStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    let action = gateway_core::ActionKey::new(AgentId::new("agent:a").unwrap(), id);
    let mut grant = None;
    for _ in 0..200 {
        if let Some(run) = state.get(&action).await.unwrap().and_then(|r| r.run) {
            grant = Some(run.grant.id);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grant = grant.expect("the job never ran");
    let now = time::OffsetDateTime::now_utc;
    assert!(!state.is_revoked(&grant, now()).await.unwrap());
    let a = restart(a);
    let closed = finished_on(&http, &a.base, id, key, Duration::from_secs(15)).await;
    assert_eq!(closed["status"], "failed", "{closed}");
    assert!(closed.to_string().contains("abandoned"), "{closed}");
    assert!(
        state.is_revoked(&grant, now()).await.unwrap(),
        "the killed job's grant was not revoked"
    );
    drop(a);
}
