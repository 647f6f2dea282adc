//! The kill switch over REST, for approver identities: list the locks, lock an agent (or every
//! agent of an owner), lift a lock ([`gateway_core::Gateway::lock`]).

use super::{approver, body_error};
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use gateway_core::state::{AgentLock, LockTarget};
use gateway_core::{AgentId, ErrorKind, LockError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of `POST /v1/locks` and `POST /v1/locks/unlock`: exactly one of `agent` and
/// `owner`, and why.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LockBody {
    /// The agent to lock or unlock.
    #[serde(default)]
    pub agent: Option<String>,
    /// The owner every agent of which is locked or unlocked.
    #[serde(default)]
    pub owner: Option<String>,
    /// Why (an incident number, a sentence): recorded. 1 to 4096 bytes.
    pub reason: String,
}

impl LockBody {
    fn target(&self) -> Result<LockTarget, ApiError> {
        let invalid = |m: String| ApiError::new(ErrorKind::InvalidInput, m, None);
        match (&self.agent, &self.owner) {
            (Some(agent), None) => AgentId::new(agent)
                .map(LockTarget::Agent)
                .map_err(|e| invalid(e.to_string())),
            (None, Some(owner)) if !owner.is_empty() => Ok(LockTarget::Owner(owner.clone())),
            _ => Err(invalid(
                "give exactly one of \"agent\" and \"owner\" (non-empty)".into(),
            )),
        }
    }
}

/// A lock in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    /// The locked agent (absent for an owner lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The locked owner (absent for an agent lock).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Who locked it.
    pub locked_by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    #[schema(format = DateTime)]
    pub locked_at: String,
}

impl From<&AgentLock> for LockView {
    fn from(lock: &AgentLock) -> Self {
        let (agent, owner) = match &lock.target {
            LockTarget::Agent(agent) => (Some(agent.to_string()), None),
            LockTarget::Owner(owner) => (None, Some(owner.clone())),
        };
        Self {
            agent,
            owner,
            locked_by: lock.locked_by.clone(),
            reason: lock.reason.clone(),
            locked_at: lock
                .locked_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        }
    }
}

/// `GET /v1/locks`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct LockList {
    /// Every lock in force, on every replica sharing the state store.
    pub locks: Vec<LockView>,
}

/// `POST /v1/locks`' answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Locked {
    /// The lock now in force.
    pub lock: LockView,
    /// Live actions of the target this replica stopped at once (other replicas stop theirs
    /// within their lock watcher's period, 1 s by default).
    pub stopped_here: usize,
    /// Whether the `agent_locked` audit record was stored. `false`: the lock is in force all
    /// the same (a kill switch does not wait for the audit log); see `warning`.
    pub audited: bool,
    /// Why the lock is not audited, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// `POST /v1/locks/unlock`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Unlocked {
    /// Whether there was a lock to lift.
    pub unlocked: bool,
}

fn parse(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<LockBody, ApiError> {
    let body = body.map_err(|r| body_error(&r, state.config().max_body_bytes))?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidInput,
            format!("body must be {{\"agent\"|\"owner\": \"…\", \"reason\": \"…\"}}: {e}"),
            None,
        )
    })
}

fn lock_error(e: &LockError) -> ApiError {
    ApiError::new(e.kind(), e.to_string(), None)
}

/// Every lock in force.
#[utoipa::path(
    get,
    path = "/v1/locks",
    tag = "kill switch",
    operation_id = "list_locks",
    security(("approver" = [])),
    responses(
        (status = 200, description = "The locks in force.", body = LockList),
        (status = 503, description = "The state store cannot be read.",
            body = crate::error::Body),
    ),
)]
pub(super) async fn list_locks(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<LockList>, ApiError> {
    approver(&state, &headers)?;
    let locks = state
        .gateway()
        .locks()
        .await
        .map_err(|e| ApiError::new(e.kind(), e.to_string(), None))?;
    Ok(Json(LockList {
        locks: locks.iter().map(LockView::from).collect(),
    }))
}

/// Locks an agent, or every agent of an owner, on every replica: new requests are denied and
/// live actions stopped (jobs cancelled, grants revoked).
#[utoipa::path(
    post,
    path = "/v1/locks",
    tag = "kill switch",
    operation_id = "lock",
    security(("approver" = [])),
    request_body(content = LockBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The lock is in force.", body = Locked),
        (status = 503, description = "The state store cannot store the lock: nothing changed.",
            body = crate::error::Body),
    ),
)]
pub(super) async fn lock(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Locked>, ApiError> {
    let who = approver(&state, &headers)?;
    let body = parse(&state, body)?;
    let target = body.target()?;
    match state.gateway().lock(target, &who, &body.reason).await {
        Ok(report) => {
            tracing::warn!(approver = %who, lock = %report.lock, stopped_here = report.stopped_here, "kill switch: locked");
            Ok(Json(Locked {
                lock: LockView::from(&report.lock),
                stopped_here: report.stopped_here,
                audited: true,
                warning: None,
            }))
        }
        Err(LockError::NotAudited { report, message }) => {
            tracing::error!(approver = %who, lock = %report.lock, %message, "kill switch: locked, but not audited");
            Ok(Json(Locked {
                lock: LockView::from(&report.lock),
                stopped_here: report.stopped_here,
                audited: false,
                warning: Some(message),
            }))
        }
        Err(e) => Err(lock_error(&e)),
    }
}

/// Lifts a lock (recorded first: if the record cannot be stored, the lock stays).
#[utoipa::path(
    post,
    path = "/v1/locks/unlock",
    tag = "kill switch",
    operation_id = "unlock",
    security(("approver" = [])),
    request_body(content = LockBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The lock is lifted (or there was none).", body = Unlocked),
        (status = 503, description = "The unlock could not be recorded or stored: the lock \
            stays.", body = crate::error::Body),
    ),
)]
pub(super) async fn unlock(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Unlocked>, ApiError> {
    let who = approver(&state, &headers)?;
    let body = parse(&state, body)?;
    let target = body.target()?;
    let unlocked = state
        .gateway()
        .unlock(target.clone(), &who, &body.reason)
        .await
        .map_err(|e| lock_error(&e))?;
    tracing::warn!(approver = %who, %target, unlocked, "kill switch: unlocked");
    Ok(Json(Unlocked { unlocked }))
}
