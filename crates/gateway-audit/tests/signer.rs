//! Checkpoint signers on real backends: a PKCS#11 key in SoftHSM2 (started by
//! `scripts/services/softhsm.sh`) signs checkpoints without ever leaving the token, and a key
//! rotation is recorded in the chain, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, postgres_schema, postgres_url, unique};
use cryptoki::context::Pkcs11;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use gateway_audit::{
    AuditStore, ChainedSink, CheckpointSigner, Pkcs11Config, Pkcs11Signer, PostgresStore,
    SealedRecord, SinkConfig, SoftwareSigner, SqliteStore, VerifyOptions, signer, verify_stream,
};
use gateway_core::audit::chain::seal;
use gateway_core::audit::{AuditEventKind, AuditSink as _, FaultKind};
use std::sync::Arc;
use std::time::Duration;

/// PKCS#11 tests take turns: the raw sessions below bypass the signer's per-module lock, and
/// SoftHSM2 crashes when one process's sessions log in, sign and close on several threads.
static TOKEN_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TOKEN_TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The test token, or `None` (a skip, a failure under `CI=true`) without `scripts/test`.
fn token(test: &str, key_label: &str) -> Option<Pkcs11Config> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("GATEWAY_TEST_PKCS11_MODULE"),
        var("GATEWAY_TEST_PKCS11_TOKEN"),
        var("GATEWAY_TEST_PKCS11_PIN"),
    ) {
        (Some(module), Some(token), Some(pin)) => {
            Some(Pkcs11Config::new(module, token, unique(key_label), pin))
        }
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{test}: GATEWAY_TEST_PKCS11_* not set (CI=true: SoftHSM2 is required; run scripts/test)"
            );
            eprintln!("SKIPPED {test}: GATEWAY_TEST_PKCS11_* not set (run scripts/test)");
            None
        }
    }
}

/// A raw session on the test token, logged in as the user: the view of someone holding the
/// PIN and trying to get the key out.
fn raw_session(config: &Pkcs11Config) -> cryptoki::session::Session {
    let pkcs11 = Pkcs11::new(&config.module).unwrap();
    // Already initialised by the signer in this process, or initialised here.
    let _ = pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    ));
    let slot = pkcs11
        .get_slots_with_initialized_token()
        .unwrap()
        .into_iter()
        .find(|s| pkcs11.get_token_info(*s).unwrap().label().trim_end() == config.token_label)
        .unwrap();
    let session = pkcs11.open_rw_session(slot).unwrap();
    let pin = std::env::var("GATEWAY_TEST_PKCS11_PIN").unwrap();
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => panic!("login: {e}"),
    }
    session
}

#[test]
fn pkcs11_signer_passes_the_conformance_checks() {
    let _turn = turn();
    let Some(config) = token("pkcs11_signer_passes_the_conformance_checks", "conformance") else {
        return;
    };
    let signer = Pkcs11Signer::generate(&config).unwrap();
    signer::conformance(&signer).unwrap();
    // Opened again (another process, a restart), it is the same key.
    let again = Pkcs11Signer::open(&config).unwrap();
    assert_eq!(again.key_id(), signer.key_id());
    // A second key under the same label is refused: labels name one key.
    let err = Pkcs11Signer::generate(&config).unwrap_err().to_string();
    assert!(err.contains("already holds a key labelled"), "{err}");
    // Debug names the key, never the PIN.
    let debug = format!("{config:?} {signer:?}");
    let pin = std::env::var("GATEWAY_TEST_PKCS11_PIN").unwrap();
    assert!(!debug.contains(&pin), "{debug}");
    assert!(debug.contains(&signer.key_id()), "{debug}");
}

