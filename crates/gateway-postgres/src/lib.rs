//! # gateway-postgres
//!
//! [`PostgresBroker`], a [`gateway_core::AccessBroker`] that issues just-in-time PostgreSQL
//! credentials, like Vault's database secrets engine: every grant is a fresh login role that can
//! do exactly the grant's scopes, until it is revoked or expires.
//!
//! ## Scopes
//!
//! `pg:<database>:<schema>.<table>:<privilege>`, privilege `select`, `insert`, `update` or
//! `delete`, e.g. `pg:payments:ledger.entries:select`; see [`scope`] for the exact grammar. A
//! scope that does not parse is refused with [`gateway_core::ErrorKind::InvalidInput`] before
//! anything is created.
//!
//! ## What a grant creates
//!
//! One role, named `agw_<8 hex digits of SHA-256(instance)>_<uuid>`, in one transaction:
//!
//! - `CREATE ROLE … LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION
//!   NOBYPASSRLS CONNECTION LIMIT <n> PASSWORD <verifier> VALID UNTIL <not_after>`: the password
//!   is 32 random bytes (64 hex characters); the statement carries only its SCRAM-SHA-256
//!   verifier, computed on the gateway, so the password is never in SQL text the server could
//!   log. `VALID UNTIL` makes the password stop working at the grant's `not_after` by itself.
//! - `COMMENT ON ROLE … IS '{"agent-gateway.io/instance": …, "agent-gateway.io/expires-at": …,
//!   "agent-gateway.io/correlation-id": …, "agent-gateway.io/agent": …,
//!   "agent-gateway.io/databases": […]}'`: what the reaper reads.
//! - `GRANT … TO CURRENT_USER`: the admin is a member of every role it creates, which revoke's
//!   `REASSIGN OWNED`/`DROP OWNED` need when the admin is not a superuser.
//! - `ALTER ROLE … SET statement_timeout = …` (every grant), and, when all scopes are `select`,
//!   `ALTER ROLE … SET default_transaction_read_only = on`.
//!
//! Then, per database, in one transaction: `GRANT CONNECT ON DATABASE`, `GRANT USAGE ON SCHEMA`
//! for each schema named, and one `GRANT <privilege> ON TABLE <schema>.<table>` per scope;
//! finally `has_table_privilege` checks each scope is in effect (PostgreSQL only *warns* when
//! the admin lacks the grant option), and a grant that is not fails. Any failure drops the role
//! again. Every identifier is double-quoted with embedded quotes doubled, every value is a
//! quoted literal ([`sql`]), on top of the grammar's plain identifiers.
//!
//! The grant's only secret is the password: `PGPASSWORD` in [`gateway_core::Grant::job_env`]
//! (a [`gateway_core::Secret`], never printed or serialised). The non-secret connection
//! parameters `PGUSER` (the role, which is also the grant id), `PGDATABASE` (the first scope's),
//! `PGHOST` and `PGPORT` are the grant's [`job_vars`](gateway_core::Grant::job_vars), safe to
//! log and audit, which the gateway puts in the job's environment. A broker built with
//! [`job_socket_dir`](PostgresBrokerBuilder::job_socket_dir) also mounts the server's Unix
//! socket, read-only, into every job ([`gateway_core::Grant::job_mounts`]), for sandboxes
//! without network.
//!
//! ## What revoke does
//!
//! `ALTER ROLE … NOLOGIN`; `pg_terminate_backend` of every session of the role (waiting until
//! they are gone: a dropped role's open session would keep its privileges); in every database
//! it had privileges in (from its comment and the grant's scopes, plus the admin's database), in
//! one transaction, `REASSIGN OWNED BY … TO CURRENT_USER; DROP OWNED BY …`; then `DROP ROLE`.
//! Revoking again, or a role that is already gone, succeeds.
//!
//! ## Reaper
//!
//! [`PostgresBroker::reap`] drops this instance's roles whose expiry has passed (and those of
//! the instance's name prefix whose comment cannot be read), after a crash; unexpired ones stay.
//! Run it periodically with a stable instance id.
//!
//! ## Required privileges
//!
//! The admin role of `GATEWAY_PG_BROKER_URL` needs `CREATEROLE` and, on every table scopes may
//! name, the privileges `WITH GRANT OPTION` (or to own them), plus `CONNECT` on their databases;
//! a superuser works too (most tests use one; `a_createrole_admin_without_superuser_suffices`
//! uses exactly these privileges). `pg_terminate_backend` of a role's sessions needs
//! membership in `pg_signal_backend` (or superuser). The broker cannot take away what
//! `PUBLIC` holds: revoke `PUBLIC`'s defaults (`CREATE` on schema `public` before
//! PostgreSQL 15, `TEMPORARY` and `CONNECT` on databases) where they matter.

pub mod scope;
pub mod sql;

mod broker;
mod error;
mod scram;

pub use broker::{
    DATABASE_ENV, DATABASES_KEY, HOST_ENV, INSTANCE_ENV, JOB_SOCKET_DIR_ENV, JOB_SOCKET_MOUNT,
    PASSWORD_ENV, PORT_ENV, PostgresBroker, PostgresBrokerBuilder, ReapReport, URL_ENV, USER_ENV,
};
pub use error::PgBrokerError;
pub use scope::{PgScope, Privilege, ScopeError};
