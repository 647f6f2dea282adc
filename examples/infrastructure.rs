//! The real infrastructure actions (`catalog/infrastructure.toml`) against the PostgreSQL server
//! and the Kubernetes cluster the environment names, each with a just-in-time credential that
//! the real system accepts and that dies with the job. Prints what changed.
//!
//! ```text
//! DATABASE_URL=postgres://admin@host:port/db    the PostgresBroker's admin (CREATEROLE, and the
//!                                                demo table's privileges WITH GRANT OPTION)
//! GATEWAY_PG_JOB_SOCKET_DIR=/run/postgresql      the server's socket directory: the sandbox has
//!                                                no network, jobs reach the server through it
//! KUBECONFIG=~/.kube/config                      the KubernetesBroker's admin
//! GATEWAY_K8S_JOB_SERVER=https://127.0.0.1:6443  the API server as sandboxed jobs reach it
//!                                                (a loopback address: the only egress the local
//!                                                sandbox has); default: the kubeconfig's server
//! cargo run --example infrastructure
//! ```
//!
//! Either half may be left out (its actions are skipped, and the example says so). The
//! example creates what it acts on (schema `agw_demo` with a table `orders`; namespace
//! `agw-demo` with a Deployment `web`) and removes it again at the end. README.md shows how to
//! run it against the services `scripts/test` starts. Needs root (the namespaced sandbox).
#![allow(clippy::print_stdout)]

use agent_gateway::core::{
    AccessBroker, ActionCatalog, AgentId, AgentIdentity, AuthMethod, Credential, Secret, StaticKeys,
};
use agent_gateway::embedded::{EmbeddedOptions, EmbeddedParts};
use agent_gateway::kubernetes::KubernetesBroker;
use agent_gateway::kubernetes::k8s_openapi::api::apps::v1::Deployment;
use agent_gateway::kubernetes::k8s_openapi::api::core::v1::Namespace;
use agent_gateway::kubernetes::kube::api::{Api, DeleteParams, PostParams};
use agent_gateway::kubernetes::kube::config::{KubeConfigOptions, Kubeconfig};
use agent_gateway::kubernetes::kube::{Client, Config};
use agent_gateway::opa::EmbeddedRego;
use agent_gateway::postgres_broker::PostgresBroker;
use agent_gateway::reference::{KUBERNETES_BROKER, POSTGRES_BROKER, infrastructure_catalog};
use agent_gateway::{ActionOutcome, ActionRequest, Gateway, GatewayError};
use serde_json::json;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::sync::Arc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DEMO_SCHEMA: &str = "agw_demo";
const DEMO_NAMESPACE: &str = "agw-demo";

/// The PostgreSQL half: the broker, the database's name and an admin connection.
struct Postgres {
    broker: PostgresBroker,
    database: String,
    admin: sqlx::PgConnection,
}

/// The Kubernetes half: the broker, the admin client and the API server as jobs reach it.
struct Kubernetes {
    broker: KubernetesBroker,
    client: Client,
    api_server: String,
}

async fn postgres() -> Result<Option<Postgres>, BoxError> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return Ok(None);
    };
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let mut admin = options.connect().await?;
    sqlx::raw_sql(&format!(
        "CREATE SCHEMA IF NOT EXISTS {DEMO_SCHEMA};
         CREATE TABLE IF NOT EXISTS {DEMO_SCHEMA}.orders (id int PRIMARY KEY, amount int);
         INSERT INTO {DEMO_SCHEMA}.orders VALUES (1, 120), (2, 75), (3, 310) ON CONFLICT DO NOTHING;"
    ))
    .execute(&mut admin)
    .await?;
    let mut builder = PostgresBroker::builder(url).instance("agw-infrastructure-example");
    if let Some(dir) = std::env::var_os("GATEWAY_PG_JOB_SOCKET_DIR") {
        builder = builder.job_socket_dir(dir);
    }
    let broker = builder.build().await?;
    // Left over by a run that crashed: its expired roles.
    let reaped = broker.reap().await?;
    if !reaped.deleted.is_empty() {
        println!(
            "reaped {} expired role(s) of an earlier run",
            reaped.deleted.len()
        );
    }
    Ok(Some(Postgres {
        broker,
        database,
        admin,
    }))
}

