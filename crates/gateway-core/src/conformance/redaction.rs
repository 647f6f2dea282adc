//! Redaction through the whole gateway: secrets an agent puts in params, intent and resource,
//! and that a job prints, reach no [`AuditSink`], whichever sink it is.
//!
//! [`secrets_reach_no_sink`] drives a [`Gateway`] built on the in-memory doubles and the sink
//! under test through the paths that record what the agent sent (an action that runs, one whose
//! job cannot be built, one the policy denies, one whose params fail validation), then reads the
//! whole stream back and fails if any secret is in it. Backends with their own storage should
//! also look at what they stored (rows, files) for the secrets in [`SECRETS`].
//!
//! Secrets are found by key name (`password`, `token`, …) and by pattern (keys, tokens, JWTs,
//! PEM blocks, card numbers). Free text a validator or job builder writes is covered by the
//! patterns only: a message that quotes a value stored under a secret-named key would carry it.

use crate::action::{ActionCatalog, ActionDef, ActionRequest};
use crate::audit::AuditSink;
use crate::gateway::{AgentLimits, Gateway, GatewayConfig};
use crate::identity::Credential;
use crate::policy::Decision;
use crate::runner::JobSpec;
use crate::testing::script::{MemoryRenderer, ScriptRenderer, Step};
use crate::testing::{MemoryBroker, MemoryIdentity, MemoryPolicy, MemoryRunner};
use serde_json::json;
use std::sync::Arc;

/// Under a secret-named key of the params.
pub const PASSWORD: &str = "hunter2-correct-horse-battery";
/// An AWS access key id, in params, intent, the job's output and a job builder's error.
pub const AWS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
/// A bearer token, in the intent.
pub const BEARER_TOKEN: &str = "sk-test-9f8e7d6c5b4a39281706";
/// A JWT, in the resource.
pub const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJsZWFrIn0.c2lnbmF0dXJlLW9mLXRoZS1sZWFr";
/// Every secret the case plants.
pub const SECRETS: [&str; 4] = [PASSWORD, AWS_KEY, BEARER_TOKEN, JWT];

fn catalog() -> ActionCatalog {
    ActionCatalog::new()
        .register(
            // Prints its params and intent: the job's output holds every secret.
            ActionDef::new("leak.echo", "prints what it was given", |req, who| {
                let printed = format!("{} {} {}", req.params, req.intent, req.resource);
                let (_, command) = MemoryRenderer.render(&[Step::Stdout(printed)]);
                Ok(JobSpec::new(req.id, who.id.clone(), command))
            })
            .with_validator(|params| match params.get("message") {
                Some(serde_json::Value::String(_)) => Ok(()),
                _ => Err("message must be a string".to_owned().into()),
            }),
        )
        .register(ActionDef::new(
            "leak.broken",
            "a job that cannot be built",
            |req, _| Err(format!("no template for {}", req.params["message"]).into()),
        ))
}

fn request(action: &str) -> ActionRequest {
    ActionRequest::new(action, format!("db:{JWT}"))
        .with_params(json!({
            "message": format!("use key {AWS_KEY}"),
            "password": PASSWORD,
        }))
        .with_intent(format!(
            "rotate with Authorization: Bearer {BEARER_TOKEN} and {AWS_KEY}"
        ))
        .with_ttl_seconds(60)
}

/// Runs the case against `sink` (whose stream may hold other records) and panics if a secret
/// reached it.
pub async fn secrets_reach_no_sink(sink: Arc<dyn AuditSink>) {
    let policy = MemoryPolicy::from_fn(|input| {
        if input.intent.contains("deny me") {
            Decision::deny(format!("refused: {}", input.intent))
        } else {
            Decision::allow()
        }
    });
    let gateway = Gateway::builder()
        .identity(Arc::new(
            MemoryIdentity::new().with_agent("tok-leak", "agent:leak"),
        ))
        .policy(Arc::new(policy))
        .broker(Arc::new(MemoryBroker::new()))
        .runner(Arc::new(MemoryRunner::new()))
        .audit(Arc::clone(&sink))
        .catalog(catalog())
        .config(GatewayConfig {
            agent_limits: AgentLimits::unlimited(),
            ..GatewayConfig::default()
        })
        .build()
        .expect("complete gateway");
    let credential = || Credential::bearer("tok-leak");

    // Runs: the job's output holds the secrets (so they did flow through the action).
    let outcome = gateway
        .execute(credential(), request("leak.echo"))
        .await
        .expect("the echo action runs");
    for secret in SECRETS {
        assert!(
            outcome.job.stdout.contains(secret),
            "the job did not print {secret}: the case is not testing what it claims"
        );
    }
    // The job cannot be built: the builder's error names the params.
    let broken = gateway
        .execute(credential(), request("leak.broken"))
        .await
        .expect_err("the job cannot be built");
    assert!(broken.to_string().contains(AWS_KEY));
    // The policy denies, quoting the intent in its reason.
    let denied = request("leak.echo");
    let denied = ActionRequest {
        intent: format!("{} deny me", denied.intent),
        ..denied
    };
    gateway
        .execute(credential(), denied)
        .await
        .expect_err("the policy denies");
    // The params fail validation: they are recorded by digest only.
    let invalid = request("leak.echo").with_params(json!({
        "message": 1,
        "password": PASSWORD,
        "note": format!("key {AWS_KEY}"),
    }));
    gateway
        .execute(credential(), invalid)
        .await
        .expect_err("the params are invalid");

    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = sink.read(after, 512).await.expect("read the stream back");
        let Some(last) = page.last() else { break };
        after = Some(last.sequence);
        records.extend(page);
    }
    let ours: Vec<_> = records
        .iter()
        .filter(|r| r.event.agent_id.as_ref().map(|a| a.as_str()) == Some("agent:leak"))
        .collect();
    assert!(
        // echo 6, broken 3, denied 3, invalid 2.
        ours.len() >= 14,
        "expected the case's trails in the stream, found {} records",
        ours.len()
    );
    for record in ours {
        let stored = serde_json::to_string(record).expect("records serialise");
        for secret in SECRETS {
            assert!(
                !stored.contains(secret),
                "{secret} reached the sink: {stored}"
            );
        }
    }
}
