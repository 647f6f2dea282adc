//! The real infrastructure actions on the real services `scripts/test` starts: `db.query`
//! runs the host's `psql` in the local sandbox with a role the [`PostgresBroker`] created for
//! the one request, reaching the server only through its Unix socket.
//!
//! Needs `GATEWAY_TEST_POSTGRES_URL` (a superuser URL) and `GATEWAY_TEST_POSTGRES_SOCKET_DIR`
//! (the server's socket directory, where passwords are checked); skipped without them, except
//! under `CI=true`, where they are required.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use agent_gateway::core::runner::ReadOnlyMount;
use agent_gateway::core::{
    AccessBroker, AgentId, CancellationToken, Grant, GrantRequest, IsolationLevel, JobOutcome,
    JobSpec, RequestId, Runner,
};
use agent_gateway::postgres_broker::PostgresBroker;
use agent_gateway::runners::LocalRunner;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// The real db.query job (also the catalog's).
const DB_QUERY: &str = include_str!("../catalog/jobs/db-query.sh");

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn required(var: &str, test: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None if ci() => panic!("{test}: {var} is not set (CI=true: run scripts/test)"),
        None => {
            eprintln!("SKIPPED {test}: {var} is not set (run scripts/test)");
            None
        }
    }
}

/// A database with a schema of its own: `orders` (readable by the grant) and `secrets` (not).
struct Db {
    url: String,
    socket_dir: String,
    schema: String,
    admin: PgConnection,
}

impl Db {
    async fn new(test: &str) -> Option<Self> {
        let url = required("GATEWAY_TEST_POSTGRES_URL", test)?;
        let socket_dir = required("GATEWAY_TEST_POSTGRES_SOCKET_DIR", test)?;
        let schema = format!("infra_{}", hex::encode(rand::random::<[u8; 5]>()));
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.orders (id int PRIMARY KEY, amount int);
             CREATE TABLE {schema}.secrets (id int PRIMARY KEY, v text);
             INSERT INTO {schema}.orders SELECT g, g * 10 FROM generate_series(1, 3) g;
             INSERT INTO {schema}.secrets VALUES (1, 'do not read');"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        Some(Self {
            url,
            socket_dir,
            schema,
            admin,
        })
    }

    async fn broker(&self) -> PostgresBroker {
        PostgresBroker::builder(self.url.clone())
            .instance(format!("test-{}", self.schema))
            .job_socket_dir(&self.socket_dir)
            .build()
            .await
            .unwrap()
    }

    fn read_orders(&self) -> String {
        format!("pg:gateway_test:{}.orders:select", self.schema)
    }

    async fn count_orders(&mut self) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {}.orders", self.schema))
            .fetch_one(&mut self.admin)
            .await
            .unwrap()
    }

    async fn drop(mut self) {
        sqlx::raw_sql(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

fn sandbox() -> Option<LocalRunner> {
    match LocalRunner::builder()
        .require(IsolationLevel::Namespaces)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) if ci() => panic!("CI=true but the sandbox is unusable: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: the sandbox is unusable here: {e}");
            None
        }
    }
}

async fn grant(broker: &PostgresBroker, scopes: Vec<String>) -> Grant {
    broker
        .grant(&GrantRequest {
            correlation_id: RequestId::new(),
            agent: AgentId::new("agent:infra-test").unwrap(),
            action: "db.query".into(),
            resource: "db:gateway_test".into(),
            scopes,
            ttl: Duration::from_secs(120),
        })
        .await
        .unwrap()
}

/// The db.query job for `sql` under `grant`, shaped as the pipeline shapes it: the template's
/// variables, then the grant's variables and mounts, then its secrets; no network.
fn db_query_job(grant: &Grant, sql: &str) -> JobSpec {
    let mut spec = JobSpec::new(
        grant.correlation_id,
        grant.agent.clone(),
        vec!["/bin/sh".into(), "-c".into(), DB_QUERY.into()],
    );
    spec.env.insert("SQL".into(), sql.into());
    spec.env.insert("MAX_ROWS".into(), "2".into());
    spec.env.extend(grant.job_vars.clone());
    spec.mounts.extend(grant.job_mounts.iter().cloned());
    spec.secret_env.extend(grant.job_env.clone());
    spec.limits.timeout = Duration::from_secs(30);
    spec
}

