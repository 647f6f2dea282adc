//! The attack matrix of issue 7: every forged, tampered or out-of-policy token is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::{Credential, ErrorKind, Identity, IdentityError, Secret};
use gateway_identity::{Algorithm, AudienceRule, JwtIdentity, KeySet};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

struct Fixture {
    rsa: Arc<TestKey>,
    p256: Arc<TestKey>,
    p384: Arc<TestKey>,
    ed: Arc<TestKey>,
    /// Not in the verifier's key set.
    outsider: Arc<TestKey>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        rsa: TestKey::rsa("rsa-1"),
        p256: TestKey::p256("ec-1"),
        p384: TestKey::p384("ec-384"),
        ed: TestKey::ed25519("ed-1"),
        outsider: TestKey::p256("ec-1"),
    })
}

fn key_set() -> KeySet {
    let f = fixture();
    KeySet::from_jwks_json(
        jwks(&[&f.rsa, &f.p256, &f.p384, &f.ed])
            .to_string()
            .as_bytes(),
    )
    .unwrap()
}

fn identity_with(
    f: impl FnOnce(gateway_identity::JwtIdentityBuilder) -> gateway_identity::JwtIdentityBuilder,
) -> JwtIdentity {
    f(JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .static_keys(key_set())
        .owner_claim("owner")
        .attribute_claim("team"))
    .build()
    .unwrap()
}

fn identity() -> JwtIdentity {
    identity_with(|b| b)
}

async fn auth(id: &JwtIdentity, token: &str) -> Result<gateway_core::AgentIdentity, IdentityError> {
    id.authenticate(&Credential::bearer(token)).await
}

/// Asserts rejection as `Unauthenticated` (a recognised JWT that fails), never another kind.
async fn rejected(id: &JwtIdentity, token: &str, what: &str) {
    match auth(id, token).await {
        Ok(got) => panic!("{what}: accepted as {}", got.id),
        Err(IdentityError::Unauthenticated { reason }) => {
            assert!(reason.len() < 512, "{what}: long reason");
            assert!(!reason.contains(token), "{what}: reason echoes the token");
        }
        Err(other) => panic!("{what}: wrong error {other:?}"),
    }
}

#[tokio::test]
async fn every_algorithm_verifies_and_maps_claims() {
    let f = fixture();
    let id = identity();
    for (key, alg) in [
        (&f.rsa, "RS256"),
        (&f.rsa, "RS384"),
        (&f.rsa, "RS512"),
        (&f.rsa, "PS256"),
        (&f.p256, "ES256"),
        (&f.p384, "ES384"),
        (&f.ed, "EdDSA"),
    ] {
        let token = key.token_with(alg, json!({}), &claims("deployer"));
        let got = auth(&id, &token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(got.id.as_str(), "agent:deployer");
        assert_eq!(got.owner, "alice@example.org");
        assert_eq!(got.attributes.get("team"), Some(&json!("payments")));
        assert_eq!(
            got.auth,
            gateway_core::AuthMethod::Jwt {
                issuer: ISSUER.into(),
                key_id: Some(key.kid.clone())
            }
        );
    }
}

#[tokio::test]
async fn alg_none_in_every_spelling() {
    let f = fixture();
    let id = identity();
    let body = b64(claims("deployer").to_string());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string());
        rejected(&id, &format!("{header}.{body}."), alg).await;
        // With a "signature" that is not empty, too.
        rejected(&id, &format!("{header}.{body}.AAAA"), alg).await;
        // A validly signed body under an alg:none header.
        let valid = f.p256.token(&claims("deployer"));
        let sig = valid.rsplit('.').next().unwrap();
        rejected(&id, &format!("{header}.{body}.{sig}"), alg).await;
    }
}

#[tokio::test]
async fn hs256_key_confusion_with_public_key_bytes() {
    let f = fixture();
    let id = identity();
    let claims_json = claims("deployer").to_string();
    for key in [&f.rsa, &f.p256, &f.ed] {
        let jwk_json = key.jwk().to_string();
        let pem_like = b64(&key.public_bytes);
        for secret in [
            key.public_bytes.as_slice(),
            jwk_json.as_bytes(),
            pem_like.as_bytes(),
        ] {
            for header in [
                json!({"alg": "HS256", "kid": key.kid}),
                json!({"alg": "HS256"}),
            ] {
                let token = hs256_token(&header.to_string(), &claims_json, secret);
                rejected(&id, &token, "HS256 with public key bytes").await;
            }
        }
    }
    // The configuration cannot even ask for it.
    let err = JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .static_keys(key_set())
        .default_owner("o")
        .algorithms([Algorithm::RS256, Algorithm::HS256])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("HS256"), "{err}");
}

