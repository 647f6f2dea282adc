//! Durable audit appends per second (SQLite and PostgreSQL, 1 and 64 concurrent writers; and
//! 64 writers each appending one action's trail of 4 events as a group with `append_all`) and
//! verification records per second (full, the default, which also checks each row's query
//! columns against its event; and `-chain-only`), each against a baseline measured in the same
//! run:
//! appends against the in-memory `MemoryAuditSink` (hash chain, no storage), verification
//! against `ChainVerifier` over records already in memory (re-encoding and hashing, no database
//! reads).
//!
//! `cargo bench --bench audit` (PostgreSQL groups need `GATEWAY_TEST_POSTGRES_URL`, e.g. from
//! `source scripts/lib.sh; source scripts/services/postgres.sh; postgres_start`; they are
//! skipped without it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gateway_audit::{
    AuditStore, ChainedSink, PostgresStore, SinkConfig, SqliteStore, VerifyOptions, verify_stream,
};
use gateway_core::audit::chain::ChainVerifier;
use gateway_core::testing::MemoryAuditSink;
use gateway_core::{AgentId, AuditEvent, AuditEventKind, AuditSink, EventOutcome, RequestId};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn event(n: u64) -> AuditEvent {
    let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Decided);
    ev.agent_id = Some(AgentId::new("agent:bench").unwrap());
    ev.action = "db.query".into();
    ev.resource = format!("db:orders/{n}");
    ev.outcome = Some(EventOutcome::Success);
    ev.origin = Some("10.0.0.1".into());
    ev.details.insert("n".into(), serde_json::json!(n));
    ev.details
        .insert("duration_ms".into(), serde_json::json!(12.5));
    ev
}

/// Appends `total` events from `writers` concurrent tasks; returns the elapsed time.
async fn append_concurrently(sink: Arc<dyn AuditSink>, writers: u64, total: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let sink = Arc::clone(&sink);
            let n = total / writers + u64::from(w < total % writers);
            tokio::spawn(async move {
                for i in 0..n {
                    sink.append(event(w * 1_000_000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

/// Appends `total` events from `writers` concurrent tasks, each in groups of `group` events
/// (`append_all`); returns the elapsed time.
async fn append_groups(sink: Arc<dyn AuditSink>, writers: u64, group: u64, total: u64) -> Duration {
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let sink = Arc::clone(&sink);
            let groups = (total / writers / group).max(1);
            tokio::spawn(async move {
                for g in 0..groups {
                    let events = (0..group).map(|i| event(w * 1_000_000 + g * group + i));
                    sink.append_all(events.collect()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start.elapsed()
}

fn stream_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sinks: Vec<(&str, Arc<dyn AuditSink>)> = vec![(
        "memory-baseline",
        Arc::new(MemoryAuditSink::new()) as Arc<dyn AuditSink>,
    )];
    let sqlite = rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("bench.db"))
            .await
            .unwrap();
        ChainedSink::open(store, SinkConfig::new("bench"))
            .await
            .unwrap()
    });
    sinks.push(("sqlite", Arc::new(sqlite)));
    match std::env::var("GATEWAY_TEST_POSTGRES_URL") {
        Ok(url) => {
            let pg = rt.block_on(async {
                let store = PostgresStore::connect(&url).await.unwrap();
                ChainedSink::open(store, SinkConfig::new(stream_name("bench")))
                    .await
                    .unwrap()
            });
            sinks.push(("postgres", Arc::new(pg)));
        }
        Err(_) => eprintln!("GATEWAY_TEST_POSTGRES_URL not set: skipping the PostgreSQL appends"),
    }

    let mut group = c.benchmark_group("audit_append");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for (name, sink) in &sinks {
        for writers in [1u64, 64] {
            group.bench_with_input(BenchmarkId::new(*name, writers), &writers, |b, &writers| {
                b.to_async(&rt).iter_custom(|iters| {
                    append_concurrently(Arc::clone(sink), writers, iters.max(writers))
                });
            });
        }
    }
    group.finish();

    // One action's trail (4 events) per `append_all`, from 64 writers: records per second.
    let mut group = c.benchmark_group("audit_append_all");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));
    for (name, sink) in &sinks {
        group.bench_function(BenchmarkId::new(*name, "64x4"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let total = iters.max(64 * 4);
                async move {
                    let elapsed = append_groups(Arc::clone(sink), 64, 4, total).await;
                    // Whole groups were appended: scale to the records asked for.
                    let done = 64 * 4 * (total / 64 / 4).max(1);
                    elapsed.mul_f64(total as f64 / done as f64)
                }
            });
        });
    }
    group.finish();
}

const VERIFY_RECORDS: u64 = 50_000;

async fn filled<S: AuditStore + Clone>(store: S, stream: &str) -> S {
    let sink = ChainedSink::open(store.clone(), SinkConfig::new(stream))
        .await
        .unwrap();
    append_concurrently(Arc::new(sink), 64, VERIFY_RECORDS).await;
    store
}

fn verification(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = rt.block_on(async {
        filled(
            SqliteStore::open(dir.path().join("verify.db"))
                .await
                .unwrap(),
            "v",
        )
        .await
    });
    let records: Vec<_> = rt.block_on(async {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = sqlite.read_raw("v", after, 10_000).await.unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.sequence as u64);
            out.extend(page.iter().map(|r| r.to_record().unwrap()));
        }
        out
    });
    let pg = std::env::var("GATEWAY_TEST_POSTGRES_URL").ok().map(|url| {
        let stream = stream_name("verify");
        let store = rt
            .block_on(async { filled(PostgresStore::connect(&url).await.unwrap(), &stream).await });
        (store, stream)
    });

    let options = VerifyOptions::default();
    let mut group = c.benchmark_group("audit_verify");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("in-memory-baseline", |b| {
        b.iter(|| {
            let mut v = ChainVerifier::new("v");
            for r in &records {
                v.push(r).unwrap();
            }
            assert!(v.finish().is_ok());
        })
    });
    // Full verification (the default: the chain, checkpoints and each row's query columns),
    // and the chain and checkpoints only.
    let chain_only = VerifyOptions {
        check_copies: false,
        ..VerifyOptions::default()
    };
    for (suffix, options) in [("", &options), ("-chain-only", &chain_only)] {
        group.bench_function(format!("sqlite{suffix}"), |b| {
            b.to_async(&rt).iter(|| async {
                assert!(verify_stream(&sqlite, "v", options).await.unwrap().is_ok());
            })
        });
        if let Some((store, stream)) = &pg {
            group.bench_function(format!("postgres{suffix}"), |b| {
                b.to_async(&rt).iter(|| async {
                    assert!(verify_stream(store, stream, options).await.unwrap().is_ok());
                })
            });
        }
    }
    group.finish();
}

