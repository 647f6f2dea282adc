//! Property: every kind of tampering an attacker with direct SQL access can do is flagged by
//! verification (with the checkpoint public key), and untouched logs never are. Runs against
//! SQLite and the real PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, event, lit, postgres_schema, postgres_url};
use gateway_audit::{
    AuditStore, ChainedSink, CheckpointSigner, PostgresStore, SealedRecord, SinkConfig,
    SoftwareSigner, SqliteStore, StoredRecord, VerifyOptions, verify_stream,
};
use gateway_core::audit::chain::{FaultKind, GENESIS_PREV_HASH, body_hash, seal};
use gateway_core::audit::{AuditEvent, AuditSink, EventOutcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
enum Tamper {
    /// Change one field of one record: 0 event content, 1 hash, 2 prev_hash, 3 outcome.
    Modify {
        at: usize,
        field: u8,
    },
    Delete {
        at: usize,
    },
    /// Insert a forged, correctly linked record in the middle (later sequences shifted up).
    Insert {
        at: usize,
    },
    Swap {
        a: usize,
        b: usize,
    },
    TruncateTail {
        keep: usize,
    },
    /// Rewrite the chain from a point on and re-hash it (no signing key).
    Forge {
        from: usize,
    },
}

impl Tamper {
    fn name(&self) -> &'static str {
        match self {
            Tamper::Modify { .. } => "modify",
            Tamper::Delete { .. } => "delete",
            Tamper::Insert { .. } => "insert",
            Tamper::Swap { .. } => "swap",
            Tamper::TruncateTail { .. } => "truncate",
            Tamper::Forge { .. } => "forge",
        }
    }
}

fn tamper_strategy() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        (any::<usize>(), 0u8..4).prop_map(|(at, field)| Tamper::Modify { at, field }),
        any::<usize>().prop_map(|at| Tamper::Delete { at }),
        any::<usize>().prop_map(|at| Tamper::Insert { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Tamper::Swap { a, b }),
        any::<usize>().prop_map(|keep| Tamper::TruncateTail { keep }),
        any::<usize>().prop_map(|from| Tamper::Forge { from }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    records: u64,
    checkpoint_every: u64,
    details: Vec<(String, f64)>,
    tamper: Tamper,
    /// Whether rewritten rows are stored as record bodies (as written now) or as the event's
    /// JSON (as written before stored bodies).
    as_body: bool,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        2u64..30,
        1u64..8,
        proptest::collection::vec(
            (
                "[a-z]{1,6}",
                any::<f64>().prop_filter("finite", |f| f.is_finite()),
            ),
            0..4,
        ),
        tamper_strategy(),
        any::<bool>(),
    )
        .prop_map(
            |(records, checkpoint_every, details, tamper, as_body)| Case {
                records,
                checkpoint_every,
                details,
                tamper,
                as_body,
            },
        )
}

