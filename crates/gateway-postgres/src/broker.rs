//! [`PostgresBroker`]: per grant, one PostgreSQL login role with exactly the grant's table
//! privileges, a random password and an expiry, dropped on revoke.

use crate::error::PgBrokerError;
use crate::scope::{PgScope, Privilege};
use crate::scram;
use crate::sql::{qualified, quote_ident, quote_literal};
use gateway_core::grant::{AccessBroker, BrokerError, Grant, GrantRequest};
use gateway_core::labels as keys;
use gateway_core::runner::ReadOnlyMount;
use gateway_core::{Secret, async_trait};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The job environment variable (secret) with the role's password.
pub const PASSWORD_ENV: &str = "PGPASSWORD";
/// The hint with the role's name (the `PGUSER` of the job).
pub const USER_ENV: &str = "PGUSER";
/// The hint with the first scope's database (the `PGDATABASE` of the job).
pub const DATABASE_ENV: &str = "PGDATABASE";
/// The hint with the host jobs connect to (the `PGHOST` of the job).
pub const HOST_ENV: &str = "PGHOST";
/// The hint with the port jobs connect to (the `PGPORT` of the job).
pub const PORT_ENV: &str = "PGPORT";
/// The environment variable [`PostgresBrokerBuilder::from_env`] reads the admin URL from.
pub const URL_ENV: &str = "GATEWAY_PG_BROKER_URL";
/// The environment variable [`PostgresBrokerBuilder::from_env`] reads the instance id from.
pub const INSTANCE_ENV: &str = "GATEWAY_PG_BROKER_INSTANCE";
/// The environment variable [`PostgresBrokerBuilder::from_env`] reads the server's Unix socket
/// directory from (optional; see [`PostgresBrokerBuilder::job_socket_dir`]).
pub const JOB_SOCKET_DIR_ENV: &str = "GATEWAY_PG_JOB_SOCKET_DIR";
/// Where a job sees the server's Unix socket when it reaches the server through it
/// ([`PostgresBrokerBuilder::job_socket_dir`]): its `PGHOST`.
pub const JOB_SOCKET_MOUNT: &str = "/run/agent-gateway/postgresql";

/// The comment key listing the databases a role holds privileges in (for revoke and reap).
pub const DATABASES_KEY: &str = "agent-gateway.io/databases";

const ROLE_PREFIX: &str = "agw_";

/// How often a catalog change that lost a race with another grant is retried.
const RETRIES: u32 = 8;

/// The pause before retry `attempt` (1-based): 20 ms doubling, with up to 20 ms of jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 20u64 << attempt.min(6);
    Duration::from_millis(base + u64::from(rand::random::<u8>() % 20))
}

/// Builds a [`PostgresBroker`].
///
/// ```no_run
/// use gateway_core::{AccessBroker, BrokerError, GrantRequest};
/// use gateway_postgres::{PASSWORD_ENV, PostgresBroker};
/// use std::time::Duration;
///
/// # async fn example(request: GrantRequest) -> Result<(), BrokerError> {
/// // An admin role with CREATEROLE and the table privileges WITH GRANT OPTION.
/// let broker = PostgresBroker::builder("postgres://gateway_admin@db.internal/payments")
///     .instance("payments-gw-1")
///     .max_ttl(Duration::from_secs(900))
///     .build()
///     .await?;
/// // `request.scopes` are strings such as `pg:payments:ledger.entries:select`.
/// let grant = broker.grant(&request).await?;
/// assert!(grant.job_env.contains_key(PASSWORD_ENV));
/// broker.revoke(&grant).await?;
/// // Periodically: drop the roles of grants a crashed gateway never revoked.
/// broker.reap().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresBrokerBuilder {
    url: String,
    instance: String,
    max_ttl: Duration,
    connection_limit: u32,
    statement_timeout: Duration,
    job_host: Option<(String, u16)>,
    job_socket_dir: Option<PathBuf>,
    max_connections: u32,
}