#[tokio::test]
async fn algorithm_must_fit_the_key_and_the_allowlist() {
    let f = fixture();
    // ES256-only allowlist refuses a perfectly signed RS256 token.
    let id = identity_with(|b| b.algorithms([Algorithm::ES256]));
    rejected(
        &id,
        &f.rsa.token(&claims("deployer")),
        "RS256 not on allowlist",
    )
    .await;
    assert!(auth(&id, &f.p256.token(&claims("deployer"))).await.is_ok());
    // A token naming the RSA kid but an ECDSA alg (signed by an EC key).
    let id = identity();
    let forged = raw_token(
        &f.p256,
        "ES256",
        &json!({"alg": "ES256", "kid": "rsa-1"}).to_string(),
        &claims("x").to_string(),
    );
    rejected(&id, &forged, "ES256 under an RSA kid").await;
    // PS256 signature presented as RS256.
    let pss = f.rsa.token_with("PS256", json!({}), &claims("x"));
    let (input, sig) = pss.rsplit_once('.').unwrap();
    let (_, body) = input.split_once('.').unwrap();
    let relabeled = format!(
        "{}.{body}.{sig}",
        b64(json!({"alg": "RS256", "kid": "rsa-1"}).to_string())
    );
    rejected(&id, &relabeled, "PS256 signature as RS256").await;
}

#[tokio::test]
async fn signature_stripped_swapped_or_from_an_outsider() {
    let f = fixture();
    let id = identity();
    let good = f.p256.token(&claims("deployer"));
    let other = f.p256.token(&claims("admin"));
    let (input, _) = good.rsplit_once('.').unwrap();
    let (_, other_sig) = other.rsplit_once('.').unwrap();
    rejected(&id, &format!("{input}."), "signature stripped").await;
    rejected(
        &id,
        &format!("{input}.{other_sig}"),
        "signature of another token",
    )
    .await;
    rejected(
        &id,
        &f.outsider.token(&claims("deployer")),
        "same kid, outsider key",
    )
    .await;
    // Swap payloads between two validly signed tokens.
    let (good_head, _) = good.split_once('.').unwrap();
    let other_body = other.split('.').nth(1).unwrap();
    let good_sig = good.rsplit('.').next().unwrap();
    rejected(
        &id,
        &format!("{good_head}.{other_body}.{good_sig}"),
        "payload swap",
    )
    .await;
    assert!(auth(&id, &good).await.is_ok(), "control");
}

#[tokio::test]
async fn psychic_signature_r_s_zero() {
    let f = fixture();
    let id = identity();
    for (key, len) in [(&f.p256, 64), (&f.p384, 96)] {
        let good = key.token(&claims("deployer"));
        let (input, _) = good.rsplit_once('.').unwrap();
        rejected(
            &id,
            &format!("{input}.{}", b64(vec![0u8; len])),
            "r = s = 0",
        )
        .await;
        // r = s = n is also invalid; all-ones is out of range.
        rejected(
            &id,
            &format!("{input}.{}", b64(vec![0xffu8; len])),
            "r = s = 0xff..",
        )
        .await;
    }
    let good = f.ed.token(&claims("deployer"));
    let (input, _) = good.rsplit_once('.').unwrap();
    rejected(
        &id,
        &format!("{input}.{}", b64(vec![0u8; 64])),
        "Ed25519 zero signature",
    )
    .await;
}

#[tokio::test]
async fn kid_injection_is_just_an_unknown_kid() {
    let f = fixture();
    let id = identity();
    for kid in [
        "../../../../dev/null",
        "/etc/passwd",
        "' OR '1'='1",
        "rsa-1'; DROP TABLE keys; --",
        "rsa-1\u{0000}",
        "rsa-1 ",
        "",
        &"k".repeat(10_000),
    ] {
        let token = f
            .p256
            .token_with("ES256", json!({"kid": kid}), &claims("deployer"));
        rejected(
            &id,
            &token,
            &format!("kid {:?}", kid.chars().take(20).collect::<String>()),
        )
        .await;
    }
}

