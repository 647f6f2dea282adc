//! [`PolicyDecider`] conformance.

use crate::policy::{PolicyDecider, PolicyInput};

/// What the suite needs from the backend under test.
pub struct PolicyFixture {
    /// An input the policy allows.
    pub allowed: PolicyInput,
    /// An input the policy denies.
    pub denied: PolicyInput,
}

/// Runs the suite.
pub async fn run(decider: &dyn PolicyDecider, fixture: PolicyFixture) {
    let allow = decider
        .decide(&fixture.allowed)
        .await
        .expect("decision for the allowed input");
    assert!(allow.allow, "allowed input was denied: {:?}", allow.reasons);

    let deny = decider
        .decide(&fixture.denied)
        .await
        .expect("decision for the denied input");
    assert!(!deny.allow, "denied input was allowed");
    assert!(!deny.reasons.is_empty(), "a deny must say why");

    // Deterministic and safe under concurrency.
    let inputs = [&fixture.allowed, &fixture.denied];
    let tasks = (0..32).map(|i| {
        let input = inputs[i % 2];
        async move {
            (
                i % 2 == 0,
                decider
                    .decide(input)
                    .await
                    .expect("concurrent decision")
                    .allow,
            )
        }
    });
    for (expected, got) in futures::future::join_all(tasks).await {
        assert_eq!(expected, got, "decision changed under concurrency");
    }
}
