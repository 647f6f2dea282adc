//! The SQLite sink against a real database file: conformance, redaction, durability details,
//! checkpoints, failure handling, concurrency and the CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, Flaky, event, lit};
use gateway_audit::checkpoint::Checkpoint;
use gateway_audit::{
    AuditStore, ChainedSink, CheckpointSigner, Redactor, SinkConfig, SoftwareSigner,
    SqliteAuditSink, SqliteStore, VerifyOptions, verify_stream,
};
use gateway_core::audit::chain::FaultKind;
use gateway_core::audit::{AuditRecord, AuditSink};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn open(dir: &tempfile::TempDir, config: SinkConfig) -> SqliteAuditSink {
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    SqliteAuditSink::open(store, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = open(
        &dir,
        SinkConfig::new("gw-1").with_checkpoints(signer, 10, Duration::from_secs(1)),
    )
    .await;
    gateway_core::conformance::audit::run_all(&sink).await;
    // A second run on the same, now non-empty chain, through a reopened sink.
    sink.close().await.unwrap();
    let sink = open(&dir, SinkConfig::new("gw-1")).await;
    gateway_core::conformance::audit::run_all(&sink).await;
}

#[tokio::test]
async fn settings_are_durable_wal_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous must be FULL (2)");
}

/// A database made by the first schema (agent index keyed by agent) is migrated on open: its
/// records still verify, and an agent's records in a time range come from the time index alone.
#[tokio::test]
async fn a_first_schema_database_migrates_to_the_time_agent_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    {
        // The first release's schema, with one record written through it.
        let store = SqliteStore::open(&path).await.unwrap();
        let sink = SqliteAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap();
        sink.append(event(1)).await.unwrap();
        sink.close().await.unwrap();
        let pool = sqlx::SqlitePool::connect_with(
            sqlx::sqlite::SqliteConnectOptions::new().filename(&path),
        )
        .await
        .unwrap();
        sqlx::raw_sql(
            "DROP INDEX audit_records_time_agent;
             CREATE INDEX audit_records_agent ON audit_records (agent_id, event_time);
             CREATE INDEX audit_records_time ON audit_records (event_time);
             DELETE FROM gateway_audit_migrations WHERE version > 1;",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_records'
         AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        ["audit_records_correlation", "audit_records_time_agent"]
    );
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT count(*) FROM audit_records
         WHERE event_time >= '2026-01-01' AND event_time < '2027-01-01' AND agent_id = 'agent:x'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
    .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX audit_records_time_agent")),
        "{plan:?}"
    );
    let sink = SqliteAuditSink::open(store, SinkConfig::new("gw"))
        .await
        .unwrap();
    sink.append(event(2)).await.unwrap();
    assert!(sink.verify().await.unwrap().is_ok());
}