impl Debug for PostgresBrokerBuilder {
    // The admin URL may carry a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBrokerBuilder")
            .field("instance", &self.instance)
            .field("max_ttl", &self.max_ttl)
            .field("connection_limit", &self.connection_limit)
            .field("statement_timeout", &self.statement_timeout)
            .finish_non_exhaustive()
    }
}

impl PostgresBrokerBuilder {
    /// A builder for the admin connection `url` (`postgres://user[:password]@host[:port]/db`):
    /// instance `agent-gateway`, TTLs capped at one hour, at most 2 connections per role,
    /// statements of granted roles cancelled after 30 s, jobs told to connect to the URL's host
    /// and port.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            instance: "agent-gateway".into(),
            max_ttl: Duration::from_secs(3600),
            connection_limit: 2,
            statement_timeout: Duration::from_secs(30),
            job_host: None,
            job_socket_dir: None,
            max_connections: 4,
        }
    }

    /// A builder from the environment: the admin URL from `GATEWAY_PG_BROKER_URL` (required),
    /// the instance id from `GATEWAY_PG_BROKER_INSTANCE` and the server's socket directory for
    /// jobs from `GATEWAY_PG_JOB_SOCKET_DIR` (both optional).
    pub fn from_env() -> Result<Self, BrokerError> {
        let url = std::env::var(URL_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| BrokerError::invalid_input(format!("{URL_ENV} is not set")))?;
        let mut b = Self::new(url);
        if let Ok(instance) = std::env::var(INSTANCE_ENV) {
            b = b.instance(instance);
        }
        if let Some(dir) = std::env::var_os(JOB_SOCKET_DIR_ENV).filter(|d| !d.is_empty()) {
            b = b.job_socket_dir(dir);
        }
        Ok(b)
    }

    /// This broker's instance id (the reaper's key). Keep it stable across restarts so the
    /// reaper finds a crashed predecessor's roles.
    pub fn instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// The longest grant issued, whatever the request asks.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// `CONNECTION LIMIT` of every granted role.
    pub fn connection_limit(mut self, n: u32) -> Self {
        self.connection_limit = n;
        self
    }

    /// The `statement_timeout` of every granted role (at least 1 ms).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// The host and port jobs connect to (`PGHOST`/`PGPORT`), when they reach the server by
    /// another address than the gateway does.
    pub fn job_host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.job_host = Some((host.into(), port));
        self
    }

    /// Jobs reach the server through its Unix socket in `dir` (the server's
    /// `unix_socket_directories`), on the port of [`job_host`](Self::job_host) or the admin
    /// URL: every grant mounts that one socket file, read-only, into the job at
    /// [`JOB_SOCKET_MOUNT`] and sets `PGHOST` to it. For sandboxes without network (the local
    /// runner's namespaces): the socket is then the job's only way to the server, and nothing
    /// else of `dir` is visible. The server must ask socket clients for a password (`local …
    /// scram-sha-256` in `pg_hba.conf`): under `trust`, a job could log in as any role.
    pub fn job_socket_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.job_socket_dir = Some(dir.into());
        self
    }

    /// The size of the admin connection pool.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Validates the settings, connects and builds the broker.
    pub async fn build(self) -> Result<PostgresBroker, BrokerError> {
        if self.instance.is_empty() || self.instance.len() > 253 {
            return Err(BrokerError::invalid_input(
                "the instance id must be 1 to 253 bytes",
            ));
        }
        if self.max_ttl.is_zero() {
            return Err(BrokerError::invalid_input("max_ttl must be positive"));
        }
        if self.connection_limit == 0 || self.connection_limit > 1000 {
            return Err(BrokerError::invalid_input(
                "connection_limit must be 1 to 1000",
            ));
        }
        let timeout_ms = u64::try_from(self.statement_timeout.as_millis()).unwrap_or(u64::MAX);
        if timeout_ms == 0 || timeout_ms > i32::MAX as u64 {
            return Err(BrokerError::invalid_input(
                "statement_timeout must be 1 ms to about 24 days",
            ));
        }
        // Statement logging off: the driver would log every statement it sends.
        let options = PgConnectOptions::from_str(&self.url)
            .map_err(|e| PgBrokerError::Invalid(format!("the admin URL does not parse: {e}")))?
            .disable_statement_logging();
        let (mut job_host, job_port) = match self.job_host {
            Some(h) => h,
            None => (options.get_host().to_owned(), options.get_port()),
        };
        let mut job_mounts = Vec::new();
        if let Some(dir) = self.job_socket_dir {
            let socket = format!(".s.PGSQL.{job_port}");
            if !dir.is_absolute() {
                return Err(PgBrokerError::Invalid(format!(
                    "the job socket directory must be an absolute path, got {}",
                    dir.display()
                ))
                .into());
            }
            job_mounts.push(ReadOnlyMount {
                host_path: dir.join(&socket),
                job_path: Path::new(JOB_SOCKET_MOUNT).join(&socket),
            });
            job_host = JOB_SOCKET_MOUNT.to_owned();
        }
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await
            .map_err(|e| PgBrokerError::db("connecting to PostgreSQL as the broker's admin", e))?;
        let admin_database: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&pool)
            .await
            .map_err(|e| PgBrokerError::db("reading the admin database", e))?;
        let digest = Sha256::digest(self.instance.as_bytes());
        let instance_hash = hex::encode(&digest[..4]);
        Ok(PostgresBroker {
            pool,
            options,
            admin_database,
            instance: self.instance,
            instance_hash,
            max_ttl: self.max_ttl,
            connection_limit: self.connection_limit,
            statement_timeout_ms: timeout_ms,
            job_host,
            job_port,
            job_mounts,
        })
    }
}

