//! Checkpoint witnesses on real stores: appends stop while a witness is down and resume, with
//! nothing lost, once it is back; `gateway-audit verify --witness` finds what the log alone
//! cannot (a truncated tail with its checkpoints deleted, deleted checkpoints, a history
//! rewritten and re-signed with the found key).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_trait::async_trait;
use common::{Db, event, lit, postgres_schema, postgres_url};
use gateway_audit::tsa_verify::{TsaTrust, verify_token};
use gateway_audit::witness::WitnessErrorKind;
use gateway_audit::{
    AuditStore, ChainedSink, Checkpoint, CheckpointSigner, CheckpointWitness, FileWitness,
    PostgresStore, SinkConfig, SoftwareSigner, SqliteStore, VerifyOptions, WitnessError,
    check_witnessed, verify_stream,
};
use gateway_core::ErrorKind;
use gateway_core::audit::AuditSink;
use gateway_core::audit::chain::seal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A file witness that can be switched off (unreachable) and on again.
#[derive(Debug)]
struct Switch {
    inner: FileWitness,
    on: AtomicBool,
}

#[async_trait]
impl CheckpointWitness for Switch {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn witness(&self, cp: &Checkpoint) -> Result<(), WitnessError> {
        if !self.on.load(Ordering::SeqCst) {
            return Err(WitnessError::Unavailable {
                witness: "switch".into(),
                message: "switched off".into(),
                source: None,
            });
        }
        self.inner.witness(cp).await
    }
    async fn checkpoints(&self, s: &str) -> Result<Vec<Checkpoint>, WitnessError> {
        self.inner.checkpoints(s).await
    }
}

/// The sequences `witness` holds for `gw` once it holds at least `count` (within 5 s).
async fn witnessed_soon(witness: &dyn CheckpointWitness, count: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen: Vec<u64> = witness
            .checkpoints("gw")
            .await
            .unwrap()
            .iter()
            .map(|c| c.sequence)
            .collect();
        if seen.len() >= count || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn down_stops_appends_and_they_resume<S: AuditStore + Clone>(store: S) {
    let dir = tempfile::tempdir().unwrap();
    let switch = Arc::new(Switch {
        inner: FileWitness::open(dir.path()).unwrap(),
        on: AtomicBool::new(true),
    });
    let always = tempfile::tempdir().unwrap();
    let steady: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(always.path()).unwrap());
    let signer = Arc::new(SoftwareSigner::generate());
    let key = signer.verifying_key();
    // Two witnesses, both required.
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new("gw")
            .with_checkpoints(signer, 3, Duration::from_secs(3600))
            .with_witnesses(vec![switch.clone(), steady], 2),
    )
    .await
    .unwrap();
    for n in 0..3 {
        sink.append(event(n)).await.unwrap();
    }
    // The batch is answered first and its checkpoint witnessed right after; the next append
    // waits for that, so the checkpoint is witnessed by the time any later append is stored.
    assert_eq!(witnessed_soon(&*switch, 1).await, [3]);

    // The witness goes down: the batch that reaches the next checkpoint is stored (and
    // answered), and every append after it fails closed, storing nothing.
    switch.on.store(false, Ordering::SeqCst);
    for n in 3..6 {
        sink.append(event(n)).await.unwrap();
    }
    for n in 100..103 {
        let err = sink.append(event(n)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.to_string().contains("appends stopped"), "{err}");
    }
    assert_eq!(store.head("gw").await.unwrap().unwrap().0, 6);

    // Back: the pending checkpoint is witnessed first, then appends resume.
    switch.on.store(true, Ordering::SeqCst);
    let r = sink.append(event(6)).await.unwrap();
    assert_eq!(r.sequence, 7, "a refused append left a gap or was stored");
    sink.close().await.unwrap();
    let witnessed = switch.checkpoints("gw").await.unwrap();
    assert_eq!(
        witnessed.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        [3, 6, 7]
    );
    let rows = store.read_raw("gw", None, 100).await.unwrap();
    assert_eq!(rows.len(), 8, "genesis + 7 appends, nothing lost");
    assert!(rows.iter().all(|r| !r.event.contains("db:orders/10")));
    let report = verify_stream(&store, "gw", &VerifyOptions::trusting(key))
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    let w = check_witnessed(&store, "gw", Some(7), &witnessed, &[key])
        .await
        .unwrap();
    assert_eq!((w.fault, w.unwitnessed_records), (None, 0));
}

