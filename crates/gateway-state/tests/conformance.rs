//! Both stores against the state conformance suite, and what the suite cannot see from one
//! store value: two stores on one database (separate pools, and for SQLite separate
//! processes) claim a key once and lose no update; a damaged row is an error naming its key.
//!
//! PostgreSQL cases need `GATEWAY_TEST_POSTGRES_URL` (a superuser URL); each runs in a fresh
//! schema. Unset, they fail under `CI=true` and are skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_core::conformance::state as suite;
use gateway_core::state::{
    ActionKey, ActionRecord, Claim, Phase, StateError, StateStore, StateStoreExt,
};
use gateway_state::{PostgresStateStore, SqliteStateStore};
use sqlx::Connection;
use std::time::Duration;
use time::OffsetDateTime;

const RETENTION: Duration = Duration::from_secs(3600);

/// The superuser URL of the test PostgreSQL cluster. Missing: a failure under `CI=true`,
/// otherwise a skip notice.
fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("GATEWAY_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: GATEWAY_TEST_POSTGRES_URL is not set (CI=true: real PostgreSQL is required; run scripts/test)"
                );
            }
            eprintln!("SKIPPED {test}: GATEWAY_TEST_POSTGRES_URL is not set (run scripts/test)");
            None
        }
    }
}

/// Creates a fresh schema and returns a URL whose connections use it (test isolation).
async fn postgres_schema(base: &str, prefix: &str) -> String {
    let schema = format!(
        "t_{prefix}_{}_{}",
        std::process::id(),
        gateway_core::RequestId::new().as_uuid().simple()
    );
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// A PostgreSQL store in a fresh schema, or `None` when the test is skipped.
async fn postgres_store(test: &str) -> Option<(PostgresStateStore, String)> {
    let base = postgres_url(test)?;
    let url = postgres_schema(&base, "state").await;
    let store = PostgresStateStore::connect(&url).await.unwrap();
    Some((store, url))
}

/// A claim time in whole microseconds, as the suite uses.
fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn fresh_record(case: &str) -> ActionRecord {
    ActionRecord::received(&suite::request(), &suite::agent(case), now())
}

/// Adds one to the counter in the record's outcome.
fn bump(record: &mut ActionRecord) -> Result<(), StateError> {
    let n = record
        .outcome
        .as_ref()
        .and_then(|o| o["n"].as_u64())
        .unwrap_or(0);
    record.outcome = Some(serde_json::json!({"n": n + 1}));
    Ok(())
}

fn counter(record: &ActionRecord) -> Option<u64> {
    record.outcome.as_ref().and_then(|o| o["n"].as_u64())
}

/// Two stores on one database claim one key concurrently (16 claims each): exactly one claim
/// wins in total and every other gets the original back; then 20 concurrent updates through
/// each store all count.
async fn two_stores_claim_once_and_lose_no_update(a: &dyn StateStore, b: &dyn StateStore) {
    let record = fresh_record("two-stores");
    let claims = (0..32).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        let record = record.clone();
        async move { store.claim(&record).await }
    });
    let results = futures::future::join_all(claims).await;
    let won = results
        .iter()
        .filter(|r| matches!(r, Ok(Claim::Claimed)))
        .count();
    assert_eq!(won, 1, "claims that won: {won} of 32 ({results:?})");
    for result in &results {
        match result {
            Ok(Claim::Claimed) => {}
            Ok(Claim::Existing(existing)) => assert_eq!(**existing, record),
            Err(e) => panic!("a concurrent claim failed: {e}"),
        }
    }

    let updates = (0..40).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        store.update(&record.key, &bump)
    });
    for result in futures::future::join_all(updates).await {
        result.expect("update");
    }
    for store in [a, b] {
        let stored = store.get(&record.key).await.unwrap().unwrap();
        assert_eq!(counter(&stored), Some(40), "an update was lost");
    }
}

