//! The real infrastructure actions on the real services `scripts/test` starts: `db.query`
//! runs the host's `psql` in the local sandbox with a role the [`PostgresBroker`] created for
//! the one request, reaching the server only through its Unix socket.
//!
//! Needs `GATEWAY_TEST_POSTGRES_URL` (a superuser URL) and `GATEWAY_TEST_POSTGRES_SOCKET_DIR`
//! (the server's socket directory, where passwords are checked); skipped without them, except
//! under `CI=true`, where they are required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "common/env.rs"]
mod env;
use agent_gateway::core::runner::ReadOnlyMount;
use agent_gateway::core::{
    AccessBroker, AgentId, CancellationToken, Grant, GrantRequest, IsolationLevel, JobOutcome,
    JobSpec, RequestId, Runner,
};
use agent_gateway::postgres_broker::PostgresBroker;
use agent_gateway::runners::LocalRunner;
use env::{ci, required};
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// A database with a schema of its own: `orders` (readable by the grant) and `secrets` (not).
struct Db {
    url: String,
    socket_dir: String,
    schema: String,
    admin: PgConnection,
}

impl Db {
    async fn new(test: &str) -> Option<Self> {
        let url = required("GATEWAY_TEST_POSTGRES_URL", test)?;
        let socket_dir = required("GATEWAY_TEST_POSTGRES_SOCKET_DIR", test)?;
        let schema = format!("infra_{}", hex::encode(rand::random::<[u8; 5]>()));
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (id int PRIMARY KEY, amount int);
             CREATE TABLE {schema}.secrets (id int PRIMARY KEY, v text);
             INSERT INTO {schema}.orders SELECT g, g * 10 FROM generate_series(1, 3) g;
             INSERT INTO {schema}.secrets VALUES (1, 'do not read');"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        Some(Self {
            url,
            socket_dir,
            schema,
            admin,
        })
    }

    async fn broker(&self) -> PostgresBroker {
        PostgresBroker::builder(self.url.clone())
            .instance(format!("test-{}", self.schema))
            .job_socket_dir(&self.socket_dir)
            .build()
            .await
            .unwrap()
    }

    fn read_orders(&self) -> String {
        format!("pg:gateway_test:{}.orders:select", self.schema)
    }

    async fn count_orders(&mut self) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}.orders", self.schema))
            .fetch_one(&mut self.admin)
            .await
            .unwrap()
    }

    async fn drop(mut self) {
        sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

fn sandbox() -> Option<LocalRunner> {
    match LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) if ci() => panic!("CI=true but the sandbox is unusable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: the sandbox is unusable here: {e}");
            None
        }
    }
}

async fn grant(broker: &PostgresBroker, scopes: Vec<String>) -> Grant {
    broker
        .grant(&GrantRequest {
            correlation_id: RequestId::new(),
            agent: AgentId::new("agent:infra-test").unwrap(),
            action: "db.query".into(),
            resource: "db:gateway_test".into(),
            scopes,
            ttl: Duration::from_secs(120),
        })
        .await
        .unwrap()
}

/// The infrastructure catalog's db.query job for `sql` under `grant`, equipped as the pipeline
/// equips it ([`Grant::equip`]); no network. At most two rows printed.
fn db_query_job(grant: &Grant, sql: &str) -> JobSpec {
    let catalog = agent_gateway::reference::infrastructure_catalog();
    let req = ActionRequest::new("db.query", "db:gateway_test")
        .with_params(serde_json::json!({ "sql": sql }));
    let who = AgentIdentity::new(
        grant.agent.clone(),
        "infra-tests",
        AuthMethod::StaticKey { key_id: "k".into() },
    );
    let def = catalog.validate(&req).unwrap();
    let mut spec = (def.job)(&req, &who).unwrap();
    spec.env.insert("MAX_ROWS".into(), "2".into());
    grant.equip(&mut spec);
    spec
}

