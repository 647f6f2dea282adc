//! # gateway-opa: policy as code for agent-gateway
//!
//! Two [`PolicyDecider`](gateway_core::PolicyDecider) backends that evaluate the same Rego:
//!
//! - [`OpaHttp`]: asks an OPA server through its Data API
//!   (`POST {base}/v1/data/{package path}` with `{"input": …}`);
//! - [`EmbeddedRego`]: evaluates the policies in-process with regorus, a pure-Rust Rego
//!   interpreter; no server needed (the embedded default).
//!
//! The reference policies live in the workspace's `policies/` directory
//! (`policies/README.md` documents them); [`run_rego_tests`] runs their Rego unit tests.
//!
//! ## The policy contract (version 1)
//!
//! The gateway queries one rule, by default [`DEFAULT_DECISION_PATH`]
//! (`data.agent_gateway.authz.decision`), with this **input document** (the serde form of
//! [`PolicyInput`](gateway_core::PolicyInput)):
//!
//! ```json
//! {
//!   "contract_version": 1,
//!   "agent": {
//!     "id": "agent:deployer",
//!     "owner": "team-platform",
//!     "attributes": {"namespaces": ["team-a"], "role": "deployer"},
//!     "auth": {"method": "static_key", "key_id": "key-1"}
//!   },
//!   "action": "k8s.scale",
//!   "resource": "k8s:team-a/deployments/web",
//!   "params": {"replicas": 3},
//!   "intent": "scale up for the sale",
//!   "requested_ttl_seconds": 120,
//!   "request_time": "2025-01-06T10:00:00Z",
//!   "correlation_id": "0193…",
//!   "context": {}
//! }
//! ```
//!
//! `request_time` is RFC 3339 (UTC); `auth.method` is `static_key` (`key_id`), `jwt`
//! (`issuer`, `key_id`) or `other` (`description`). Policies should deny any
//! `contract_version` they do not know. Before any engine sees it, the document must be an
//! object no deeper than [`MAX_INPUT_DEPTH`] (64) levels and no larger than
//! [`InputLimits::max_bytes`] (default 256 KiB); otherwise the decider returns
//! `PolicyError::InvalidInput`.
//!
//! The rule must produce this **decision document**:
//!
//! | field | type | required | default |
//! |---|---|---|---|
//! | `allow` | boolean | yes | — |
//! | `reasons` | array of strings | no | `[]` (a deny gets [`NO_REASON`]) |
//! | `max_ttl_seconds` | non-negative integer | no | the gateway's maximum |
//! | `scopes` | array of strings | no | `[]` |
//! | `require_approval` | boolean | no | `false` |
//! | `runner` | object | no | network none, no extra limits |
//!
//! `runner` may hold `network` (`{"mode":"none"}` or
//! `{"mode":"allowlist","destinations":["host:port", …]}`), `cpu_millis`, `memory_bytes`,
//! `pids` and `timeout_seconds` (non-negative integers); any other key is refused, since an
//! obligation the gateway does not know cannot be enforced.
//!
//! Fail closed: a field present with the wrong type (including `null`), a missing `allow`, or a
//! decision that is not an object is `PolicyError::Malformed` naming the field; an undefined
//! decision (no `result` from OPA, `Undefined` from regorus) is a deny with reason
//! [`POLICY_UNDEFINED`]; evaluation errors are `PolicyError::Evaluation` carrying the engine's
//! message. The gateway turns every error into a deny whose reason is the error message.
//! Every decision carries a `policy_id` (the rule and a version), and OPA's `decision_id` when
//! OPA returns one.

mod contract;
mod embedded;
mod error;
mod go_compat;
mod http;
mod rego_test;
mod rego_value;
mod source;

pub use contract::{
    DEFAULT_DECISION_PATH, DEFAULT_MAX_INPUT_BYTES, DecisionPath, InputLimits, MAX_INPUT_DEPTH,
    NO_REASON, POLICY_UNDEFINED, parse_decision,
};
pub use embedded::{EmbeddedRego, EmbeddedRegoBuilder, EvalStrategy};
pub use error::SetupError;
pub use http::{OpaHttp, OpaHttpBuilder};
pub use rego_test::{RegoTestReport, RegoTestResult, run_rego_tests};
