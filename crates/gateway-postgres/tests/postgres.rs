//! `PostgresBroker` against the real server started by `scripts/test`
//! (`GATEWAY_TEST_POSTGRES_URL`, a superuser URL, and `GATEWAY_TEST_POSTGRES_PASSWORD_HOST`,
//! the address where the server checks passwords). Each test works in its own schema and with
//! its own broker instance.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_core::conformance::broker as conformance;
use gateway_core::{AccessBroker, ErrorKind, Grant};
use gateway_postgres::sql::{quote_ident, quote_literal};
use gateway_postgres::{DATABASE_ENV, HOST_ENV, PASSWORD_ENV, PORT_ENV, PostgresBroker, USER_ENV};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Column, ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The test cluster, or `None` (skip) outside CI. Under `CI=true` a missing cluster fails.
fn cluster(test: &str) -> Option<(String, String)> {
    let url = std::env::var("GATEWAY_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let host = std::env::var("GATEWAY_TEST_POSTGRES_PASSWORD_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    match (url, host) {
        (Some(url), Some(host)) => Some((url, host)),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "{test}: GATEWAY_TEST_POSTGRES_URL/GATEWAY_TEST_POSTGRES_PASSWORD_HOST are not set (CI=true: real PostgreSQL is required; run scripts/test)"
                );
            }
            eprintln!(
                "SKIPPED {test}: GATEWAY_TEST_POSTGRES_URL/GATEWAY_TEST_POSTGRES_PASSWORD_HOST are not set (run scripts/test)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        hex::encode(rand::random::<[u8; 6]>())
    )
}

struct Env {
    url: String,
    host: String,
    schema: String,
    admin: PgConnection,
}

impl Env {
    async fn new(test: &str) -> Option<Self> {
        let (url, host) = cluster(test)?;
        let schema = unique(&format!("t_{test}"));
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let s = quote_ident(&schema);
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.allowed (id int PRIMARY KEY, v text);
             CREATE TABLE {s}.other (id int PRIMARY KEY, v text);
             CREATE TABLE {s}.victim (id int PRIMARY KEY);
             INSERT INTO {s}.allowed VALUES (1, 'a'), (2, 'b');
             INSERT INTO {s}.other VALUES (1, 'secret');
             INSERT INTO {s}.victim VALUES (1);"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        Some(Self {
            url,
            host,
            schema,
            admin,
        })
    }

    fn scope(&self, table: &str, privilege: &str) -> String {
        format!("pg:gateway_test:{}.{table}:{privilege}", self.schema)
    }

    fn table(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    async fn broker(&self, instance: &str) -> PostgresBroker {
        let port = PgConnectOptions::from_str(&self.url).unwrap().get_port();
        PostgresBroker::builder(self.url.clone())
            .instance(instance)
            .job_host(self.host.clone(), port)
            .statement_timeout(Duration::from_millis(1500))
            .max_ttl(Duration::from_secs(900))
            .build()
            .await
            .unwrap()
    }

    async fn role_exists(&mut self, role: &str) -> bool {
        sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut self.admin)
            .await
            .unwrap()
            .is_some()
    }

    async fn table_exists(&mut self, table: &str) -> bool {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(self.table(table))
            .fetch_one(&mut self.admin)
            .await
            .unwrap()
    }
}

fn env_of(grant: &Grant, key: &str) -> String {
    match grant.job_env.get(key) {
        Some(secret) => secret.expose_str().unwrap().to_owned(),
        None => grant.job_vars[key].clone(),
    }
}

/// Logs in with the grant's job environment (at the address that checks passwords).
async fn login_with(grant: &Grant, password: &str) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::new()
        .host(&env_of(grant, HOST_ENV))
        .port(env_of(grant, PORT_ENV).parse().unwrap())
        .username(&env_of(grant, USER_ENV))
        .password(password)
        .database(&env_of(grant, DATABASE_ENV))
        .connect()
        .await
}

async fn login(grant: &Grant) -> Result<PgConnection, sqlx::Error> {
    login_with(grant, &env_of(grant, PASSWORD_ENV)).await
}

