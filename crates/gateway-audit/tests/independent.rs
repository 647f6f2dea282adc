//! `tools/audit_verify/verify.py`, written from `docs/audit-format.md` alone, passes on a real
//! log and fails on each tampering, as `gateway-audit verify --witness` does (same log, same
//! trusted key, same witness).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, event, lit, postgres_schema, postgres_url};
use gateway_audit::AuditStore;
use gateway_audit::{
    ChainedSink, CheckpointSigner, CheckpointWitness, FileWitness, PostgresStore, SinkConfig,
    SoftwareSigner, SqliteStore,
};
use gateway_core::audit::AuditSink;
use gateway_core::audit::chain::seal;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The interpreter: the virtual environment `scripts/services/oauth_as.sh` installs (it pins
/// `cryptography`), else the system's `python3`.
fn python() -> String {
    std::env::var("GATEWAY_TEST_OAUTH_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn python_ok() -> bool {
    let ok = Command::new(python())
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 with cryptography needed"
        );
        eprintln!("skipped: python3 with cryptography not available");
    }
    ok
}

fn run(cmd: &mut Command) -> (Option<i32>, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Both verifiers on the log at `db`: (ours, theirs).
fn both(
    url: &str,
    key: &Path,
    witness: &Path,
    work: &Path,
) -> ((Option<i32>, String), (Option<i32>, String)) {
    both_trusting(url, &[key], witness, work)
}

/// Both verifiers, trusting every key in `keys` (a rotation needs the old and the new one).
fn both_trusting(
    url: &str,
    keys: &[&Path],
    witness: &Path,
    work: &Path,
) -> ((Option<i32>, String), (Option<i32>, String)) {
    let bin = env!("CARGO_BIN_EXE_gateway-audit");
    let pubkeys: Vec<_> = keys
        .iter()
        .flat_map(|k| [Path::new("--pubkey"), k])
        .collect();
    let ours = run(Command::new(bin)
        .args(["verify", "--db", url, "--expect-stream", "gw"])
        .args(&pubkeys)
        .arg("--witness")
        .arg(witness));
    let export = |extra: &[&str]| {
        let out = Command::new(bin)
            .args(["export", "--db", url, "--jsonl"])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    std::fs::write(work.join("r.jsonl"), export(&[])).unwrap();
    std::fs::write(work.join("c.jsonl"), export(&["--checkpoints"])).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tools/audit_verify/verify.py"
    );
    let theirs = run(Command::new(python())
        .arg(script)
        .arg("--records")
        .arg(work.join("r.jsonl"))
        .arg("--checkpoints")
        .arg(work.join("c.jsonl"))
        .args(&pubkeys)
        .args(["--expect-stream", "gw"])
        .arg("--witness")
        .arg(witness.join("checkpoints.jsonl")));
    (ours, theirs)
}

type Attack = Box<dyn Fn(&[gateway_core::AuditRecord], &str) -> String>;

#[tokio::test]
async fn sqlite_independent_verifier_agrees_on_every_tampering() {
    if !python_ok() {
        return;
    }
    every_tampering(None).await;
}

#[tokio::test]
async fn postgres_independent_verifier_agrees_on_every_tampering() {
    if !python_ok() {
        return;
    }
    let Some(base) = postgres_url("postgres_independent_verifier_agrees_on_every_tampering") else {
        return;
    };
    every_tampering(Some(base)).await;
}

/// A fresh log of ten witnessed records: its URL for the tools, the way to tamper with it
/// and its rows. `postgres`: the base URL of the test cluster (each log in its own schema).
async fn fresh_log(
    postgres: Option<&str>,
    dir: &Path,
    signer: &Arc<SoftwareSigner>,
    witness: Arc<dyn CheckpointWitness>,
) -> (String, Db, Vec<gateway_core::AuditRecord>) {
    match postgres {
        None => {
            let path = dir.join("audit.db");
            let store = SqliteStore::open(&path).await.unwrap();
            let rows = fill(store, signer, witness).await;
            (
                format!("sqlite://{}", path.display()),
                Db::Sqlite(path),
                rows,
            )
        }
        Some(base) => {
            let (url, _) = postgres_schema(base, "independent").await;
            let store = PostgresStore::connect(&url).await.unwrap();
            let rows = fill(store, signer, witness).await;
            (url.clone(), Db::Postgres(url), rows)
        }
    }
}

async fn fill<S: AuditStore + Clone>(
    store: S,
    signer: &Arc<SoftwareSigner>,
    witness: Arc<dyn CheckpointWitness>,
) -> Vec<gateway_core::AuditRecord> {
    let sink = ChainedSink::open(
        store.clone(),
        SinkConfig::new("gw")
            .with_checkpoints(signer.clone(), 3, Duration::from_secs(3600))
            .with_witnesses(vec![witness], 1),
    )
    .await
    .unwrap();
    for n in 0..10 {
        let mut ev = event(n);
        ev.details
            .insert("ratio".into(), serde_json::json!(n as f64 / 7.0));
        ev.details
            .insert("big".into(), serde_json::json!(1e22 * n as f64));
        if n == 3 {
            // The JCS edge cases of docs/audit-format.md's `edge_event`, in a real log.
            let edge = serde_json::json!({
                "int": 9_007_199_254_740_993_u64, "e21": 1e21, "tiny": 1e-7, "negzero": -0.0,
                "\u{fb00}": 1, "\u{1f600}": 2, "\u{e9}": 3, "esc": "\u{7}\"\\/",
            });
            ev.details.insert("edge".into(), edge);
        }
        sink.append(ev).await.unwrap();
    }
    sink.close().await.unwrap();
    store
        .read_raw("gw", None, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.to_record().unwrap())
        .collect()
}

async fn every_tampering(postgres: Option<String>) {
    let keys = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let secret = signer.secret_hex();
    let key = keys.path().join("key.pub");
    std::fs::write(&key, signer.key_id()).unwrap();
    let resign = move |rows: &[gateway_core::AuditRecord], _: &str| {
        let forger = SoftwareSigner::from_hex(&secret).unwrap();
        let mut sql = "DELETE FROM audit_checkpoints;".to_owned();
        let mut prev = rows[0].hash.clone();
        for r in &rows[1..] {
            let mut ev = r.event.clone();
            ev.resource.push_str("-forged");
            let f = seal("gw", r.sequence, &prev, ev).unwrap();
            let body = gateway_audit::SealedRecord::new(f.clone()).unwrap().body;
            sql += &format!(
                "UPDATE audit_records SET event = {}, prev_hash = {}, hash = {}, resource = {} WHERE sequence = {};",
                lit(&body),
                lit(&f.prev_hash),
                lit(&f.hash),
                lit(&f.event.resource),
                r.sequence
            );
            if r.sequence % 3 == 0 || r.sequence == rows.len() as u64 - 1 {
                let cp = forger.sign("gw", r.sequence, &f.hash).unwrap();
                let time = serde_json::to_value(&cp).unwrap()["time"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                sql += &format!(
                    "INSERT INTO audit_checkpoints VALUES ('gw', {}, {}, {}, {}, {});",
                    cp.sequence,
                    lit(&cp.head_hash),
                    lit(&time),
                    lit(&cp.key_id),
                    lit(&cp.signature)
                );
            }
            prev = f.hash;
        }
        sql
    };
    let attacks: Vec<(&str, Attack)> = vec![
        (
            "modify",
            Box::new(|_, _| {
                "UPDATE audit_records SET event = replace(event, 'db:orders/4', 'db:orders/X'), resource = 'db:orders/X' WHERE sequence = 5;".into()
            }),
        ),
        (
            "delete",
            Box::new(|_, _| "DELETE FROM audit_records WHERE sequence = 4;".into()),
        ),
        (
            "insert",
            Box::new(|rows, _| {
                // A correctly hashed record slipped in after record 4; the rest shift up.
                let forged = seal("gw", 5, &rows[4].hash, rows[2].event.clone()).unwrap();
                let body = gateway_audit::SealedRecord::new(forged.clone())
                    .unwrap()
                    .body;
                format!(
                    "UPDATE audit_records SET sequence = sequence + 1000000 WHERE sequence >= 5;
                     UPDATE audit_records SET sequence = sequence - 999999 WHERE sequence >= 1000000;
                     INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event, event_time, correlation_id, kind, agent_id, action, resource, outcome) VALUES ('gw', 5, {}, {}, {}, '2026-01-01T00:00:00.000000Z', 'x', 'requested', NULL, 'a', 'r', NULL);",
                    lit(&forged.prev_hash),
                    lit(&forged.hash),
                    lit(&body)
                )
            }),
        ),
        (
            "swap",
            Box::new(|rows, _| {
                let (a, b) = (&rows[3], &rows[4]);
                let q = |r: &gateway_core::AuditRecord, at: u64| {
                    format!(
                        "UPDATE audit_records SET event = {}, prev_hash = {}, hash = {} WHERE sequence = {at};",
                        lit(&gateway_audit::SealedRecord::new(r.clone()).unwrap().body),
                        lit(&r.prev_hash),
                        lit(&r.hash)
                    )
                };
                q(b, 3) + &q(a, 4)
            }),
        ),
        (
            "truncate tail + its checkpoints",
            Box::new(|_, _| {
                "DELETE FROM audit_records WHERE sequence > 5; DELETE FROM audit_checkpoints WHERE sequence > 5;".into()
            }),
        ),
        (
            "delete all checkpoints",
            Box::new(|_, _| "DELETE FROM audit_checkpoints;".into()),
        ),
        ("re-sign with the found key", Box::new(resign)),
        (
            "replace the key",
            Box::new(|_, _| {
                let other = SoftwareSigner::generate();
                format!(
                    "UPDATE audit_checkpoints SET key_id = {};",
                    lit(&other.key_id())
                )
            }),
        ),
        (
            "forged second stream",
            Box::new(|rows, _| {
                let g = gateway_core::audit::chain::genesis("gw-2").unwrap();
                let r = seal("gw-2", 1, &g.hash, rows[2].event.clone()).unwrap();
                let mut sql = String::new();
                for rec in [g, r] {
                    let body = gateway_audit::SealedRecord::new(rec.clone()).unwrap().body;
                    sql += &format!(
                        "INSERT INTO audit_records (stream_id, sequence, prev_hash, hash, event, event_time, correlation_id, kind, agent_id, action, resource, outcome) VALUES ('gw-2', {}, {}, {}, {}, '2026-01-01T00:00:00.000000Z', 'x', 'requested', NULL, 'a', 'r', NULL);",
                        rec.sequence,
                        lit(&rec.prev_hash),
                        lit(&rec.hash),
                        lit(&body)
                    );
                }
                sql
            }),
        ),
    ];
    let mut table =
        String::from("| tampering | gateway-audit verify | tools/audit_verify |\n|---|---|---|\n");
    for (name, attack) in &attacks {
        let dir = tempfile::tempdir().unwrap();
        let wdir = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let witness: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(wdir.path()).unwrap());
        let (url, db, rows) = fresh_log(postgres.as_deref(), dir.path(), &signer, witness).await;
        let ((o, ot), (t, tt)) = both(&url, &key, wdir.path(), work.path());
        assert_eq!(
            (o, t),
            (Some(0), Some(0)),
            "{name}: false alarm:\n{ot}\n{tt}"
        );
        db.tamper(&attack(&rows, "gw")).await;
        let ((o, ot), (t, tt)) = both(&url, &key, wdir.path(), work.path());
        assert_eq!(
            o,
            Some(1),
            "{name}: gateway-audit verify did not detect it:\n{ot}"
        );
        assert_eq!(
            t,
            Some(1),
            "{name}: the independent verifier did not detect it:\n{tt}"
        );
        let first = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("FAILED"))
                .unwrap_or("")
                .to_owned()
        };
        table += &format!("| {name} | {} | {} |\n", first(&ot), first(&tt));
    }
    let store = if postgres.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    eprintln!("{store}:\n{table}");
}

