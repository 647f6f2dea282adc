//! Schemas of the gateway-core types the API sends and receives, field for field as they
//! (de)serialise, for the OpenAPI document ([`crate::http::openapi`]). They are never built:
//! only their derived schemas are used. A leaf module, so that the types this crate sends
//! (in `error` and `http`) can name them.
#![allow(dead_code)]

use serde::Serialize;
use utoipa::ToSchema;

/// The backend-neutral error kind.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorKind {
    Unauthenticated,
    Denied,
    InvalidInput,
    RateLimited,
    Unavailable,
    Timeout,
    Cancelled,
    NotFound,
    Conflict,
    Internal,
}

/// What an agent asks the gateway to do. Unknown fields are refused (422), and so are
/// duplicate keys and integers a float would round.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "action": "ops.echo",
    "resource": "ops:staging/echo",
    "params": {"message": "hi"},
    "intent": "check the gateway",
    "requested_ttl_seconds": 60
}))]
pub(crate) struct ActionRequest {
    /// The request's id (and correlation id); generated if left out.
    #[serde(default)]
    #[schema(format = Uuid)]
    id: String,
    /// A registered action name (see `GET /v1/catalog`), e.g. `k8s.scale`; at most 128
    /// bytes by default.
    action: String,
    /// What the action touches, e.g. `k8s:staging/deployments/web`: not empty, no control
    /// characters, at most 512 bytes by default.
    #[schema(min_length = 1, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$")]
    resource: String,
    /// The action's parameters: a JSON object, checked against the action's
    /// `params_schema` from `GET /v1/catalog`; nested at most 32 deep by default.
    #[serde(default)]
    #[schema(value_type = Object)]
    params: (),
    /// Why the agent wants this (recorded; shown to policies and approvers); at most 4096
    /// bytes by default; no NUL.
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000]*$")]
    intent: String,
    /// The grant lifetime asked for, in seconds; the gateway may shorten it. Like every
    /// number of the body, it must be exact as a 64-bit float (what the policy sees), so
    /// larger integers than 2^53 are refused unless a float holds them exactly; and it is
    /// written as an integer (`300`, not `300.0`, which JSON Schema would also call one).
    #[serde(default)]
    #[schema(default = 300, minimum = 1, maximum = 9_007_199_254_740_992_u64)]
    requested_ttl_seconds: u64,
}

/// The result of an action that ran (whatever its exit status).
#[derive(Serialize, ToSchema)]
pub(crate) struct ActionOutcome {
    /// The request's correlation id.
    #[schema(format = Uuid)]
    correlation_id: String,
    /// The agent.
    agent: String,
    /// The action.
    action: String,
    /// The policy decision (an allow).
    decision: Decision,
    /// Who approved, when approval was required.
    #[serde(skip_serializing_if = "Option::is_none")]
    approved_by: Option<String>,
    /// The grant the job ran with.
    grant: GrantSummary,
    /// The runner.
    runner: RunnerInfo,
    /// How the job went.
    job: JobOutcome,
    /// The receipt of the final audit record.
    audit: AuditReceipt,
}

/// A policy's answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct Decision {
    /// Whether the action may go ahead.
    allow: bool,
    /// Human-readable reasons.
    reasons: Vec<String>,
    /// What must happen if the action goes ahead.
    obligations: Obligations,
    /// Which policy decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_id: Option<String>,
    /// The decision engine's own id for this decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    decision_id: Option<String>,
}

/// What the gateway must do if it goes ahead.
#[derive(Serialize, ToSchema)]
pub(crate) struct Obligations {
    /// The longest grant the policy allows, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ttl_seconds: Option<u64>,
    /// The scopes the grant carries.
    scopes: Vec<String>,
    /// A human must approve before the action runs.
    require_approval: bool,
    /// Who may approve (absent: one approver, not the agent's owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    approval: Option<ApprovalRule>,
    /// Limits on the job's environment.
    runner: RunnerObligations,
}

/// Limits a policy imposes on the job's environment.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunnerObligations {
    /// Network access the job gets.
    network: NetworkAccess,
    /// CPU limit in millicores.
    #[serde(skip_serializing_if = "Option::is_none")]
    cpu_millis: Option<u32>,
    /// Memory limit in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_bytes: Option<u64>,
    /// Maximum number of processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<u32>,
    /// Wall-clock limit in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_seconds: Option<u64>,
}

/// Whether a job may reach the network.
#[derive(Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub(crate) enum NetworkAccess {
    /// No network at all.
    None,
    /// Egress only to the named destinations.
    Allowlist {
        /// Allowed destinations (`host:port` or CIDR).
        destinations: Vec<String>,
    },
}