async fn run(runner: &LocalRunner, spec: JobSpec) -> JobOutcome {
    runner.run(spec, CancellationToken::new()).await.unwrap()
}

#[tokio::test]
async fn db_query_reads_its_table_and_nothing_else_through_the_socket() {
    let Some(runner) = sandbox() else { return };
    let Some(mut db) = Db::new("db_query_reads").await else {
        return;
    };
    let broker = db.broker().await;
    let g = grant(&broker, vec![db.read_orders()]).await;
    assert_eq!(
        g.job_mounts,
        vec![ReadOnlyMount {
            host_path: std::path::Path::new(&db.socket_dir)
                .join(format!(".s.PGSQL.{}", g.job_vars["PGPORT"])),
            job_path: format!(
                "{}/.s.PGSQL.{}",
                agent_gateway::postgres_broker::JOB_SOCKET_MOUNT,
                g.job_vars["PGPORT"]
            )
            .into(),
        }]
    );
    let s = &db.schema;

    // Its table, bounded to MAX_ROWS rows (a header line, then the rows).
    let out = run(
        &runner,
        db_query_job(
            &g,
            &format!(
                "SELECT id, amount, current_user = '{}' AS me FROM {s}.orders ORDER BY id",
                g.id
            ),
        ),
    )
    .await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(
        out.stdout, "id\tamount\tme\n1\t10\tt\n2\t20\tt\n",
        "{out:?}"
    );
    assert!(
        out.stderr.contains("3 rows, only the first 2 shown"),
        "{out:?}"
    );

    // Another table of the same schema: permission denied.
    let out = run(
        &runner,
        db_query_job(&g, &format!("SELECT * FROM {s}.secrets")),
    )
    .await;
    assert!(!out.succeeded(), "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    assert!(!out.stdout.contains("do not read"), "{out:?}");

    // Writes fail however they are dressed up, and nothing changes.
    for sql in [
        format!("INSERT INTO {s}.orders VALUES (9, 90)"),
        format!(
            "SET default_transaction_read_only = off; COMMIT; INSERT INTO {s}.orders VALUES (9, 90)"
        ),
        format!("BEGIN READ WRITE; DELETE FROM {s}.orders; COMMIT"),
    ] {
        let out = run(&runner, db_query_job(&g, &sql)).await;
        assert!(!out.succeeded(), "{sql}: {out:?}");
        assert!(
            out.stderr.contains("permission denied")
                || out.stderr.contains("read-only transaction"),
            "{sql}: {out:?}"
        );
    }
    assert_eq!(db.count_orders().await, 3);

    // The job sees the one socket file and nothing else of the server's directory, and has
    // no network: the loopback address the gateway's admin uses is unreachable.
    let mut probe = db_query_job(&g, "SELECT 1");
    probe.command[2] = format!(
        "ls -A {dir}; ls {host} 2>&1 | head -n1; PGHOST=127.0.0.1 psql=$(ls /usr/lib/postgresql/*/bin/psql | head -n1); PGHOST=127.0.0.1 $psql -X -w -Atc 'select 1' 2>&1 | head -n1",
        dir = agent_gateway::postgres_broker::JOB_SOCKET_MOUNT,
        host = db.socket_dir,
    );
    let out = run(&runner, probe).await;
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!(".s.PGSQL.{}", g.job_vars["PGPORT"]),
        "{out:?}"
    );
    assert!(lines[1].contains("No such file"), "{out:?}");
    assert!(
        lines[2].contains("Connection refused") || lines[2].contains("could not connect"),
        "{out:?}"
    );

    // After revoke the role cannot log in any more.
    broker.revoke(&g).await.unwrap();
    let out = run(&runner, db_query_job(&g, "SELECT 1")).await;
    assert!(!out.succeeded(), "{out:?}");
    assert!(
        out.stderr.contains("password authentication failed")
            || out.stderr.contains("does not exist"),
        "{out:?}"
    );
    db.drop().await;
}
