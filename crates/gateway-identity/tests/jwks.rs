//! JWKS URL handling against a wiremock key server: caching, rotation, rate-limited refetch,
//! stale serving, and never fetching what a token points to.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use gateway_core::{Credential, ErrorKind, Identity, IdentityError};
use gateway_identity::{JwksOptions, JwtIdentity};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A key server whose document and status the test changes, counting requests.
#[derive(Clone)]
struct KeyServer {
    body: Arc<Mutex<Value>>,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

impl Respond for KeyServer {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let status = self.status.load(Ordering::SeqCst);
        ResponseTemplate::new(status).set_body_json(self.body.lock().unwrap().clone())
    }
}

impl KeyServer {
    async fn start(doc: Value) -> (MockServer, Self) {
        let server = MockServer::start().await;
        let ks = Self {
            body: Arc::new(Mutex::new(doc)),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ks.clone())
            .mount(&server)
            .await;
        (server, ks)
    }
    fn serve(&self, doc: Value) {
        *self.body.lock().unwrap() = doc;
    }
    fn fail(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn options(ttl_ms: u64, grace_ms: u64, min_refetch_ms: u64) -> JwksOptions {
    let mut o = JwksOptions::default();
    o.cache_ttl = Duration::from_millis(ttl_ms);
    o.stale_grace = Duration::from_millis(grace_ms);
    o.min_refetch_interval = Duration::from_millis(min_refetch_ms);
    o.timeout = Duration::from_secs(2);
    o
}

fn identity(server: &MockServer, opts: JwksOptions) -> JwtIdentity {
    JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .jwks_url(format!("{}/jwks", server.uri()))
        .jwks_options(opts)
        .owner_claim("owner")
        .build()
        .unwrap()
}

async fn auth(id: &JwtIdentity, token: &str) -> Result<gateway_core::AgentIdentity, IdentityError> {
    id.authenticate(&Credential::bearer(token)).await
}

#[tokio::test]
async fn keys_are_cached() {
    let a = TestKey::p256("a");
    let (server, ks) = KeyServer::start(jwks(&[&a])).await;
    let id = identity(&server, options(60_000, 60_000, 60_000));
    for sub in ["one", "two", "three"] {
        assert_eq!(
            auth(&id, &a.token(&claims(sub))).await.unwrap().id.as_str(),
            format!("agent:{sub}")
        );
    }
    assert_eq!(ks.hits(), 1);
}

#[tokio::test]
async fn rotation_new_kid_after_one_refresh() {
    let a = TestKey::p256("a");
    let b = TestKey::ed25519("b");
    let (server, ks) = KeyServer::start(jwks(&[&a])).await;
    let id = identity(&server, options(60_000, 60_000, 300));
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    ks.serve(jwks(&[&a, &b]));
    // Within the refetch interval the new kid is unknown and nothing is fetched.
    let err = auth(&id, &b.token(&claims("x"))).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Unauthenticated { .. }),
        "{err}"
    );
    assert_eq!(ks.hits(), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(auth(&id, &b.token(&claims("x"))).await.is_ok());
    assert_eq!(ks.hits(), 2, "exactly one refresh");
    assert!(auth(&id, &b.token(&claims("y"))).await.is_ok());
    assert_eq!(ks.hits(), 2);
}

#[tokio::test]
async fn removed_kid_rejected_after_ttl() {
    let a = TestKey::p256("a");
    let b = TestKey::p256("b");
    let (server, ks) = KeyServer::start(jwks(&[&a, &b])).await;
    let id = identity(&server, options(400, 60_000, 0));
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    ks.serve(jwks(&[&b]));
    // Still cached: accepted until the TTL runs out.
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    tokio::time::sleep(Duration::from_millis(450)).await;
    let err = auth(&id, &a.token(&claims("x"))).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Unauthenticated { .. }),
        "{err}"
    );
    assert!(auth(&id, &b.token(&claims("x"))).await.is_ok());
    assert_eq!(ks.hits(), 2);
}