/// The text a row stores for `event` at `seq`: its record's canonical body, or the event's JSON.
fn stored_text(stream: &str, seq: u64, event: &AuditEvent, as_body: bool) -> String {
    if as_body {
        let record = gateway_core::AuditRecord {
            stream_id: stream.to_owned(),
            sequence: seq,
            event: event.clone(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        SealedRecord::new(record).unwrap().body
    } else {
        serde_json::to_string(event).unwrap()
    }
}

/// The SQL an attacker runs for `tamper` on a chain whose records are `rows` (0..=head),
/// rewriting rows in either stored format.
fn attack(
    stream: &str,
    rows: &[gateway_core::AuditRecord],
    tamper: &Tamper,
    as_body: bool,
) -> String {
    let set_row = |stream: &str, seq: u64, event: &AuditEvent, prev: &str, hash: &str| {
        format!(
            "UPDATE audit_records SET event = {}, prev_hash = {}, hash = {} \
             WHERE stream_id = {} AND sequence = {seq};",
            lit(&stored_text(stream, seq, event, as_body)),
            lit(prev),
            lit(hash),
            lit(stream)
        )
    };
    let head = rows.len() - 1; // ≥ 2
    let w = format!("stream_id = {}", lit(stream));
    match *tamper {
        Tamper::Modify { at, field } => {
            let k = at % rows.len();
            let r = &rows[k];
            let mut ev = r.event.clone();
            let (mut prev, mut hash) = (r.prev_hash.clone(), r.hash.clone());
            match field {
                0 => ev.resource.push_str("-evil"),
                1 => hash = format!("{:064x}", 0xdead_u64 + k as u64),
                2 => prev = format!("{:064x}", 0xbeef_u64 + k as u64),
                _ => {
                    ev.outcome = Some(match ev.outcome {
                        Some(EventOutcome::Success) => EventOutcome::Failure,
                        _ => EventOutcome::Success,
                    })
                }
            }
            set_row(stream, k as u64, &ev, &prev, &hash)
        }
        Tamper::Delete { at } => {
            format!(
                "DELETE FROM audit_records WHERE {w} AND sequence = {};",
                at % rows.len()
            )
        }
        Tamper::Insert { at } => {
            let k = 1 + at % head; // 1..=head
            let mut sql = String::new();
            for s in (k..=head).rev() {
                sql += &format!(
                    "UPDATE audit_records SET sequence = {} WHERE {w} AND sequence = {s};",
                    s + 1
                );
            }
            let forged = seal(stream, k as u64, &rows[k - 1].hash, event(999_999)).unwrap();
            let ev = stored_text(stream, k as u64, &forged.event, as_body);
            sql += &format!(
                "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event, event_time, \
                 correlation_id, kind, agent_id, action, resource, outcome) VALUES \
                 ({}, {k}, {}, {}, {}, '2024-01-01T00:00:00Z', 'x', 'requested', NULL, 'a', 'r', NULL);",
                lit(stream),
                lit(&forged.prev_hash),
                lit(&forged.hash),
                lit(&ev)
            );
            sql
        }
        Tamper::Swap { a, b } => {
            let i = a % rows.len();
            let mut j = b % rows.len();
            if i == j {
                j = (i + 1) % rows.len();
            }
            let (ri, rj) = (&rows[i], &rows[j]);
            set_row(stream, i as u64, &rj.event, &rj.prev_hash, &rj.hash)
                + &set_row(stream, j as u64, &ri.event, &ri.prev_hash, &ri.hash)
        }
        Tamper::TruncateTail { keep } => {
            format!(
                "DELETE FROM audit_records WHERE {w} AND sequence > {};",
                keep % head
            )
        }
        Tamper::Forge { from } => {
            let k = from % rows.len();
            let mut prev = if k == 0 {
                GENESIS_PREV_HASH.to_owned()
            } else {
                rows[k - 1].hash.clone()
            };
            let mut sql = String::new();
            for r in &rows[k..] {
                let mut ev = r.event.clone();
                ev.resource.push_str("-forged");
                let forged = seal(stream, r.sequence, &prev, ev).unwrap();
                sql += &set_row(
                    stream,
                    r.sequence,
                    &forged.event,
                    &forged.prev_hash,
                    &forged.hash,
                );
                prev = forged.hash;
            }
            sql
        }
    }
}

async fn run_case<S: AuditStore + Clone>(store: &S, db: &Db, stream: &str, case: &Case) {
    let signer = Arc::new(SoftwareSigner::generate());
    let options = VerifyOptions {
        trusted_keys: vec![signer.verifying_key()],
        ..VerifyOptions::default()
    };
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new(stream).with_checkpoints(
            signer,
            case.checkpoint_every,
            Duration::from_secs(3600),
        ),
    )
    .await
    .unwrap();
    let appends = (0..case.records).map(|n| {
        let mut ev = event(n);
        for (k, v) in &case.details {
            ev.details.insert(k.clone(), serde_json::json!(v));
        }
        sink.append(ev)
    });
    for r in futures::future::join_all(appends).await {
        r.unwrap();
    }
    sink.close().await.unwrap();

    let report = verify_stream(store, stream, &options).await.unwrap();
    assert!(
        report.is_ok(),
        "false alarm on an untouched log: {:?}",
        report.fault
    );

    let rows: Vec<_> = store
        .read_raw(stream, None, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_record().unwrap())
        .collect();
    db.tamper(&attack(stream, &rows, &case.tamper, case.as_body))
        .await;
    let report = verify_stream(store, stream, &options).await.unwrap();
    assert!(
        report.fault.is_some(),
        "tampering not detected: {:?} on {} records",
        case.tamper,
        rows.len()
    );
}

fn run_property<S: AuditStore + Clone>(
    rt: &tokio::runtime::Runtime,
    store: &S,
    db: &Db,
    cases: u32,
) -> BTreeMap<&'static str, u32> {
    let counter = AtomicU64::new(0);
    let seen = Mutex::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case_strategy(), |case| {
            let stream = format!("s{}", counter.fetch_add(1, Ordering::SeqCst));
            rt.block_on(run_case(store, db, &stream, &case));
            let mut seen = seen.lock().unwrap();
            *seen.entry(case.tamper.name()).or_insert(0) += 1;
            let format = if case.as_body { "as body" } else { "as event" };
            *seen.entry(format).or_insert(0) += 1;
            Ok(())
        })
        .unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen.len(),
        8,
        "every tampering kind, in both stored formats, must be exercised: {seen:?}"
    );
    seen
}