#[tokio::test]
async fn sqlite_a_witness_that_is_down_stops_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    down_stops_appends_and_they_resume(store).await;
}

#[tokio::test]
async fn postgres_a_witness_that_is_down_stops_appends() {
    let Some(base) = postgres_url("postgres_a_witness_that_is_down_stops_appends") else {
        return;
    };
    let (url, _) = postgres_schema(&base, "witness_down").await;
    down_stops_appends_and_they_resume(PostgresStore::connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn witnesses_need_checkpoints_and_a_sane_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let w: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(dir.path()).unwrap());
    let store = || async { SqliteStore::open(dir.path().join("a.db")).await.unwrap() };
    let no_cp = SinkConfig::new("gw").with_witnesses(vec![w.clone()], 1);
    assert!(ChainedSink::open(store().await, no_cp).await.is_err());
    let signer = Arc::new(SoftwareSigner::generate());
    for required in [0, 2] {
        let config = SinkConfig::new("gw")
            .with_checkpoints(signer.clone(), 3, Duration::from_secs(60))
            .with_witnesses(vec![w.clone()], required);
        assert!(ChainedSink::open(store().await, config).await.is_err());
    }
    // The witness refuses what the trait says it must.
    let err = w
        .witness(&signer.sign("x", 1, &"aa".repeat(32)).unwrap())
        .await
        .and(
            w.witness(&signer.sign("x", 0, &"aa".repeat(32)).unwrap())
                .await,
        )
        .unwrap_err();
    assert_eq!(err.kind(), WitnessErrorKind::Rejected);
}

