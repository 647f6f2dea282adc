//! Taking a compact JWT apart (`gateway-identity`, module `token`) against a reference written
//! from RFC 7515/7519 (own base64url, own JSON duplicate check, the header rules restated), and
//! the whole `JwtIdentity::authenticate` on tokens signed with its HS256 secret: never a
//! panic, a refusal is `Unauthenticated` or `Unrecognized` and never shows the signature, and a
//! token whose signature was altered is never accepted.
//!
//! Input: a first byte choosing the mode, then either the raw token (shape and base64 layers)
//! or `header 0xFF payload` (JSON layers; the token is built and signed here).
#![no_main]

use agent_gateway_fuzz::reference::{base64url, json};
use gateway_core::{Credential, Identity, IdentityError, Secret};
use gateway_identity::fuzzing::{Parsed, parse};
use gateway_identity::key::MAX_KID_LEN;
use gateway_identity::{Algorithm, JwtIdentity};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::LazyLock;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";

static IDENTITY: LazyLock<JwtIdentity> = LazyLock::new(|| {
    JwtIdentity::builder()
        .issuer("https://issuer.example")
        .audience("agent-gateway")
        .hs256_secret(Secret::new(SECRET))
        .default_owner("fuzzing")
        .build()
        .expect("a valid configuration")
});

/// The reference: what RFC 7515 and this gateway's header rules make of `raw`.
fn reference(raw: &[u8]) -> Option<Result<Parsed, ()>> {
    let shaped = !raw.is_empty()
        && raw[0] != b'.'
        && raw
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && matches!(raw.iter().filter(|b| **b == b'.').count(), 2 | 4);
    if !shaped {
        return None;
    }
    let segments: Vec<&[u8]> = raw.split(|b| *b == b'.').collect();
    let [header, payload, signature] = segments[..] else {
        return Some(Err(())); // JWE (five segments)
    };
    Some((|| {
        if signature.is_empty() {
            return Err(());
        }
        let json::Verdict::Accepted(Value::Object(h)) =
            json::parse(&base64url::decode(header).ok_or(())?)
        else {
            return Err(());
        };
        let alg = match h.get("alg") {
            Some(Value::String(a)) => match a.as_str() {
                "RS256" => Algorithm::RS256,
                "RS384" => Algorithm::RS384,
                "RS512" => Algorithm::RS512,
                "PS256" => Algorithm::PS256,
                "ES256" => Algorithm::ES256,
                "ES384" => Algorithm::ES384,
                "EdDSA" => Algorithm::EdDSA,
                "HS256" => Algorithm::HS256,
                _ => return Err(()),
            },
            _ => return Err(()),
        };
        if ["jku", "x5u", "jwk", "x5c", "crit"]
            .iter()
            .any(|k| h.contains_key(*k))
        {
            return Err(());
        }
        let text = |name: &str, max: usize| match h.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.len() <= max => Ok(Some(s.clone())),
            Some(_) => Err(()),
        };
        let kid = text("kid", MAX_KID_LEN)?;
        let typ = text("typ", usize::MAX)?;
        let signature = base64url::decode(signature).ok_or(())?;
        let claims = match base64url::decode(payload).map(|p| json::parse(&p)) {
            Some(json::Verdict::Accepted(Value::Object(c))) => Ok(c),
            _ => Err(String::new()),
        };
        Ok(Parsed {
            alg,
            kid,
            typ,
            signing_input_len: header.len() + 1 + payload.len(),
            signature,
            claims,
        })
    })())
}

fn same(got: &Option<Result<Parsed, String>>, want: &Option<Result<Parsed, ()>>) -> bool {
    match (got, want) {
        (None, None) | (Some(Err(_)), Some(Err(()))) => true,
        (Some(Ok(g)), Some(Ok(w))) => {
            g.alg == w.alg
                && g.kid == w.kid
                && g.typ == w.typ
                && g.signing_input_len == w.signing_input_len
                && g.signature == w.signature
                && match (&g.claims, &w.claims) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(_), Err(_)) => true,
                    _ => false,
                }
        }
        _ => false,
    }
}

fn authenticate(token: &str) -> Result<(), IdentityError> {
    let credential = Credential::bearer(Secret::new(token.as_bytes()));
    // HS256 verification never awaits anything: the future completes on its first poll.
    futures::executor::block_on(IDENTITY.authenticate(&credential)).map(|_| ())
}

fn check_refusal(e: &IdentityError, signature: &str) {
    assert!(
        matches!(
            e,
            IdentityError::Unauthenticated { .. } | IdentityError::Unrecognized { .. }
        ),
        "unexpected error kind: {e:?}"
    );
    if signature.len() >= 12 {
        assert!(
            !e.to_string().contains(signature),
            "the refusal shows the signature"
        );
    }
}

fuzz_target!(init: {
    base64url::self_check();
    json::self_check();
}, |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut parts = rest.splitn(2, |b| *b == 0xff);
        let header = parts.next().unwrap_or_default();
        let payload = parts.next().unwrap_or_default();
        let input = format!("{}.{}", base64url::encode(header), base64url::encode(payload));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
        let tag = ring::hmac::sign(&key, input.as_bytes());
        let signature = base64url::encode(tag.as_ref());
        let token = format!("{input}.{signature}");
        // Properly signed: whatever the verdict, no panic and a typed refusal.
        if let Err(e) = authenticate(&token) {
            check_refusal(&e, &signature);
        }
        // One bit of the signature flipped: never accepted.
        let mut forged = tag.as_ref().to_vec();
        let at = usize::from(mode) % forged.len();
        forged[at] ^= 1 << (mode % 8);
        let forged_signature = base64url::encode(&forged);
        match authenticate(&format!("{input}.{forged_signature}")) {
            Ok(()) => panic!("a token with an altered signature was accepted"),
            Err(e) => check_refusal(&e, &forged_signature),
        }
        token.into_bytes()
    };
    let got = parse(&token);
    let want = reference(&token);
    assert!(same(&got, &want), "the token parser says {got:?}, the reference {want:?}");
});