#[test]
fn sqlite_tampering_is_always_detected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = rt.block_on(SqliteStore::open(&path)).unwrap();
    let seen = run_property(&rt, &store, &Db::Sqlite(path), 96);
    eprintln!("sqlite: detected every tampering: {seen:?}");
}

#[test]
fn postgres_tampering_is_always_detected() {
    let Some(base) = postgres_url("postgres_tampering_is_always_detected") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, _) = rt.block_on(postgres_schema(&base, "tamper"));
    let store = rt.block_on(PostgresStore::connect(&url)).unwrap();
    let seen = run_property(&rt, &store, &Db::Postgres(url), 96);
    eprintln!("postgres: detected every tampering: {seen:?}");
}

/// A fresh stream of 1 + `n` records, its rows as read back.
async fn chain_of<S: AuditStore + Clone>(store: &S, stream: &str, n: u64) -> Vec<StoredRecord> {
    let sink = ChainedSink::open(store.clone(), SinkConfig::new(stream))
        .await
        .unwrap();
    for i in 0..n {
        sink.append(event(i)).await.unwrap();
    }
    sink.close().await.unwrap();
    store.read_raw(stream, None, 1000).await.unwrap()
}

/// Sets row `seq`'s stored text to `text` and its hash to the hash of exactly that text after
/// its `prev_hash`: a rewrite an attacker without the checkpoint key can do.
fn rehashed(stream: &str, row: &StoredRecord, text: &str) -> String {
    let hash = body_hash(&row.prev_hash, text.as_bytes()).unwrap();
    format!(
        "UPDATE audit_records SET event = {}, hash = {} WHERE stream_id = {} AND sequence = {};",
        lit(text),
        lit(&hash),
        lit(stream),
        row.sequence
    )
}

/// Sets a column of row 5 of stream `s` (`assignment`, e.g. `agent_id = 'x'`).
fn update_row_5(s: &str, assignment: &str) -> String {
    format!(
        "UPDATE audit_records SET {assignment} WHERE stream_id = {} AND sequence = 5;",
        lit(s)
    )
}