/// The cost of witnessed checkpoints by interval (issue 17, item 2): SQLite appends at 1 and 64
/// writers with a checkpoint signed every N records and sent to a file witness (fsynced), against
/// the same store without checkpoints, in the same run. The default interval
/// (`EmbeddedOptions::checkpoint_every_records`) is chosen from these numbers.
fn checkpoint_intervals(c: &mut Criterion) {
    use gateway_audit::{CheckpointWitness, FileWitness, SoftwareSigner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let signer = Arc::new(SoftwareSigner::generate());
    let mut sinks: Vec<(String, Arc<dyn AuditSink>)> = Vec::new();
    for every in [0u64, 16, 64, 256, 1024] {
        let sink = rt.block_on(async {
            let store = SqliteStore::open(dir.path().join(format!("cp{every}.db")))
                .await
                .unwrap();
            let mut config = SinkConfig::new("bench");
            if every > 0 {
                let witness: Arc<dyn CheckpointWitness> =
                    Arc::new(FileWitness::open(dir.path().join(format!("w{every}"))).unwrap());
                config = config
                    .with_checkpoints(signer.clone(), every, Duration::from_secs(5))
                    .with_witnesses(vec![witness], 1);
            }
            ChainedSink::open(store, config).await.unwrap()
        });
        let name = if every == 0 {
            "sqlite-no-checkpoints".to_owned()
        } else {
            format!("sqlite-witnessed-every-{every}")
        };
        sinks.push((name, Arc::new(sink)));
    }
    // The default interval with the witness in a PostgreSQL database instead of a file.
    if let Ok(url) = std::env::var("GATEWAY_TEST_POSTGRES_URL") {
        let sink = rt.block_on(async {
            use sqlx::Connection as _;
            let schema = format!("bench_witness_{}", rand_suffix());
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&format!(
                "CREATE SCHEMA {schema}; SET search_path = {schema}; {}",
                gateway_audit::PostgresWitness::SCHEMA
            ))
            .execute(&mut conn)
            .await
            .unwrap();
            let sep = if url.contains('?') { '&' } else { '?' };
            let witness_url = format!("{url}{sep}options=-c%20search_path%3D{schema}");
            let witness: Arc<dyn CheckpointWitness> = Arc::new(
                gateway_audit::PostgresWitness::connect(&witness_url)
                    .await
                    .unwrap(),
            );
            let store = SqliteStore::open(dir.path().join("cp-pg.db"))
                .await
                .unwrap();
            let config = SinkConfig::new("bench")
                .with_checkpoints(signer.clone(), 64, Duration::from_secs(5))
                .with_witnesses(vec![witness], 1);
            ChainedSink::open(store, config).await.unwrap()
        });
        sinks.push(("sqlite-pg-witnessed-every-64".into(), Arc::new(sink)));
    }
    appends_at_1_and_64_writers(c, &rt, "audit_checkpoint_interval", &sinks);
}

