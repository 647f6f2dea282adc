//! Helpers shared by the integration tests: real databases, events, and tampering the way a
//! privileged attacker would (direct SQL with the append-only triggers bypassed).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod groups;
pub mod races;

use gateway_core::audit::{AuditEvent, AuditEventKind, EventOutcome};
use gateway_core::ids::{AgentId, RequestId};
use sqlx::Connection;
use std::path::PathBuf;

/// The superuser URL of the test PostgreSQL cluster, from `scripts/test`. Missing: a failure
/// under `CI=true`, otherwise a skip notice.
pub fn postgres_url(test: &str) -> Option<String> {
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

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    )
}

/// Creates a fresh schema and returns a URL whose connections use it (test isolation).
pub async fn postgres_schema(base: &str, prefix: &str) -> (String, String) {
    let schema = unique(&format!("t_{prefix}"));
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

pub fn event(n: u64) -> AuditEvent {
    let mut ev = AuditEvent::new(RequestId::new(), 1, AuditEventKind::Requested);
    ev.agent_id = Some(AgentId::new("agent:test").unwrap());
    ev.action = "db.query".into();
    ev.resource = format!("db:orders/{n}");
    ev.outcome = Some(EventOutcome::Success);
    ev.origin = Some("10.0.0.1".into());
    ev.details.insert("n".into(), serde_json::json!(n));
    ev
}

/// Where a chain lives, for tampering with it directly.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

/// An SQL string literal (test data only).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Db {
    /// Runs `sql` as a privileged attacker: triggers dropped (SQLite) or bypassed with
    /// `session_replication_role = replica` (PostgreSQL superuser).
    pub async fn tamper(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::raw_sql(
                    "DROP TRIGGER IF EXISTS audit_records_no_update;
                     DROP TRIGGER IF EXISTS audit_records_no_delete;
                     DROP TRIGGER IF EXISTS audit_checkpoints_no_update;
                     DROP TRIGGER IF EXISTS audit_checkpoints_no_delete;",
                )
                .execute(&mut conn)
                .await
                .unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
            }
            Db::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(&format!("SET session_replication_role = replica; {sql}"))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
    }
}

/// A store whose commits fail on demand (`fail_next` commits fail), counting the commits that
/// reach it: to test that failures are all-or-nothing and that the writer survives them.
pub struct Flaky<S> {
    pub inner: S,
    pub fail_next: std::sync::atomic::AtomicUsize,
    pub commits: std::sync::atomic::AtomicUsize,
}

impl<S> Flaky<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            fail_next: Default::default(),
            commits: Default::default(),
        }
    }
}

#[async_trait::async_trait]
impl<S: gateway_audit::AuditStore> gateway_audit::AuditStore for Flaky<S> {
    async fn head(
        &self,
        s: &str,
    ) -> Result<Option<(u64, String)>, gateway_core::audit::AuditError> {
        self.inner.head(s).await
    }
    async fn append_batch(
        &self,
        records: &[gateway_audit::SealedRecord],
        cp: Option<&gateway_audit::Checkpoint>,
    ) -> Result<(), gateway_core::audit::AuditError> {
        use std::sync::atomic::Ordering;
        self.commits.fetch_add(1, Ordering::SeqCst);
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(gateway_core::audit::AuditError::unavailable_msg(
                "injected commit failure",
            ));
        }
        self.inner.append_batch(records, cp).await
    }
    async fn read_raw(
        &self,
        s: &str,
        a: Option<u64>,
        l: usize,
    ) -> Result<Vec<gateway_audit::StoredRecord>, gateway_core::audit::AuditError> {
        self.inner.read_raw(s, a, l).await
    }
    async fn read_checkpoints(
        &self,
        s: &str,
        a: Option<u64>,
        l: usize,
    ) -> Result<Vec<gateway_audit::StoredCheckpoint>, gateway_core::audit::AuditError> {
        self.inner.read_checkpoints(s, a, l).await
    }
    async fn streams(&self) -> Result<Vec<String>, gateway_core::audit::AuditError> {
        self.inner.streams().await
    }
}
