//! JWT verification µs/token (RS256, ES256, EdDSA) through `JwtIdentity` with a warm JWKS
//! cache (keys fetched once from a local wiremock server), against two baselines measured in
//! the same run: the bare ring signature verification of the same token with the same key
//! (the cryptographic floor), and a `StaticKeys` API-key lookup (SHA-256 + constant-time
//! compare). After the criterion groups a summary prints µs/token and the ratios.
//!
//! `cargo bench --bench identity`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway_core::{AgentId, Credential, Identity, StaticKeys};
use gateway_identity::{JwksOptions, JwtIdentity};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use serde_json::json;
use std::hint::black_box;
use std::time::{Duration, Instant};

const ISSUER: &str = "https://issuer.example.org";
const AUDIENCE: &str = "agent-gateway";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A bare signature check: (signed message, signature) -> valid.
type BareVerifier = Box<dyn Fn(&[u8], &[u8]) -> bool + Send + Sync>;

/// One algorithm's fixture: a token, its JWK, and a bare verifier of its signature.
struct Case {
    alg: &'static str,
    token: String,
    jwk: serde_json::Value,
    bare: BareVerifier,
}

fn token(alg: &str, kid: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "deployer", "iat": now, "exp": now + 3600,
        "owner": "alice@example.org", "team": "payments",
    });
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    format!("{input}.{}", b64(sign(input.as_bytes())))
}

fn cases() -> Vec<Case> {
    let rng = SystemRandom::new();
    let rsa_der = {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        key.to_pkcs8_der().unwrap().as_bytes().to_vec()
    };
    let rsa = RsaKeyPair::from_pkcs8(&rsa_der).unwrap();
    let rsa_pub: signature::RsaPublicKeyComponents<Vec<u8>> = rsa.public().into();
    let rsa_token = token("RS256", "rsa", |m| {
        let mut sig = vec![0; rsa.public().modulus_len()];
        rsa.sign(&signature::RSA_PKCS1_SHA256, &rng, m, &mut sig)
            .unwrap();
        sig
    });
    let ec_doc =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec = EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        ec_doc.as_ref(),
        &rng,
    )
    .unwrap();
    let ec_point = ec.public_key().as_ref().to_vec();
    let ec_token = token("ES256", "ec", |m| {
        ec.sign(&rng, m).unwrap().as_ref().to_vec()
    });
    let ed_doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let ed = Ed25519KeyPair::from_pkcs8(ed_doc.as_ref()).unwrap();
    let ed_pub = ed.public_key().as_ref().to_vec();
    let ed_token = token("EdDSA", "ed", |m| ed.sign(m).as_ref().to_vec());

    let ec_bare = ec_point.clone();
    let ed_bare = ed_pub.clone();
    let rsa_bare = rsa_pub.clone();
    vec![
        Case {
            alg: "RS256",
            token: rsa_token,
            jwk: json!({"kty": "RSA", "kid": "rsa", "n": b64(&rsa_pub.n), "e": b64(&rsa_pub.e)}),
            bare: Box::new(move |m, s| {
                rsa_bare
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA256, m, s)
                    .is_ok()
            }),
        },
        Case {
            alg: "ES256",
            token: ec_token,
            jwk: json!({"kty": "EC", "kid": "ec", "crv": "P-256",
                        "x": b64(&ec_point[1..33]), "y": b64(&ec_point[33..])}),
            bare: Box::new(move |m, s| {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &ec_bare)
                    .verify(m, s)
                    .is_ok()
            }),
        },
        Case {
            alg: "EdDSA",
            token: ed_token,
            jwk: json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(&ed_pub)}),
            bare: Box::new(move |m, s| {
                UnparsedPublicKey::new(&signature::ED25519, &ed_bare)
                    .verify(m, s)
                    .is_ok()
            }),
        },
    ]
}

/// The signing input and decoded signature of a compact JWS, as the bare baseline needs them.
fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (
        input.as_bytes().to_vec(),
        URL_SAFE_NO_PAD.decode(sig).unwrap(),
    )
}

fn per_token_us(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cases = cases();
    let server = rt.block_on(wiremock::MockServer::start());
    rt.block_on(
        wiremock::Mock::given(wiremock::matchers::path("/jwks"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(
                json!({"keys": cases.iter().map(|c| c.jwk.clone()).collect::<Vec<_>>()}),
            ))
            .mount(&server),
    );
    let mut options = JwksOptions::default();
    options.cache_ttl = Duration::from_secs(3600);
    let identity = JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .jwks_url(format!("{}/jwks", server.uri()))
        .jwks_options(options)
        .owner_claim("owner")
        .attribute_claim("team")
        .build()
        .unwrap();
    rt.block_on(identity.prefetch()).unwrap();
    let (keys, api_key) = StaticKeys::new()
        .with_generated_key("bench", AgentId::new("agent:bench").unwrap(), "alice")
        .unwrap();
    let api_credential = Credential::Bearer(api_key);

    let mut group = c.benchmark_group("identity");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    group.bench_function("baseline/static_keys", |b| {
        b.to_async(&rt)
            .iter(|| async { keys.authenticate(black_box(&api_credential)).await.unwrap() })
    });
    for case in &cases {
        let (input, sig) = split(&case.token);
        let credential = Credential::bearer(case.token.as_str());
        assert!((case.bare)(&input, &sig), "baseline must verify");
        assert!(
            rt.block_on(identity.authenticate(&credential)).is_ok(),
            "{} must verify",
            case.alg
        );
        group.bench_function(format!("baseline/bare_{}", case.alg), |b| {
            b.iter(|| (case.bare)(black_box(&input), black_box(&sig)))
        });
        group.bench_function(format!("jwt/{}", case.alg), |b| {
            b.to_async(&rt)
                .iter(|| async { identity.authenticate(black_box(&credential)).await.unwrap() })
        });
    }
    group.finish();

    // Summary from one run: µs/token and ratios against both baselines.
    let static_us = per_token_us(20_000, || {
        rt.block_on(keys.authenticate(&api_credential)).unwrap();
    });
    println!("\nsummary (µs/token, warm JWKS cache; StaticKeys lookup {static_us:.2} µs)");
    for case in &cases {
        let (input, sig) = split(&case.token);
        let credential = Credential::bearer(case.token.as_str());
        let n = if case.alg == "RS256" { 4_000 } else { 2_000 };
        let bare = per_token_us(n, || assert!((case.bare)(&input, &sig)));
        let full = per_token_us(n, || {
            rt.block_on(identity.authenticate(&credential)).unwrap();
        });
        println!(
            "  {:<6} JwtIdentity {full:>7.2} µs  bare signature {bare:>7.2} µs  ratio {:.2}x bare, {:.1}x StaticKeys",
            case.alg,
            full / bare,
            full / static_us
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