/// The stored body on a real database, verified without a key (the chain alone must tell):
/// bytes changed, the row's own columns changed under an intact body, and rewrites re-hashed
/// over their new text that only the body's checks can find (were one missing, the fault would
/// show one row later, as a broken link, or not at all).
async fn stored_body_faults<S: AuditStore + Clone>(store: &S, db: &Db) {
    type Attack = fn(&str, &[StoredRecord]) -> String;
    let cases: Vec<(&str, Attack, u64, FaultKind)> = vec![
        (
            "body bytes changed",
            |s, _| {
                format!(
                    "UPDATE audit_records SET event = replace(event, 'db:orders/4', 'db:orders/X') \
                     WHERE stream_id = {} AND sequence = 5;",
                    lit(s)
                )
            },
            5,
            FaultKind::Modified,
        ),
        (
            "sequence columns traded under intact bodies",
            |s, _| {
                let w = format!("stream_id = {}", lit(s));
                format!(
                    "UPDATE audit_records SET sequence = 1000000 WHERE {w} AND sequence = 5;
                     UPDATE audit_records SET sequence = 5 WHERE {w} AND sequence = 6;
                     UPDATE audit_records SET sequence = 6 WHERE {w} AND sequence = 1000000;"
                )
            },
            5,
            FaultKind::Modified,
        ),
        (
            "stream column changed under an intact body",
            |s, _| {
                format!(
                    "UPDATE audit_records SET stream_id = 'elsewhere' \
                     WHERE stream_id = {} AND sequence = 5;",
                    lit(s)
                )
            },
            5,
            FaultKind::Missing,
        ),
        (
            "body of another sequence, re-hashed",
            |s, rows| {
                rehashed(
                    s,
                    &rows[5],
                    &rows[5].event.replace("\"sequence\":5,", "\"sequence\":6,"),
                )
            },
            5,
            FaultKind::Modified,
        ),
        (
            "body of another stream, re-hashed",
            |s, rows| {
                let text = rows[5].event.replace(
                    &format!("\"stream_id\":\"{s}\""),
                    "\"stream_id\":\"elsewhere\"",
                );
                rehashed(s, &rows[5], &text)
            },
            5,
            FaultKind::Modified,
        ),
        (
            "non-canonical body, re-hashed",
            |s, rows| rehashed(s, &rows[5], &rows[5].event.replacen(':', ": ", 1)),
            5,
            FaultKind::Modified,
        ),
        (
            "duplicate key, re-hashed",
            |s, rows| {
                rehashed(
                    s,
                    &rows[5],
                    &rows[5].event.replacen('{', "{\"action\":\"x\",", 1),
                )
            },
            5,
            FaultKind::Modified,
        ),
    ];
    // A query column changed under an intact body: the hash chain is whole, but queries on the
    // column would lie. Each is reported at its row.
    let copy_attacks: [(&str, Attack); 8] = [
        ("agent_id", |s, _| {
            update_row_5(s, "agent_id = 'agent:mallory'")
        }),
        ("agent_id", |s, _| update_row_5(s, "agent_id = NULL")),
        ("action", |s, _| update_row_5(s, "action = 'db.drop'")),
        ("resource", |s, _| update_row_5(s, "resource = 'db:other'")),
        ("outcome", |s, _| update_row_5(s, "outcome = 'failure'")),
        ("kind", |s, _| update_row_5(s, "kind = 'completed'")),
        ("correlation_id", |s, _| {
            update_row_5(s, "correlation_id = '00000000-0000-7000-8000-000000000000'")
        }),
        ("event_time", |s, _| {
            update_row_5(s, "event_time = '2020-01-01T00:00:00.000000Z'")
        }),
    ];
    let cases = cases.into_iter().chain(
        copy_attacks
            .into_iter()
            .map(|(column, attack)| (column, attack, 5, FaultKind::Modified)),
    );
    for (i, (name, attack, at, kind)) in cases.enumerate() {
        let stream = format!("body{i}");
        let rows = chain_of(store, &stream, 10).await;
        assert_eq!(rows.len(), 11);
        assert!(
            rows[5].event.contains("\"sequence\":5,"),
            "not a stored body: {}",
            rows[5].event
        );
        let report = verify_stream(store, &stream, &VerifyOptions::default())
            .await
            .unwrap();
        assert!(report.is_ok(), "{name}: false alarm: {:?}", report.fault);
        db.tamper(&attack(&stream, &rows)).await;
        let fault = verify_stream(store, &stream, &VerifyOptions::default())
            .await
            .unwrap()
            .fault
            .unwrap_or_else(|| panic!("{name}: not detected"));
        assert_eq!((fault.sequence, fault.kind), (at, kind), "{name}: {fault}");
    }
}