/// A grant of `scopes` for `ttl_secs` seconds from `broker`.
async fn issue(broker: &PostgresBroker, scopes: Vec<String>, ttl_secs: u64) -> Grant {
    broker
        .grant(&conformance::request(scopes, Duration::from_secs(ttl_secs)))
        .await
        .unwrap()
}

/// The value of a run-time setting in `conn`'s session.
async fn show(conn: &mut PgConnection, setting: &str) -> String {
    sqlx::query_scalar(&format!("SHOW {setting}"))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()).unwrap_or_default(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let Some(env) = Env::new("pgb_conformance").await else {
        return;
    };
    let broker = env.broker(&unique("conf")).await;
    conformance::run_all(&broker, vec![env.scope("allowed", "select")]).await;
}

#[tokio::test]
async fn a_read_grant_selects_exactly_its_tables_and_cannot_write() {
    let Some(mut env) = Env::new("pgb_read").await else {
        return;
    };
    let broker = env.broker(&unique("read")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 120).await;
    let mut conn = login(&grant).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", env.table("allowed")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2);
    let err = sqlx::query(&format!("SELECT * FROM {}", env.table("other")))
        .fetch_all(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "42501", "{err}");
    // Read-only sessions by default...
    let err = sqlx::raw_sql(&format!(
        "INSERT INTO {} VALUES (3, 'c')",
        env.table("allowed")
    ))
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert_eq!(sqlstate(&err), "25006", "{err}");
    // ...and without that setting (a session may change it) the privileges still refuse.
    sqlx::raw_sql("SET default_transaction_read_only = off")
        .execute(&mut conn)
        .await
        .unwrap();
    for sql in [
        format!("INSERT INTO {} VALUES (3, 'c')", env.table("allowed")),
        format!("UPDATE {} SET v = 'x'", env.table("allowed")),
        format!("DELETE FROM {}", env.table("allowed")),
        format!("TRUNCATE {}", env.table("allowed")),
        format!("CREATE TABLE {}.sneaky (x int)", quote_ident(&env.schema)),
    ] {
        let err = sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    drop(conn);
    broker.revoke(&grant).await.unwrap();
    assert!(!env.role_exists(&grant.id).await);
}

#[tokio::test]
async fn read_only_and_statement_timeout_are_in_effect() {
    let Some(env) = Env::new("pgb_settings").await else {
        return;
    };
    let broker = env.broker(&unique("settings")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 120).await;
    let mut conn = login(&grant).await.unwrap();
    let ro = show(&mut conn, "default_transaction_read_only").await;
    assert_eq!(ro, "on");
    let timeout = show(&mut conn, "statement_timeout").await;
    assert_eq!(timeout, "1500ms");
    let err = sqlx::raw_sql("SELECT pg_sleep(5)")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "57014", "{err}");
    drop(conn);
    broker.revoke(&grant).await.unwrap();
}

