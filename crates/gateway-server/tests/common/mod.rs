//! A real server on 127.0.0.1:0 over core parts: StaticKeys identities, the HmacBroker, and the
//! core's in-memory test doubles for policy, runner and audit (with fault injection).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use gateway_core::hmac_broker::TOKEN_ENV;
use gateway_core::testing::script::{MemoryRenderer, ScriptRenderer, Step};
use gateway_core::testing::{MemoryAuditSink, MemoryPolicy, MemoryRunner};
use gateway_core::{
    ActionCatalog, ActionDef, AgentId, AgentLimits, AuditEventKind, Decision, Gateway,
    GatewayConfig, HmacBroker, Identity, JobSpec, Secret, StaticKeys,
};
use gateway_server::{Approvers, Frontend, Metrics, ServerConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub base: String,
    pub agent_a: Secret,
    pub agent_b: Secret,
    pub alice: Secret,
    pub runner: Arc<MemoryRunner>,
    pub audit: Arc<MemoryAuditSink>,
    pub policy: Arc<MemoryPolicy>,
    pub broker: Arc<HmacBroker>,
    pub http: reqwest::Client,
    pub metrics: Arc<Metrics>,
    /// Keys and store, to start another replica of this server.
    pub shared: Shared,
    /// The server's address, for raw TCP clients.
    pub addr: std::net::SocketAddr,
    stop: CancellationToken,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The catalog: `ops.echo` (allowed; prints its grant token), `ops.fail` (allowed; exits 3),
/// `ops.frozen` (denied by policy), `ops.approve` (needs a human).
pub fn catalog() -> ActionCatalog {
    fn script(
        steps: Vec<Step>,
    ) -> impl Fn(
        &gateway_core::ActionRequest,
        &gateway_core::AgentIdentity,
    ) -> Result<JobSpec, gateway_core::action::JobBuildError>
    + Send
    + Sync
    + 'static {
        move |req, who| {
            let (_, command) = MemoryRenderer.render(&steps);
            Ok(JobSpec::new(req.id, who.id.clone(), command))
        }
    }
    ActionCatalog::new()
        .register(
            ActionDef::new(
                "ops.echo",
                "Prints a message and the grant token's presence.",
                script(vec![
                    Step::Stdout("hello ".into()),
                    Step::PrintEnv(TOKEN_ENV.into()),
                ]),
            )
            .with_schema(json!({
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "additionalProperties": false
            }))
            .expect("a constant schema"),
        )
        .register(ActionDef::new(
            "ops.fail",
            "Exits 3.",
            script(vec![Step::Exit(3)]),
        ))
        .register(ActionDef::new(
            "ops.frozen",
            "Never allowed.",
            script(vec![]),
        ))
        .register(ActionDef::new(
            "ops.approve",
            "Needs approval.",
            script(vec![Step::Stdout("approved run".into())]),
        ))
}

pub fn policy() -> MemoryPolicy {
    MemoryPolicy::from_fn(|input| match input.action.as_str() {
        "ops.frozen" => Decision::deny("production is frozen"),
        "ops.approve" => {
            let mut d = Decision::allow();
            d.obligations.require_approval = true;
            d.obligations.scopes = vec!["ops:approve".into()];
            d
        }
        _ => {
            let mut d = Decision::allow();
            d.obligations.max_ttl_seconds = Some(60);
            d.obligations.scopes = vec![format!("ops:{}", input.action)];
            d
        }
    })
    // The listing rule: agent:b is not shown the action that needs a human.
    .with_listing(|input| {
        input
            .actions
            .iter()
            .filter(|a| input.agent.id.as_str() != "agent:b" || *a != "ops.approve")
            .cloned()
            .collect()
    })
}

pub struct Options {
    pub gateway: GatewayConfig,
    pub server: ServerConfig,
    /// Another replica's keys and state store: this server is a second replica of it.
    pub replica_of: Option<Shared>,
}

/// What replicas of one deployment share: the agents' keys, the approver's token and the
/// state store.
#[derive(Clone)]
pub struct Shared {
    pub agent_a: Secret,
    pub agent_b: Secret,
    pub alice: Secret,
    pub state: Arc<dyn gateway_core::StateStore>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway: GatewayConfig {
                agent_limits: AgentLimits::unlimited(),
                ..GatewayConfig::default()
            },
            server: ServerConfig::default(),
            replica_of: None,
        }
    }
}