async fn kubernetes() -> Result<Option<Kubernetes>, BoxError> {
    let Ok(path) = std::env::var("KUBECONFIG") else {
        return Ok(None);
    };
    let kubeconfig = Kubeconfig::read_from(&path)?;
    let cluster = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .ok_or("the kubeconfig names no cluster")?;
    let ca = match cluster.certificate_authority {
        Some(file) => std::fs::read_to_string(file)?,
        None => return Err("the example needs the kubeconfig's CA as a file".into()),
    };
    let server = std::env::var("GATEWAY_K8S_JOB_SERVER")
        .ok()
        .or(cluster.server)
        .ok_or("no API server")?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(DEMO_NAMESPACE).await?.is_none() {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": DEMO_NAMESPACE}}))?,
            )
            .await?;
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    if deployments.get_opt("web").await?.is_none() {
        let web = json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "busybox",
                                             "command": ["sleep", "3600"]}]}
                }
            }
        });
        deployments
            .create(&PostParams::default(), &serde_json::from_value(web)?)
            .await?;
    }
    let broker = KubernetesBroker::builder(client.clone())
        .instance("agw-infrastructure-example")
        .namespace("default")
        .job_server(&server)
        .job_ca_pem(&ca)
        .build()?;
    let api_server = server
        .strip_prefix("https://")
        .map(|s| s.trim_end_matches('/').to_owned())
        .ok_or("the API server URL must be https://")?;
    Ok(Some(Kubernetes {
        broker,
        client,
        api_server,
    }))
}

async fn replicas(client: &Client) -> Result<i32, BoxError> {
    let d = Api::<Deployment>::namespaced(client.clone(), DEMO_NAMESPACE)
        .get("web")
        .await?;
    Ok(d.spec.and_then(|s| s.replicas).unwrap_or(1))
}

/// One agent with the attributes the reference policy reads, and its API key.
fn agent(
    keys: StaticKeys,
    id: &str,
    attributes: serde_json::Value,
) -> Result<(StaticKeys, Secret), BoxError> {
    let (key, hash) = StaticKeys::generate_key(id)?;
    let mut who = AgentIdentity::new(
        AgentId::new(format!("agent:{id}"))?,
        "infrastructure-example",
        AuthMethod::StaticKey { key_id: id.into() },
    );
    if let serde_json::Value::Object(map) = attributes {
        who.attributes.extend(map);
    }
    Ok((keys.with_key_hash(id, &hash, who)?, key))
}