fn cli(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway-audit"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Each attack passes the log-only verification with the trusted key (that is why witnesses
/// are needed) and fails with `--witness`.
#[tokio::test]
async fn cli_verify_with_a_witness_finds_what_the_log_alone_cannot() {
    let keys = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let secret = signer.secret_hex();
    let pub_file = keys.path().join("key.pub");
    std::fs::write(&pub_file, signer.key_id()).unwrap();
    type Attack = Box<dyn Fn(&[gateway_core::AuditRecord]) -> String>;
    let attacks: Vec<(&str, Attack, &str)> = vec![
        (
            "tail truncated, its checkpoints deleted",
            Box::new(|_| {
                "DELETE FROM audit_records WHERE sequence > 5;
                 DELETE FROM audit_checkpoints WHERE sequence > 5;"
                    .to_owned()
            }),
            "records were removed from its tail",
        ),
        (
            "every checkpoint deleted",
            Box::new(|_| "DELETE FROM audit_checkpoints;".to_owned()),
            "is missing from the log",
        ),
        (
            "history rewritten and re-signed with the found key",
            Box::new(move |rows| {
                let forger = SoftwareSigner::from_hex(&secret).unwrap();
                let mut sql = "DELETE FROM audit_checkpoints;".to_owned();
                let mut prev = rows[0].hash.clone();
                for r in &rows[1..] {
                    let mut ev = r.event.clone();
                    ev.resource.push_str("-forged");
                    let f = seal("gw", r.sequence, &prev, ev).unwrap();
                    let body = gateway_audit::SealedRecord::new(f.clone()).unwrap().body;
                    sql += &format!(
                        "UPDATE audit_records SET event = {}, prev_hash = {}, hash = {}, \
                         resource = {} WHERE sequence = {};",
                        lit(&body),
                        lit(&f.prev_hash),
                        lit(&f.hash),
                        lit(&f.event.resource),
                        r.sequence
                    );
                    if r.sequence % 3 == 0 || r.sequence == rows.len() as u64 - 1 {
                        let cp = forger.sign("gw", r.sequence, &f.hash).unwrap();
                        sql += &format!(
                            "INSERT INTO audit_checkpoints VALUES ('gw', {}, {}, {}, {}, {});",
                            cp.sequence,
                            lit(&cp.head_hash),
                            lit(serde_json::to_value(&cp).unwrap()["time"].as_str().unwrap()),
                            lit(&cp.key_id),
                            lit(&cp.signature)
                        );
                    }
                    prev = f.hash;
                }
                sql
            }),
            "the log was rewritten",
        ),
    ];
    for (name, attack, says) in &attacks {
        let dir = tempfile::tempdir().unwrap();
        let wdir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let witness: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(wdir.path()).unwrap());
        let store = SqliteStore::open(&path).await.unwrap();
        let sink = ChainedSink::open(
            store.clone(),
            SinkConfig::new("gw")
                .with_checkpoints(signer.clone(), 3, Duration::from_secs(3600))
                .with_witnesses(vec![witness], 1),
        )
        .await
        .unwrap();
        for n in 0..10 {
            sink.append(event(n)).await.unwrap();
        }
        sink.close().await.unwrap();
        let url = format!("sqlite://{}", path.display());
        let base = [
            "verify",
            "--db",
            &url,
            "--pubkey",
            pub_file.to_str().unwrap(),
            "--expect-stream",
            "gw",
        ];
        let with_witness = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend_from_slice(extra);
            cli(&a)
        };
        let w = wdir.path().to_str().unwrap();
        let (code, text) = with_witness(&["--witness", w]);
        assert_eq!(code, Some(0), "{name}: false alarm: {text}");
        assert!(
            text.contains("0 records after the newest witnessed one (10)"),
            "{text}"
        );

        let rows: Vec<_> = store
            .read_raw("gw", None, 100)
            .await
            .unwrap()
            .iter()
            .map(|r| r.to_record().unwrap())
            .collect();
        Db::Sqlite(path.clone()).tamper(&attack(&rows)).await;
        let (code, text) = with_witness(&[]);
        assert_eq!(
            code,
            Some(0),
            "{name}: the log alone should not tell: {text}"
        );
        let (code, text) = with_witness(&["--witness", w]);
        assert_eq!(code, Some(1), "{name}: not detected: {text}");
        assert!(text.contains(says), "{name}: {text}");
    }
}

