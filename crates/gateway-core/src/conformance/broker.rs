//! [`AccessBroker`] conformance.

use crate::grant::{AccessBroker, GrantRequest};
use crate::ids::{AgentId, RequestId};
use std::time::Duration;
use time::OffsetDateTime;

/// A grant request the suite uses; backends may pass their own scopes.
pub fn request(scopes: Vec<String>, ttl: Duration) -> GrantRequest {
    GrantRequest {
        correlation_id: RequestId::new(),
        agent: AgentId::new("agent:conformance").expect("valid id"),
        action: "conformance.test".into(),
        resource: "conformance:resource".into(),
        scopes,
        ttl,
    }
}

/// Runs the suite with grants of the given scopes (valid for the backend under test).
pub async fn run(broker: &dyn AccessBroker, scopes: Vec<String>) {
    let ttl = Duration::from_secs(120);
    let before = OffsetDateTime::now_utc();
    let req = request(scopes.clone(), ttl);
    let grant = broker.grant(&req).await.expect("grant");
    let after = OffsetDateTime::now_utc();

    assert_eq!(grant.correlation_id, req.correlation_id);
    assert_eq!(grant.agent, req.agent);
    assert!(
        grant.scopes.iter().all(|s| scopes.contains(s)),
        "grant has scopes beyond the request"
    );
    assert!(grant.not_after > before, "grant already expired");
    assert!(
        grant.not_after <= after + ttl + time::Duration::seconds(1),
        "grant outlives its requested TTL"
    );

    // Secrets never appear in Debug or serialised output.
    let debug = format!("{grant:?}");
    let json = serde_json::to_string(&grant).expect("grant serialises");
    for secret in grant.job_env.values() {
        if let Some(s) = secret.expose_str().filter(|s| s.len() >= 8) {
            assert!(!debug.contains(s), "grant Debug leaks its secret");
            assert!(!json.contains(s), "grant JSON leaks its secret");
        }
    }

    // Distinct grants get distinct ids.
    let second = broker
        .grant(&request(scopes.clone(), ttl))
        .await
        .expect("second grant");
    assert_ne!(grant.id, second.id, "grant ids must be unique");

    // Revocation is idempotent.
    broker.revoke(&grant).await.expect("revoke");
    broker
        .revoke(&grant)
        .await
        .expect("revoking twice must succeed");
    broker.revoke(&second).await.expect("revoke second");
}