fn report(what: &str, result: &Result<ActionOutcome, GatewayError>) {
    match result {
        Ok(out) => {
            println!(
                "{what}: exit {:?}, grant {} ({}), revoked: {}",
                out.job.status,
                out.grant.id,
                out.grant.scopes.join(", "),
                out.grant.revoked
            );
            for line in out.job.stdout.lines().chain(out.job.stderr.lines()) {
                println!("    | {line}");
            }
        }
        Err(e) => println!("{what}: refused: {e}"),
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let pg = postgres().await?;
    let k8s = kubernetes().await?;
    if pg.is_none() && k8s.is_none() {
        return Err("set DATABASE_URL and/or KUBECONFIG (see the example's header)".into());
    }
    let dir = tempfile::tempdir()?;
    let parts = EmbeddedParts::open(&EmbeddedOptions::new(dir.path().join("audit.db"))).await?;

    // The reference policy, told what this deployment allows: which tables db.query may read,
    // and the API server Kubernetes jobs may reach (their only network).
    let mut data = json!({});
    if let Some(pg) = &pg {
        data["databases"] =
            json!({ pg.database.clone(): {"readable_tables": [format!("{DEMO_SCHEMA}.orders")]} });
    }
    if let Some(k8s) = &k8s {
        data["kubernetes"] = json!({"api_server": k8s.api_server});
    }
    let policy = EmbeddedRego::builder()
        .policy_dir(agent_gateway::embedded::reference_policy_dir())
        .data(json!({ "agent_gateway": data }))
        .build()?;
    let (keys, analyst) = agent(StaticKeys::new(), "analyst", json!({"role": "db-reader"}))?;
    let (keys, deployer) = agent(keys, "deployer", json!({"namespaces": [DEMO_NAMESPACE]}))?;

    let infra = infrastructure_catalog();
    let mut catalog = ActionCatalog::new();
    let mut builder = parts.builder(Arc::new(keys)).policy(Arc::new(policy));
    if let Some(pg) = &pg {
        let broker: Arc<dyn AccessBroker> = Arc::new(pg.broker.clone());
        builder = builder.named_broker(POSTGRES_BROKER, broker);
        catalog = catalog.register(infra.get("db.query").ok_or("no db.query")?.clone());
    }
    if let Some(k8s) = &k8s {
        let broker: Arc<dyn AccessBroker> = Arc::new(k8s.broker.clone());
        builder = builder.named_broker(KUBERNETES_BROKER, broker);
        for action in ["k8s.scale", "k8s.rollout_restart"] {
            catalog = catalog.register(infra.get(action).ok_or("no k8s action")?.clone());
        }
    }
    let gateway: Gateway = builder.catalog(catalog).build()?;
    println!(
        "runner: {} (isolation {})",
        gateway.runner_info().backend,
        gateway.runner_info().isolation
    );

    if let Some(pg) = &pg {
        let resource = format!("db:{}", pg.database);
        let query = |sql: &str| {
            ActionRequest::new("db.query", &resource)
                .with_params(json!({ "sql": sql }))
                .with_intent("infrastructure example")
        };
        let sql = format!("SELECT id, amount FROM {DEMO_SCHEMA}.orders ORDER BY id");
        let r = gateway
            .execute(Credential::bearer(analyst.clone()), query(&sql))
            .await;
        report("db.query (allowed)", &r);
        let write = format!("DELETE FROM {DEMO_SCHEMA}.orders");
        let r = gateway
            .execute(Credential::bearer(analyst.clone()), query(&write))
            .await;
        report("db.query (a write)", &r);
    } else {
        println!("db.query skipped: DATABASE_URL is not set");
    }

    if let Some(k8s) = &k8s {
        let resource = format!("k8s:{DEMO_NAMESPACE}/deployments/web");
        let before = replicas(&k8s.client).await?;
        let target = if before == 2 { 3 } else { 2 };
        let r = gateway
            .execute(
                Credential::bearer(deployer.clone()),
                ActionRequest::new("k8s.scale", &resource)
                    .with_params(json!({ "replicas": target }))
                    .with_intent("infrastructure example"),
            )
            .await;
        report("k8s.scale (allowed)", &r);
        println!(
            "    deployment {DEMO_NAMESPACE}/web: replicas {before} -> {} (read back)",
            replicas(&k8s.client).await?
        );
        let r = gateway
            .execute(
                Credential::bearer(deployer.clone()),
                ActionRequest::new("k8s.rollout_restart", &resource),
            )
            .await;
        report("k8s.rollout_restart (allowed)", &r);
        let r = gateway
            .execute(
                Credential::bearer(deployer.clone()),
                ActionRequest::new("k8s.scale", &resource).with_params(json!({ "replicas": 50 })),
            )
            .await;
        report("k8s.scale (50 replicas)", &r);
    } else {
        println!("k8s actions skipped: KUBECONFIG is not set");
    }

    let verified = parts.verify_audit().await?;
    println!(
        "audit: {} records, chain {}",
        verified.records_checked,
        if verified.fault.is_none() {
            "verified"
        } else {
            "FAULTY"
        }
    );

    // Leave the systems as found.
    if let Some(mut pg) = pg {
        sqlx::raw_sql(&format!("DROP SCHEMA {DEMO_SCHEMA} CASCADE"))
            .execute(&mut pg.admin)
            .await?;
        pg.admin.close().await?;
    }
    if let Some(k8s) = k8s {
        Api::<Namespace>::all(k8s.client)
            .delete(DEMO_NAMESPACE, &DeleteParams::default())
            .await?;
    }
    Ok(())
}
