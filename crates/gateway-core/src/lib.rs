//! # gateway-core
//!
//! The domain types, traits and fail-closed request pipeline of agent-gateway.
//!
//! An agent presents a [`Credential`] and an [`ActionRequest`]; the [`Gateway`] authenticates it
//! ([`Identity`]), checks the request against its [`ActionCatalog`], records it ([`AuditSink`],
//! write-ahead), asks the [`PolicyDecider`], optionally waits for a human ([`ApprovalGate`]),
//! issues a just-in-time [`Grant`] ([`AccessBroker`]), runs the job in a fresh environment
//! ([`Runner`]), revokes the grant and records the outcome. Any failure stops the action and is
//! itself recorded.
//!
//! Backends live in sibling crates (`gateway-opa`, `gateway-runners`, `gateway-audit`); this
//! crate holds the embedded parts that need nothing external ([`StaticKeys`], [`HmacBroker`],
//! [`Approvals`]), in-memory test doubles ([`testing`]) and, behind the `conformance`
//! feature, the suites every backend must pass.

pub mod action;
pub mod approval;
pub mod approvals;
pub mod audit;
pub mod catalog_file;
pub mod error;
pub mod expiring;
pub mod gateway;
pub mod grant;
pub mod hmac_broker;
pub mod identity;
pub mod ids;
pub mod labels;
pub mod output;
pub mod params_schema;
pub mod policy;
pub mod redact;
pub mod runner;
pub mod secret;
pub mod state;
pub mod static_keys;
pub mod strict_json;
#[cfg(feature = "testing")]
pub mod testing;
mod text;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use action::{
    ActionCatalog, ActionDef, ActionRequest, JobBuildError, ParamsError, RequestError,
    RequestLimits, ScopeCheck,
};
pub use approval::{ApprovalRequest, ApprovalVerdict};
pub use approvals::{ApprovalGate, Approvals};
pub use audit::{
    AuditError, AuditEvent, AuditEventKind, AuditReceipt, AuditRecord, AuditSink, EventOutcome,
    VerifyReport,
};
pub use error::ErrorKind;
pub use gateway::{
    ActionOutcome, AgentLimits, BackgroundTask, Gateway, GatewayBuilder, GatewayConfig,
    GatewayError, GrantSummary, LockError, LockReport, RecoveryReport, RequestContext, Stage,
};
pub use grant::{AccessBroker, BrokerError, Grant, GrantRequest};
pub use hmac_broker::HmacBroker;
pub use identity::{AgentIdentity, AuthMethod, Credential, Identity, IdentityChain, IdentityError};
pub use ids::{AgentId, RequestId, SpiffeId};
pub use policy::{
    Decision, ListingInput, NetworkAccess, Obligations, PolicyDecider, PolicyError, PolicyInput,
    RunnerObligations,
};
pub use redact::Redactor;
pub use runner::{
    AbandonedJob, IsolationLevel, JobLimits, JobOutcome, JobSpec, JobStatus, Runner, RunnerError,
    RunnerInfo, Teardown,
};
pub use secret::Secret;
pub use state::{
    ActionKey, ActionRecord, MemoryStateStore, Phase, Resume, RunLease, StateError, StateStore,
    StateStoreExt,
};
pub use static_keys::StaticKeys;

/// Re-exported for implementing the traits.
pub use async_trait::async_trait;
/// Re-exported so backends and callers use the same cancellation type as [`Runner::run`].
pub use tokio_util::sync::CancellationToken;
