//! # gateway-server
//!
//! The HTTP and MCP front of agent-gateway (axum + rmcp).
//!
//! | route | who | what |
//! |---|---|---|
//! | `POST /v1/actions` | agent (bearer) | body: `ActionRequest`; 200 with the outcome, 202 + `Location` when waiting for approval (or still running after `action_wait`), errors as JSON |
//! | `GET /v1/actions/{id}` | the same agent | status document; 404 for anyone else |
//! | `GET /v1/catalog` | agent (bearer) | the actions with their params schemas (as enforced) |
//! | `GET /v1/approvals` | human approver (bearer `apr_…`) | pending approvals |
//! | `POST /v1/approvals/{id}` | human approver | `{"verdict": "approve"\|"deny", "reason": "…"}` |
//! | `GET /v1/locks` | human approver | the kill switch's locks in force |
//! | `POST /v1/locks` | human approver | `{"agent"\|"owner": "…", "reason": "…"}`: lock (new requests denied, live actions stopped, on every replica) |
//! | `POST /v1/locks/unlock` | human approver | the same body: lift the lock |
//! | `GET /healthz` | anyone | liveness |
//! | `GET /readyz` | anyone | 200 only when policy and audit answer |
//! | `GET /metrics` | anyone (disable with `expose_metrics`) | OpenMetrics or Prometheus text, by `Accept` ([`metrics`]) |
//! | `GET /openapi.json` | anyone | the OpenAPI 3.1 document of these REST routes ([`openapi`]) |
//! | `/mcp` | agent (bearer) | MCP streamable HTTP: catalog actions as tools |
//! | `GET /.well-known/oauth-protected-resource[/path]` | anyone (only with [`ServerConfig::oauth`]) | RFC 9728 protected resource metadata ([`oauth`]) |
//!
//! Errors are `{"error": {"kind", "message", "correlation_id"}}` (plus `reasons` on denials) with
//! 401 unauthenticated, 403 denied, 404, 405 method not allowed, 408 body not received in time,
//! 409 duplicate request id, 413 body too large (by `Content-Length`, before reading), 414
//! request target too long, 422 invalid input, 429 rate limited, 431 headers too large, 503
//! unavailable (audit down: nothing ran), 504 timeout. The connection-level limits (header read
//! deadline, bounded shutdown drain) are [`serve`]'s.
//!
//! Wire it with [`Frontend`]: it holds the approval queue, the status tracker and the metrics,
//! whose gate and backend wrappers go into the gateway builder; then [`Frontend::into_state`]
//! and [`router`] or [`serve`].

pub mod auth;
pub mod config;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod limits;
pub mod mcp;
pub mod metrics;
pub mod oauth;
mod origin;
#[cfg(feature = "otel")]
pub mod otel;
mod schema;
mod serve;
pub mod state;
mod strangers;
pub mod tracker;

pub use auth::Approvers;
pub use config::ServerConfig;
pub use error::ApiError;
pub use http::openapi;
pub use metrics::Metrics;
pub use oauth::{OAuthConfigError, OAuthResource};
pub use serve::{serve, serve_with_shutdown};
pub use state::{AppState, Frontend};

/// All routes: the REST API and the MCP endpoint.
pub fn router(state: AppState) -> axum::Router {
    http::rest_router(state.clone())
        .merge(mcp::router(state.clone()))
        .merge(oauth::router(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            oauth::challenge,
        ))
        .layer(axum::middleware::from_fn_with_state(state, limits::guard))
}