pub async fn start(options: Options) -> Harness {
    let shared = options.replica_of.clone().unwrap_or_else(|| Shared {
        agent_a: StaticKeys::generate_key("key-a").unwrap().0,
        agent_b: StaticKeys::generate_key("key-b").unwrap().0,
        alice: Approvers::generate_token().0,
        state: Arc::new(gateway_core::MemoryStateStore::new()),
    });
    let static_key = |key_id: &str, agent: &str, owner: &str| {
        gateway_core::AgentIdentity::new(
            AgentId::new(agent).unwrap(),
            owner,
            gateway_core::AuthMethod::StaticKey {
                key_id: key_id.into(),
            },
        )
    };
    let keys = StaticKeys::new()
        .with_key_hash(
            "key-a",
            &StaticKeys::hash_key(&shared.agent_a),
            static_key("key-a", "agent:a", "team-a"),
        )
        .unwrap()
        .with_key_hash(
            "key-b",
            &StaticKeys::hash_key(&shared.agent_b),
            static_key("key-b", "agent:b", "team-b"),
        )
        .unwrap();
    let approvers = Approvers::new()
        .with_token_hash("human:alice", &Approvers::hash_token(&shared.alice))
        .unwrap();
    let (agent_a, agent_b, alice) = (
        shared.agent_a.clone(),
        shared.agent_b.clone(),
        shared.alice.clone(),
    );
    let identity: Arc<dyn Identity> = Arc::new(keys);
    let runner = Arc::new(MemoryRunner::new());
    let audit = Arc::new(MemoryAuditSink::new());
    let policy = Arc::new(policy());
    let broker = Arc::new(HmacBroker::generate());

    let front = Frontend::with_state(options.server, Arc::clone(&shared.state));
    let m = front.metrics();
    let gateway = Gateway::builder()
        .identity(Arc::clone(&identity))
        .policy(m.policy(policy.clone()))
        .broker(m.broker(broker.clone()))
        .runner(m.runner(runner.clone()))
        .audit(m.audit(audit.clone()))
        .approvals(front.approval_gate())
        .catalog(catalog())
        .config(options.gateway)
        .build()
        .unwrap();
    let state = front.into_state(gateway, identity, approvers);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let addr = listener.local_addr().unwrap();
    let s = stop.clone();
    let server = tokio::spawn(async move {
        gateway_server::serve_with_shutdown(listener, state, async move { s.cancelled().await })
            .await
            .unwrap();
    });
    Harness {
        base,
        agent_a,
        agent_b,
        alice,
        runner,
        audit,
        policy,
        broker,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        metrics: m,
        shared,
        addr,
        stop,
        server: std::sync::Mutex::new(Some(server)),
    }
}

pub fn token(s: &Secret) -> &str {
    s.expose_str().unwrap()
}

impl Harness {
    pub async fn post(&self, path: &str, bearer: Option<&Secret>, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(b) = bearer {
            req = req.bearer_auth(token(b));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, bearer: Option<&Secret>) -> (u16, Value) {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(token(b));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Asks the server to stop and waits until `serve_with_shutdown` returns; how long it took.
    pub async fn shut_down(&self) -> Duration {
        let started = std::time::Instant::now();
        self.stop.cancel();
        let server = self.server.lock().unwrap().take().expect("shut down once");
        server.await.unwrap();
        started.elapsed()
    }

    /// `GET /metrics` with this `Accept` header: the status, the `Content-Type` and the body.
    pub async fn scrape(&self, accept: Option<&str>) -> (u16, String, String) {
        let mut req = self.http.get(format!("{}/metrics", self.base));
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, content_type, resp.text().await.unwrap())
    }

    /// Polls the status URL until the action leaves `running`/`pending_approval`, or 10 s pass.
    pub async fn wait_done(&self, id: &str, bearer: &Secret) -> Value {
        for _ in 0..200 {
            let (status, doc) = self.get(&format!("/v1/actions/{id}"), Some(bearer)).await;
            assert_eq!(status, 200, "{doc}");
            if doc["status"] != "running" && doc["status"] != "pending_approval" {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("action {id} did not finish");
    }

    /// Waits until the approval queue holds `id`.
    pub async fn wait_pending_approval(&self, id: &str) {
        for _ in 0..200 {
            let (status, list) = self.get("/v1/approvals", Some(&self.alice)).await;
            assert_eq!(status, 200, "{list}");
            if list["pending"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["correlation_id"] == id)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("approval for {id} never became pending");
    }

    /// Waits until `id` waits for a human, then, `delay` later, has alice approve it.
    pub async fn approve_after(&self, id: &str, delay: Duration) {
        self.wait_pending_approval(id).await;
        tokio::time::sleep(delay).await;
        let (status, body) = self
            .post(
                &format!("/v1/approvals/{id}"),
                Some(&self.alice),
                &json!({"verdict": "approve"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// What an action cancelled while it waited for a human leaves: its trail asked for the
    /// approval, granted nothing and ends with a terminal record; no approval is left pending
    /// and nothing ran.
    pub async fn assert_cancelled_while_waiting(&self, id: &str) {
        let kinds: Vec<_> = self
            .audit
            .events_for(id.parse().unwrap())
            .iter()
            .map(|e| e.kind)
            .collect();
        assert!(
            kinds.contains(&AuditEventKind::ApprovalRequested),
            "{kinds:?}"
        );
        assert!(!kinds.contains(&AuditEventKind::Granted), "{kinds:?}");
        assert_eq!(kinds.last(), Some(&AuditEventKind::Completed), "{kinds:?}");
        let (_, pending) = self.get("/v1/approvals", Some(&self.alice)).await;
        assert_eq!(pending["pending"], json!([]), "{pending}");
        assert!(self.runner.runs().is_empty());
    }
}