#[tokio::test]
async fn random_kids_cannot_hammer_the_key_server() {
    let a = TestKey::p256("a");
    let (server, ks) = KeyServer::start(jwks(&[&a])).await;
    let id = Arc::new(identity(&server, options(60_000, 60_000, 60_000)));
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    let attempts = (0..100).map(|i| {
        let id = Arc::clone(&id);
        let token = a.token_with("ES256", json!({"kid": format!("random-{i}")}), &claims("x"));
        async move { auth(&id, &token).await }
    });
    for result in futures::future::join_all(attempts).await {
        assert!(result.is_err());
    }
    assert_eq!(
        ks.hits(),
        1,
        "unknown kids within the interval cause no fetch"
    );

    // Cold start with a down server: concurrent requests cause one fetch, then none until the
    // interval has passed.
    let (down, ks_down) = KeyServer::start(json!({})).await;
    ks_down.fail(503);
    let cold = Arc::new(identity(&down, options(60_000, 60_000, 60_000)));
    let attempts = (0..20).map(|_| {
        let id = Arc::clone(&cold);
        let token = a.token(&claims("x"));
        async move { auth(&id, &token).await }
    });
    for result in futures::future::join_all(attempts).await {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert_eq!(ks_down.hits(), 1);
}

#[tokio::test]
async fn stale_keys_are_served_while_the_server_is_down_until_they_expire() {
    let a = TestKey::p256("a");
    let (server, ks) = KeyServer::start(jwks(&[&a])).await;
    let id = identity(&server, options(200, 600, 100));
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    ks.fail(500);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the TTL, refresh fails: the cached key is still trusted.
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
    assert_eq!(ks.hits(), 2);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Past TTL + grace: no trusted keys remain.
    let err = auth(&id, &a.token(&claims("x"))).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The server comes back: keys are fetched again once the interval allows it.
    ks.fail(200);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
}

#[tokio::test]
async fn token_supplied_key_locations_are_never_fetched() {
    let trusted = TestKey::p256("trusted");
    let attacker = TestKey::p256("evil");
    let (server, ks) = KeyServer::start(jwks(&[&trusted])).await;
    let evil_hits = KeyServer {
        body: Arc::new(Mutex::new(jwks(&[&attacker]))),
        status: Arc::new(AtomicU16::new(200)),
        hits: Arc::new(AtomicUsize::new(0)),
    };
    Mock::given(method("GET"))
        .and(path("/evil"))
        .respond_with(evil_hits.clone())
        .mount(&server)
        .await;
    let evil_url = format!("{}/evil", server.uri());
    let id = identity(&server, options(60_000, 60_000, 0));
    for extra in [
        json!({"jku": evil_url}),
        json!({"x5u": evil_url}),
        json!({"jwk": attacker.jwk()}),
        json!({"jku": evil_url, "kid": "trusted"}),
    ] {
        let err = auth(
            &id,
            &attacker.token_with("ES256", extra.clone(), &claims("x")),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, IdentityError::Unauthenticated { .. }),
            "{extra}: {err}"
        );
    }
    assert_eq!(evil_hits.hits(), 0);
    assert!(ks.hits() <= 1);
}

#[tokio::test]
async fn bad_key_server_answers() {
    let a = TestKey::p256("a");
    let server = MockServer::start().await;
    // A redirect is not followed, even to a path serving real keys.
    Mock::given(method("GET"))
        .and(path("/moved"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/jwks"))
        .mount(&server)
        .await;
    let (_, real) = (
        0,
        KeyServer {
            body: Arc::new(Mutex::new(jwks(&[&a]))),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::new(AtomicUsize::new(0)),
        },
    );
    Mock::given(method("GET"))
        .and(path("/jwks"))
        .respond_with(real.clone())
        .mount(&server)
        .await;
    // Oversized, not JSON, duplicate members, duplicate kids.
    let big = json!({"keys": [a.jwk()], "pad": "x".repeat(300 * 1024)});
    let dup_kid = jwks(&[&a, &TestKey::p256("a")]);
    let a_jwk = a.jwk().to_string();
    for (p, body) in [
        ("/big", ResponseTemplate::new(200).set_body_json(big)),
        (
            "/text",
            ResponseTemplate::new(200).set_body_string("<html>"),
        ),
        (
            "/dup-member",
            ResponseTemplate::new(200)
                .set_body_string(format!(r#"{{"keys":[{a_jwk}],"keys":[]}}"#)),
        ),
        (
            "/dup-kid",
            ResponseTemplate::new(200).set_body_json(dup_kid),
        ),
    ] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(body)
            .mount(&server)
            .await;
    }
    for p in ["/moved", "/big", "/text", "/dup-member", "/dup-kid"] {
        let id = JwtIdentity::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .jwks_url(format!("{}{p}", server.uri()))
            .owner_claim("owner")
            .build()
            .unwrap();
        let err = auth(&id, &a.token(&claims("x"))).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{p}: {err}");
        assert!(id.prefetch().await.is_err(), "{p}");
    }
    assert_eq!(real.hits(), 0, "the redirect was followed");
}

#[tokio::test]
async fn symmetric_keys_in_a_jwks_are_ignored() {
    let a = TestKey::p256("a");
    let secret = b"0123456789abcdef0123456789abcdef";
    let oct = json!({"kty": "oct", "kid": "hmac", "k": b64(secret), "alg": "HS256"});
    let (server, _ks) = KeyServer::start(json!({"keys": [a.jwk(), oct]})).await;
    let id = identity(&server, options(60_000, 60_000, 60_000));
    id.prefetch().await.unwrap();
    let token = hs256_token(
        r#"{"alg":"HS256","kid":"hmac"}"#,
        &claims("x").to_string(),
        secret,
    );
    let err = auth(&id, &token).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Unauthenticated { .. }),
        "{err}"
    );
    assert!(auth(&id, &a.token(&claims("x"))).await.is_ok());
}

#[test]
fn remote_plain_http_and_odd_urls_are_refused() {
    for url in [
        "http://keys.example.com/jwks",
        "file:///etc/jwks.json",
        "http://user:pw@127.0.0.1/jwks",
        "not a url",
    ] {
        let result = JwtIdentity::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .jwks_url(url)
            .owner_claim("o")
            .build();
        assert!(result.is_err(), "{url}");
    }
    let mut insecure = JwksOptions::default();
    insecure.allow_insecure_http = true;
    assert!(
        JwtIdentity::builder()
            .issuer(ISSUER)
            .audience(AUDIENCE)
            .jwks_url("http://keys.example.com/jwks")
            .jwks_options(insecure)
            .owner_claim("o")
            .build()
            .is_ok()
    );
    let https = JwtIdentity::builder()
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .jwks_url("https://keys.example.com/jwks")
        .owner_claim("o")
        .build();
    assert_eq!(https.is_ok(), cfg!(feature = "tls"));
}