async fn run(runner: &LocalRunner, spec: JobSpec) -> JobOutcome {
    runner.run(spec, CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn db_query_reads_its_table_and_nothing_else_through_the_socket() {
    let Some(runner) = sandbox() else { return };
    let Some(mut db) = Db::new("db_query_reads").await else {
        return;
    };
    let broker = db.broker().await;
    let g = grant(&broker, vec![db.read_orders()]).await;
    assert_eq!(
        g.job_mounts,
        vec![ReadOnlyMount {
            host_path: std::path::Path::new(&db.socket_dir)
                .join(format!(".s.PGSQL.{}", g.job_vars["PGPORT"])),
            job_path: format!(
                "{}/.s.PGSQL.{}",
                agent_gateway::postgres_broker::JOB_SOCKET_MOUNT,
                g.job_vars["PGPORT"]
            )
            .into(),
        }]
    );
    let s = &db.schema;

    // Its table, bounded to MAX_ROWS rows (a header line, then the rows).
    let out = run(
        &runner,
        db_query_job(
            &g,
            &format!(
                "SELECT id, amount, current_user = '{}' AS me FROM {s}.orders ORDER BY id",
                g.id
            ),
        ),
    )
    .await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        out.stdout, "id\tamount\tme\n1\t10\tt\n2\t20\tt\n",
        "{out:?}"
    );
    assert!(
        out.stderr.contains("3 rows, only the first 2 shown"),
        "{out:?}"
    );

    // Another table of the same schema: permission denied.
    let out = run(
        &runner,
        db_query_job(&g, &format!("SELECT * FROM {s}.secrets")),
    )
    .await;
    assert!(!out.succeeded(), "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    assert!(!out.stdout.contains("do not read"), "{out:?}");

    // Writes fail however they are dressed up, and nothing changes.
    for sql in [
        format!("INSERT INTO {s}.orders VALUES (9, 90)"),
        format!(
            "SET default_transaction_read_only = off; COMMIT; INSERT INTO {s}.orders VALUES (9, 90)"
        ),
        format!("BEGIN READ WRITE; DELETE FROM {s}.orders; COMMIT"),
    ] {
        let out = run(&runner, db_query_job(&g, &sql)).await;
        assert!(!out.succeeded(), "{sql}: {out:?}");
        assert!(
            out.stderr.contains("permission denied")
                || out.stderr.contains("read-only transaction"),
            "{sql}: {out:?}"
        );
    }
    assert_eq!(db.count_orders().await, 3);

    // The job sees the one socket file and nothing else of the server's directory, and has
    // no network: the loopback address the gateway's admin uses is unreachable.
    let mut probe = db_query_job(&g, "SELECT 1");
    probe.command[2] = format!(
        "ls -A {dir}; ls {host} 2>&1 | head -n1; PGHOST=127.0.0.1 psql=$(ls /usr/lib/postgresql/*/bin/psql | head -n1); PGHOST=127.0.0.1 $psql -X -w -Atc 'select 1' 2>&1 | head -n1",
        dir = agent_gateway::postgres_broker::JOB_SOCKET_MOUNT,
        host = db.socket_dir,
    );
    let out = run(&runner, probe).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(".s.PGSQL.{}", g.job_vars["PGPORT"]),
        "{out:?}"
    );
    assert!(lines[1].contains("No such file"), "{out:?}");
    assert!(
        lines[2].contains("Connection refused") || lines[2].contains("could not connect"),
        "{out:?}"
    );

    // After revoke the role cannot log in any more.
    broker.revoke(&g).await.unwrap();
    let out = run(&runner, db_query_job(&g, "SELECT 1")).await;
    assert!(!out.succeeded(), "{out:?}");
    assert!(
        out.stderr.contains("password authentication failed")
            || out.stderr.contains("does not exist"),
        "{out:?}"
    );
    db.drop().await;
}

// ---- Through the gateway: real policy, real broker, real sandbox, real audit log. ----

use agent_gateway::core::{
    ActionRequest, AgentIdentity, AuthMethod, BrokerError, Credential, Gateway, GatewayError,
    Secret, StaticKeys, async_trait,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use agent_gateway::opa::EmbeddedRego;
use std::sync::{Arc, Mutex};

/// The PostgreSQL broker, keeping every password it hands out so the test can search for it.
struct Witnessed {
    inner: PostgresBroker,
    passwords: Mutex<Vec<Secret>>,
    revoked: Mutex<Vec<String>>,
}

#[async_trait]
impl AccessBroker for Witnessed {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let grant = self.inner.grant(request).await?;
        self.passwords
            .lock()
            .unwrap()
            .extend(grant.job_env.values().cloned());
        Ok(grant)
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        self.revoked.lock().unwrap().push(grant.id.clone());
        self.inner.revoke(grant).await
    }
}

/// Every log line of the test binary (the subscriber is process-wide: set once).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let writer = move || LogWriter(Arc::clone(&sink));
        tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_writer(writer)
            .with_ansi(false)
            .init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A gateway for db.query on the embedded parts: the reference policy told which table of
/// the test database it may read, the PostgreSQL broker (witnessed), and a db-reader's key.
async fn db_gateway(
    db: &Db,
    parts: &EmbeddedParts,
) -> (
    Gateway,
    Secret,
    Arc<Witnessed>,
    Arc<dyn agent_gateway::core::Identity>,
) {
    let policy = EmbeddedRego::builder()
        .policy_dir(agent_gateway::embedded::reference_policy_dir())
        .data(serde_json::json!({"agent_gateway": {"databases": {
            "gateway_test": {"readable_tables": [format!("{}.orders", db.schema)]}
        }}}))
        .build()
        .unwrap();
    let broker = Arc::new(Witnessed {
        inner: db.broker().await,
        passwords: Mutex::new(Vec::new()),
        revoked: Mutex::new(Vec::new()),
    });
    let (keys, key) = common::issue(
        StaticKeys::new(),
        "reader-1",
        "agent:db-reader",
        serde_json::json!({"role": "db-reader"}),
    );
    let identity: Arc<dyn agent_gateway::core::Identity> = Arc::new(keys);
    let gateway = parts
        .builder(identity.clone())
        .policy(Arc::new(policy))
        .named_broker(agent_gateway::reference::POSTGRES_BROKER, broker.clone())
        // db.query only: its Kubernetes actions would need the Kubernetes broker registered.
        .catalog(
            agent_gateway::core::ActionCatalog::new().register(
                agent_gateway::reference::infrastructure_catalog()
                    .get("db.query")
                    .unwrap()
                    .clone(),
            ),
        )
        .build()
        .unwrap();
    (gateway, key, broker, identity)
}

#[tokio::test]
async fn db_query_over_http_allowed_denied_and_beyond_its_grant() {
    let Some(db) = Db::new("db_query_http").await else {
        return;
    };
    if sandbox().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parts = EmbeddedParts::open(&EmbeddedOptions::new(dir.path().join("audit.db")))
        .await
        .unwrap();
    // The HTTP front authenticates with the same keys as the gateway.
    let (gateway, key, broker, identity) = db_gateway(&db, &parts).await;
    let front = gateway_server::Frontend::new(gateway_server::ServerConfig::default());
    let (approvers, _) = gateway_server::Approvers::new()
        .with_generated_token("human:alice")
        .unwrap();
    let state = front.into_state(gateway, identity, approvers);
    let (base, stop) = common::serve(state).await;
    let http = reqwest::Client::new();
    let post = |sql: String| {
        let req = http
            .post(format!("{base}/v1/actions"))
            .bearer_auth(key.expose_str().unwrap())
            .json(&serde_json::json!({
                "action": "db.query", "resource": "db:gateway_test", "params": {"sql": sql}
            }));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let s = db.schema.clone();

    let (status, body) = post(format!("SELECT id FROM {s}.orders ORDER BY id")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["stdout"], "id\n1\n2\n3\n", "{body}");
    assert_eq!(body["grant"]["revoked"], true, "{body}");

    let (status, body) = post(format!("UPDATE {s}.orders SET amount = 0")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["kind"], "denied", "{body}");

    let (status, body) = post(format!("SELECT v FROM {s}.secrets")).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        body["job"]["status"],
        serde_json::json!({"status": "exited", "code": 0})
    );
    assert!(
        body["job"]["stderr"]
            .as_str()
            .unwrap()
            .contains("permission denied"),
        "{body}"
    );
    assert_eq!(body["grant"]["revoked"], true, "{body}");

    let passwords = broker.passwords.lock().unwrap().clone();
    assert_eq!(passwords.len(), 2, "the denied request got no grant");
    stop.cancel();
    db.drop().await;
}

#[tokio::test]
async fn db_query_through_the_gateway_leaves_no_password_and_no_role() {
    let logs = captured_logs();
    let Some(db) = Db::new("db_query_gateway").await else {
        return;
    };
    if sandbox().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let audit_path = dir.path().join("audit.db");
    let parts = EmbeddedParts::open(&EmbeddedOptions::new(&audit_path))
        .await
        .unwrap();
    let (gateway, key, broker, _) = db_gateway(&db, &parts).await;
    let ask = |sql: String| {
        ActionRequest::new("db.query", "db:gateway_test")
            .with_params(serde_json::json!({ "sql": sql }))
            .with_intent("infrastructure test")
    };
    let s = db.schema.clone();

    // Allowed: the rows of the one table the policy names, read with a role made for it.
    let outcome = gateway
        .execute(
            Credential::bearer(key.clone()),
            ask(format!("SELECT id, amount FROM {s}.orders ORDER BY id")),
        )
        .await
        .unwrap();
    assert!(outcome.job.succeeded(), "{outcome:?}");
    assert_eq!(outcome.job.stdout, "id\tamount\n1\t10\n2\t20\n3\t30\n");
    assert_eq!(
        outcome.grant.scopes,
        vec![format!("pg:gateway_test:{s}.orders:select")]
    );
    assert!(outcome.grant.revoked);

    // Denied by policy: a write never gets a grant.
    let before = broker.passwords.lock().unwrap().len();
    let err = gateway
        .execute(
            Credential::bearer(key.clone()),
            ask(format!("DELETE FROM {s}.orders")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Denied { .. }), "{err}");
    assert_eq!(broker.passwords.lock().unwrap().len(), before);

    // Allowed by policy (a read), beyond the grant (another table): the job fails on the
    // database's refusal, and the grant is revoked all the same.
    let outcome = gateway
        .execute(
            Credential::bearer(key.clone()),
            ask(format!("SELECT v FROM {s}.secrets")),
        )
        .await
        .unwrap();
    assert!(!outcome.job.succeeded(), "{outcome:?}");
    assert!(
        outcome.job.stderr.contains("permission denied"),
        "{outcome:?}"
    );
    assert!(!outcome.job.stdout.contains("do not read"));
    assert!(outcome.grant.revoked);

    // Every role the broker made is gone, and no password is anywhere: not in the audit
    // database (bytes of the file, WAL included), the outcomes, or the logs.
    let mut db = db;
    let revoked = broker.revoked.lock().unwrap().clone();
    for role in &revoked {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&mut db.admin)
                .await
                .unwrap();
        assert!(!exists, "role {role} survived its grant");
    }
    assert_eq!(revoked.len(), 2);
    let report = parts.verify_audit().await.unwrap();
    assert!(
        report.fault.is_none() && report.records_checked >= 10,
        "{report:?}"
    );
    drop(gateway);
    drop(parts);
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    let logs = logs.lock().unwrap().clone();
    assert!(!logs.is_empty());
    let passwords = broker.passwords.lock().unwrap().clone();
    assert_eq!(passwords.len(), 2);
    for p in &passwords {
        let p = p.expose();
        assert!(p.len() >= 32);
        let found = |hay: &[u8]| hay.windows(p.len()).any(|w| w == p);
        assert!(!found(&stored), "a password is in the audit database");
        assert!(!found(&logs), "a password is in the logs");
        assert!(
            !found(format!("{outcome:?}").as_bytes()),
            "a password is in an outcome"
        );
    }
    db.drop().await;
}