/// A witness schema on the test cluster, created by the superuser, and a URL for a fresh role
/// holding only `INSERT` and `SELECT` on its table.
async fn postgres_witness_url(base: &str, prefix: &str) -> (String, String) {
    use sqlx::Connection;
    let (_, schema) = postgres_schema(base, prefix).await;
    let role = common::unique("w");
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    let mut sql = format!(
        "SET search_path = \"{schema}\"; {} CREATE ROLE \"{role}\" LOGIN;",
        gateway_audit::PostgresWitness::SCHEMA
    );
    for g in gateway_audit::PostgresWitness::role_grants(&schema, &role) {
        sql += &g;
        sql += ";";
    }
    sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
    let url = base.replacen("://postgres@", &format!("://{role}@"), 1);
    let sep = if url.contains('?') { '&' } else { '?' };
    (
        format!("{url}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

#[tokio::test]
async fn postgres_witness_passes_the_conformance_suite_through_an_insert_only_role() {
    let Some(base) = postgres_url("postgres_witness_passes_the_conformance_suite") else {
        return;
    };
    use gateway_audit::witness::conformance;
    for case in 0..2 {
        let (url, _) = postgres_witness_url(&base, "witness_conf").await;
        let w = gateway_audit::PostgresWitness::connect(&url).await.unwrap();
        let result = if case == 0 {
            conformance::stores_and_returns_in_order(&w).await
        } else {
            conformance::refuses_a_head_that_goes_backwards(&w).await
        };
        result.unwrap();
    }
    // The role can add and read, and cannot change or remove anything, nor drop the triggers.
    let (url, _) = postgres_witness_url(&base, "witness_role").await;
    let w = gateway_audit::PostgresWitness::connect(&url).await.unwrap();
    let signer = SoftwareSigner::generate();
    w.witness(&signer.sign("s", 3, &"ab".repeat(32)).unwrap())
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for attack in [
        "UPDATE audit_witness_checkpoints SET head_hash = 'x'",
        "DELETE FROM audit_witness_checkpoints",
        "TRUNCATE audit_witness_checkpoints",
        "DROP TRIGGER audit_witness_append_only ON audit_witness_checkpoints",
        "SET session_replication_role = replica",
    ] {
        assert!(
            sqlx::raw_sql(attack).execute(&pool).await.is_err(),
            "the witness role could run {attack}"
        );
    }
    assert_eq!(w.checkpoints("s").await.unwrap().len(), 1);
}

/// A PostgreSQL log witnessed by a PostgreSQL witness database and a file: truncated with its
/// checkpoints deleted, it passes alone and fails with either witness.
#[tokio::test]
async fn postgres_log_with_postgres_and_file_witnesses() {
    let Some(base) = postgres_url("postgres_log_with_postgres_and_file_witnesses") else {
        return;
    };
    let (log_url, _) = postgres_schema(&base, "witnessed_log").await;
    let (w_url, _) = postgres_witness_url(&base, "witness_db").await;
    let store = PostgresStore::connect(&log_url).await.unwrap();
    let wdir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let pub_file = keys.path().join("key.pub");
    std::fs::write(&pub_file, signer.key_id()).unwrap();
    let pg: Arc<dyn CheckpointWitness> = Arc::new(
        gateway_audit::PostgresWitness::connect(&w_url)
            .await
            .unwrap(),
    );
    let file: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(wdir.path()).unwrap());
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new("gw")
            .with_checkpoints(signer, 4, Duration::from_secs(3600))
            .with_witnesses(vec![pg, file], 2),
    )
    .await
    .unwrap();
    for n in 0..10 {
        sink.append(event(n)).await.unwrap();
    }
    sink.close().await.unwrap();
    let key = pub_file.to_str().unwrap();
    let base_args = [
        "verify",
        "--db",
        &log_url,
        "--pubkey",
        key,
        "--expect-stream",
        "gw",
    ];
    let run = |extra: &[&str]| {
        let mut a = base_args.to_vec();
        a.extend_from_slice(extra);
        cli(&a)
    };
    let (code, text) = run(&[
        "--witness",
        &w_url,
        "--witness",
        wdir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{text}");
    Db::Postgres(log_url.clone())
        .tamper(
            "DELETE FROM audit_records WHERE sequence > 6;
             DELETE FROM audit_checkpoints WHERE sequence > 6;",
        )
        .await;
    let (code, text) = run(&[]);
    assert_eq!(code, Some(0), "the log alone should not tell: {text}");
    for w in [w_url.as_str(), wdir.path().to_str().unwrap()] {
        let (code, text) = run(&["--witness", w]);
        assert_eq!(code, Some(1), "{w}: {text}");
        assert!(
            text.contains("records were removed from its tail"),
            "{text}"
        );
    }
}

/// The TSA started by `scripts/services/tsa.sh`, or a skip notice (a failure under `CI=true`).
fn tsa() -> Option<(String, String)> {
    match (
        std::env::var("GATEWAY_TEST_TSA_URL"),
        std::env::var("GATEWAY_TEST_TSA_CA"),
    ) {
        (Ok(url), Ok(ca)) if !url.is_empty() => Some((url, ca)),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "GATEWAY_TEST_TSA_URL is not set (scripts/services/tsa.sh)"
            );
            eprintln!("skipped: GATEWAY_TEST_TSA_URL not set (run scripts/test)");
            None
        }
    }
}

/// Every checkpoint is time-stamped by the TSA; each stored token verifies with
/// `openssl ts -verify` against the checkpoint's signed message and the TSA's CA, and not
/// against another checkpoint's; the directory is read by `verify --witness` like a file
/// witness's. A TSA that is down stops appends.
#[tokio::test]
async fn tsa_witness_time_stamps_every_checkpoint() {
    let Some((url, ca)) = tsa() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wdir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let tsa: Arc<dyn CheckpointWitness> =
        Arc::new(gateway_audit::TsaWitness::new(&url, wdir.path()).unwrap());
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new("gw")
            .with_checkpoints(signer.clone(), 3, Duration::from_secs(3600))
            .with_witnesses(vec![tsa], 1),
    )
    .await
    .unwrap();
    for n in 0..7 {
        sink.append(event(n)).await.unwrap();
    }
    sink.close().await.unwrap();
    let tokens = gateway_audit::TsaWitness::tokens(wdir.path(), "gw").unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.0.sequence).collect::<Vec<_>>(),
        [3, 6, 7]
    );
    let files = tempfile::tempdir().unwrap();
    let openssl_verify = |token: &[u8], message: &[u8]| {
        let (t, m) = (files.path().join("r.tsr"), files.path().join("m.bin"));
        std::fs::write(&t, token).unwrap();
        std::fs::write(&m, message).unwrap();
        std::process::Command::new("openssl")
            .args(["ts", "-verify", "-in"])
            .arg(&t)
            .arg("-data")
            .arg(&m)
            .args(["-CAfile", &ca])
            .output()
            .unwrap()
            .status
            .success()
    };
    for (cp, token) in &tokens {
        let message =
            Checkpoint::message(&cp.stream_id, cp.sequence, &cp.head_hash, cp.time).unwrap();
        assert!(
            openssl_verify(token, &message),
            "token of {} does not verify",
            cp.sequence
        );
        let other =
            Checkpoint::message(&cp.stream_id, cp.sequence, &"00".repeat(32), cp.time).unwrap();
        assert!(
            !openssl_verify(token, &other),
            "token verifies another head"
        );
    }
    // Our own check of the tokens agrees with openssl's, and so does the CLI.
    let trust = TsaTrust::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    for (cp, token) in &tokens {
        let stamped = verify_token(token, cp, &trust).unwrap();
        let age = std::time::SystemTime::now()
            .duration_since(stamped.gen_time)
            .unwrap();
        assert!(age < Duration::from_secs(600), "stamped {age:?} ago");
        assert!(stamped.tsa.contains("gateway test TSA"), "{}", stamped.tsa);
    }
    tsa_tokens_are_checked(&tokens, &trust);
    let bin = env!("CARGO_BIN_EXE_gateway-audit");
    let keys = tempfile::tempdir().unwrap();
    let pubkey = keys.path().join("key.pub");
    std::fs::write(&pubkey, signer.key_id()).unwrap();
    let cli = |extra: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["verify", "--db"])
            .arg(dir.path().join("audit.db"))
            .args(["--expect-stream", "gw", "--pubkey"])
            .arg(&pubkey)
            .arg("--witness")
            .arg(wdir.path())
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = cli(&["--tsa-ca", &ca]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 RFC 3161 tokens verified"), "{out}");
    let (code, out) = cli(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tokens NOT checked"), "{out}");
    // A token moved to another checkpoint's line fails the CLI.
    let file = wdir.path().join("checkpoints.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = lines[0]["tsa_token"].clone();
    lines[1]["tsa_token"] = first;
    let swapped: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, swapped).unwrap();
    let (code, out) = cli(&["--tsa-ca", &ca]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stamps another message"), "{out}");
    std::fs::write(&file, text).unwrap();

    let report = check_witnessed(
        &store,
        "gw",
        Some(7),
        &FileWitness::read(wdir.path()).unwrap(),
        &[signer.verifying_key()],
    )
    .await
    .unwrap();
    assert_eq!((report.fault, report.witnessed), (None, 3));

    // The TSA unreachable: appends stop after the batch that made the checkpoint.
    let down: Arc<dyn CheckpointWitness> = Arc::new(
        gateway_audit::TsaWitness::new("http://127.0.0.1:9/", tempfile::tempdir().unwrap().path())
            .unwrap(),
    );
    let sink = ChainedSink::open(
        SqliteStore::open(dir.path().join("b.db")).await.unwrap(),
        SinkConfig::new("gw")
            .with_checkpoints(signer, 2, Duration::from_secs(3600))
            .with_witnesses(vec![down], 1),
    )
    .await
    .unwrap();
    sink.append(event(0)).await.unwrap();
    sink.append(event(1)).await.unwrap();
    let err = sink.append(event(2)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// Each way a token can be wrong fails [`verify_token`], with a message saying which check.
fn tsa_tokens_are_checked(tokens: &[(Checkpoint, Vec<u8>)], trust: &TsaTrust) {
    let (cp, token) = &tokens[0];
    let err = |token: &[u8], cp: &Checkpoint, trust: &TsaTrust| {
        verify_token(token, cp, trust).expect_err("a bad token verified")
    };
    // Another checkpoint (its head, its time): the imprint differs.
    let mut other = cp.clone();
    other.head_hash = "00".repeat(32);
    assert!(err(token, &other, trust).contains("stamps another message"));
    other = cp.clone();
    other.time += time::Duration::milliseconds(1);
    assert!(err(token, &other, trust).contains("stamps another message"));
    // Any byte of the token changed: some check fails (which one depends on where).
    let mut failures = std::collections::BTreeSet::new();
    for i in (0..token.len()).step_by(7) {
        let mut bad = token.clone();
        bad[i] ^= 0x01;
        if let Err(e) = verify_token(&bad, cp, trust) {
            failures.insert(e.split(':').next().unwrap_or("").to_owned());
        } else {
            // A flipped bit inside an unsigned, unchecked field (e.g. the reply's status text
            // or an unused certificate) may leave the token valid; the stamped content may not.
            let tst = verify_token(&bad, cp, trust).unwrap();
            assert_eq!(tst, verify_token(token, cp, trust).unwrap());
        }
    }
    assert!(!failures.is_empty());
    // The TSA's signature changed: the signature check, and only it, catches it.
    let reply = <x509_tsp::TimeStampResp as der::Decode>::from_der(token).unwrap();
    let signed: cms::signed_data::SignedData =
        reply.time_stamp_token.unwrap().content.decode_as().unwrap();
    let signature = signed.signer_infos.0.as_slice()[0]
        .signature
        .as_bytes()
        .to_vec();
    let at = token
        .windows(signature.len())
        .position(|w| w == signature.as_slice())
        .unwrap();
    let mut bad = token.clone();
    bad[at + signature.len() - 3] ^= 0x01;
    let e = err(&bad, cp, trust);
    assert!(e.contains("signature does not verify"), "{e}");
    // The stamped time changed (inside the signed TSTInfo): the digest check catches it.
    let tst_der = signed
        .encap_content_info
        .econtent
        .unwrap()
        .decode_as::<der::asn1::OctetString>()
        .unwrap()
        .into_bytes();
    let tst = <x509_tsp::TstInfo as der::Decode>::from_der(&tst_der).unwrap();
    let gen_time = der::Encode::to_der(&tst.gen_time).unwrap();
    let at = token
        .windows(gen_time.len())
        .position(|w| w == gen_time.as_slice())
        .unwrap();
    let mut bad = token.clone();
    bad[at + 5] = if bad[at + 5] == b'0' { b'1' } else { b'0' };
    let e = err(&bad, cp, trust);
    assert!(e.contains("the signed digest is not the TSTInfo's"), "{e}");
    // Hostile bytes never panic the checker: every truncation, and random rewrites of a few
    // bytes at a time (a fixed seed, so a failure reproduces).
    for len in 0..token.len() {
        assert!(
            verify_token(&token[..len], cp, trust).is_err(),
            "a truncated token verified"
        );
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..2000 {
        let mut bad = token.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = next() as u8;
        }
        let _ = verify_token(&bad, cp, trust);
    }
    // A CA the operator does not trust.
    let stranger = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=stranger",
            "-keyout",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(stranger.status.success());
    let stranger = TsaTrust::from_pem(&stranger.stdout).unwrap();
    assert!(err(token, cp, &stranger).contains("does not chain to a trusted certificate"));
}
