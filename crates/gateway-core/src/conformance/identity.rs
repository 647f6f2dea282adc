//! [`Identity`] conformance.

use crate::error::ErrorKind;
use crate::identity::{Credential, Identity};
use crate::ids::AgentId;
use crate::secret::Secret;

/// What the suite needs from the backend under test.
pub struct IdentityFixture {
    /// Credentials the backend accepts, each with the one agent it must map to. At least two,
    /// for two distinct agents.
    pub valid: Vec<(Credential, AgentId)>,
    /// Credentials of the backend's own format that it must reject (wrong key, expired, …).
    pub invalid: Vec<Credential>,
}

/// Runs every case.
pub async fn run_all(identity: &dyn Identity, fixture: IdentityFixture) {
    valid_credentials_map_to_their_agents(identity, &fixture).await;
    invalid_credentials_are_unauthenticated(identity, &fixture).await;
    garbage_is_unauthenticated_and_not_echoed(identity).await;
    concurrent_authentication_agrees(identity, &fixture).await;
}

/// Each valid credential maps to its agent, the same way every time, and two credentials to two
/// distinct agents.
pub async fn valid_credentials_map_to_their_agents(
    identity: &dyn Identity,
    fixture: &IdentityFixture,
) {
    assert!(
        fixture.valid.len() >= 2,
        "fixture needs at least two valid credentials"
    );
    let mut seen = std::collections::BTreeSet::new();
    for (credential, agent) in &fixture.valid {
        let got = identity
            .authenticate(credential)
            .await
            .expect("valid credential rejected");
        assert_eq!(&got.id, agent, "credential mapped to the wrong agent");
        // Deterministic: the same credential yields the same identity again.
        let again = identity
            .authenticate(credential)
            .await
            .expect("second authentication failed");
        assert_eq!(got, again, "authentication is not deterministic");
        seen.insert(got.id);
    }
    assert!(
        seen.len() >= 2,
        "distinct credentials must map to distinct agents in the fixture"
    );
}

/// Each invalid credential of the backend's own format is refused as unauthenticated.
pub async fn invalid_credentials_are_unauthenticated(
    identity: &dyn Identity,
    fixture: &IdentityFixture,
) {
    for credential in &fixture.invalid {
        let err = identity
            .authenticate(credential)
            .await
            .expect_err("invalid credential accepted");
        assert_eq!(
            err.kind(),
            ErrorKind::Unauthenticated,
            "wrong kind for invalid credential: {err}"
        );
    }
}

/// Garbage of every shape is refused as unauthenticated, never a panic or another kind, and the
/// error never echoes it.
pub async fn garbage_is_unauthenticated_and_not_echoed(identity: &dyn Identity) {
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b" ".to_vec(),
        b"not-a-credential".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        b"agk_".to_vec(),
        b"a.b.c".to_vec(),
        vec![b'a'; 1024 * 1024],
    ];
    for bytes in garbage {
        let len = bytes.len();
        let credential = Credential::Bearer(Secret::new(bytes));
        let err = identity
            .authenticate(&credential)
            .await
            .expect_err("garbage accepted");
        assert_eq!(
            err.kind(),
            ErrorKind::Unauthenticated,
            "garbage of {len} bytes: {err}"
        );
        assert!(
            err.to_string().len() < 512,
            "error message too long: echoes input?"
        );
    }
}

/// 32 concurrent authentications each map to the right agent.
pub async fn concurrent_authentication_agrees(identity: &dyn Identity, fixture: &IdentityFixture) {
    let tasks = fixture
        .valid
        .iter()
        .cycle()
        .take(32)
        .map(|(c, a)| async move {
            assert_eq!(
                &identity.authenticate(c).await.expect("concurrent auth").id,
                a
            );
        });
    futures::future::join_all(tasks).await;
}
