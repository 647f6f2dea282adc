//! [`PolicyDecider`] conformance.

use crate::policy::{PolicyDecider, PolicyInput};

/// What the suite needs from the backend under test.
pub struct PolicyFixture {
    /// An input the policy allows.
    pub allowed: PolicyInput,
    /// An input the policy denies.
    pub denied: PolicyInput,
}

/// Runs every case.
pub async fn run_all(decider: &dyn PolicyDecider, fixture: PolicyFixture) {
    inputs_decide_as_the_fixture_says(decider, &fixture).await;
    decisions_are_stable_under_concurrency(decider, &fixture).await;
}

/// The allowed input is allowed; the denied one is denied, with a reason.
pub async fn inputs_decide_as_the_fixture_says(
    decider: &dyn PolicyDecider,
    fixture: &PolicyFixture,
) {
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
}

/// 32 concurrent decisions over both inputs each come out as decided alone.
pub async fn decisions_are_stable_under_concurrency(
    decider: &dyn PolicyDecider,
    fixture: &PolicyFixture,
) {
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
