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

const TTL: Duration = Duration::from_secs(120);

/// Runs every case with grants of the given scopes (valid for the backend under test).
pub async fn run_all(broker: &dyn AccessBroker, scopes: Vec<String>) {
    grants_match_the_request_and_its_ttl(broker, &scopes).await;
    secrets_stay_out_of_debug_and_json(broker, &scopes).await;
    grant_ids_are_unique(broker, &scopes).await;
    revocation_is_idempotent(broker, &scopes).await;
}

/// A grant names the request's task and agent, holds no scope beyond the request, and lives no
/// longer than the requested TTL.
pub async fn grants_match_the_request_and_its_ttl(broker: &dyn AccessBroker, scopes: &[String]) {
    let before = OffsetDateTime::now_utc();
    let req = request(scopes.to_vec(), TTL);
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
        grant.not_after <= after + TTL + time::Duration::seconds(1),
        "grant outlives its requested TTL"
    );
    broker.revoke(&grant).await.expect("revoke");
}

/// A grant's secrets never appear in its `Debug` or serialised form.
pub async fn secrets_stay_out_of_debug_and_json(broker: &dyn AccessBroker, scopes: &[String]) {
    let grant = broker
        .grant(&request(scopes.to_vec(), TTL))
        .await
        .expect("grant");
    let debug = format!("{grant:?}");
    let json = serde_json::to_string(&grant).expect("grant serialises");
    for secret in grant.job_env.values() {
        if let Some(s) = secret.expose_str().filter(|s| s.len() >= 8) {
            assert!(!debug.contains(s), "grant Debug leaks its secret");
            assert!(!json.contains(s), "grant JSON leaks its secret");
        }
    }
    broker.revoke(&grant).await.expect("revoke");
}

/// Two grants get distinct ids.
pub async fn grant_ids_are_unique(broker: &dyn AccessBroker, scopes: &[String]) {
    let first = broker
        .grant(&request(scopes.to_vec(), TTL))
        .await
        .expect("grant");
    let second = broker
        .grant(&request(scopes.to_vec(), TTL))
        .await
        .expect("second grant");
    assert_ne!(first.id, second.id, "grant ids must be unique");
    broker.revoke(&first).await.expect("revoke");
    broker.revoke(&second).await.expect("revoke second");
}

/// Revoking a grant twice succeeds both times.
pub async fn revocation_is_idempotent(broker: &dyn AccessBroker, scopes: &[String]) {
    let grant = broker
        .grant(&request(scopes.to_vec(), TTL))
        .await
        .expect("grant");
    broker.revoke(&grant).await.expect("revoke");
    broker
        .revoke(&grant)
        .await
        .expect("revoking twice must succeed");
}