/// An admin connection to one database ([`PostgresBroker::connect_to`]).
enum AdminConnection {
    /// The pool's (the admin database), back to the pool when dropped.
    Pooled(sqlx::pool::PoolConnection<sqlx::Postgres>),
    /// Opened for one grant or revocation in another database.
    Own(PgConnection),
}

impl AdminConnection {
    /// Returns a pooled connection, closes one of its own (errors ignored: nothing is left to
    /// do with it).
    async fn close(self) {
        if let Self::Own(conn) = self {
            conn.close().await.ok();
        }
    }
}

impl std::ops::Deref for AdminConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Own(c) => c,
        }
    }
}

impl std::ops::DerefMut for AdminConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Own(c) => c,
        }
    }
}

/// Issues just-in-time PostgreSQL access, like Vault's database secrets engine: per grant one
/// login role. See the [crate docs](crate) for what a grant creates and what revoke does.
#[derive(Clone)]
pub struct PostgresBroker {
    pool: PgPool,
    options: PgConnectOptions,
    admin_database: String,
    instance: String,
    instance_hash: String,
    max_ttl: Duration,
    connection_limit: u32,
    statement_timeout_ms: u64,
    job_host: String,
    job_port: u16,
    job_mounts: Vec<ReadOnlyMount>,
}

impl Debug for PostgresBroker {
    // The connection options may carry the admin password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("instance", &self.instance)
            .field("admin_database", &self.admin_database)
            .finish_non_exhaustive()
    }
}

/// What [`PostgresBroker::reap`] dropped and what it could not drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Roles dropped.
    pub deleted: Vec<String>,
    /// Roles that could not be dropped, with the reason.
    pub failed: Vec<String>,
}

/// The metadata a role's comment carries.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct RoleComment {
    #[serde(rename = "agent-gateway.io/instance")]
    instance: String,
    #[serde(rename = "agent-gateway.io/expires-at")]
    expires_at: String,
    #[serde(rename = "agent-gateway.io/correlation-id", default)]
    correlation_id: String,
    #[serde(rename = "agent-gateway.io/agent", default)]
    agent: String,
    #[serde(rename = "agent-gateway.io/databases", default)]
    databases: Vec<String>,
}

impl RoleComment {
    fn parse(text: Option<&str>) -> Option<Self> {
        serde_json::from_str(text?).ok()
    }

