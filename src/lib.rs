//! # agent-gateway
//!
//! A secure, least-privilege gateway through which AI agents run infrastructure actions. This
//! facade crate re-exports the member crates, each behind the feature that brings it in:
//!
//! | module | crate | feature |
//! |---|---|---|
//! | `core` | `gateway-core`: types, traits, the [`Gateway`] pipeline, static keys, HMAC grants, test doubles | always |
//! | `opa` | `gateway-opa`: policy deciders (embedded Rego, OPA over HTTP) | `embedded`, `opa-http` |
//! | `runners` | `gateway-runners`: the local sandbox, and Docker with `docker` | `embedded`, `docker` |
//! | `audit` | `gateway-audit`: hash-chained audit on SQLite, and PostgreSQL with `postgres` | `embedded`, `postgres`, `cli` |
//! | `state` | `gateway-state`: durable action state (request ids, phases, approvals) on SQLite, and PostgreSQL with `postgres` | `embedded`, `postgres` |
//! | `identity` | `gateway-identity`: JWT/JWKS workload identities | `jwt` |
//! | `kubernetes` | `gateway-kubernetes`: Job runner and RBAC broker | `kubernetes` |
//! | `postgres_broker` | `gateway-postgres`: just-in-time PostgreSQL role broker | `postgres-broker` |
//! | `server` | `gateway-server`: HTTP API, approvals, MCP front (`otel` adds trace export) | `server` |
//!
//! The default feature set is `embedded`: everything on one machine with no external service.
//! Backends are values given to [`Gateway::builder`]; features only decide what is compiled.

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "embedded")]
pub mod reference;

#[cfg(any(feature = "embedded", feature = "postgres", feature = "cli"))]
pub use gateway_audit as audit;
pub use gateway_core as core;
#[cfg(feature = "jwt")]
pub use gateway_identity as identity;
#[cfg(feature = "kubernetes")]
pub use gateway_kubernetes as kubernetes;
#[cfg(any(feature = "embedded", feature = "opa-http"))]
pub use gateway_opa as opa;
#[cfg(feature = "postgres-broker")]
pub use gateway_postgres as postgres_broker;
#[cfg(any(feature = "embedded", feature = "docker"))]
pub use gateway_runners as runners;
#[cfg(feature = "server")]
pub use gateway_server as server;
#[cfg(any(feature = "embedded", feature = "postgres"))]
pub use gateway_state as state;

pub use gateway_core::{
    ActionCatalog, ActionDef, ActionOutcome, ActionRequest, Credential, Gateway, GatewayConfig,
    GatewayError,
};
