//! A real server on 127.0.0.1:0 over the EMBEDDED DEFAULTS: `EmbeddedRego` on `policies/`, the
//! real `LocalRunner`, `HmacBroker` grants and a real `SqliteAuditSink` in a temporary directory,
//! with `StaticKeys` agents and a human approver, behind `gateway-server`'s front (metrics
//! wrappers and approval gate, as the `server` example wires them).
//!
//! The only thing between the gateway and a real backend is [`SwitchableAudit`], a pass-through
//! around the SQLite sink whose appends can be made to fail on demand: a real SQLite file cannot
//! be made to fail on cue portably (permissions do not stop root, and an open connection keeps
//! writing to an unlinked file), yet "audit down → 503, nothing ran" must be tested.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use agent_gateway::core::{
    AgentId, AgentIdentity, AgentLimits, AuditError, AuditEvent, AuditEventKind, AuditReceipt,
    AuditRecord, AuditSink, AuthMethod, GatewayConfig, Identity, RequestId, Secret, StaticKeys,
    VerifyReport, async_trait,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use gateway_server::{Approvers, Frontend, Metrics, ServerConfig};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The SQLite sink, with a switch that makes appends and reads fail as if the store were down.
/// (Tests read the log back through `Harness::parts.audit`, around the switch.)
pub struct SwitchableAudit {
    inner: Arc<dyn AuditSink>,
    down: AtomicBool,
}

impl SwitchableAudit {
    /// Appends fail from now on (`true`) or pass through again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl AuditSink for SwitchableAudit {
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::unavailable_msg(
                "audit store is down (test switch)",
            ));
        }
        self.inner.append(event).await
    }

    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::unavailable_msg(
                "audit store is down (test switch)",
            ));
        }
        self.inner.append_all(events).await
    }

    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(AuditError::unavailable_msg(
                "audit store is down (test switch)",
            ));
        }
        self.inner.read(after, limit).await
    }

    async fn verify(&self) -> Result<VerifyReport, AuditError> {
        self.inner.verify().await
    }
}

pub struct Harness {
    pub base: String,
    /// `agent:deployer`: namespaces staging and production.
    pub deployer: Secret,
    /// `agent:db-reader`: role db-reader.
    pub db_reader: Secret,
    /// `agent:intern-bot`: no attributes.
    pub intern: Secret,
    /// `human:alice`, an approver.
    pub alice: Secret,
    pub parts: EmbeddedParts,
    pub audit: Arc<SwitchableAudit>,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    stop: CancellationToken,
    // Dropped last: the audit log lives here.
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub struct Options {
    pub gateway: GatewayConfig,
    pub server: ServerConfig,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gateway: GatewayConfig {
                agent_limits: AgentLimits::unlimited(),
                ..GatewayConfig::default()
            },
            server: ServerConfig::default(),
        }
    }
}

/// `keys` with one more agent (`attributes` merged into its identity), and its new API key.
pub fn issue(
    keys: StaticKeys,
    key_id: &str,
    agent: &str,
    attributes: Value,
) -> (StaticKeys, Secret) {
    let (key, hash) = StaticKeys::generate_key(key_id).unwrap();
    let mut identity = AgentIdentity::new(
        AgentId::new(agent).unwrap(),
        "e2e-tests",
        AuthMethod::StaticKey {
            key_id: key_id.to_owned(),
        },
    );
    if let Value::Object(map) = attributes {
        identity.attributes.extend(map);
    }
    (keys.with_key_hash(key_id, &hash, identity).unwrap(), key)
}