/// The cost of where the checkpoint key lives (issue 17, item 3): SQLite appends at 1 and 64
/// writers with a checkpoint every 64 records (the default) and every record (the signature's
/// whole cost on every append), signed by a key in memory and by a key in a PKCS#11 token
/// (SoftHSM2 from `GATEWAY_TEST_PKCS11_*`, as `scripts/services/softhsm.sh` sets them), against
/// the same store without checkpoints, in the same run.
fn checkpoint_signers(c: &mut Criterion) {
    use gateway_audit::{CheckpointSigner, Pkcs11Config, Pkcs11Signer, SoftwareSigner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut signers: Vec<(&str, Arc<dyn CheckpointSigner>)> =
        vec![("memory", Arc::new(SoftwareSigner::generate()))];
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    match (
        var("GATEWAY_TEST_PKCS11_MODULE"),
        var("GATEWAY_TEST_PKCS11_TOKEN"),
        var("GATEWAY_TEST_PKCS11_PIN"),
    ) {
        (Some(module), Some(token), Some(pin)) => {
            let label = format!("bench-{}", rand_suffix());
            let config = Pkcs11Config::new(module, token, label, pin);
            signers.push(("pkcs11", Arc::new(Pkcs11Signer::generate(&config).unwrap())));
        }
        _ => eprintln!("audit_checkpoint_signer: no GATEWAY_TEST_PKCS11_* token; memory only"),
    }
    let mut sinks: Vec<(String, Arc<dyn AuditSink>)> = Vec::new();
    let open = |name: &str, checkpoints: Option<(Arc<dyn CheckpointSigner>, u64)>| {
        rt.block_on(async {
            let store = SqliteStore::open(dir.path().join(format!("{name}.db")))
                .await
                .unwrap();
            let mut config = SinkConfig::new("bench");
            if let Some((signer, every)) = checkpoints {
                config = config.with_checkpoints(signer, every, Duration::from_secs(5));
            }
            Arc::new(ChainedSink::open(store, config).await.unwrap()) as Arc<dyn AuditSink>
        })
    };
    sinks.push(("sqlite-no-checkpoints".into(), open("none", None)));
    for (signer_name, signer) in &signers {
        for every in [64u64, 1] {
            let name = format!("sqlite-{signer_name}-every-{every}");
            sinks.push((name.clone(), open(&name, Some((signer.clone(), every)))));
        }
    }
    appends_at_1_and_64_writers(c, &rt, "audit_checkpoint_signer", &sinks);
}

/// Benchmarks each sink's appends at 1 and 64 concurrent writers, one group per call.
fn appends_at_1_and_64_writers(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group_name: &str,
    sinks: &[(String, Arc<dyn AuditSink>)],
) {
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(1));
    for (name, sink) in sinks {
        for writers in [1u64, 64] {
            group.bench_with_input(BenchmarkId::new(name, writers), &writers, |b, &writers| {
                b.to_async(rt).iter_custom(|iters| {
                    append_concurrently(Arc::clone(sink), writers, iters.max(writers))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    appends,
    verification,
    checkpoint_intervals,
    checkpoint_signers
);
criterion_main!(benches);