/// Rows written before stored bodies (the event's JSON) keep verifying, in front of rows
/// written now, and tampering with them is still found.
async fn older_rows_keep_verifying<S: AuditStore + Clone>(store: &S, db: &Db) {
    let stream = "legacy";
    let rows = chain_of(store, stream, 10).await;
    // What the previous version stored: the event's serde_json text, the same hashes.
    let mut sql = String::new();
    for row in &rows[..8] {
        let event = serde_json::to_string(&row.to_record().unwrap().event).unwrap();
        sql += &format!(
            "UPDATE audit_records SET event = {} WHERE stream_id = {} AND sequence = {};",
            lit(&event),
            lit(stream),
            row.sequence
        );
    }
    db.tamper(&sql).await;
    let stored = store.read_raw(stream, None, 100).await.unwrap();
    assert!(
        !stored[3].event.contains("\"sequence\""),
        "not an older row"
    );
    // Appending through a reopened sink continues the chain with stored bodies.
    let sink = ChainedSink::open(store.clone(), SinkConfig::new(stream))
        .await
        .unwrap();
    sink.append(event(99)).await.unwrap();
    let legacy = VerifyOptions {
        legacy_bodies: true,
        ..VerifyOptions::default()
    };
    let report = sink.verify_with(&legacy).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(report.records_checked, 12);
    // Without the legacy option, the first older row is a fault: nothing tells it apart from a
    // body an attacker replaced by an older-format text with the same values.
    let fault = sink.verify().await.unwrap().fault.unwrap();
    assert_eq!((fault.sequence, fault.kind), (0, FaultKind::Modified));

    db.tamper(&format!(
        "UPDATE audit_records SET event = replace(event, 'db:orders/2', 'db:orders/X') \
         WHERE stream_id = {} AND sequence = 3;",
        lit(stream)
    ))
    .await;
    let fault = sink.verify_with(&legacy).await.unwrap().fault.unwrap();
    assert_eq!((fault.sequence, fault.kind), (3, FaultKind::Modified));

    // A query column of an older row is checked against its event too.
    let stream = "legacy-copies";
    let rows = chain_of(store, stream, 4).await;
    let event = serde_json::to_string(&rows[2].to_record().unwrap().event).unwrap();
    db.tamper(&format!(
        "UPDATE audit_records SET event = {} WHERE stream_id = {} AND sequence = 2;",
        lit(&event),
        lit(stream)
    ))
    .await;
    let report = verify_stream(store, stream, &legacy).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    db.tamper(&format!(
        "UPDATE audit_records SET resource = 'db:other' WHERE stream_id = {} AND sequence = 2;",
        lit(stream)
    ))
    .await;
    let fault = verify_stream(store, stream, &legacy)
        .await
        .unwrap()
        .fault
        .unwrap();
    assert_eq!((fault.sequence, fault.kind), (2, FaultKind::Modified));
    assert!(fault.detail.contains("resource column"), "{fault}");
    // Asked to check the chain only, verification does not see it (the chain is intact).
    let chain_only = VerifyOptions {
        check_copies: false,
        ..legacy
    };
    let report = verify_stream(store, stream, &chain_only).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
}