/// `event_time` compares as text like the times it holds, for rows written now and for rows an
/// earlier version wrote as RFC 3339 (trailing zeros of the fraction dropped), which the
/// migration rewrites; the hashed records are untouched and still verify.
#[tokio::test]
async fn event_time_text_sorts_like_the_times_also_after_migrating_older_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let second = time::macros::datetime!(2026-11-26 03:00:00 UTC);
    // Out of time order on purpose: whole second, half past, a microsecond past.
    let offsets_us = [500_000, 0, 1, 999_999];
    let times_in = |path: &std::path::Path| {
        let path = path.to_owned();
        async move {
            let store = SqliteStore::open(&path).await.unwrap();
            // A whole-second lower bound takes in the whole second.
            let times: Vec<String> = sqlx::query_scalar(
                "SELECT event_time FROM audit_records WHERE kind = 'requested'
                 AND event_time >= '2026-11-26T03:00:00' AND event_time < '2026-11-26T03:00:01'
                 ORDER BY event_time",
            )
            .fetch_all(store.pool())
            .await
            .unwrap();
            (store, times)
        }
    };
    let expected = [
        "2026-11-26T03:00:00.000000Z",
        "2026-11-26T03:00:00.000001Z",
        "2026-11-26T03:00:00.500000Z",
        "2026-11-26T03:00:00.999999Z",
    ];
    {
        let store = SqliteStore::open(&path).await.unwrap();
        let sink = SqliteAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap();
        for (n, us) in offsets_us.iter().enumerate() {
            let mut ev = event(n as u64);
            ev.time = second + time::Duration::microseconds(*us);
            if n == 2 {
                // An event made with another offset keeps it in its body.
                ev.time = ev.time.to_offset(time::macros::offset!(+1:30));
            }
            sink.append(ev).await.unwrap();
        }
        sink.close().await.unwrap();
    }
    assert_eq!(times_in(&path).await.1, expected);

    // What an earlier version stored: RFC 3339 text (trailing zeros dropped; an event made
    // with another offset kept it), and no migration 3 yet.
    let pool =
        sqlx::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path))
            .await
            .unwrap();
    sqlx::raw_sql(
        "DROP TRIGGER audit_records_no_update;
         UPDATE audit_records SET event_time = CASE sequence
             WHEN 1 THEN '2026-11-26T03:00:00.5Z'
             WHEN 2 THEN '2026-11-26T03:00:00Z'
             WHEN 3 THEN '2026-11-26T04:30:00.000001+01:30'
             WHEN 4 THEN '2026-11-26T03:00:00.999999Z' END
         WHERE kind = 'requested';
         CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
         BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END;
         DELETE FROM gateway_audit_migrations WHERE version > 2;",
    )
    .execute(&pool)
    .await
    .unwrap();
    // The old text misses the record stored with an offset and sorts `…00Z` last.
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT event_time FROM audit_records WHERE kind = 'requested'
         AND event_time >= '2026-11-26T03:00:00' AND event_time < '2026-11-26T03:00:01'
         ORDER BY event_time",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        old,
        [
            "2026-11-26T03:00:00.5Z",
            "2026-11-26T03:00:00.999999Z",
            "2026-11-26T03:00:00Z"
        ]
    );
    pool.close().await;
    // Verification checks the query columns against the hashed events; opened read-only (no
    // migration), the older text says the same times, which only the legacy option accepts:
    // the same text written by an attacker over a migrated log changes what range queries
    // return, so by default only the fixed-width form is the copy of a time.
    let read_only = SqliteStore::open_read_only(&path).await.unwrap();
    let legacy = VerifyOptions {
        legacy_bodies: true,
        ..VerifyOptions::default()
    };
    let report = verify_stream(&read_only, "gw", &legacy).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    let fault = verify_stream(&read_only, "gw", &VerifyOptions::default())
        .await
        .unwrap()
        .fault
        .unwrap();
    assert!(fault.detail.contains("event_time column"), "{fault}");
    drop(read_only);

    let (store, times) = times_in(&path).await;
    assert_eq!(times, expected);
    // The trigger is back: the table is still append-only.
    assert!(
        sqlx::query("UPDATE audit_records SET event_time = 'x'")
            .execute(store.pool())
            .await
            .is_err()
    );
    let sink = SqliteAuditSink::open(store, SinkConfig::new("gw"))
        .await
        .unwrap();
    assert!(sink.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn secrets_are_redacted_before_hashing_and_storage() {
    let dir = tempfile::tempdir().unwrap();
    let redactor = Redactor::new().with_path("/params/ssn").unwrap();
    let sink = open(&dir, SinkConfig::new("gw").with_redactor(redactor)).await;
    let mut ev = event(1);
    ev.details.insert(
        "params".into(),
        serde_json::json!({"ssn": "123-45-6789", "password": "hunter2", "card": "4111111111111111"}),
    );
    ev.details
        .insert("header".into(), "Bearer sk-live-abcdef123456".into());
    ev.origin = Some("client eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl".into());
    let receipt = sink.append(ev).await.unwrap();

    let stored: String = sqlx::query_scalar("SELECT event FROM audit_records WHERE sequence = ?")
        .bind(receipt.sequence as i64)
        .fetch_one(sink.store().pool())
        .await
        .unwrap();
    for secret in [
        "123-45-6789",
        "hunter2",
        "4111111111111111",
        "sk-live",
        "eyJhbGci",
    ] {
        assert!(
            !stored.contains(secret),
            "{secret} reached the database: {stored}"
        );
    }
    assert!(stored.contains("[card ****1111]"));
    let record = &sink.read(Some(receipt.sequence - 1), 1).await.unwrap()[0];
    assert_eq!(record.hash, receipt.hash);
    assert!(sink.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn numbers_round_trip_so_hashes_verify_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(&dir, SinkConfig::new("gw")).await;
    let mut ev = event(1);
    ev.details.insert(
        "values".into(),
        serde_json::json!([
            0.1 + 0.2,
            1e-7,
            123456.789,
            u64::MAX,
            -0.0,
            2.5e300,
            "é\u{0}\"x"
        ]),
    );
    sink.append(ev).await.unwrap();
    sink.close().await.unwrap();
    let sink = open(&dir, SinkConfig::new("gw")).await;
    let report = sink.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
}

#[tokio::test]
async fn tables_are_append_only() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = open(
        &dir,
        SinkConfig::new("gw").with_checkpoints(signer, 1, Duration::from_secs(60)),
    )
    .await;
    sink.append(event(1)).await.unwrap();
    let pool = sink.store().pool();
    for sql in [
        "UPDATE audit_records SET event = '{}'",
        "DELETE FROM audit_records",
        "UPDATE audit_checkpoints SET head_hash = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert!(sink.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn checkpoints_detect_truncation_and_forgery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let signer = Arc::new(SoftwareSigner::generate());
    let key = signer.verifying_key();
    let sink = open(
        &dir,
        SinkConfig::new("gw").with_checkpoints(signer, 5, Duration::from_secs(60)),
    )
    .await;
    for n in 0..12 {
        sink.append(event(n)).await.unwrap();
    }
    let cp = sink
        .checkpoint()
        .await
        .unwrap()
        .expect("head not yet checkpointed");
    assert_eq!(cp.sequence, 12);
    let options = VerifyOptions {
        trusted_keys: vec![key],
        ..VerifyOptions::default()
    };
    let report = sink.verify_with(&options).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert!(report.checkpoints_checked >= 3, "{report:?}");

    // Truncate the last 3 records: the checkpoint at 12 is now beyond the head.
    let db = Db::Sqlite(path.clone());
    db.tamper("DELETE FROM audit_records WHERE sequence > 9")
        .await;
    let fault = sink.verify_with(&options).await.unwrap().fault.unwrap();
    assert_eq!((fault.kind, fault.sequence), (FaultKind::Truncated, 10));

    // A checkpoint forged with another key is rejected with the trusted key...
    let forger = SoftwareSigner::generate();
    let forged = forger.sign("gw", 9, &"00".repeat(32)).unwrap();
    db.tamper(&format!(
        "DELETE FROM audit_checkpoints WHERE sequence = 10;
         INSERT INTO audit_checkpoints VALUES ('gw', 9, {}, {}, {}, {})",
        lit(&forged.head_hash),
        lit(serde_json::to_value(&forged).unwrap()["time"]
            .as_str()
            .unwrap()),
        lit(&forged.key_id),
        lit(&forged.signature)
    ))
    .await;
    let fault = sink.verify_with(&options).await.unwrap().fault.unwrap();
    assert_eq!(fault.kind, FaultKind::BadCheckpoint, "{fault}");
    // ...and, without a key, still disagrees with the chain.
    assert!(
        sink.verify_with(&VerifyOptions::default())
            .await
            .unwrap()
            .fault
            .is_some()
    );
}

#[tokio::test]
async fn timed_checkpoints_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = open(
        &dir,
        SinkConfig::new("gw").with_checkpoints(signer, 1000, Duration::from_millis(50)),
    )
    .await;
    let receipt = sink.append(event(1)).await.unwrap();
    let mut found = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        found = sink.store().read_checkpoints("gw", None, 10).await.unwrap();
        if !found.is_empty() {
            break;
        }
    }
    assert_eq!(found.len(), 1, "no timed checkpoint after 2 s");
    assert_eq!(found[0].sequence as u64, receipt.sequence);
}