#[tokio::test]
async fn key_carrying_headers_are_refused() {
    let f = fixture();
    let id = identity();
    let attacker_jwk = f.outsider.jwk();
    for extra in [
        json!({"jku": "https://attacker.example/jwks.json"}),
        json!({"x5u": "https://attacker.example/cert.pem"}),
        json!({"jwk": attacker_jwk}),
        json!({"x5c": ["MIIB..."]}),
        json!({"crit": ["exp"], "exp": 1}),
    ] {
        // Signed by the outsider (the attack) and by a trusted key (still refused: the token
        // must not bring keys at all).
        rejected(
            &id,
            &f.outsider
                .token_with("ES256", extra.clone(), &claims("deployer")),
            &extra.to_string(),
        )
        .await;
        rejected(
            &id,
            &f.p256
                .token_with("ES256", extra.clone(), &claims("deployer")),
            &extra.to_string(),
        )
        .await;
    }
}

#[tokio::test]
async fn issuer_audience_and_time_claims() {
    let f = fixture();
    let id = identity();
    let now = now();
    let leeway = 30;
    for (what, changes) in [
        ("wrong iss", json!({"iss": "https://evil.example.org"})),
        (
            "iss with trailing slash",
            json!({"iss": format!("{ISSUER}/")}),
        ),
        ("missing iss", json!({"iss": null})),
        ("wrong aud", json!({"aud": "other-service"})),
        ("missing aud", json!({"aud": null})),
        ("empty aud array", json!({"aud": []})),
        (
            "aud array with ours plus others",
            json!({"aud": [AUDIENCE, "other-service"]}),
        ),
        (
            "exp one second past leeway",
            json!({"exp": now - leeway - 1}),
        ),
        ("missing exp", json!({"exp": null})),
        ("exp as string", json!({"exp": (now + 300).to_string()})),
        ("nbf in the future", json!({"nbf": now + leeway + 60})),
        ("iat in the future", json!({"iat": now + leeway + 60})),
    ] {
        rejected(&id, &f.p256.token(&claims_with("deployer", changes)), what).await;
    }
    // Inside the leeway is accepted (a 5-second margin keeps the test stable).
    for changes in [
        json!({"exp": now - leeway + 5}),
        json!({"nbf": now + leeway - 5}),
        json!({"aud": [AUDIENCE]}),
    ] {
        let token = f.p256.token(&claims_with("deployer", changes.clone()));
        assert!(auth(&id, &token).await.is_ok(), "{changes}");
    }
    // The documented rule: an audience array with our value plus others is accepted only with
    // AudienceRule::Contains, and never when it names two of our audiences.
    let contains = identity_with(|b| {
        b.audience_rule(AudienceRule::Contains)
            .audience("agent-gateway-2")
    });
    let token = f.p256.token(&claims_with(
        "deployer",
        json!({"aud": [AUDIENCE, "other-service"]}),
    ));
    assert!(auth(&contains, &token).await.is_ok());
    let token = f.p256.token(&claims_with(
        "deployer",
        json!({"aud": [AUDIENCE, "agent-gateway-2"]}),
    ));
    rejected(&contains, &token, "two configured audiences").await;
}

#[tokio::test]
async fn typ_check_when_configured() {
    let f = fixture();
    let id = identity_with(|b| b.expected_typ("JWT"));
    assert!(auth(&id, &f.p256.token(&claims("a"))).await.is_ok());
    rejected(
        &id,
        &f.p256
            .token_with("ES256", json!({"typ": "at+jwt"}), &claims("a")),
        "typ",
    )
    .await;
    let header = json!({"alg": "ES256", "kid": "ec-1"}).to_string();
    rejected(
        &id,
        &raw_token(&f.p256, "ES256", &header, &claims("a").to_string()),
        "no typ",
    )
    .await;
}

#[tokio::test]
async fn duplicate_json_keys_in_header_or_claims() {
    let f = fixture();
    let id = identity();
    let now = now();
    let claims_dup = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"deployer","sub":"admin","exp":{},"owner":"o"}}"#,
        now + 300
    );
    let header = r#"{"alg":"ES256","kid":"ec-1"}"#;
    rejected(
        &id,
        &raw_token(&f.p256, "ES256", header, &claims_dup),
        "duplicate sub",
    )
    .await;
    let header_dup = r#"{"alg":"ES256","kid":"ec-1","alg":"ES256"}"#;
    let claims_ok = format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"deployer","exp":{},"owner":"o"}}"#,
        now + 300
    );
    rejected(
        &id,
        &raw_token(&f.p256, "ES256", header_dup, &claims_ok),
        "duplicate alg",
    )
    .await;
    let escaped_dup = claims_ok.replace(
        r#""sub":"deployer""#,
        r#""sub":"deployer","s\u0075b":"admin""#,
    );
    rejected(
        &id,
        &raw_token(&f.p256, "ES256", header, &escaped_dup),
        "escaped duplicate",
    )
    .await;
    assert!(
        auth(&id, &raw_token(&f.p256, "ES256", header, &claims_ok))
            .await
            .is_ok(),
        "control"
    );
}

