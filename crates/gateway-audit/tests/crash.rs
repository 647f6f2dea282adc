//! Crash safety: a child process appends from 64 tasks and prints each acknowledged record; it
//! is killed with SIGKILL mid-batch. After a restart the chain verifies and every acknowledged
//! record is present with the acknowledged hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{event, postgres_schema, postgres_url};
use gateway_audit::{AuditStore, ChainedSink, PostgresStore, SinkConfig, SqliteStore};
use gateway_core::audit::AuditSink;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "GATEWAY_AUDIT_CRASH_CHILD";

async fn append_forever<S: AuditStore>(store: S) {
    let sink = Arc::new(
        ChainedSink::open(store, SinkConfig::new("crash"))
            .await
            .unwrap(),
    );
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                for i in 0.. {
                    let r = sink.append(event(t * 1_000_000 + i)).await.unwrap();
                    // Printed only after the durable acknowledgement.
                    println!("ACK {} {}", r.sequence, r.hash);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Not a test on its own: the body of the child process (does nothing unless `CHILD_ENV` is set).
#[test]
fn crash_child() {
    let Ok(target) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        if let Some(url) = target.strip_prefix("postgres:") {
            append_forever(PostgresStore::connect(url).await.unwrap()).await;
        } else {
            let path = target.strip_prefix("sqlite:").unwrap();
            append_forever(SqliteStore::open(path).await.unwrap()).await;
        }
    });
}

/// Runs the child until it has acknowledged `min_acks` records, then kills it with SIGKILL.
fn run_and_kill(target: &str, min_acks: usize) -> BTreeMap<u64, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, target)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut acks = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = BufReader::new(stdout).lines();
    while acks.len() < min_acks && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (seq, hash) = rest.split_once(' ').unwrap();
            acks.insert(seq.parse().unwrap(), hash.to_owned());
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush, mid-batch.
    // Acks printed between our last read and the kill are acknowledged too: collect them.
    for line in lines.map_while(Result::ok) {
        if let Some((seq, hash)) = line.strip_prefix("ACK ").and_then(|r| r.split_once(' '))
            && let Ok(seq) = seq.parse()
        {
            acks.insert(seq, hash.to_owned());
        }
    }
    child.wait().unwrap();
    assert!(
        acks.len() >= min_acks,
        "child acknowledged only {} records",
        acks.len()
    );
    acks
}

async fn check_after_restart<S: AuditStore>(store: S, acks: &BTreeMap<u64, String>) {
    let sink = ChainedSink::open(store, SinkConfig::new("crash"))
        .await
        .unwrap();
    let report = sink.verify().await.unwrap();
    assert!(
        report.is_ok(),
        "chain broken after crash: {:?}",
        report.fault
    );
    let mut stored = BTreeMap::new();
    let mut after = None;
    loop {
        let page = sink.read(after, 5000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.sequence);
        stored.extend(page.into_iter().map(|r| (r.sequence, r.hash)));
    }
    for (seq, hash) in acks {
        assert_eq!(
            stored.get(seq),
            Some(hash),
            "acknowledged record {seq} lost or changed"
        );
    }
    // The restarted writer continues the same chain.
    let next = sink.append(event(0)).await.unwrap();
    assert_eq!(next.sequence, report.head.unwrap().0 + 1);
    assert!(sink.verify().await.unwrap().is_ok());
}

#[test]
fn sqlite_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let target = format!("sqlite:{}", path.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all = BTreeMap::new();
    for round in 0..2 {
        let acks = run_and_kill(&target, 1500);
        all.extend(acks);
        rt.block_on(async {
            let store = SqliteStore::open(&path).await.unwrap();
            check_after_restart(store, &all).await;
        });
        eprintln!(
            "round {round}: {} acknowledged records all present",
            all.len()
        );
    }
}

#[test]
fn postgres_survives_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(base) = postgres_url("postgres_survives_kill_9") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, _) = rt.block_on(postgres_schema(&base, "crash"));
    let acks = run_and_kill(&format!("postgres:{url}"), 1500);
    rt.block_on(async {
        let store = PostgresStore::connect(&url).await.unwrap();
        check_after_restart(store, &acks).await;
    });
}