#[test]
fn cli_keygen_creates_the_key_inside_the_token() {
    let _turn = turn();
    let Some(config) = token("cli_keygen_creates_the_key_inside_the_token", "cli") else {
        return;
    };
    let keygen = |pin: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-audit"));
        cmd.arg("keygen")
            .arg("--pkcs11-module")
            .arg(&config.module)
            .args(["--token-label", &config.token_label])
            .args(["--key-label", &config.key_label])
            .env_remove("GATEWAY_PKCS11_PIN");
        if let Some(pin) = pin {
            cmd.env("GATEWAY_PKCS11_PIN", pin);
        }
        cmd.output().unwrap()
    };
    // The PIN comes from the environment only.
    let out = keygen(None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GATEWAY_PKCS11_PIN"));
    let pin = std::env::var("GATEWAY_TEST_PKCS11_PIN").unwrap();
    let out = keygen(Some(&pin));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        printed.trim(),
        Pkcs11Signer::open(&config).unwrap().key_id()
    );
    // Run again: the label is taken, nothing is overwritten.
    let out = keygen(Some(&pin));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already holds a key labelled"));
}

#[test]
fn the_pkcs11_signing_key_never_leaves_the_token() {
    let _turn = turn();
    let Some(config) = token("the_pkcs11_signing_key_never_leaves_the_token", "sealed") else {
        return;
    };
    let signer = Pkcs11Signer::generate(&config).unwrap();
    let session = raw_session(&config);
    let private = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(config.key_label.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(private.len(), 1);
    let attributes = session
        .get_attributes(
            private[0],
            &[
                AttributeType::Value,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
            ],
        )
        .unwrap_or_default();
    // Even logged in with the PIN, the secret value is not handed out.
    assert!(
        !attributes
            .iter()
            .any(|a| matches!(a, Attribute::Value(v) if !v.is_empty())),
        "the token revealed the private key: {attributes:?}"
    );
    assert!(attributes.contains(&Attribute::Sensitive(true)));
    assert!(attributes.contains(&Attribute::Extractable(false)));
    assert!(attributes.contains(&Attribute::NeverExtractable(true)));
    // And it cannot be wrapped out under a key the attacker makes.
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
                Attribute::Token(false),
            ],
        )
        .unwrap();
    assert!(
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, private[0])
            .is_err(),
        "the private key could be wrapped out of the token"
    );
    drop(signer);
}

/// The deliberate break of the property above: a key pair made extractable (as a careless
/// provisioning script would) is refused by `open`, so the gateway never signs with a key that
/// may exist outside the token.
#[test]
fn an_extractable_token_key_is_refused() {
    let _turn = turn();
    let Some(config) = token("an_extractable_token_key_is_refused", "extractable") else {
        return;
    };
    let session = raw_session(&config);
    let label = Attribute::Label(config.key_label.as_bytes().to_vec());
    session
        .generate_key_pair(
            &Mechanism::EccEdwardsKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Verify(true),
                Attribute::EcParams(b"\x13\x0cedwards25519".to_vec()),
                label.clone(),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sign(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                label,
            ],
        )
        .unwrap();
    let err = Pkcs11Signer::open(&config).unwrap_err().to_string();
    assert!(err.contains("can leave the token"), "{err}");
}

#[test]
fn pkcs11_errors_say_what_to_do() {
    let _turn = turn();
    let Some(config) = token("pkcs11_errors_say_what_to_do", "missing") else {
        return;
    };
    let err = Pkcs11Signer::open(&config).unwrap_err().to_string();
    assert!(err.contains("holds no Ed25519 public key"), "{err}");
    let no_token = Pkcs11Config::new(&config.module, "no-such-token", "k", "1234");
    let err = Pkcs11Signer::open(&no_token).unwrap_err().to_string();
    assert!(
        err.contains("no initialized token labelled \"no-such-token\""),
        "{err}"
    );
    let no_module = Pkcs11Config::new("/nonexistent/libpkcs11.so", "t", "k", "1234");
    let err = Pkcs11Signer::open(&no_module).unwrap_err().to_string();
    assert!(err.contains("loading the PKCS#11 module"), "{err}");
}