// ---- Kubernetes: kubectl in the local sandbox, reaching only the API server. ----

use agent_gateway::kubernetes::k8s_openapi::api::apps::v1::Deployment;
use agent_gateway::kubernetes::k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use agent_gateway::kubernetes::kube::api::{Api, DeleteParams, ListParams, PostParams};
use agent_gateway::kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use agent_gateway::kubernetes::kube::{Client, Config};
use agent_gateway::kubernetes::{KubernetesBroker, labels as k8s_labels};

/// The test cluster's admin client, its loopback API server URL and CA.
async fn cluster(test: &str) -> Option<(Client, String, String)> {
    let path = required("GATEWAY_TEST_KUBECONFIG", test)?;
    let server = required("GATEWAY_TEST_K8S_LOOPBACK_SERVER", test)?;
    let kc = Kubeconfig::read_from(&path).unwrap();
    let ca_path = kc.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority.clone())
        .unwrap();
    let ca = std::fs::read_to_string(ca_path).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Some((Client::try_from(config).unwrap(), server, ca))
}

#[tokio::test]
async fn k8s_actions_through_the_gateway_change_the_deployment_and_leave_nothing() {
    let Some((client, server, ca)) = cluster("k8s_actions_gateway").await else {
        return;
    };
    if sandbox().is_none() {
        return;
    }
    let suffix = hex::encode(rand::random::<[u8; 4]>());
    let ns = format!("agw-infra-{suffix}");
    let instance = format!("infra-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in ["web", "other"] {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    // Never scheduled: the test changes the Deployment, not the node's load.
                    "spec": {"nodeSelector": {"agw-test/none": "1"},
                             "containers": [{"name": "app", "image": "agw-busybox:1"}]}
                }
            }
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }
    let replicas = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            deployments
                .get(name)
                .await
                .unwrap()
                .spec
                .and_then(|s| s.replicas)
                .unwrap()
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let parts = EmbeddedParts::open(&EmbeddedOptions::new(dir.path().join("audit.db")))
        .await
        .unwrap();
    let api_server = server.strip_prefix("https://").unwrap().to_owned();
    let policy = EmbeddedRego::builder()
        .policy_dir(agent_gateway::embedded::reference_policy_dir())
        .data(serde_json::json!({"agent_gateway": {"kubernetes": {"api_server": api_server}}}))
        .build()
        .unwrap();
    let broker = KubernetesBroker::builder(client.clone())
        .instance(&instance)
        .namespace("default")
        .job_server(&server)
        .job_ca_pem(&ca)
        .build()
        .unwrap();
    let (keys, key) = common::issue(
        StaticKeys::new(),
        "deployer-1",
        "agent:deployer",
        serde_json::json!({"namespaces": [ns]}),
    );
    let infra = agent_gateway::reference::infrastructure_catalog();
    let mut catalog = agent_gateway::core::ActionCatalog::new();
    for action in ["k8s.scale", "k8s.rollout_restart"] {
        catalog = catalog.register(infra.get(action).unwrap().clone());
    }
    let gateway: Gateway = parts
        .builder(Arc::new(keys))
        .policy(Arc::new(policy))
        .named_broker(
            agent_gateway::reference::KUBERNETES_BROKER,
            Arc::new(broker),
        )
        .catalog(catalog)
        .build()
        .unwrap();
    let resource = format!("k8s:{ns}/deployments/web");

    // Allowed: kubectl scale with the grant's token, through the sandbox's one egress.
    let outcome = gateway
        .execute(
            Credential::bearer(key.clone()),
            ActionRequest::new("k8s.scale", &resource)
                .with_params(serde_json::json!({"replicas": 3})),
        )
        .await
        .unwrap();
    assert!(outcome.job.succeeded(), "{outcome:?}");
    assert_eq!(
        outcome.job.stdout,
        format!("scaled deployment {ns}/web: replicas 1 -> 3\n")
    );
    assert!(outcome.grant.revoked);
    assert_eq!(replicas("web").await, 3);
    assert_eq!(replicas("other").await, 1);

    // The second real action, on the same Deployment.
    let outcome = gateway
        .execute(
            Credential::bearer(key.clone()),
            ActionRequest::new("k8s.rollout_restart", &resource),
        )
        .await
        .unwrap();
    assert!(outcome.job.succeeded(), "{outcome:?}");
    let annotations = deployments
        .get("web")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .unwrap_or_default();
    assert!(
        annotations.contains_key("kubectl.kubernetes.io/restartedAt"),
        "{annotations:?}"
    );

    // Denied by policy: nothing is granted, nothing changes.
    let err = gateway
        .execute(
            Credential::bearer(key.clone()),
            ActionRequest::new("k8s.scale", &resource)
                .with_params(serde_json::json!({"replicas": 50})),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GatewayError::Denied { .. }), "{err}");
    assert_eq!(replicas("web").await, 3);

    // Nothing of the grants remains (ServiceAccounts, Roles, RoleBindings of the instance).
    let lp = ListParams::default().labels(&k8s_labels::instance_selector(&instance));
    let left = Api::<ServiceAccount>::all(client.clone())
        .list(&lp)
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
    assert!(parts.verify_audit().await.unwrap().fault.is_none());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
}
