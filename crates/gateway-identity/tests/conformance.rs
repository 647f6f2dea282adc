//! `JwtIdentity` passes the core's Identity conformance suite, and chains with StaticKeys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::conformance::identity::{IdentityFixture, run_all};
use gateway_core::testing::MemoryIdentity;
use gateway_core::{AgentId, Credential, Identity, IdentityChain, IdentityError, StaticKeys};
use gateway_identity::{JwtIdentity, KeySet};
use serde_json::json;
use std::sync::Arc;

fn jwt_identity(keys: &[&TestKey]) -> JwtIdentity {
    JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .static_keys(KeySet::from_jwks_json(jwks(keys).to_string().as_bytes()).unwrap())
        .owner_claim("owner")
        .build()
        .unwrap()
}

#[tokio::test]
async fn conformance_static_keys() {
    let ec = TestKey::p256("ec");
    let ed = TestKey::ed25519("ed");
    let stranger = TestKey::p256("ec");
    let id = jwt_identity(&[&ec, &ed]);
    let now = now();
    run_all(
        &id,
        IdentityFixture {
            valid: vec![
                (
                    Credential::bearer(ec.token(&claims("deployer"))),
                    AgentId::new("agent:deployer").unwrap(),
                ),
                (
                    Credential::bearer(ed.token(&claims("reader"))),
                    AgentId::new("agent:reader").unwrap(),
                ),
            ],
            invalid: vec![
                Credential::bearer(ec.token(&claims_with("deployer", json!({"exp": now - 3600})))),
                Credential::bearer(stranger.token(&claims("deployer"))),
                Credential::bearer(ec.token(&claims_with("deployer", json!({"aud": "other"})))),
            ],
        },
    )
    .await;
}

#[tokio::test]
async fn conformance_jwks() {
    let ec = TestKey::p256("ec");
    let rsa = TestKey::rsa("rsa");
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path("/jwks"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(jwks(&[&ec, &rsa])))
        .mount(&server)
        .await;
    let id = JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .jwks_url(format!("{}/jwks", server.uri()))
        .owner_claim("owner")
        .build()
        .unwrap();
    run_all(
        &id,
        IdentityFixture {
            valid: vec![
                (
                    Credential::bearer(ec.token(&claims("deployer"))),
                    AgentId::new("agent:deployer").unwrap(),
                ),
                (
                    Credential::bearer(rsa.token(&claims("reader"))),
                    AgentId::new("agent:reader").unwrap(),
                ),
            ],
            invalid: vec![Credential::bearer(
                TestKey::p256("rsa").token(&claims("deployer")),
            )],
        },
    )
    .await;
}

#[tokio::test]
async fn chain_with_static_keys() {
    let ec = TestKey::p256("ec");
    let jwt = Arc::new(jwt_identity(&[&ec]));
    let (keys, api_key) = StaticKeys::new()
        .with_generated_key("key-a", AgentId::new("agent:api").unwrap(), "bob")
        .unwrap();
    let good_jwt = ec.token(&claims("deployer"));
    let expired_jwt = ec.token(&claims_with("deployer", json!({"exp": now() - 3600})));
    // A permissive backend last in the chain that would accept the expired JWT: it must never
    // be asked, because the JWT backend recognised the credential and rejected it.
    let fallback = Arc::new(MemoryIdentity::new().with_agent(&expired_jwt, "agent:fallback"));

    for order in [vec![
        Arc::new(keys) as Arc<dyn Identity>,
        jwt.clone(),
        fallback.clone(),
    ]] {
        let chain = IdentityChain::new(order);
        assert_eq!(
            chain
                .authenticate(&Credential::Bearer(api_key.clone()))
                .await
                .unwrap()
                .id
                .as_str(),
            "agent:api"
        );
        assert_eq!(
            chain
                .authenticate(&Credential::bearer(good_jwt.as_str()))
                .await
                .unwrap()
                .id
                .as_str(),
            "agent:deployer"
        );
        let err = chain
            .authenticate(&Credential::bearer(expired_jwt.as_str()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::Unauthenticated { .. }),
            "{err}"
        );
    }
    // The other order: the JWT backend does not recognise API keys and passes them on.
    let (keys, api_key) = StaticKeys::new()
        .with_generated_key("key-b", AgentId::new("agent:api").unwrap(), "bob")
        .unwrap();
    assert!(matches!(
        jwt.authenticate(&Credential::Bearer(api_key.clone())).await,
        Err(IdentityError::Unrecognized { .. })
    ));
    let chain = IdentityChain::new(vec![jwt.clone(), Arc::new(keys)]);
    assert_eq!(
        chain
            .authenticate(&Credential::Bearer(api_key))
            .await
            .unwrap()
            .id
            .as_str(),
        "agent:api"
    );
    assert_eq!(
        chain
            .authenticate(&Credential::bearer(good_jwt.as_str()))
            .await
            .unwrap()
            .id
            .as_str(),
        "agent:deployer"
    );
    // An invalid API key is rejected by StaticKeys, not passed to anyone after it.
    let err = chain
        .authenticate(&Credential::bearer("agk_key-b.wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::Unauthenticated { .. }),
        "{err}"
    );
}