    /// Expired at `now`; an unreadable expiry counts as expired (fail closed).
    fn is_expired(&self, now: OffsetDateTime) -> bool {
        OffsetDateTime::parse(&self.expires_at, &Rfc3339).map_or(true, |at| at <= now)
    }
}

fn format_time(at: OffsetDateTime) -> String {
    // Formatting a UTC OffsetDateTime as RFC 3339 only fails for years outside 0..=9999, which a
    // TTL capped by `max_ttl` cannot reach; the fallback is in the past (fails closed).
    at.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A random password: 32 random bytes, hex (64 characters).
fn new_password() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::from(hex::encode(bytes))
}

/// Runs `sql` (one or more statements, simple query protocol) through `Executor::execute`,
/// whose boxed future is `Send`: `RawSql::execute`'s is not `Send` for every lifetime, which
/// `#[async_trait]` requires.
fn exec<'a>(
    conn: &'a mut PgConnection,
    what: &'a str,
    sql: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), PgBrokerError>> + Send + 'a>> {
    Box::pin(async move {
        sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(sql))
            .await
            .map(|_| ())
            .map_err(|e| PgBrokerError::db(what, e))
    })
}

impl PostgresBroker {
    /// A builder for the admin connection `url`.
    pub fn builder(url: impl Into<String>) -> PostgresBrokerBuilder {
        PostgresBrokerBuilder::new(url)
    }

    /// The instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The prefix of every role name of this instance: `agw_<8 hex digits of SHA-256(instance)>_`.
    pub fn role_prefix(&self) -> String {
        format!("{ROLE_PREFIX}{}_", self.instance_hash)
    }

