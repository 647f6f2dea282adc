//! The PostgreSQL sink against the real server started by `scripts/test`
//! (`GATEWAY_TEST_POSTGRES_URL`); each test works in its own schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Flaky, event, postgres_schema, postgres_url, unique};
use gateway_audit::{ChainedSink, PostgresAuditSink, PostgresStore, SinkConfig, SoftwareSigner};
use gateway_core::audit::AuditSink;
use sqlx::Connection;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

async fn store(test: &str) -> Option<(PostgresStore, String, String)> {
    let base = postgres_url(test)?;
    let (url, schema) = postgres_schema(&base, test).await;
    Some((PostgresStore::connect(&url).await.unwrap(), url, schema))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let Some((store, _, _)) = store("pg_conformance").await else {
        return;
    };
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = PostgresAuditSink::open(
        store.clone(),
        SinkConfig::new("gw-1").with_checkpoints(signer, 10, Duration::from_secs(1)),
    )
    .await
    .unwrap();
    gateway_core::conformance::audit::run_all(&sink).await;
    sink.close().await.unwrap();
    let sink = PostgresAuditSink::open(store, SinkConfig::new("gw-1"))
        .await
        .unwrap();
    gateway_core::conformance::audit::run_all(&sink).await;
}

#[tokio::test]
async fn update_delete_truncate_fail_even_for_the_owner() {
    let Some((store, url, _)) = store("pg_append_only").await else {
        return;
    };
    let signer = Arc::new(SoftwareSigner::generate());
    let sink = PostgresAuditSink::open(
        store,
        SinkConfig::new("gw").with_checkpoints(signer, 1, Duration::from_secs(60)),
    )
    .await
    .unwrap();
    sink.append(event(1)).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE audit_records SET action = 'x'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "UPDATE audit_checkpoints SET head_hash = 'x'",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert!(sink.verify().await.unwrap().is_ok());
}

#[tokio::test]
async fn the_writer_role_can_only_select_and_insert() {
    let Some((store, url, _)) = store("pg_role").await else {
        return;
    };
    let role = unique("gw_writer");
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE ROLE \"{role}\" LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    store.grant_writer_role(&role).await.unwrap();

    // The gateway runs as the restricted role: migrations are already applied, appends work.
    let role_url = url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    assert_ne!(role_url, url, "test URL must name the postgres user");
    let restricted = PostgresStore::connect(&role_url).await.unwrap();
    let sink = PostgresAuditSink::open(restricted, SinkConfig::new("gw"))
        .await
        .unwrap();
    sink.append(event(1)).await.unwrap();
    assert!(sink.verify().await.unwrap().is_ok());

    let mut conn = sqlx::PgConnection::connect(&role_url).await.unwrap();
    for sql in [
        "UPDATE audit_records SET action = 'x'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
        "DELETE FROM audit_checkpoints",
        "DROP TRIGGER audit_records_append_only ON audit_records",
        "ALTER TABLE audit_records DISABLE TRIGGER ALL",
        "CREATE TABLE sneaky (x int)",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{sql}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_ten_thousand_records() {
    let Some((store, _, _)) = store("pg_concurrency").await else {
        return;
    };
    let sink = Arc::new(
        PostgresAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap(),
    );
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
    for t in tasks {
        for s in t.await.unwrap() {
            assert!(all.insert(s), "duplicate sequence {s}");
        }
    }
    assert_eq!(all.len(), 10_000);
    assert_eq!((all.first(), all.last()), (Some(&1), Some(&10_000)));
    let report = sink.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.fault);
    assert_eq!(report.records_checked, 10_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_on_one_stream_never_fork_it() {
    let Some((store, _, _)) = store("pg_fork").await else {
        return;
    };
    let a = Arc::new(
        PostgresAuditSink::open(store.clone(), SinkConfig::new("shared"))
            .await
            .unwrap(),
    );
    let b = Arc::new(
        PostgresAuditSink::open(store, SinkConfig::new("shared"))
            .await
            .unwrap(),
    );
    common::races::two_sinks_on_one_stream_never_fork_it(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_stay_contiguous_under_concurrent_appends() {
    let Some((store, _, _)) = store("pg_groups").await else {
        return;
    };
    let sink = Arc::new(
        PostgresAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap(),
    );
    common::groups::groups_stay_contiguous_under_concurrent_appends(sink).await;
}

#[tokio::test]
async fn a_failed_group_stores_nothing() {
    let Some((store, _, _)) = store("pg_group_fail").await else {
        return;
    };
    let sink = ChainedSink::open(Flaky::new(store), SinkConfig::new("gw"))
        .await
        .unwrap();
    common::groups::a_failed_group_stores_nothing(sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsealable_group_fails_alone() {
    let Some((store, _, _)) = store("pg_group_unsealable").await else {
        return;
    };
    let sink = Arc::new(
        PostgresAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap(),
    );
    common::groups::an_unsealable_group_fails_alone(sink).await;
}

#[tokio::test]
async fn a_large_group_is_one_commit() {
    let Some((store, _, _)) = store("pg_group_large").await else {
        return;
    };
    common::groups::a_large_group_is_one_commit(store).await;
}

/// Every batch commits its checkpoint in the same statement (`WITH records AS (INSERT …)`), and
/// two sinks race on one stream: a lost race fails the whole statement, records and checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_checkpointed_batches_never_fork_the_stream() {
    let Some((store, _, _)) = store("pg_fork_cp").await else {
        return;
    };
    let signer = Arc::new(SoftwareSigner::generate());
    let config = SinkConfig::new("shared").with_checkpoints(signer, 1, Duration::from_secs(60));
    let a = Arc::new(
        PostgresAuditSink::open(store.clone(), config.clone())
            .await
            .unwrap(),
    );
    let b = Arc::new(PostgresAuditSink::open(store, config).await.unwrap());
    common::races::racing_checkpointed_batches_never_fork_the_stream(a, b).await;
}

/// Through the gateway, secrets an agent sends (params, intent, resource) and a job prints
/// reach no column of any row the PostgreSQL sink stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_through_the_gateway_reach_no_row() {
    use gateway_core::conformance::redaction::{SECRETS, secrets_reach_no_sink};
    let Some((store, url, _)) = store("pg_redaction").await else {
        return;
    };
    let sink = Arc::new(
        PostgresAuditSink::open(store, SinkConfig::new("gw"))
            .await
            .unwrap(),
    );
    secrets_reach_no_sink(sink.clone()).await;
    assert!(sink.verify().await.unwrap().is_ok());
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT t::text FROM audit_records t")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(rows.len() >= 14, "{} rows", rows.len());
    for row in &rows {
        for secret in SECRETS {
            assert!(!row.contains(secret), "{secret} is stored: {row}");
        }
    }
}