/// The grant as reported to the caller: no secret material.
#[derive(Serialize, ToSchema)]
pub(crate) struct GrantSummary {
    /// The grant id.
    id: String,
    /// The scopes granted.
    scopes: Vec<String>,
    /// The TTL the gateway asked for.
    ttl_seconds: u64,
    /// When it expires by itself (RFC 3339).
    #[schema(format = DateTime)]
    not_after: String,
    /// Whether revocation succeeded.
    revoked: bool,
}

/// The runner.
#[derive(Serialize, ToSchema)]
pub(crate) struct RunnerInfo {
    /// The backend, e.g. `local`, `docker`, `kubernetes`.
    backend: String,
    /// The runner instance's id.
    instance: String,
    /// The isolation level jobs get.
    isolation: IsolationLevel,
}

/// How strongly a runner isolated a job.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IsolationLevel {
    None,
    Process,
    Namespaces,
    Container,
}

/// The result of one job.
#[derive(Serialize, ToSchema)]
pub(crate) struct JobOutcome {
    /// How it ended.
    status: JobStatus,
    /// Captured stdout (lossy UTF-8), at most the output cap.
    stdout: String,
    /// Captured stderr (lossy UTF-8), at most the output cap.
    stderr: String,
    /// Whether stdout was cut at the cap.
    stdout_truncated: bool,
    /// Whether stderr was cut at the cap.
    stderr_truncated: bool,
    /// Wall-clock time from start to exit, in milliseconds.
    duration: u64,
    /// The id of the environment the job ran in.
    environment_id: String,
    /// The isolation actually used.
    isolation: IsolationLevel,
    /// Whether the environment was fully destroyed.
    teardown: Teardown,
}

/// How a job ended.
#[derive(Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum JobStatus {
    /// The program exited by itself.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The program was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The wall-clock limit passed and the runner killed the job.
    TimedOut,
    /// The job ran out of memory and was killed.
    OomKilled,
    /// The caller cancelled the job.
    Cancelled,
}

/// What happened to the job's environment afterwards.
#[derive(Serialize, ToSchema)]
pub(crate) struct Teardown {
    /// Whether everything the runner created for the job is gone.
    complete: bool,
    /// Details, e.g. what could not be removed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    detail: String,
}

/// The audit sink's acknowledgement of the final record.
#[derive(Serialize, ToSchema)]
pub(crate) struct AuditReceipt {
    /// The chain it went into.
    stream_id: String,
    /// Its sequence number.
    sequence: u64,
    /// Its hash (hex).
    hash: String,
}

/// What an approver is asked to approve.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApprovalRequest {
    /// The action request's id (and correlation id).
    #[schema(format = Uuid)]
    correlation_id: String,
    /// The requesting agent.
    agent: String,
    /// The agent's accountable owner.
    owner: String,
    /// The action.
    action: String,
    /// The resource.
    resource: String,
    /// The agent's stated intent.
    intent: String,
    /// The params.
    #[schema(value_type = Object)]
    params: (),
    /// The policy's reasons for asking.
    reasons: Vec<String>,
    /// The grant TTL the agent asked for, in seconds.
    requested_ttl_seconds: u64,
    /// SHA-256 (hex) of the RFC 8785 JSON of action, resource, params, intent and
    /// requested_ttl_seconds: quote it in a vote to bind the vote to exactly this request.
    request_hash: String,
    /// Who may approve: `quorum` distinct approvers, and whether the owner is refused.
    rule: ApprovalRule,
    /// After this the request counts as denied (RFC 3339).
    #[schema(format = DateTime)]
    deadline: String,
    /// The votes so far.
    votes: Vec<ApprovalVote>,
}

/// Who may approve a request.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApprovalRule {
    /// Distinct approvers needed (1 to 16).
    quorum: u32,
    /// Whether the agent's accountable owner is refused as an approver.
    separate_from_owner: bool,
}

/// One approver's vote.
#[derive(Serialize, ToSchema)]
pub(crate) struct ApprovalVote {
    /// The approver.
    approver: String,
    /// Approve or deny.
    approve: bool,
    /// The approver's reason.
    reason: String,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    at: String,
}

/// The state of an action.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ActionStatus {
    /// Running (or about to).
    Running,
    /// Waiting for a human approver.
    PendingApproval,
    /// It ran; see `outcome.job`.
    Completed,
    /// It did not run, or could not be recorded; see `error`.
    Failed,
}

/// An approver's recorded verdict.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ResolvedVerdict {
    Approved,
    Denied,
    Pending,
}
