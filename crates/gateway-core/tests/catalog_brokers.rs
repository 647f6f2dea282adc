//! Catalog actions' own brokers and scope bounds, through the pipeline on the doubles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::catalog_file::CatalogFile;
use gateway_core::gateway::BuildError;
use gateway_core::testing::MemoryBroker;
use gateway_core::testing::MemoryPolicy;
use gateway_core::{ActionRequest, Decision, ErrorKind, Gateway, Stage};
use std::sync::Arc;

const FILE: &str = r#"
[[action]]
name = "db.query"
description = "query"
resource = "db:{database}"
captures = { database = "identifier" }
scopes = ["pg:{database}:*"]
broker = "postgres"
params = '''{"properties": {"sql": {"type": "string"}}, "type": "object"}'''
[action.job]
program = "/bin/true"
env = { DATABASE = { resource = "database" } }
"#;

struct Setup {
    gateway: Gateway,
    default: Arc<MemoryBroker>,
    postgres: Arc<MemoryBroker>,
    runner: Arc<gateway_core::testing::MemoryRunner>,
    audit: Arc<gateway_core::testing::MemoryAuditSink>,
}

fn setup(scopes: Vec<&'static str>) -> Setup {
    let parts = Parts::default();
    let default = Arc::new(MemoryBroker::new());
    let postgres = Arc::new(MemoryBroker::new());
    let runner = Arc::new(parts.runner);
    let audit = Arc::new(parts.audit);
    let policy = MemoryPolicy::from_fn(move |_| {
        let mut d = Decision::allow();
        d.obligations.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        d
    });
    let gateway = Gateway::builder()
        .identity(Arc::new(parts.identity))
        .policy(Arc::new(policy))
        .broker(default.clone())
        .named_broker("postgres", postgres.clone())
        .runner(runner.clone())
        .audit(audit.clone())
        .catalog(CatalogFile::parse(FILE).unwrap().into_catalog())
        .config(parts.config)
        .build()
        .unwrap();
    Setup {
        gateway,
        default,
        postgres,
        runner,
        audit,
    }
}

fn query() -> ActionRequest {
    ActionRequest::new("db.query", "db:orders").with_ttl_seconds(60)
}

#[tokio::test]
async fn the_actions_broker_grants_and_revokes_once() {
    let s = setup(vec!["pg:orders:select"]);
    let out = s.gateway.execute(agent_a(), query()).await.unwrap();
    assert!(out.grant.revoked);
    assert_eq!(out.grant.scopes, ["pg:orders:select"]);
    assert!(
        s.default.issued().is_empty(),
        "the default broker was asked"
    );
    let issued = s.postgres.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(s.postgres.revocations()[&issued[0].id], 1);
    assert!(s.default.revocations().is_empty());
    assert_eq!(s.runner.runs()[0].env["DATABASE"], "orders");
}

#[tokio::test]
async fn a_scope_outside_the_actions_fails_at_the_grant_stage_before_any_broker_call() {
    let s = setup(vec!["pg:orders:select", "pg:billing:select"]);
    let err = s.gateway.execute(agent_a(), query()).await.unwrap_err();
    assert_eq!(err.stage(), Some(Stage::Grant), "{err}");
    assert_eq!(err.kind(), ErrorKind::Denied, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"pg:billing:select\"") && message.contains("db.query"),
        "{message}"
    );
    assert!(s.postgres.issued().is_empty() && s.default.issued().is_empty());
    assert!(s.runner.runs().is_empty());
    // One commit: requested, decided and the terminal record at the grant stage.
    use gateway_core::AuditEventKind::*;
    let events = s.audit.events_for(err.correlation_id());
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [Requested, Decided, Completed]);
    let last = events.last().unwrap();
    assert_eq!(last.details["stage"], "grant", "{:?}", last.details);
}

#[tokio::test]
async fn code_defined_actions_still_use_the_default_broker_and_any_scope() {
    let h = harness(Parts::default());
    let out = h.gateway.execute(agent_a(), echo("hi")).await.unwrap();
    assert!(out.job.succeeded());
    assert_eq!(h.broker.issued().len(), 1);
}

#[test]
fn build_refuses_an_action_naming_an_unregistered_broker() {
    let parts = Parts::default();
    let err = Gateway::builder()
        .identity(Arc::new(parts.identity))
        .policy(Arc::new(parts.policy))
        .broker(Arc::new(MemoryBroker::new()))
        .named_broker("kubernetes", Arc::new(MemoryBroker::new()))
        .runner(Arc::new(parts.runner))
        .audit(Arc::new(parts.audit))
        .catalog(CatalogFile::parse(FILE).unwrap().into_catalog())
        .build()
        .err()
        .unwrap();
    assert_eq!(
        err,
        BuildError::UnknownBroker {
            action: "db.query".into(),
            broker: "postgres".into()
        }
    );
    assert!(err.to_string().contains("\"postgres\""), "{err}");
}