#[tokio::test]
async fn sqlite_stored_bodies_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let db = Db::Sqlite(path);
    stored_body_faults(&store, &db).await;
    older_rows_keep_verifying(&store, &db).await;

    // Values the writers never store, each found at its row: a copy holding a NUL (SQLite
    // text can), read whole; values that are not text, even holding exactly the right bytes
    // (SQL compares a blob unequal to text, so a query on the column would miss the row).
    let odd_values = [
        ("action = action || char(0) || 'x'", "action column"),
        ("agent_id = CAST(agent_id AS BLOB)", "agent_id column"),
        (
            "resource = CAST(CAST(resource AS BLOB) || x'ff' AS TEXT)",
            "resource column",
        ),
        ("hash = CAST(hash AS BLOB)", ""),
        ("event = CAST(event AS BLOB)", ""),
    ];
    for (i, (assignment, named)) in odd_values.into_iter().enumerate() {
        let stream = format!("odd{i}");
        chain_of(&store, &stream, 10).await;
        db.tamper(&update_row_5(&stream, assignment)).await;
        let fault = verify_stream(&store, &stream, &VerifyOptions::default())
            .await
            .unwrap()
            .fault
            .unwrap_or_else(|| panic!("{assignment}: not detected"));
        assert_eq!(
            (fault.sequence, fault.kind),
            (5, FaultKind::Modified),
            "{assignment}: {fault}"
        );
        assert!(fault.detail.contains(named), "{assignment}: {fault}");
    }
}

#[tokio::test]
async fn postgres_stored_bodies_are_checked() {
    let Some(base) = postgres_url("postgres_stored_bodies_are_checked") else {
        return;
    };
    let (url, _) = postgres_schema(&base, "bodies").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    let db = Db::Postgres(url);
    stored_body_faults(&store, &db).await;
    older_rows_keep_verifying(&store, &db).await;
}