/// A row whose stored record is damaged makes every operation that reads it fail with
/// [`StateError::Internal`] naming the key (never a panic, never `NotFound`, never a second
/// claim); `corrupt` overwrites the row's `record` column.
async fn damaged_records_are_internal_errors<F, Fut>(store: &dyn StateStore, corrupt: F)
where
    F: Fn(ActionKey, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let assert_names_key = |key: &ActionKey, err: StateError| {
        assert!(matches!(err, StateError::Internal { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(key.agent.as_str()), "{text}");
        assert!(text.contains(&key.id.to_string()), "{text}");
    };
    let record = fresh_record("damaged");
    let key = record.key.clone();
    assert_eq!(store.claim(&record).await.unwrap(), Claim::Claimed);

    corrupt(key.clone(), "{\"agent\": not json".into()).await;
    assert_names_key(&key, store.get(&key).await.expect_err("garbage JSON"));
    assert_names_key(
        &key,
        store.update(&key, &bump).await.expect_err("garbage JSON"),
    );
    assert_names_key(
        &key,
        store
            .advance(&key, Phase::Running, None, RETENTION)
            .await
            .expect_err("garbage JSON"),
    );
    let mut repeat = record.clone();
    repeat.created_at = now();
    assert_names_key(&key, store.claim(&repeat).await.expect_err("garbage JSON"));
    assert_names_key(
        &key,
        store
            .in_phase(Phase::Received, 10_000)
            .await
            .expect_err("garbage JSON"),
    );

    // Valid JSON, but the record of another key: refused as well.
    let other = fresh_record("damaged-other");
    corrupt(key.clone(), serde_json::to_string(&other).unwrap()).await;
    assert_names_key(
        &key,
        store.get(&key).await.expect_err("another key's record"),
    );

    // Restored, it works again.
    corrupt(key.clone(), serde_json::to_string(&record).unwrap()).await;
    assert_eq!(store.get(&key).await.unwrap(), Some(record));
    store.update(&key, &bump).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// SQLite

async fn sqlite_store() -> (SqliteStateStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStateStore::open(dir.path().join("state.db"))
        .await
        .unwrap();
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_passes_the_state_conformance_suite() {
    let (store, _dir) = sqlite_store().await;
    suite::run_all(&store).await;
    suite::run_revocations(&store).await;
    suite::run_locks(&store).await;
    suite::run_slots(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_stores_on_one_file_claim_once_and_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // Opened at once: both create the file and the schema.
    let (a, b) = tokio::join!(SqliteStateStore::open(&path), SqliteStateStore::open(&path));
    let (a, b) = (a.unwrap(), b.unwrap());
    two_stores_claim_once_and_lose_no_update(&a, &b).await;
}

/// What the child processes of `sqlite_two_processes_on_one_file_claim_once_and_lose_no_update`
/// are told, by environment variable.
const CHILD_DB: &str = "GATEWAY_STATE_TEST_CHILD_DB";
const CHILD_RECORD: &str = "GATEWAY_STATE_TEST_CHILD_RECORD";
const CHILD_START_MS: &str = "GATEWAY_STATE_TEST_CHILD_START_MS";
const CHILD_TEST: &str = "sqlite_child_process_claims_and_bumps";

/// Run only as a child process of the test below (it passes without doing anything
/// otherwise): opens the file, waits for the common start time, claims the record 16 times
/// at once and bumps its counter 20 times at once, and reports how many claims won.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_child_process_claims_and_bumps() {
    let Ok(path) = std::env::var(CHILD_DB) else {
        return;
    };
    let record: ActionRecord = serde_json::from_str(&std::env::var(CHILD_RECORD).unwrap()).unwrap();
    let start_ms: u128 = std::env::var(CHILD_START_MS).unwrap().parse().unwrap();
    let store = SqliteStateStore::open(&path).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    if let Some(wait) = start_ms.checked_sub(now_ms) {
        tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap())).await;
    }
    let claims = (0..16).map(|_| store.claim(&record));
    let results = futures::future::join_all(claims).await;
    let mut won = 0;
    for result in results {
        match result.expect("claim") {
            Claim::Claimed => won += 1,
            // The other process may have bumped the counter already: the same claim otherwise.
            Claim::Existing(mut existing) => {
                existing.outcome = None;
                existing.updated_at = record.updated_at;
                assert_eq!(*existing, record);
            }
        }
    }
    let updates = (0..20).map(|_| store.update(&record.key, &bump));
    for result in futures::future::join_all(updates).await {
        result.expect("update");
    }
    // On a line of its own: the harness prints the test name without a newline before it.
    println!("\nCHILD-RESULT claimed={won}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_processes_on_one_file_claim_once_and_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let record = fresh_record("two-processes");
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 1500;
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
                .env(CHILD_DB, &path)
                .env(CHILD_RECORD, serde_json::to_string(&record).unwrap())
                .env(CHILD_START_MS, start_ms.to_string())
                .output()
        })
        .collect();
    let mut won = 0;
    for output in futures::future::join_all(children).await {
        let output = output.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "a child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CHILD-RESULT claimed="))
            .unwrap_or_else(|| panic!("no result from a child (did it run?):\n{stdout}"));
        won += line.trim().parse::<u32>().unwrap();
    }
    assert_eq!(
        won, 1,
        "claims that won across the two processes: {won} of 32"
    );
    let store = SqliteStateStore::open(&path).await.unwrap();
    let stored = store.get(&record.key).await.unwrap().unwrap();
    assert_eq!(
        counter(&stored),
        Some(40),
        "an update was lost across processes"
    );
}