/// A key rotation: both verifiers accept the announced one (trusting both keys) and report
/// a change of key that no `key_rotated` record announces.
#[tokio::test]
async fn independent_verifier_follows_a_key_rotation() {
    if !python_ok() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wdir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (old, new) = (SoftwareSigner::generate(), SoftwareSigner::generate());
    let (old_pub, new_pub) = (keys.path().join("old.pub"), keys.path().join("new.pub"));
    std::fs::write(&old_pub, old.key_id()).unwrap();
    std::fs::write(&new_pub, new.key_id()).unwrap();
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let old_secret = old.secret_hex();
    for (signer, range) in [(old, 0..5), (new, 5..9)] {
        let witness: Arc<dyn CheckpointWitness> = Arc::new(FileWitness::open(wdir.path()).unwrap());
        let sink = ChainedSink::open(
            store.clone(),
            SinkConfig::new("gw")
                .with_checkpoints(Arc::new(signer), 3, Duration::from_secs(3600))
                .with_witnesses(vec![witness], 1),
        )
        .await
        .unwrap();
        for n in range {
            sink.append(event(n)).await.unwrap();
        }
        sink.close().await.unwrap();
    }
    let trusted = [old_pub.as_path(), new_pub.as_path()];
    let url = format!("sqlite://{}", path.display());
    let ((o, ot), (t, tt)) = both_trusting(&url, &trusted, wdir.path(), work.path());
    assert_eq!((o, t), (Some(0), Some(0)), "false alarm:\n{ot}\n{tt}");
    assert!(ot.contains("rotated 1 time"), "{ot}");

    // Back to the old key without an announcement: a record and its checkpoint written
    // around the sink, by someone holding the old (still trusted) key.
    let (sequence, hash) = store.head("gw").await.unwrap().unwrap();
    let record = seal("gw", sequence + 1, &hash, event(99)).unwrap();
    let cp = SoftwareSigner::from_hex(&old_secret)
        .unwrap()
        .sign("gw", sequence + 1, &record.hash)
        .unwrap();
    store
        .append_batch(
            &[gateway_audit::SealedRecord::new(record).unwrap()],
            Some(&cp),
        )
        .await
        .unwrap();
    let ((o, ot), (t, tt)) = both_trusting(&url, &trusted, wdir.path(), work.path());
    assert_eq!(o, Some(1), "gateway-audit verify missed it:\n{ot}");
    assert!(ot.contains("without a key_rotated record"), "{ot}");
    assert_eq!(t, Some(1), "the independent verifier missed it:\n{tt}");
    assert!(tt.contains("without a key_rotated record"), "{tt}");
}