    /// Whether `name` is a role name this instance creates (`<prefix><32 hex digits>`).
    fn is_own_role(&self, name: &str) -> bool {
        name.strip_prefix(&self.role_prefix()).is_some_and(|h| {
            h.len() == 32
                && h.chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
    }

    /// A connection to `database` as the admin: the pool's for the admin database, else one
    /// of its own (a pool serves one database, and a new connection costs a backend start).
    async fn connect_to(&self, database: &str) -> Result<AdminConnection, PgBrokerError> {
        if database == self.admin_database {
            return self
                .pool
                .acquire()
                .await
                .map(AdminConnection::Pooled)
                .map_err(|e| PgBrokerError::db("acquiring an admin connection", e));
        }
        self.options
            .clone()
            .database(database)
            .connect()
            .await
            .map(AdminConnection::Own)
            .map_err(|e| PgBrokerError::db(format!("connecting to database {database:?}"), e))
    }

    /// Creates the role with its password verifier, expiry, limits and comment (one transaction).
    async fn create_role(
        &self,
        role: &str,
        password: &Secret,
        not_after: OffsetDateTime,
        comment: &RoleComment,
        read_only: bool,
    ) -> Result<(), PgBrokerError> {
        let password = password
            .expose_str()
            .ok_or_else(|| PgBrokerError::Invalid("password is not UTF-8".into()))?;
        let salt: [u8; 16] = rand::random();
        let verifier = scram::verifier(password, &salt, scram::ITERATIONS);
        let comment = serde_json::to_string(comment)
            .map_err(|e| PgBrokerError::Invalid(format!("role comment: {e}")))?;
        let r = quote_ident(role);
        let mut sql = format!(
            "CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION \
             NOBYPASSRLS CONNECTION LIMIT {limit} PASSWORD {verifier} VALID UNTIL {until};\n\
             COMMENT ON ROLE {r} IS {comment};\n\
             ALTER ROLE {r} SET statement_timeout = {timeout};\n\
             GRANT {r} TO CURRENT_USER;\n",
            limit = self.connection_limit,
            verifier = quote_literal(&verifier),
            until = quote_literal(&format_time(not_after)),
            comment = quote_literal(&comment),
            timeout = quote_literal(&format!("{}ms", self.statement_timeout_ms)),
        );
        if read_only {
            sql.push_str(&format!(
                "ALTER ROLE {r} SET default_transaction_read_only = on;\n"
            ));
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| PgBrokerError::db("acquiring an admin connection", e))?;
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| PgBrokerError::db("starting the role's transaction", e))?;
        exec(&mut tx, "creating the grant's role", &sql).await?;
        tx.commit()
            .await
            .map_err(|e| PgBrokerError::db("committing the grant's role", e))
    }

    /// Grants the scopes of one database (one transaction), then checks that the role really
    /// holds each privilege: a `GRANT` the admin may not give is only a warning in PostgreSQL.
    async fn grant_in_database_once(
        &self,
        role: &str,
        database: &str,
        scopes: &[&PgScope],
    ) -> Result<(), PgBrokerError> {
        let r = quote_ident(role);
        let mut sql = format!(
            "GRANT CONNECT ON DATABASE {} TO {r};\n",
            quote_ident(database)
        );
        let schemas: BTreeSet<&str> = scopes.iter().map(|s| s.schema.as_str()).collect();
        for schema in schemas {
            sql.push_str(&format!(
                "GRANT USAGE ON SCHEMA {} TO {r};\n",
                quote_ident(schema)
            ));
        }
        for s in scopes {
            sql.push_str(&format!(
                "GRANT {} ON TABLE {} TO {r};\n",
                s.privilege.sql(),
                qualified(&s.schema, &s.table)
            ));
        }
        let mut conn = self.connect_to(database).await?;
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| PgBrokerError::db("starting the grants' transaction", e))?;
        exec(&mut tx, "granting the scopes", &sql).await?;
        for s in scopes {
            let held: bool = sqlx::query_scalar(
                "SELECT has_table_privilege($1, format('%I.%I', $2::text, $3::text), $4)",
            )
            .bind(role)
            .bind(&s.schema)
            .bind(&s.table)
            .bind(s.privilege.sql())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| PgBrokerError::db("checking a granted privilege", e))?;
            if !held {
                return Err(PgBrokerError::NotGranted {
                    scope: s.to_string(),
                });
            }
        }
        tx.commit()
            .await
            .map_err(|e| PgBrokerError::db("committing the grants", e))?;
        conn.close().await;
        Ok(())
    }

    /// [`Self::grant_in_database_once`], retried when a concurrent grant or revocation changed
    /// the same catalog rows (the database's ACL is one row for all roles).
    async fn grant_in_database(
        &self,
        role: &str,
        database: &str,
        scopes: &[&PgScope],
    ) -> Result<(), PgBrokerError> {
        let mut attempt = 0u32;
        loop {
            match self.grant_in_database_once(role, database, scopes).await {
                Err(e) if e.is_concurrent_update() && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// `REASSIGN OWNED` and `DROP OWNED` of `role` in `database` (one transaction), retried like
    /// [`Self::grant_in_database`]. `Ok(false)`: the role is already gone.
    async fn drop_owned(&self, role: &str, database: &str) -> Result<bool, PgBrokerError> {
        let mut attempt = 0u32;
        loop {
            match self.drop_owned_once(role, database).await {
                Err(e) if e.is_concurrent_update() && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn drop_owned_once(&self, role: &str, database: &str) -> Result<bool, PgBrokerError> {
        let r = quote_ident(role);
        let mut conn = match self.connect_to(database).await {
            Ok(c) => c,
            // The database is gone, and the privileges with it.
            Err(e) if e.sqlstate().as_deref() == Some("3D000") => return Ok(true),
            Err(e) => return Err(e),
        };
        let mut tx = conn
            .begin()
            .await
            .map_err(|e| PgBrokerError::db("starting the revocation's transaction", e))?;
        let sql = format!("REASSIGN OWNED BY {r} TO CURRENT_USER;\nDROP OWNED BY {r};\n");
        match exec(&mut tx, "dropping what the role owns and holds", &sql).await {
            Err(e) if e.sqlstate().as_deref() == Some("42704") => return Ok(false),
            other => other?,
        }
        tx.commit()
            .await
            .map_err(|e| PgBrokerError::db("committing the revocation", e))?;
        conn.close().await;
        Ok(true)
    }

    async fn grant_inner(
        &self,
        role: &str,
        password: &Secret,
        not_after: OffsetDateTime,
        request: &GrantRequest,
        scopes: &[PgScope],
    ) -> Result<(), PgBrokerError> {
        let mut by_db: BTreeMap<&str, Vec<&PgScope>> = BTreeMap::new();
        for s in scopes {
            by_db.entry(s.database.as_str()).or_default().push(s);
        }
        let comment = RoleComment {
            instance: self.instance.clone(),
            expires_at: format_time(not_after),
            correlation_id: request.correlation_id.to_string(),
            agent: request.agent.to_string(),
            databases: by_db.keys().map(|d| (*d).to_owned()).collect(),
        };
        let read_only = scopes.iter().all(|s| s.privilege == Privilege::Select);
        self.create_role(role, password, not_after, &comment, read_only)
            .await?;
        for (db, scopes) in &by_db {
            self.grant_in_database(role, db, scopes).await?;
        }
        Ok(())
    }

    /// The role's comment, or `None` if the role does not exist.
    async fn role_comment(&self, role: &str) -> Result<Option<Option<String>>, PgBrokerError> {
        let row = sqlx::query(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| PgBrokerError::db("looking up the grant's role", e))?;
        row.map(|r| r.try_get::<Option<String>, _>(0))
            .transpose()
            .map_err(|e| PgBrokerError::db("reading the role's comment", e))
    }

    /// Removes a role: no new logins, its sessions terminated, what it owns reassigned to the
    /// admin and its privileges dropped in every database it had any, then the role dropped.
    /// A role that does not exist is done.
    async fn drop_role(&self, role: &str, extra_dbs: &[String]) -> Result<(), PgBrokerError> {
        let Some(comment) = self.role_comment(role).await? else {
            return Ok(());
        };
        let r = quote_ident(role);
        // 1. No new sessions, whatever fails next.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| PgBrokerError::db("acquiring an admin connection", e))?;
        let nologin = exec(
            &mut conn,
            "disabling the role's login",
            &format!("ALTER ROLE {r} NOLOGIN"),
        )
        .await;
        drop(conn);
        match nologin {
            Err(e) if e.sqlstate().as_deref() == Some("42704") => return Ok(()),
            other => other?,
        }
        // 2. End the sessions it has (a dropped role's open sessions would keep working).
        self.terminate_sessions(role).await?;
        // 3. Ownership and privileges, in every database it may have any in.
        let mut dbs: BTreeSet<String> = RoleComment::parse(comment.as_deref())
            .map(|c| c.databases)
            .unwrap_or_default()
            .into_iter()
            .collect();
        dbs.extend(extra_dbs.iter().cloned());
        dbs.insert(self.admin_database.clone());
        for db in &dbs {
            if !self.drop_owned(role, db).await? {
                return Ok(());
            }
        }
        // 4. The role itself.
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| PgBrokerError::db("acquiring an admin connection", e))?;
        exec(
            &mut conn,
            "dropping the grant's role",
            &format!("DROP ROLE IF EXISTS {r}"),
        )
        .await
    }

    /// Terminates every session of `role` and waits (up to 5 s) until they are gone.
    async fn terminate_sessions(&self, role: &str) -> Result<(), PgBrokerError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE usename = $1 AND pid <> pg_backend_pid()) t",
            )
            .bind(role)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| PgBrokerError::db("terminating the role's sessions", e))?;
            if open == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PgBrokerError::SessionsRemain {
                    role: role.to_owned(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Drops this instance's roles whose expiry has passed, even if the gateway that created
    /// them crashed (run it periodically, and once at start-up). A role is this instance's when
    /// its name has [`Self::role_prefix`] and its comment names the instance; a role of the
    /// prefix whose comment cannot be read counts as expired (fail closed). Unexpired roles
    /// stay.
    pub async fn reap(&self) -> Result<ReapReport, BrokerError> {
        let prefix = self.role_prefix();
        let rows = sqlx::query(
            "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles \
             WHERE starts_with(rolname::text, $1)",
        )
        .bind(&prefix)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| PgBrokerError::db("listing the instance's roles", e))?;
        let now = OffsetDateTime::now_utc();
        let mut report = ReapReport::default();
        for row in rows {
            let (Ok(name), Ok(comment)) = (
                row.try_get::<String, _>(0),
                row.try_get::<Option<String>, _>(1),
            ) else {
                continue;
            };
            if !self.is_own_role(&name) {
                continue;
            }
            let parsed = RoleComment::parse(comment.as_deref());
            let expired = match &parsed {
                Some(c) if c.instance != self.instance => continue,
                Some(c) => c.is_expired(now),
                None => true,
            };
            if !expired {
                continue;
            }
            match self.drop_role(&name, &[]).await {
                Ok(()) => report.deleted.push(name),
                Err(e) => report.failed.push(format!("{name}: {e}")),
            }
        }
        Ok(report)
    }
}

#[async_trait]
impl AccessBroker for PostgresBroker {
    async fn grant(&self, request: &GrantRequest) -> Result<Grant, BrokerError> {
        let scopes = PgScope::parse_all(&request.scopes).map_err(PgBrokerError::from)?;
        let ttl = request.ttl.min(self.max_ttl);
        if ttl.is_zero() {
            return Err(BrokerError::invalid_input("grant TTL must be positive"));
        }
        let role = format!(
            "{}{}",
            self.role_prefix(),
            hex::encode(rand::random::<[u8; 16]>())
        );
        let password = new_password();
        let issued_at = OffsetDateTime::now_utc();
        // Whole seconds: VALID UNTIL and the comment keep no more, and rounding down never
        // outlives the TTL.
        let not_after = (issued_at + ttl)
            .replace_nanosecond(0)
            .unwrap_or(issued_at + ttl);
        if let Err(e) = self
            .grant_inner(&role, &password, not_after, request, &scopes)
            .await
        {
            // Roll back whatever was created; the reaper catches what this misses.
            let dbs: Vec<String> = scopes.iter().map(|s| s.database.clone()).collect();
            if let Err(cleanup) = self.drop_role(&role, &dbs).await {
                tracing::warn!(role = %role, error = %cleanup, "rolling back a failed grant failed");
            }
            return Err(e.into());
        }
        // `parse_all` guarantees at least one scope.
        let database = scopes
            .first()
            .map(|s| s.database.clone())
            .unwrap_or_default();
        // Only the password is secret material. The other connection parameters are plain
        // variables: the role name is the grant id anyway, and a secret equal to a logged
        // value would be no secret.
        let job_vars = BTreeMap::from([
            (USER_ENV.to_owned(), role.clone()),
            (DATABASE_ENV.to_owned(), database),
            (HOST_ENV.to_owned(), self.job_host.clone()),
            (PORT_ENV.to_owned(), self.job_port.to_string()),
        ]);
        let hints = BTreeMap::from([(keys::INSTANCE.to_owned(), self.instance.clone())]);
        let job_env = BTreeMap::from([(PASSWORD_ENV.to_owned(), password)]);
        Ok(Grant {
            id: role,
            correlation_id: request.correlation_id,
            agent: request.agent.clone(),
            scopes: request.scopes.clone(),
            issued_at,
            not_after,
            hints,
            job_env,
            job_vars,
            job_mounts: self.job_mounts.clone(),
        })
    }

    async fn revoke(&self, grant: &Grant) -> Result<(), BrokerError> {
        if !self.is_own_role(&grant.id) {
            return Err(BrokerError::invalid_input(
                "not a grant id of this broker instance",
            ));
        }
        // Databases named by the scopes, in case the role's comment was altered.
        let dbs: Vec<String> = grant
            .scopes
            .iter()
            .filter_map(|s| PgScope::parse(s).ok())
            .map(|s| s.database)
            .collect();
        self.drop_role(&grant.id, &dbs).await.map_err(Into::into)
    }
}