#[tokio::test]
async fn a_failed_commit_fails_its_callers_and_the_writer_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    let store = Flaky::new(inner);
    let sink = ChainedSink::open(store, SinkConfig::new("gw"))
        .await
        .unwrap();
    let ok1 = sink.append(event(1)).await.unwrap();
    sink.store().fail_next.store(1, Ordering::SeqCst);
    let err = sink.append(event(2)).await.unwrap_err();
    assert_eq!(err.kind(), gateway_core::ErrorKind::Unavailable);
    let ok2 = sink.append(event(3)).await.unwrap();
    assert_eq!(
        ok2.sequence,
        ok1.sequence + 1,
        "the failed event must not take a sequence"
    );
    let records = sink.read(None, 100).await.unwrap();
    let resources: Vec<_> = records.iter().map(|r| r.event.resource.as_str()).collect();
    assert!(
        !resources.contains(&"db:orders/2"),
        "failed event was stored"
    );
    assert!(sink.verify().await.unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_on_one_stream_never_fork_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(open(&dir, SinkConfig::new("shared")).await);
    let b = Arc::new(open(&dir, SinkConfig::new("shared")).await);
    common::races::two_sinks_on_one_stream_never_fork_it(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_ten_thousand_records() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(open(&dir, SinkConfig::new("gw")).await);
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..(10_000 / 64 + u64::from(t < 10_000 % 64)) {
                    seqs.push(sink.append(event(t * 1000 + i)).await.unwrap().sequence);
                }
                seqs
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    let mut count = 0;
    for t in tasks {
        for s in t.await.unwrap() {
            count += 1;
            assert!(all.insert(s), "duplicate sequence {s}");
        }
    }
    assert_eq!(count, 10_000);
    assert_eq!(all.first(), Some(&1));
    assert_eq!(all.last(), Some(&10_000));
    let report = sink.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(report.records_checked, 10_001);
}

#[tokio::test]
async fn verify_reads_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let sink = open(&dir, SinkConfig::new("gw")).await;
    for n in 0..25 {
        sink.append(event(n)).await.unwrap();
    }
    let options = VerifyOptions {
        page_size: 4,
        ..VerifyOptions::default()
    };
    let report = verify_stream(sink.store(), "gw", &options).await.unwrap();
    assert!(report.is_ok());
    assert_eq!(report.records_checked, 26);
}

fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gateway-audit"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn cli_verify_and_export() {
    let dir = tempfile::tempdir().unwrap();
    // The keys live apart from the log, as the verifier requires.
    let keys = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let key_file = keys.path().join("key.secret");
    let out = cli(&["keygen", "--out", key_file.to_str().unwrap()]);
    assert!(out.status.success());
    let pubkey = String::from_utf8(out.stdout).unwrap();
    let pub_file = keys.path().join("key.pub");
    std::fs::write(&pub_file, &pubkey).unwrap();
    let signer =
        Arc::new(SoftwareSigner::from_hex(&std::fs::read_to_string(&key_file).unwrap()).unwrap());
    let sink = open(
        &dir,
        SinkConfig::new("gw").with_checkpoints(signer, 3, Duration::from_secs(60)),
    )
    .await;
    for n in 0..10 {
        sink.append(event(n)).await.unwrap();
    }
    sink.close().await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let pub_arg = pub_file.to_str().unwrap();

    let out = cli(&[
        "verify",
        "--db",
        &url,
        "--pubkey",
        pub_arg,
        "--expect-stream",
        "gw",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("OK     gw: 11 records"), "{text}");
    assert!(!text.contains("NOT checked"), "{text}");

    let out = cli(&["export", "--db", &url, "--jsonl"]);
    assert!(out.status.success());
    let lines: Vec<AuditRecord> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 11);
    assert_eq!(lines[10].sequence, 10);
    let out = cli(&["export", "--db", &url, "--jsonl", "--checkpoints"]);
    let cps: Vec<Checkpoint> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(cps.len() >= 3);
    let key = gateway_audit::checkpoint::parse_public_key(&pubkey).unwrap();
    cps.iter().for_each(|c| c.verify_signature(&key).unwrap());

    Db::Sqlite(path.clone())
        .tamper("UPDATE audit_records SET event = replace(event, 'db:orders/4', 'db:orders/X') WHERE sequence = 5")
        .await;
    let out = cli(&[
        "verify",
        "--db",
        &url,
        "--pubkey",
        pub_arg,
        "--expect-stream",
        "gw",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("modified at sequence 5"), "{text}");

    let out = cli(&[
        "verify",
        "--db",
        "/nonexistent/audit.db",
        "--no-signatures",
        "--all-streams",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// `verify` takes nothing on trust: without a trusted key it refuses to run (unless told
/// `--no-signatures`, and then says so), a key kept in the log's directory is refused, the
/// streams must be named, and an unexpected or missing stream fails.
#[tokio::test]
async fn cli_verify_trusts_nothing_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let signer = Arc::new(SoftwareSigner::generate());
    let pub_file = keys.path().join("key.pub");
    std::fs::write(&pub_file, signer.key_id()).unwrap();
    let sink = open(
        &dir,
        SinkConfig::new("gw").with_checkpoints(signer.clone(), 3, Duration::from_secs(60)),
    )
    .await;
    for n in 0..7 {
        sink.append(event(n)).await.unwrap();
    }
    sink.close().await.unwrap();
    let url = format!("sqlite://{}", path.display());
    let key = pub_file.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["verify", "--db", &url];
        all.extend_from_slice(args);
        let out = cli(&all);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // No key: refused, with the reason.
    let (code, text) = run(&["--expect-stream", "gw"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--pubkey"), "{text}");
    // --no-signatures: runs, and says plainly that signatures were not checked.
    let (code, text) = run(&["--no-signatures", "--expect-stream", "gw"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("WARNING: --no-signatures"), "{text}");
    assert!(text.contains("(signatures NOT checked)"), "{text}");
    // A key from the log's own directory is refused.
    let beside = dir.path().join("checkpoint.pub");
    std::fs::write(&beside, signer.key_id()).unwrap();
    let (code, text) = run(&[
        "--pubkey",
        beside.to_str().unwrap(),
        "--expect-stream",
        "gw",
    ]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("log's directory"), "{text}");
    // The streams must be named (or --all-streams said).
    let (code, text) = run(&["--pubkey", key]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("--expect-stream") && text.contains("gw"),
        "{text}"
    );
    let (code, text) = run(&["--pubkey", key, "--all-streams"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("WARNING: --all-streams"), "{text}");
    // An expected stream that is missing fails.
    let (code, text) = run(&[
        "--pubkey",
        key,
        "--expect-stream",
        "gw",
        "--expect-stream",
        "gw-2",
    ]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAILED gw-2: expected stream is missing"),
        "{text}"
    );
    // A whole forged second stream, correctly chained, with no checkpoint: unexpected.
    let forged = open(&dir, SinkConfig::new("forged")).await;
    forged.append(event(100)).await.unwrap();
    forged.close().await.unwrap();
    let (code, text) = run(&["--pubkey", key, "--expect-stream", "gw"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("FAILED forged: unexpected stream"), "{text}");
    assert!(text.contains("OK     gw: 8 records"), "{text}");
    // Another trusted key alone: every checkpoint is signed by a key that is not trusted.
    let other = keys.path().join("other.pub");
    std::fs::write(&other, SoftwareSigner::generate().key_id()).unwrap();
    let other = other.to_str().unwrap();
    let (code, text) = run(&["--pubkey", other, "--stream", "gw"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not a trusted key"), "{text}");
    // Both keys (a rotation): the one that signed is among them.
    let (code, text) = run(&["--pubkey", other, "--pubkey", key, "--stream", "gw"]);
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_stay_contiguous_under_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(open(&dir, SinkConfig::new("gw")).await);
    common::groups::groups_stay_contiguous_under_concurrent_appends(sink).await;
}

#[tokio::test]
async fn a_failed_group_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    let sink = ChainedSink::open(Flaky::new(inner), SinkConfig::new("gw"))
        .await
        .unwrap();
    common::groups::a_failed_group_stores_nothing(sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealable_group_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(open(&dir, SinkConfig::new("gw")).await);
    common::groups::an_unsealable_group_fails_alone(sink).await;
}

#[tokio::test]
async fn a_large_group_is_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("audit.db"))
        .await
        .unwrap();
    common::groups::a_large_group_is_one_commit(store).await;
}

/// Every batch commits a checkpoint (so each is a `BEGIN … COMMIT` query), and two sinks race
/// on one stream: a lost race rolls its transaction back and the connection carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_checkpointed_batches_never_fork_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let config = SinkConfig::new("shared").with_checkpoints(signer, 1, Duration::from_secs(60));
    let a = Arc::new(open(&dir, config.clone()).await);
    let b = Arc::new(open(&dir, config).await);
    common::races::racing_checkpointed_batches_never_fork_the_stream(a, b).await;
}

/// `sqlite::memory:` (handy in an embedding service's own tests) is written through `sqlx` and
/// read back on connections of the store's own: both must reach the same database.
#[tokio::test]
async fn an_in_memory_database_is_read_back_and_verifies() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    let sink = SqliteAuditSink::open(store.clone(), SinkConfig::new("mem"))
        .await
        .unwrap();
    for n in 0..20 {
        sink.append(event(n)).await.unwrap();
    }
    let report = verify_stream(&store, "mem", &VerifyOptions::default())
        .await
        .unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(report.records_checked, 21);
    // A second in-memory store is a database of its own.
    let other = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert!(other.read_raw("mem", None, 10).await.unwrap().is_empty());
}

/// Through the gateway, secrets an agent sends (params, intent, resource) and a job prints
/// reach neither the SQLite sink's records nor any byte of its database files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_through_the_gateway_reach_no_row_or_file() {
    use gateway_core::conformance::redaction::{SECRETS, secrets_reach_no_sink};
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(open(&dir, SinkConfig::new("gw")).await);
    secrets_reach_no_sink(sink.clone()).await;
    assert!(sink.verify().await.unwrap().is_ok());
    if let Ok(sink) = Arc::try_unwrap(sink) {
        sink.close().await.unwrap();
    }
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        // Closing removes SQLite's side files (-shm) as we list them.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        files += 1;
        for secret in SECRETS {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} is in {}",
                path.display()
            );
        }
    }
    assert!(files >= 1);
}