pub async fn start(options: Options) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let parts = EmbeddedParts::open(&EmbeddedOptions::new(dir.path().join("audit.db")))
        .await
        .expect("embedded defaults open on this machine");

    let keys = StaticKeys::new();
    let (keys, deployer) = issue(
        keys,
        "deployer-1",
        "agent:deployer",
        json!({"namespaces": ["staging", "production"]}),
    );
    let (keys, db_reader) = issue(
        keys,
        "db-reader-1",
        "agent:db-reader",
        json!({"role": "db-reader"}),
    );
    let (keys, intern) = issue(keys, "intern-1", "agent:intern-bot", json!({}));
    let (approvers, alice) = Approvers::new()
        .with_generated_token("human:alice")
        .unwrap();
    let identity: Arc<dyn Identity> = Arc::new(keys);

    let audit = Arc::new(SwitchableAudit {
        inner: parts.audit.clone(),
        down: AtomicBool::new(false),
    });
    let front = Frontend::with_state(options.server, parts.state.clone());
    let metrics = front.metrics();
    let gateway = parts
        .builder(Arc::clone(&identity))
        .policy(metrics.policy(parts.policy.clone()))
        .broker(metrics.broker(parts.broker.clone()))
        .runner(metrics.runner(parts.runner.clone()))
        .audit(metrics.audit(audit.clone()))
        .approvals(front.approval_gate())
        .config(options.gateway)
        .build()
        .unwrap();
    let state = front.into_state(gateway, identity, approvers);
    let (base, stop) = serve(state).await;
    Harness {
        base,
        deployer,
        db_reader,
        intern,
        alice,
        parts,
        audit,
        metrics,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        stop,
        _dir: dir,
    }
}

/// Serves `state` on 127.0.0.1:0 until the token is cancelled; the base URL.
pub async fn serve(state: gateway_server::AppState) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        gateway_server::serve_with_shutdown(listener, state, async move { s.cancelled().await })
            .await
            .unwrap();
    });
    (base, stop)
}

pub fn token(s: &Secret) -> &str {
    s.expose_str().unwrap()
}

/// An action request body with a fresh id.
pub fn request(action: &str, resource: &str, params: Value) -> Value {
    json!({
        "id": RequestId::new(),
        "action": action,
        "resource": resource,
        "params": params,
        "intent": "end-to-end test",
    })
}

/// The grant token a `k8s.scale` job presented to its (simulated) target.
pub fn presented_token(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        l.strip_prefix("target-request: ")
            .and_then(|r| r.rsplit_once(" Bearer "))
            .map(|(_, t)| t.trim().to_owned())
    })
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

    /// The audit trail (event kinds, in order) of one request, read back from SQLite.
    pub async fn trail(&self, id: &str) -> Vec<AuditEventKind> {
        let id: RequestId = id.parse().unwrap();
        self.parts
            .audit
            .read(None, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.correlation_id == id)
            .map(|r| r.event.kind)
            .collect()
    }

    /// Verifies the whole SQLite chain (checkpoints included) and returns how many records it
    /// checked.
    pub async fn verify_audit(&self) -> u64 {
        self.parts.audit.checkpoint().await.unwrap();
        let report = self.parts.verify_audit().await.unwrap();
        assert!(report.is_ok(), "audit chain does not verify: {report:?}");
        report.records_checked
    }

    /// Jobs handed to the real runner so far, whatever their status (counted by the metrics
    /// wrapper around it), and grants issued.
    pub fn runs_and_grants(&self) -> (u64, u64) {
        (self.metrics.runs(), self.metrics.grants().0)
    }

    /// Polls the status URL until the action leaves `running`/`pending_approval`, or 15 s pass.
    pub async fn wait_done(&self, id: &str, bearer: &Secret) -> Value {
        for _ in 0..300 {
            let (status, doc) = self.get(&format!("/v1/actions/{id}"), Some(bearer)).await;
            assert_eq!(status, 200, "{doc}");
            if doc["status"] != "running" && doc["status"] != "pending_approval" {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("action {id} did not finish");
    }

    /// Waits until the approval queue holds `id` and returns its entry.
    pub async fn wait_pending_approval(&self, id: &str) -> Value {
        for _ in 0..200 {
            let (status, list) = self.get("/v1/approvals", Some(&self.alice)).await;
            assert_eq!(status, 200, "{list}");
            if let Some(entry) = list["pending"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["correlation_id"] == id)
            {
                return entry.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("approval for {id} never became pending");
    }
}
