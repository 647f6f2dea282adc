//! The audit trail: events the gateway emits, the hash-chained records sinks store, and the
//! [`AuditSink`] trait.

pub mod chain;
pub(crate) mod jcs;

use crate::error::concern_error;
use crate::ids::{AgentId, RequestId};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use chain::{ChainFault, ChainVerifier, FaultKind, VerifyReport};

/// What happened, one per step of the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditEventKind {
    /// The first record of a stream (written by sinks, never by the gateway).
    Genesis,
    /// The stream's checkpoint signing key changed: `details` name the `previous_key_id` and
    /// the new `key_id` (written by sinks, never by the gateway; the first record the new key
    /// checkpoints).
    KeyRotated,
    /// A request arrived (write-ahead, before anything else happens).
    Requested,
    /// The request was refused before a decision: bad credential, invalid input, rate limit.
    /// Terminal.
    Rejected,
    /// The policy decided (allow or deny). A deny is followed by `completed`.
    Decided,
    /// A human approval was asked for.
    ApprovalRequested,
    /// The approval was granted, refused or expired.
    ApprovalResolved,
    /// A just-in-time grant was issued.
    Granted,
    /// The job was handed to the runner.
    Started,
    /// The grant was revoked (or revocation failed).
    Revoked,
    /// The action ended; carries the final status. Terminal.
    Completed,
    /// The kill switch locked an agent, or every agent of an owner: `resource` names the
    /// target (`agent:<id>` or `owner:<owner>`), `details` say who locked it and why. A trail of
    /// its own (one record). Terminal.
    AgentLocked,
    /// A lock was lifted (same fields as `agent_locked`). Terminal.
    AgentUnlocked,
}

impl AuditEventKind {
    /// Every kind, in request-path order.
    pub const ALL: [AuditEventKind; 13] = [
        Self::Genesis,
        Self::KeyRotated,
        Self::Requested,
        Self::Rejected,
        Self::Decided,
        Self::ApprovalRequested,
        Self::ApprovalResolved,
        Self::Granted,
        Self::Started,
        Self::Revoked,
        Self::Completed,
        Self::AgentLocked,
        Self::AgentUnlocked,
    ];

    /// The kind's serialised name (`"approval_requested"`, …), as records store it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Genesis => "genesis",
            Self::KeyRotated => "key_rotated",
            Self::Requested => "requested",
            Self::Rejected => "rejected",
            Self::Decided => "decided",
            Self::ApprovalRequested => "approval_requested",
            Self::ApprovalResolved => "approval_resolved",
            Self::Granted => "granted",
            Self::Started => "started",
            Self::Revoked => "revoked",
            Self::Completed => "completed",
            Self::AgentLocked => "agent_locked",
            Self::AgentUnlocked => "agent_unlocked",
        }
    }

    /// The kind whose serialised name is `name`; the inverse of [`as_str`](Self::as_str).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Whether this kind ends an action's trail.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected | Self::Completed | Self::AgentLocked | Self::AgentUnlocked
        )
    }
}

/// Success or failure of the event, as PCI-DSS 10.2.2 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// The step succeeded (an allow, a grant, a job exiting 0, …).
    Success,
    /// The step failed or refused (a deny, an error, a non-zero exit, …).
    Failure,
}

impl EventOutcome {
    /// The outcome's serialised name (`"success"` or `"failure"`), as records store it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// The decision as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Whether the policy allowed the action.
    pub allow: bool,
    /// The policy's reasons.
    pub reasons: Vec<String>,
    /// The deciding policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_id: Option<String>,
    /// The decision engine's id for the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
}

/// One audit event as the gateway emits it. Never holds secrets: credentials and grant tokens
/// are not part of it, and the gateway redacts secret-looking values
/// ([`Redactor`](crate::redact::Redactor)) before any sink sees the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened (UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The action request's id; the same on every event of one action.
    pub correlation_id: RequestId,
    /// Position of this event within its action's trail, strictly increasing from 1.
    pub step: u32,
    /// What happened.
    pub kind: AuditEventKind,
    /// The agent; `None` only when authentication failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    /// The action name as requested.
    pub action: String,
    /// The affected resource.
    pub resource: String,
    /// Success or failure of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<EventOutcome>,
    /// The decision, on `decided` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
    /// The grant, once issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// The runner (backend and instance) and environment id, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_id: Option<String>,
    /// Where the request came from (e.g. the client's address or the front end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Step-specific details (error kind and message, exit code, duration, TTLs, …).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    /// A new event with no optional fields set, stamped now.
    pub fn new(correlation_id: RequestId, step: u32, kind: AuditEventKind) -> Self {
        Self {
            time: OffsetDateTime::now_utc(),
            correlation_id,
            step,
            kind,
            agent_id: None,
            action: String::new(),
            resource: String::new(),
            outcome: None,
            decision: None,
            grant_id: None,
            runner_id: None,
            origin: None,
            details: serde_json::Map::new(),
        }
    }
}

/// A stored audit record: the event plus its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The chain (one per gateway instance).
    pub stream_id: String,
    /// Position in the chain, from 0 (the genesis record) without gaps.
    pub sequence: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
    /// Hex SHA-256 of the previous record (64 zeros for the genesis record).
    pub prev_hash: String,
    /// Hex `SHA-256(prev_hash ‖ canonical JSON of the record without prev_hash and hash)`.
    pub hash: String,
}

/// The sink's acknowledgement that an event is durably stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReceipt {
    /// The chain it went into.
    pub stream_id: String,
    /// Its sequence number.
    pub sequence: u64,
    /// Its hash (hex).
    pub hash: String,
}

concern_error!(
    /// Why an audit operation failed. An append error means the event is *not* stored.
    AuditError, "audit"
);

/// The receipt of a group of one: how a sink whose `append` is its
/// [`append_all`](AuditSink::append_all) of one event answers.
pub fn only_receipt(mut receipts: Vec<AuditReceipt>) -> Result<AuditReceipt, AuditError> {
    receipts
        .pop()
        .ok_or_else(|| AuditError::internal_msg("no receipt for an appended event"))
}

/// An append-only, hash-chained, durable audit log (one chain per sink instance).
///
/// `append` returns only after the event is durable; an event is acknowledged once or the caller
/// gets an error, never silently dropped.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Appends one event and returns once it is durable.
    async fn append(&self, event: AuditEvent) -> Result<AuditReceipt, AuditError>;

    /// Appends `events` in order and returns their receipts once all of them are durable.
    ///
    /// Sinks that can should store the events as one unit: contiguous in the chain and in one
    /// commit, all or none (the SQLite and Postgres sinks and the in-memory double do). That
    /// lets a caller pay for one durable commit where it would otherwise wait for several. The
    /// default appends them one after another, so after an error a prefix may be stored;
    /// callers must read an error as "not all of them are stored".
    async fn append_all(&self, events: Vec<AuditEvent>) -> Result<Vec<AuditReceipt>, AuditError> {
        let mut receipts = Vec::with_capacity(events.len());
        for event in events {
            receipts.push(self.append(event).await?);
        }
        Ok(receipts)
    }

    /// Reads up to `limit` records of this sink's chain with sequence > `after` (from the start
    /// when `None`), in sequence order.
    async fn read(&self, after: Option<u64>, limit: usize) -> Result<Vec<AuditRecord>, AuditError>;

    /// Recomputes this sink's whole chain and reports the first fault, if any.
    async fn verify(&self) -> Result<VerifyReport, AuditError>;
}