/// Writes records with `first`, reopens with `second` (a rotation), writes more: the chain
/// holds a `key_rotated` record, verification with both keys passes and lists them in order,
/// with only the new key it fails on the old checkpoints; a key change without the record (a
/// checkpoint forged with another trusted key) is a fault.
async fn rotation_is_recorded_in_the_chain<S: AuditStore + Clone>(
    store: S,
    first: Arc<dyn CheckpointSigner>,
    second: Arc<dyn CheckpointSigner>,
) {
    let config = |signer: &Arc<dyn CheckpointSigner>| {
        SinkConfig::new("gw").with_checkpoints(signer.clone(), 4, Duration::from_secs(60))
    };
    let sink = ChainedSink::open(store.clone(), config(&first))
        .await
        .unwrap();
    for n in 0..6 {
        sink.append(event(n)).await.unwrap();
    }
    sink.close().await.unwrap();
    // Reopened with the same key: no rotation.
    let sink = ChainedSink::open(store.clone(), config(&first))
        .await
        .unwrap();
    sink.append(event(6)).await.unwrap();
    sink.close().await.unwrap();

    let sink = ChainedSink::open(store.clone(), config(&second))
        .await
        .unwrap();
    for n in 7..12 {
        sink.append(event(n)).await.unwrap();
    }
    let records = sink.read(None, usize::MAX).await.unwrap();
    let rotations: Vec<_> = records
        .iter()
        .filter(|r| r.event.kind == AuditEventKind::KeyRotated)
        .collect();
    assert_eq!(rotations.len(), 1, "one rotation, one record");
    let details = &rotations[0].event.details;
    assert_eq!(details["previous_key_id"], first.key_id());
    assert_eq!(details["key_id"], second.key_id());
    sink.close().await.unwrap();

    let both = VerifyOptions {
        trusted_keys: vec![first.verifying_key(), second.verifying_key()],
        ..VerifyOptions::default()
    };
    let report = verify_stream(&store, "gw", &both).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(
        report.checkpoint_keys,
        vec![first.key_id(), second.key_id()]
    );

    let only_new = VerifyOptions::trusting(second.verifying_key());
    let report = verify_stream(&store, "gw", &only_new).await.unwrap();
    let fault = report.fault.expect("old checkpoints are not trusted");
    assert!(
        fault.detail.contains("not a trusted key"),
        "{}",
        fault.detail
    );

    // Back to the first key by a checkpoint written around the sink (no announcement).
    let (sequence, hash) = store.head("gw").await.unwrap().unwrap();
    let record = seal("gw", sequence + 1, &hash, event(99)).unwrap();
    let cp = first.sign("gw", sequence + 1, &record.hash).unwrap();
    store
        .append_batch(&[SealedRecord::new(record).unwrap()], Some(&cp))
        .await
        .unwrap();
    let report = verify_stream(&store, "gw", &both).await.unwrap();
    let fault = report.fault.expect("an unannounced key change");
    assert_eq!(fault.kind, FaultKind::BadCheckpoint);
    assert!(
        fault.detail.contains("without a key_rotated record"),
        "{}",
        fault.detail
    );
}

#[tokio::test]
#[allow(clippy::await_holding_lock)] // a test's turn at the token, across the whole test
async fn sqlite_rotation_from_a_key_file_to_a_pkcs11_token() {
    let _turn = turn();
    let Some(config) = token(
        "sqlite_rotation_from_a_key_file_to_a_pkcs11_token",
        "rotate",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    let token_key = tokio::task::spawn_blocking(move || Pkcs11Signer::generate(&config))
        .await
        .unwrap()
        .unwrap();
    rotation_is_recorded_in_the_chain(
        store,
        Arc::new(SoftwareSigner::generate()),
        Arc::new(token_key),
    )
    .await;
}

#[tokio::test]
async fn postgres_rotation_between_key_files() {
    let Some(base) = postgres_url("postgres_rotation_between_key_files") else {
        return;
    };
    let (url, _) = postgres_schema(&base, "rotation").await;
    rotation_is_recorded_in_the_chain(
        PostgresStore::connect(&url).await.unwrap(),
        Arc::new(SoftwareSigner::generate()),
        Arc::new(SoftwareSigner::generate()),
    )
    .await;
}