/// A fresh signed stream of 1 + `n` records with a checkpoint every 4, closed (so its head is
/// checkpointed); returns the trusted options.
async fn signed_chain_of<S: AuditStore + Clone>(store: &S, stream: &str, n: u64) -> VerifyOptions {
    let signer = Arc::new(SoftwareSigner::generate());
    let options = VerifyOptions::trusting(signer.verifying_key());
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new(stream).with_checkpoints(signer, 4, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    for i in 0..n {
        sink.append(event(i)).await.unwrap();
    }
    sink.close().await.unwrap();
    let report = verify_stream(store, stream, &options).await.unwrap();
    assert!(report.is_ok(), "false alarm: {:?}", report.fault);
    options
}

/// Issue 17's tamperings that passed before the verifier was hardened, each found by
/// `verify_stream` with the trusted key: a checkpoint's head hash, time or key replaced (with
/// the signature left, or re-signed by a key that is not trusted), a checkpoint's time
/// rewritten to the same instant in another form, and a canonical body replaced by an
/// older-format text holding the same values (which hashes the same).
async fn hardened_verifier_faults<S: AuditStore + Clone>(store: &S, db: &Db) {
    let set_cp = |s: &str, assignment: &str| {
        format!(
            "UPDATE audit_checkpoints SET {assignment} WHERE stream_id = {} AND sequence = 8;",
            lit(s)
        )
    };
    type Attack = Box<dyn Fn(&str, &[StoredRecord]) -> String>;
    let cases: Vec<(&str, Attack, &str)> = vec![
        (
            "checkpoint head hash replaced",
            Box::new(move |s, rows: &[StoredRecord]| {
                set_cp(s, &format!("head_hash = {}", lit(&rows[7].hash)))
            }),
            "signature does not verify",
        ),
        (
            "checkpoint time replaced",
            Box::new(move |s, _| set_cp(s, "time = '2020-01-01T00:00:00Z'")),
            "signature does not verify",
        ),
        (
            "checkpoint time rewritten to the same instant",
            Box::new(move |s, _| set_cp(s, "time = replace(time, 'Z', '+00:00')")),
            "canonical form",
        ),
        (
            "checkpoint key replaced",
            Box::new(move |s, _| {
                set_cp(
                    s,
                    &format!("key_id = {}", lit(&SoftwareSigner::generate().key_id())),
                )
            }),
            "not a trusted key",
        ),
        (
            "checkpoint re-signed by another key",
            Box::new(move |s, rows: &[StoredRecord]| {
                let forged = SoftwareSigner::generate()
                    .sign(s, 8, &rows[8].hash)
                    .unwrap();
                set_cp(
                    s,
                    &format!(
                        "key_id = {}, signature = {}",
                        lit(&forged.key_id),
                        lit(&forged.signature)
                    ),
                )
            }),
            "not a trusted key",
        ),
        (
            "body replaced by an older-format text with the same values",
            Box::new(|s, rows: &[StoredRecord]| {
                let event = serde_json::to_string(&rows[5].to_record().unwrap().event).unwrap();
                format!(
                    "UPDATE audit_records SET event = {} WHERE stream_id = {} AND sequence = 5;",
                    lit(&event),
                    lit(s)
                )
            }),
            "older format",
        ),
    ];
    for (i, (name, attack, says)) in cases.iter().enumerate() {
        let stream = format!("hard{i}");
        let options = signed_chain_of(store, &stream, 10).await;
        let rows = store.read_raw(&stream, None, 100).await.unwrap();
        db.tamper(&attack(&stream, &rows)).await;
        let fault = verify_stream(store, &stream, &options)
            .await
            .unwrap()
            .fault
            .unwrap_or_else(|| panic!("{name}: not detected"));
        assert!(fault.detail.contains(says), "{name}: {fault}");
        // The older-format text is what legacy bodies allow: the option really is the switch.
        if name.starts_with("body replaced") {
            let legacy = VerifyOptions {
                legacy_bodies: true,
                ..options.clone()
            };
            let report = verify_stream(store, &stream, &legacy).await.unwrap();
            assert!(
                report.is_ok(),
                "{name} with legacy bodies: {:?}",
                report.fault
            );
        }
    }
}

#[tokio::test]
async fn sqlite_hardened_verifier_finds_issue_17_tamperings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let db = Db::Sqlite(path);
    hardened_verifier_faults(&store, &db).await;

    // The `event_time` copies rewritten in plain RFC 3339 form: the same instants, but text
    // comparisons (sub-second range queries) now answer differently. Only the fixed-width
    // form is the copy of a time.
    // Times whose RFC 3339 text differs from the fixed-width form (trailing zeros dropped).
    let signer = Arc::new(SoftwareSigner::generate());
    let options = VerifyOptions::trusting(signer.verifying_key());
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new("rfc3339-times").with_checkpoints(signer, 4, Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    for i in 0..10 {
        let mut ev = event(i);
        ev.time = time::macros::datetime!(2026-11-26 03:00:00 UTC)
            + time::Duration::milliseconds(100 * i as i64);
        sink.append(ev).await.unwrap();
    }
    sink.close().await.unwrap();
    let report = verify_stream(&store, "rfc3339-times", &options)
        .await
        .unwrap();
    assert!(report.is_ok(), "false alarm: {:?}", report.fault);
    let rows = store.read_raw("rfc3339-times", None, 100).await.unwrap();
    let mut sql = String::new();
    for row in &rows[1..] {
        let record = row.to_record().unwrap();
        let rfc3339 = record
            .event
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        sql += &format!(
            "UPDATE audit_records SET event_time = {} WHERE stream_id = 'rfc3339-times' \
             AND sequence = {};",
            lit(&rfc3339),
            row.sequence
        );
    }
    db.tamper(&sql).await;
    let fault = verify_stream(&store, "rfc3339-times", &options)
        .await
        .unwrap()
        .fault
        .expect("RFC 3339 event_time copies not detected");
    assert_eq!((fault.sequence, fault.kind), (1, FaultKind::Modified));
    assert!(fault.detail.contains("event_time column"), "{fault}");
}

#[tokio::test]
async fn postgres_hardened_verifier_finds_issue_17_tamperings() {
    let Some(base) = postgres_url("postgres_hardened_verifier_finds_issue_17_tamperings") else {
        return;
    };
    let (url, _) = postgres_schema(&base, "hardened").await;
    let store = PostgresStore::connect(&url).await.unwrap();
    hardened_verifier_faults(&store, &Db::Postgres(url)).await;
}
