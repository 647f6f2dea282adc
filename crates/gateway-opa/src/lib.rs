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
//! The gateway queries two rules. Catalog listings (which actions an agent is shown) ask
//! [`DEFAULT_LISTING_PATH`] (`data.agent_gateway.authz.visible_actions`) for a set of action
//! names, with the input of [`ListingInput`](gateway_core::ListingInput) (policies/README.md,
//! "Listing"; anything but a set of strings lists nothing). Every request is decided by
//! [`DEFAULT_DECISION_PATH`] (`data.agent_gateway.authz.decision`), with this **input
//! document** (the serde form of [`PolicyInput`](gateway_core::PolicyInput)):
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
//! | `approval` | object | no | `{"quorum": 1, "separate_from_owner": true}` |
//! | `runner` | object | no | network none, no extra limits |
//!
//! `runner` may hold `network` (`{"mode":"none"}` or
//! `{"mode":"allowlist","destinations":["host:port", …]}`), `cpu_millis`, `memory_bytes`,
//! `pids` and `timeout_seconds` (non-negative integers); any other key is refused, since an
//! obligation the gateway does not know cannot be enforced. `approval` (read when
//! `require_approval` is true) may hold `quorum` (distinct approvers needed, 1 to 16) and
//! `separate_from_owner` (whether the agent's accountable owner is refused as an approver);
//! any other key is refused likewise.
//!
//! Fail closed: a field present with the wrong type (including `null`), a missing `allow`, or a
//! decision that is not an object is `PolicyError::Malformed` naming the field; an undefined
//! decision (no `result` from OPA, `Undefined` from regorus) is a deny with reason
//! [`POLICY_UNDEFINED`]; evaluation errors are `PolicyError::Evaluation` carrying the engine's
//! message. The gateway turns every error into a deny whose reason is the error message.
//! Every decision carries a `policy_id` (the rule and a version), and OPA's `decision_id` when
//! OPA returns one.
//!
//! **Numbers reach the policy as the client wrote them.** Both deciders see numbers as 64-bit
//! floats (serde_json), and the JSON [`OpaHttp`] sends carries those floats, so the embedded
//! engine and an OPA server decide on the same values. A client's text can hold more than a
//! float does (`4.0000000000000001`, `9007199254740993`, `1e308`): an OPA reading that text
//! sees the exact value and can decide otherwise (`x == round(x)`). Services that turn client
//! JSON into a request must parse it with [`gateway_core::strict_json::parse_exact`], which
//! refuses any number whose written value is not what the float holds (non-integral numbers
//! must be the shortest decimal of their float, integers from 2^53 on exactly the float's
//! integer). Arithmetic on non-integral numbers still differs (OPA computes in decimal,
//! regorus in binary floating point: `0.1 + 0.2 == 0.3` holds only on OPA); policies should
//! compare numbers rather than compute with fractions.
//!
//! ## The same Rego on OPA and embedded
//!
//! The contract is tested against **OPA v1.20.2** (Go), through PyPI's
//! `opa-golib-python-bindings` 0.4.4, which `scripts/services/opa.sh` installs into
//! `/var/cache/agent-gateway/opa/0.4.4/` (outside the clone) for `scripts/test`:
//!
//! - `tests/rego_unit.rs`: `policies/*_test.rego` pass on regorus and on OPA (the
//!   `opa test` equivalent `tools/opa/opa_harness.py test`), with the same outcomes;
//! - `tests/opa_real.rs`: [`OpaHttp`] against a Data API server backed by the real engine;
//! - `tests/differential.rs`: 12,000 generated inputs (valid and malformed, Unicode in every
//!   string, numbers at the edges as written, all hours, five data configurations) through
//!   [`EmbeddedRego`] and OPA; any input the embedded engine allows and OPA does not, or any
//!   difference in scopes, TTL, approval or runner obligations, fails; expected deny-only
//!   differences are listed, with their reasons, in its `ALLOWLIST`;
//! - `tests/builtins_differential.rs`: the builtins below on both engines, for any policy.
//!
//! Where regorus's builtins answer differently from OPA's, the embedded engine uses OPA's
//! semantics: regex patterns are translated from Go RE2 to equivalent Rust patterns (`\b`,
//! `\w`, `\d`, `\s` are ASCII in Go), `upper`/`lower` map one character at a time with
//! Unicode's simple mapping, `time.parse_rfc3339_ns` is a port of Go's parser, `regex.split`
//! drops empty matches at the ends as Go does. A pattern OPA accepts whose meaning cannot be
//! reproduced fails the decision (a deny, even under `not`). Refused at load time with
//! [`SetupError::Parse`] naming the file and line: policies calling `regex.template_match` or
//! `time.parse_ns`, and `not` over a call or computed lookup whose argument may be undefined
//! (`not startswith(input.x, "a")`, `not caps[input.action]`), which OPA makes undefined and
//! regorus true; negate a named rule instead (`prefixed if startswith(input.x, "a")`,
//! `not prefixed`). The OPA bindings evaluate with strict
//! builtin errors (an OPA server does not), so the tests count an OPA error and an undefined
//! result alike as "the builtin failed".
//!
//! Run the real-OPA tests locally, without the rest of the suite:
//!
//! ```sh
//! source scripts/lib.sh && source scripts/services/opa.sh && opa_start   # installs, serves
//! cargo test -p gateway-opa --test differential --test builtins_differential \
//!     --test rego_unit --test opa_real
//! opa_stop
//! ```
//!
//! (`scripts/test` runs them with everything else). `GATEWAY_DIFF_CASES` and
//! `GATEWAY_DIFF_SEED` change the differential corpus. Without the exported variables the
//! real-OPA tests print `SKIPPED`; under `CI=true` they fail.

mod contract;
mod embedded;
mod error;
mod go_compat;
#[cfg(feature = "http")]
mod http;
mod rego_test;
mod rego_value;
mod source;

pub use contract::{
    DEFAULT_DECISION_PATH, DEFAULT_LISTING_PATH, DEFAULT_MAX_INPUT_BYTES, DecisionPath,
    InputLimits, MAX_INPUT_DEPTH, NO_REASON, POLICY_UNDEFINED, parse_decision, parse_listing,
};
pub use embedded::{EmbeddedRego, EmbeddedRegoBuilder, EvalStrategy};
pub use error::SetupError;
#[cfg(feature = "http")]
pub use http::{OpaHttp, OpaHttpBuilder};
pub use rego_test::{RegoTestReport, RegoTestResult, run_rego_tests};