#[tokio::test]
async fn a_write_grant_writes_only_what_it_names() {
    let Some(env) = Env::new("pgb_write").await else {
        return;
    };
    let broker = env.broker(&unique("write")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "insert")], 120).await;
    let mut conn = login(&grant).await.unwrap();
    let ro = show(&mut conn, "default_transaction_read_only").await;
    assert_eq!(ro, "off");
    sqlx::raw_sql(&format!(
        "INSERT INTO {} VALUES (3, 'c')",
        env.table("allowed")
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    for sql in [
        format!("SELECT * FROM {}", env.table("allowed")),
        format!("DELETE FROM {}", env.table("allowed")),
        format!("INSERT INTO {} VALUES (9, 'x')", env.table("other")),
    ] {
        let err = sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    drop(conn);
    broker.revoke(&grant).await.unwrap();
}

#[tokio::test]
async fn passwords_are_checked() {
    let Some(env) = Env::new("pgb_password").await else {
        return;
    };
    let broker = env.broker(&unique("password")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 120).await;
    assert_eq!(env_of(&grant, PASSWORD_ENV).len(), 64);
    let err = login_with(&grant, &"0".repeat(64)).await.unwrap_err();
    assert_eq!(
        sqlstate(&err),
        "28P01",
        "a wrong password must be refused (is GATEWAY_TEST_POSTGRES_PASSWORD_HOST a password-checking address?): {err}"
    );
    login(&grant).await.unwrap();
    broker.revoke(&grant).await.unwrap();
}

#[tokio::test]
async fn revoke_ends_logins_and_open_sessions() {
    let Some(mut env) = Env::new("pgb_revoke").await else {
        return;
    };
    let broker = env.broker(&unique("revoke")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 120).await;
    let mut open = login(&grant).await.unwrap();
    sqlx::raw_sql("SELECT 1").execute(&mut open).await.unwrap();
    broker.revoke(&grant).await.unwrap();
    // Not merely its privileges gone (DROP OWNED does that): the session itself must be over.
    let after = sqlx::raw_sql("SELECT 1").execute(&mut open).await;
    assert!(after.is_err(), "the open session must have been terminated");
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1")
            .bind(&grant.id)
            .fetch_one(&mut env.admin)
            .await
            .unwrap();
    assert_eq!(sessions, 0, "the role still has sessions");
    assert!(login(&grant).await.is_err(), "login after revoke");
    assert!(!env.role_exists(&grant.id).await);
    broker.revoke(&grant).await.unwrap();
}

#[tokio::test]
async fn reap_removes_expired_roles_of_its_instance_only() {
    let Some(mut env) = Env::new("pgb_reap").await else {
        return;
    };
    let instance = unique("reap");
    let scopes = vec![env.scope("allowed", "select")];
    let (short, long, foreign) = {
        let crashed = env.broker(&instance).await;
        let other = env.broker(&unique("reap_other")).await;
        let short = crashed
            .grant(&conformance::request(
                scopes.clone(),
                Duration::from_secs(2),
            ))
            .await
            .unwrap();
        let long = crashed
            .grant(&conformance::request(
                scopes.clone(),
                Duration::from_secs(600),
            ))
            .await
            .unwrap();
        let foreign = other
            .grant(&conformance::request(
                scopes.clone(),
                Duration::from_secs(2),
            ))
            .await
            .unwrap();
        (short, long, foreign)
        // Both brokers dropped without revoking: the crash.
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    // VALID UNTIL: the expired password stops working even before the reaper runs.
    assert!(login(&short).await.is_err(), "expired password still works");
    let fresh = env.broker(&instance).await;
    let report = fresh.reap().await.unwrap();
    assert_eq!(report.deleted, vec![short.id.clone()], "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    assert!(!env.role_exists(&short.id).await);
    assert!(
        env.role_exists(&long.id).await,
        "an unexpired role was reaped"
    );
    assert!(
        env.role_exists(&foreign.id).await,
        "another instance's role was reaped"
    );
    login(&long).await.unwrap();
    fresh.revoke(&long).await.unwrap();
    assert!(fresh.revoke(&foreign).await.is_err(), "not this instance's");
    let mut admin = PgConnection::connect(&env.url).await.unwrap();
    sqlx::raw_sql(&format!(
        "DROP OWNED BY {0}; DROP ROLE {0}",
        quote_ident(&foreign.id)
    ))
    .execute(&mut admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn injection_attempts_are_refused_or_harmless() {
    let Some(mut env) = Env::new("pgb_inject").await else {
        return;
    };
    // A table whose name has a quote exists; no scope can name it.
    sqlx::raw_sql(&format!(
        "CREATE TABLE {} (x int)",
        env.table("we\"ird; DROP TABLE victim; --")
    ))
    .execute(&mut env.admin)
    .await
    .unwrap();
    let broker = env.broker(&unique("inject")).await;
    let prefix = broker.role_prefix();
    for scope in [
        format!(
            "pg:gateway_test:{}.x\"; DROP TABLE victim; --:select",
            env.schema
        ),
        format!(
            "pg:gateway_test:{}.we\"ird; DROP TABLE victim; --:select",
            env.schema
        ),
        format!(
            "pg:gateway_test:{}.allowed:select; DROP TABLE victim",
            env.schema
        ),
        format!(
            "pg:gateway_test\"; DROP TABLE victim; --:{}.allowed:select",
            env.schema
        ),
        format!("pg:gateway_test:{}.allowed' OR '1'='1:select", env.schema),
        format!("pg:gateway_test:{}.allowed:all", env.schema),
    ] {
        let err = broker
            .grant(&conformance::request(
                vec![scope.clone()],
                Duration::from_secs(60),
            ))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{scope}: {err}");
    }
    // One bad scope refuses the whole grant, valid ones included.
    let err = broker
        .grant(&conformance::request(
            vec![env.scope("allowed", "select"), "pg:x:y.z\":select".into()],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(env.table_exists("victim").await);
    assert!(env.table_exists("we\"ird; DROP TABLE victim; --").await);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE starts_with(rolname::text, $1)")
            .bind(&prefix)
            .fetch_one(&mut env.admin)
            .await
            .unwrap();
    assert_eq!(left, 0, "a refused grant left a role behind");
    // The quoting itself, on the server: hostile text stays one identifier / one literal.
    for hostile in [
        "x\"; DROP TABLE victim; --",
        "it's",
        "a\\'; DROP TABLE victim; --",
        "\"\"''\\\\",
    ] {
        let back: String = sqlx::query_scalar(&format!("SELECT {}::text", quote_literal(hostile)))
            .fetch_one(&mut env.admin)
            .await
            .unwrap();
        assert_eq!(back, hostile);
        let row = sqlx::query(&format!("SELECT 1 AS {}", quote_ident(hostile)))
            .fetch_one(&mut env.admin)
            .await
            .unwrap();
        let col = row.columns()[0].name().to_owned();
        assert_eq!(col, hostile);
    }
    assert!(env.table_exists("victim").await);
}

#[tokio::test]
async fn a_missing_table_fails_the_grant_and_leaves_no_role() {
    let Some(mut env) = Env::new("pgb_missing").await else {
        return;
    };
    let broker = env.broker(&unique("missing")).await;
    let err = broker
        .grant(&conformance::request(
            vec![env.scope("allowed", "select"), env.scope("nope", "select")],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE starts_with(rolname::text, $1)")
            .bind(broker.role_prefix())
            .fetch_one(&mut env.admin)
            .await
            .unwrap();
    assert_eq!(left, 0, "a failed grant left its role behind");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_password_appears_in_no_debug_json_or_log() {
    let Some(env) = Env::new("pgb_secret").await else {
        return;
    };
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let broker = env.broker(&unique("secret")).await;
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 120).await;
    let password = env_of(&grant, PASSWORD_ENV);
    // The server never saw the password: the role's stored secret is a SCRAM verifier.
    let mut admin = PgConnection::connect(&env.url).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&grant.id)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    assert!(!stored.contains(&password));
    tracing::info!(?grant, ?broker, "granted");
    let mut conn = login(&grant).await.unwrap();
    let err = sqlx::raw_sql(&format!("SELECT * FROM {}", env.table("other")))
        .execute(&mut conn)
        .await
        .unwrap_err();
    drop(conn);
    broker.revoke(&grant).await.unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("granted"), "the capture works");
    for (what, text) in [
        ("Debug", format!("{grant:?}")),
        ("JSON", serde_json::to_string(&grant).unwrap()),
        ("hints", format!("{:?}", grant.hints)),
        ("job_vars", format!("{:?}", grant.job_vars)),
        ("job_env Debug", format!("{:?}", grant.job_env)),
        ("broker Debug", format!("{broker:?}")),
        ("error", format!("{err} {err:?}")),
        ("tracing", logs),
    ] {
        assert!(!text.contains(&password), "{what} leaks the password");
    }
}

/// Set in the child process of [`a_killed_gateway_leaves_roles_the_reaper_removes`].
const CRASH_CHILD: &str = "AGW_PG_CRASH_CHILD";

/// The child half of the crash test: grants, prints the roles, and waits to be killed. Does
/// nothing when run as an ordinary test.
#[tokio::test]
async fn crash_child() {
    let Ok(spec) = std::env::var(CRASH_CHILD) else {
        return;
    };
    let [url, host, instance, scope]: [String; 4] = serde_json::from_str::<Vec<String>>(&spec)
        .unwrap()
        .try_into()
        .unwrap();
    let port = PgConnectOptions::from_str(&url).unwrap().get_port();
    let broker = PostgresBroker::builder(url)
        .instance(instance)
        .job_host(host, port)
        .build()
        .await
        .unwrap();
    let short = issue(&broker, vec![scope.clone()], 2).await;
    let long = issue(&broker, vec![scope], 600).await;
    println!("ROLES {} {}", short.id, long.id);
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// A gateway process killed with SIGKILL while holding grants (no revoke, no destructor):
/// the expired role stops working by itself and the next broker of the same instance reaps
/// it; the unexpired one stays until it expires or is revoked.
#[tokio::test]
async fn a_killed_gateway_leaves_roles_the_reaper_removes() {
    use std::io::BufRead;
    let Some(mut env) = Env::new("pgb_crash").await else {
        return;
    };
    let instance = unique("crash");
    let spec = serde_json::to_string(&[
        env.url.clone(),
        env.host.clone(),
        instance.clone(),
        env.scope("allowed", "select"),
    ])
    .unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD, spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let roles = stdout
        .lines()
        .map(Result::unwrap)
        // After libtest's `test crash_child ... ` on the same line.
        .find_map(|l| l.split_once("ROLES ").map(|(_, roles)| roles.to_owned()))
        .expect("the child printed its roles");
    let (short, long) = roles.split_once(' ').unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(env.role_exists(short).await && env.role_exists(long).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = env.broker(&instance).await.reap().await.unwrap();
    assert_eq!(report.deleted, vec![short.to_owned()], "{report:?}");
    assert!(!env.role_exists(short).await);
    assert!(env.role_exists(long).await, "an unexpired role was reaped");
    let mut admin = PgConnection::connect(&env.url).await.unwrap();
    sqlx::raw_sql(&format!(
        "DROP OWNED BY {0}; DROP ROLE {0}",
        quote_ident(long)
    ))
    .execute(&mut admin)
    .await
    .unwrap();
}

/// The broker needs no superuser: an admin role with CREATEROLE, the tables' privileges WITH
/// GRANT OPTION and CONNECT grants, revokes (its sessions terminated) and reaps.
#[tokio::test]
async fn a_createrole_admin_without_superuser_suffices() {
    let Some(mut env) = Env::new("pgb_nosuper").await else {
        return;
    };
    let admin_role = unique("agw_admin");
    let password = hex::encode(rand::random::<[u8; 16]>());
    let (a, s) = (quote_ident(&admin_role), quote_ident(&env.schema));
    sqlx::raw_sql(&format!(
        "CREATE ROLE {a} LOGIN CREATEROLE PASSWORD {pw};
         GRANT CONNECT ON DATABASE gateway_test TO {a};
         GRANT USAGE ON SCHEMA {s} TO {a} WITH GRANT OPTION;
         GRANT SELECT ON {t} TO {a} WITH GRANT OPTION;
         GRANT pg_signal_backend TO {a};",
        pw = quote_literal(&password),
        t = env.table("allowed"),
    ))
    .execute(&mut env.admin)
    .await
    .unwrap();
    let port = PgConnectOptions::from_str(&env.url).unwrap().get_port();
    let url = format!(
        "postgres://{admin_role}:{password}@[{}]:{port}/gateway_test",
        env.host
    );
    let broker = PostgresBroker::builder(url)
        .instance(unique("nosuper"))
        .job_host(env.host.clone(), port)
        .build()
        .await
        .unwrap();
    let grant = issue(&broker, vec![env.scope("allowed", "select")], 60).await;
    let mut conn = login(&grant).await.unwrap();
    let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", env.table("allowed")))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2);
    // A table the admin holds no privilege on cannot be granted: the broker's own
    // configuration is at fault (classed as unavailable, like every missing admin privilege),
    // and the error says so.
    let err = broker
        .grant(&conformance::request(
            vec![env.scope("other", "select")],
            Duration::from_secs(60),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string()
            .contains("permission denied for table other"),
        "{err}"
    );
    broker.revoke(&grant).await.unwrap();
    assert!(!env.role_exists(&grant.id).await);
    assert!(
        sqlx::query("SELECT 1").execute(&mut conn).await.is_err(),
        "the revoked role's session survived"
    );
    drop(broker);
    sqlx::raw_sql(&format!("DROP OWNED BY {a}; DROP ROLE {a}"))
        .execute(&mut env.admin)
        .await
        .unwrap();
}