#[tokio::test]
async fn sqlite_a_damaged_record_is_an_internal_error_naming_its_key() {
    let (store, _dir) = sqlite_store().await;
    let pool = store.pool().clone();
    let corrupt = |key: ActionKey, json: String| {
        let pool = pool.clone();
        async move {
            let done = sqlx::query(
                "UPDATE gateway_action_state SET record = ?1 WHERE agent = ?2 AND id = ?3",
            )
            .bind(json)
            .bind(key.agent.as_str())
            .bind(key.id.to_string())
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }
    };
    damaged_records_are_internal_errors(&store, corrupt).await;

    // Not even text: bytes that are not UTF-8, in a column SQLite does not type-check.
    let record = fresh_record("not-text");
    store.claim(&record).await.unwrap();
    sqlx::query("UPDATE gateway_action_state SET record = X'FF00FE' WHERE agent = ?1 AND id = ?2")
        .bind(record.key.agent.as_str())
        .bind(record.key.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get(&record.key).await.expect_err("bytes");
    assert!(matches!(err, StateError::Internal { .. }), "{err}");
    assert!(
        err.to_string().contains(&record.key.id.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn sqlite_columns_follow_the_record_and_state_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteStateStore::open(&path).await.unwrap();
    let record = fresh_record("columns");
    store.claim(&record).await.unwrap();
    let done = store
        .advance(
            &record.key,
            Phase::Failed,
            Some(serde_json::json!({"kind": "denied"})),
            RETENTION,
        )
        .await
        .unwrap();
    let (phase, created_at, expires_at): (String, i64, Option<i64>) = sqlx::query_as(
        "SELECT phase, created_at, expires_at FROM gateway_action_state WHERE agent = ?1 AND id = ?2",
    )
    .bind(record.key.agent.as_str())
    .bind(record.key.id.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(phase, "failed");
    assert_eq!(
        i128::from(created_at),
        record.created_at.unix_timestamp_nanos()
    );
    assert_eq!(
        expires_at.map(i128::from),
        done.expires_at.map(|t| t.unix_timestamp_nanos())
    );
    store.pool().close().await;

    let reopened = SqliteStateStore::open(&path).await.unwrap();
    assert_eq!(reopened.get(&record.key).await.unwrap(), Some(done));
}

#[tokio::test]
async fn sqlite_from_pool_keeps_state_in_another_stores_file() {
    let dir = tempfile::tempdir().unwrap();
    // A pool as the SQLite audit store opens it, on a file that already holds its tables.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("audit.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE audit_records (sequence INTEGER PRIMARY KEY, event TEXT);
                   INSERT INTO audit_records VALUES (0, 'kept');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let store = SqliteStateStore::from_pool(pool.clone());
    let record = fresh_record("from-pool");
    let err = store
        .claim(&record)
        .await
        .expect_err("no table before migrate");
    assert!(err.to_string().contains("migrate()"), "{err}");
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.claim(&record).await.unwrap(), Claim::Claimed);
    assert_eq!(store.get(&record.key).await.unwrap(), Some(record));
    let kept: String = sqlx::query_scalar("SELECT event FROM audit_records")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(kept, "kept");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_state_conformance_suite() {
    let Some((store, _url)) = postgres_store("postgres_passes_the_state_conformance_suite").await
    else {
        return;
    };
    suite::run_all(&store).await;
    suite::run_revocations(&store).await;
    suite::run_locks(&store).await;
    suite::run_slots(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_pools_claim_once_and_lose_no_update() {
    let Some(base) = postgres_url("postgres_two_pools_claim_once_and_lose_no_update") else {
        return;
    };
    let url = postgres_schema(&base, "state").await;
    // Connected at once: both create the schema (under the advisory lock).
    let (a, b) = tokio::join!(
        PostgresStateStore::connect(&url),
        PostgresStateStore::connect(&url)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    two_stores_claim_once_and_lose_no_update(&a, &b).await;
}

#[tokio::test]
async fn postgres_a_damaged_record_is_an_internal_error_naming_its_key() {
    let Some((store, _url)) =
        postgres_store("postgres_a_damaged_record_is_an_internal_error_naming_its_key").await
    else {
        return;
    };
    let pool = store.pool().clone();
    let corrupt = |key: ActionKey, json: String| {
        let pool = pool.clone();
        async move {
            let done = sqlx::query(
                "UPDATE gateway_action_state SET record = $1 WHERE agent = $2 AND id = $3::uuid",
            )
            .bind(json)
            .bind(key.agent.as_str())
            .bind(key.id.to_string())
            .execute(&pool)
            .await
            .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }
    };
    damaged_records_are_internal_errors(&store, corrupt).await;
}

#[tokio::test]
async fn postgres_columns_follow_the_record() {
    let Some((store, _url)) = postgres_store("postgres_columns_follow_the_record").await else {
        return;
    };
    let record = fresh_record("columns");
    store.claim(&record).await.unwrap();
    let done = store
        .advance(
            &record.key,
            Phase::Failed,
            Some(serde_json::json!({"kind": "denied"})),
            RETENTION,
        )
        .await
        .unwrap();
    let (phase, created_at, expires_at): (String, i64, Option<i64>) = sqlx::query_as(
        "SELECT phase, created_at, expires_at FROM gateway_action_state
         WHERE agent = $1 AND id = $2::uuid",
    )
    .bind(record.key.agent.as_str())
    .bind(record.key.id.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(phase, "failed");
    assert_eq!(
        i128::from(created_at),
        record.created_at.unix_timestamp_nanos()
    );
    assert_eq!(
        expires_at.map(i128::from),
        done.expires_at.map(|t| t.unix_timestamp_nanos())
    );
    // Nanoseconds are kept (the retention's end is computed from a nanosecond clock).
    assert_eq!(store.get(&record.key).await.unwrap(), Some(done));
}