#[tokio::test]
async fn huge_and_non_base64_tokens() {
    let f = fixture();
    let id = identity();
    let good = f.p256.token(&claims("deployer"));
    // 1 MiB: JWT-shaped, so recognised and refused before anything is decoded.
    let huge = format!(
        "{}.{}.{}",
        "e".repeat(512 * 1024),
        "e".repeat(512 * 1024),
        "AAAA"
    );
    rejected(&id, &huge, "1 MiB token").await;
    // A valid token padded with a huge claim.
    let padded = f.p256.token(&claims_with(
        "deployer",
        json!({"pad": "x".repeat(1024 * 1024)}),
    ));
    rejected(&id, &padded, "1 MiB claims").await;
    // Not base64url: not a JWT at all, so another backend may try; never accepted.
    for bad in [
        good.replacen('.', "!.", 1),
        good.replace('-', "+").replace('_', "/") + "=",
        format!("{good}="),
        format!(" {good}"),
    ] {
        let err = auth(&id, &bad).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    }
    // Base64url alphabet but undecodable lengths or non-canonical trailing bits.
    let (h, rest) = good.split_once('.').unwrap();
    rejected(&id, &format!("{h}A.{rest}"), "bad header length").await;
    let mut sig = good.rsplit('.').next().unwrap().to_owned();
    let last = sig.pop().unwrap();
    // ES256 signature: 64 bytes -> 86 chars, the last one carries 2 unused bits.
    let bumped = match last {
        'A' => 'B',
        'Q' => 'R',
        'g' => 'h',
        'w' => 'x',
        c => c,
    };
    let (input, _) = good.rsplit_once('.').unwrap();
    if bumped != last {
        rejected(
            &id,
            &format!("{input}.{sig}{bumped}"),
            "non-canonical base64",
        )
        .await;
    }
    // Non-UTF-8 bytes.
    let mut bytes = good.as_bytes().to_vec();
    bytes[5] = 0xff;
    let err = id
        .authenticate(&Credential::Bearer(Secret::new(bytes)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    // JWE (five segments) is recognised and refused.
    rejected(&id, &format!("{good}.AAAA.AAAA"), "JWE").await;
}

#[tokio::test]
async fn hs256_with_a_shared_secret_only() {
    let secret = b"a-shared-secret-of-at-least-32-bytes!";
    let id = JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .hs256_secret(Secret::new(secret.to_vec()))
        .default_owner("platform")
        .build()
        .unwrap();
    let claims_json = claims("svc").to_string();
    let good = hs256_token(r#"{"alg":"HS256"}"#, &claims_json, secret);
    let got = auth(&id, &good).await.unwrap();
    assert_eq!(got.id.as_str(), "agent:svc");
    assert_eq!(got.owner, "platform");
    rejected(
        &id,
        &hs256_token(
            r#"{"alg":"HS256"}"#,
            &claims_json,
            b"wrong-secret-wrong-secret-wrong-secret",
        ),
        "wrong secret",
    )
    .await;
    // A shared-secret verifier never accepts asymmetric algorithms either.
    rejected(
        &id,
        &fixture().p256.token(&claims("svc")),
        "ES256 at an HS256 verifier",
    )
    .await;
    assert!(!format!("{id:?}").contains("shared-secret-of"));
    assert!(
        JwtIdentity::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .hs256_secret(Secret::from("too-short"))
            .default_owner("o")
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn single_use_tokens() {
    let f = fixture();
    let id = identity_with(|b| b.single_use(true));
    let token = f
        .p256
        .token(&claims_with("deployer", json!({"jti": "8f1c2e"})));
    assert!(auth(&id, &token).await.is_ok());
    rejected(&id, &token, "replayed").await;
    // Another jti is fine; no jti is not.
    assert!(
        auth(
            &id,
            &f.p256
                .token(&claims_with("deployer", json!({"jti": "8f1c2f"})))
        )
        .await
        .is_ok()
    );
    rejected(&id, &f.p256.token(&claims("deployer")), "no jti").await;
    // An invalid token does not burn its jti.
    let bad = f.p256.token(&claims_with(
        "deployer",
        json!({"jti": "fresh", "aud": "other"}),
    ));
    rejected(&id, &bad, "wrong aud").await;
    assert!(
        auth(
            &id,
            &f.p256
                .token(&claims_with("deployer", json!({"jti": "fresh"})))
        )
        .await
        .is_ok()
    );
    // Bounded: when full of unexpired entries it refuses (fail closed), not forgets.
    let tiny = identity_with(|b| b.single_use(true).replay_cache_capacity(1));
    assert!(
        auth(&tiny, &f.p256.token(&claims_with("a", json!({"jti": "1"}))))
            .await
            .is_ok()
    );
    let err = auth(&tiny, &f.p256.token(&claims_with("a", json!({"jti": "2"}))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn spiffe_subjects_and_trust_domains() {
    let f = fixture();
    let id = identity_with(|b| {
        b.agent_id_rule(gateway_identity::AgentIdRule::spiffe_subject())
            .spiffe_trust_domains(
                gateway_identity::TrustDomainAllowlist::new(["prod.example.org"]).unwrap(),
            )
    });
    let ok = auth(
        &id,
        &f.ed
            .token(&claims("spiffe://prod.example.org/ns/payments/sa/deployer")),
    )
    .await
    .unwrap();
    assert_eq!(
        ok.id.as_str(),
        "spiffe://prod.example.org/ns/payments/sa/deployer"
    );
    for sub in [
        "spiffe://dev.example.org/ns/payments/sa/deployer",
        "spiffe://prod.example.org",
        "spiffe://Prod.example.org/a",
        "spiffe://prod.example.org:443/a",
        "spiffe://prod.example.org/a/../b",
        "spiffe://prod.example.org/a?b",
        "deployer",
    ] {
        rejected(&id, &f.ed.token(&claims(sub)), sub).await;
    }
}

#[tokio::test]
async fn kubernetes_service_account_tokens() {
    let f = fixture();
    let id = identity_with(|b| {
        b.agent_id_rule(gateway_identity::AgentIdRule::KubernetesServiceAccount {
            kind: "k8s-prod".into(),
        })
        .attribute_claim_as("/kubernetes.io/namespace", "namespace")
    });
    let c = claims_with(
        "system:serviceaccount:payments:deployer",
        json!({"kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "deployer"}}}),
    );
    let got = auth(&id, &f.rsa.token(&c)).await.unwrap();
    assert_eq!(got.id.as_str(), "k8s-prod:payments/deployer");
    assert_eq!(got.attributes.get("namespace"), Some(&json!("payments")));
    rejected(
        &id,
        &f.rsa.token(&claims("system:node:worker-1")),
        "node identity",
    )
    .await;
}

fn valid_token() -> &'static str {
    static T: OnceLock<String> = OnceLock::new();
    T.get_or_init(|| fixture().p256.token(&claims("deployer")))
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    })
}

fn identity_static() -> &'static JwtIdentity {
    static I: OnceLock<JwtIdentity> = OnceLock::new();
    I.get_or_init(identity)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any change to a valid token's bytes makes it invalid.
    #[test]
    fn mutated_tokens_are_never_accepted(
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)
    ) {
        let original = valid_token().as_bytes().to_vec();
        let mut bytes = original.clone();
        for (index, value) in &edits {
            let i = index.index(bytes.len());
            bytes[i] = *value;
        }
        prop_assume!(bytes != original);
        let result = runtime().block_on(identity_static().authenticate(&Credential::Bearer(Secret::new(bytes))));
        prop_assert!(result.is_err());
    }

    /// Base64url-preserving mutations (the attacker's best shot: the token stays well-formed).
    #[test]
    fn alphabet_mutations_are_never_accepted(
        index in any::<proptest::sample::Index>(),
        replacement in proptest::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
        ),
    ) {
        let original = valid_token().as_bytes().to_vec();
        let mut bytes = original.clone();
        let positions: Vec<usize> = (0..bytes.len()).filter(|i| bytes[*i] != b'.').collect();
        let i = positions[index.index(positions.len())];
        bytes[i] = replacement;
        prop_assume!(bytes != original);
        let result = runtime().block_on(identity_static().authenticate(&Credential::Bearer(Secret::new(bytes))));
        prop_assert!(result.is_err());
    }
}

#[tokio::test]
async fn control_the_proptest_token_is_valid() {
    // Guards the property tests: they would pass vacuously if the base token were invalid.
    let got = identity_static()
        .authenticate(&Credential::bearer(valid_token()))
        .await
        .unwrap();
    assert_eq!(got.id.as_str(), "agent:deployer");
    let _unused: Option<Value> = None;
}
